package analysis

import "slices"

// ShapeAt is how many span names of one service must share a shape for a
// diagnosis to try them as one operation (see Diagnose), for critical
// paths to be summed up with them as one (see AggregatePaths), and for
// span metrics to merge them when asked. Instrumentations
// that name spans by their literal SQL, or by a path with an ID in it,
// give an operation thousands of names, each too rare to rank, while a
// fault that slows them all is plain in their sum. A few names of one
// shape are always kept apart: step-1 and step-2 are two operations.
const ShapeAt = 10

// NameShape is name with its literals replaced by ?: quoted strings,
// numbers, UUIDs and hexadecimal identifiers of 8 digits or more with a
// decimal digit among them, standing alone rather than inside a word (v1
// and oauth2 stay), and lists of them, as in IN (1, 2, 3), by one ?.
func NameShape(name string) string {
	out := make([]byte, 0, len(name))
	literal := false // out ends with a ? and what may list it: spaces and commas
	for i := 0; i < len(name); {
		c := name[i]
		n := 0
		switch {
		case c == '\'':
			n = quotedLen(name[i:])
		case isWord(c) && (i == 0 || !isWord(name[i-1])):
			n = literalLen(name[i:])
		}
		if n == 0 {
			literal = literal && (c == ' ' || c == ',')
			out = append(out, c)
			i++
			continue
		}
		if literal {
			// A list: drop what separates the ? before from this one.
			out = out[:len(out)-len(trailingSeparators(out))]
		} else {
			out = append(out, '?')
		}
		literal = true
		i += n
	}
	return string(out)
}

// quotedLen is the length of the SQL string literal s starts with, a
// doubled quote inside it standing for one; 0 if it is not closed.
func quotedLen(s string) int {
	for i := 1; i < len(s); i++ {
		if s[i] != '\'' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '\'' {
			i++
			continue
		}
		return i + 1
	}
	return 0
}

// literalLen is the length of the number, UUID or hexadecimal identifier
// s starts with, if it ends where a word does; 0 if s starts with none.
func literalLen(s string) int {
	if isUUID(s) && (len(s) == 36 || !isWord(s[36])) {
		return 36
	}
	n, hex, digits, decimal := 0, true, false, true
	for n < len(s) && isWord(s[n]) {
		c := s[n]
		digits = digits || isDigit(c)
		decimal = decimal && isDigit(c)
		hex = hex && (isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'f')
		n++
	}
	switch {
	case decimal:
		// A fraction is part of the number, if it ends where a word does.
		if n+1 < len(s) && s[n] == '.' && isDigit(s[n+1]) {
			end := n + 1
			for end < len(s) && isDigit(s[end]) {
				end++
			}
			if end == len(s) || !isWord(s[end]) {
				return end
			}
		}
		return n
	case hex && digits && n >= 8:
		return n
	}
	return 0
}

func isUUID(s string) bool {
	if len(s) < 36 {
		return false
	}
	for i := range 36 {
		c := s[i] | 0x20
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return false
			}
		} else if !isDigit(s[i]) && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func trailingSeparators(b []byte) []byte {
	i := len(b)
	for i > 0 && (b[i-1] == ' ' || b[i-1] == ',') {
		i--
	}
	return b[i:]
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isWord(c byte) bool {
	return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' || c == '_'
}

// NameShapes finds a service's span names that differ only in their
// literals: those whose shape (see NameShape) ShapeAt or more of the
// service's names share. The zero value is empty and ready to use.
type NameShapes struct {
	shapes  map[[2]string]string // by service and name: its shape
	members map[[2]string]int    // names by service and shape, but the shape's own
}

// Add counts a service's span name, once however often it is added.
func (n *NameShapes) Add(service, name string) {
	k := [2]string{service, name}
	if _, ok := n.shapes[k]; ok {
		return
	}
	if n.shapes == nil {
		n.shapes, n.members = map[[2]string]string{}, map[[2]string]int{}
	}
	shape := NameShape(name)
	if shape != name {
		n.members[[2]string{service, shape}]++
	}
	n.shapes[k] = shape
}

// Shape is the shape a service's added span name goes by, which may be
// the name itself: "" unless ShapeAt or more of its other names share it.
func (n *NameShapes) Shape(service, name string) string {
	shape := n.shapes[[2]string{service, name}]
	if n.Names(service, shape) == 0 {
		return ""
	}
	return shape
}

// Names is how many of a service's added span names shape stands for; 0
// if fewer than ShapeAt.
func (n *NameShapes) Names(service, shape string) int {
	if m := n.members[[2]string{service, shape}]; m >= ShapeAt {
		return m
	}
	return 0
}

// any says whether a shape stands for ShapeAt or more names.
func (n *NameShapes) any() bool {
	for _, m := range n.members {
		if m >= ShapeAt {
			return true
		}
	}
	return false
}

// shapeNames renames, in copies of the traces that have any, the spans of
// every service whose names of one shape number at least ShapeAt over
// both windows (see NameShapes) to that shape, but the diagnosed
// operation's own spans; it returns the shapes, nil if none was renamed.
func shapeNames(window, baseline []*Trace, service, operation string) (w, b []*Trace, shapes *NameShapes) {
	shapes = &NameShapes{}
	for _, ts := range [2][]*Trace{window, baseline} {
		for _, t := range ts {
			for i := range t.Spans {
				if s := &t.Spans[i]; s.Service != service || s.Name != operation {
					shapes.Add(s.Service, s.Name)
				}
			}
		}
	}
	if !shapes.any() {
		return window, baseline, nil
	}
	rename := func(ts []*Trace) []*Trace {
		out := make([]*Trace, len(ts))
		for j, t := range ts {
			out[j] = t
			for i := range t.Spans {
				s := &t.Spans[i]
				shape := shapes.Shape(s.Service, s.Name)
				if shape == "" || shape == s.Name {
					continue
				}
				if out[j] == t {
					c := *t
					c.Spans = slices.Clone(t.Spans)
					out[j] = &c
				}
				out[j].Spans[i].Name = shape
			}
		}
		return out
	}
	return rename(window), rename(baseline), shapes
}
