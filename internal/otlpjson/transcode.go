package otlpjson

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// transcode encodes an OTLP/JSON request straight into protobuf, in one
// pass over the document, without protojson's message tree: for the bench
// workload, decoding through the tree took about five times the CPU of
// taking in the same spans as protobuf. It takes the shape SDKs and the
// Collector write (known fields in either spelling, integers as strings or
// plain numbers, hex IDs, enums as numbers) and returns errLeft for
// anything else, from an unknown field or a null to an enum by name or a
// number with an exponent, for DecodeRequest to decode through protojson,
// which then decides. So whatever transcode accepts, protojson would decode
// to the same message (FuzzTranscode).
func transcode(doc []byte) ([]byte, error) {
	// The encoding is shorter than the document: IDs take half, names a
	// byte or two.
	t := transcoder{doc: doc, out: make([]byte, 0, len(doc))}
	t.space()
	if err := t.object(requestSchema, 0); err != nil {
		return nil, err
	}
	t.space()
	if t.i != len(doc) {
		return nil, errLeft
	}
	// The store keeps the request until its spans are cut into blocks:
	// keep no slack.
	if cap(t.out)-len(t.out) > len(t.out)/8 {
		return slices.Clone(t.out), nil
	}
	return t.out, nil
}

// errLeft is a document transcode leaves to protojson.
var errLeft = errors.New("otlpjson: left to protojson")

// maxDepth bounds the nesting transcode follows (values in arrays in
// lists...); deeper documents are left to protojson, which has its own
// bound.
const maxDepth = 64

// schema is what transcode knows of a message: its fields by both of the
// names protojson accepts.
type schema struct {
	byName map[string]*field
}

type field struct {
	num      protowire.Number
	index    int // bit in an object's seen fields
	kind     protoreflect.Kind
	list     bool
	oneof    protoreflect.OneofDescriptor
	hexID    bool    // bytes written in hex: OTLP/JSON's trace and span IDs
	message  *schema // for message fields
	wireType protowire.Type
}

var requestSchema = schemaOf((&collectorpb.ExportTraceServiceRequest{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*schema{})

// schemaOf builds the schema of md from its descriptor, so that it has
// every field of the OTLP version cairn is built with.
func schemaOf(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*schema) *schema {
	if s, ok := seen[md.FullName()]; ok {
		return s
	}
	s := &schema{byName: map[string]*field{}}
	seen[md.FullName()] = s
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		f := &field{num: fd.Number(), index: i, kind: fd.Kind(), list: fd.IsList(), oneof: fd.ContainingOneof(),
			hexID: fd.Kind() == protoreflect.BytesKind && isIDField([]byte(fd.JSONName()))}
		switch fd.Kind() {
		case protoreflect.MessageKind:
			f.message = schemaOf(fd.Message(), seen)
			f.wireType = protowire.BytesType
		case protoreflect.StringKind, protoreflect.BytesKind:
			f.wireType = protowire.BytesType
		case protoreflect.Fixed64Kind, protoreflect.DoubleKind:
			f.wireType = protowire.Fixed64Type
		case protoreflect.Fixed32Kind:
			f.wireType = protowire.Fixed32Type
		case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Int64Kind,
			protoreflect.Uint32Kind, protoreflect.Uint64Kind:
			f.wireType = protowire.VarintType
		default:
			continue // left to protojson, as an unknown name is
		}
		if i >= 64 || fd.IsMap() || f.list && f.wireType != protowire.BytesType {
			continue // no OTLP trace message has these
		}
		s.byName[fd.JSONName()] = f
		s.byName[string(fd.Name())] = f
	}
	return s
}

type transcoder struct {
	doc []byte
	i   int
	out []byte
	// members are where the fields of the objects being encoded start in
	// out, innermost object last; scratch is room to reorder them.
	members []member
	scratch []byte
	chunks  []chunk
}

type member struct {
	num   protowire.Number
	start int
}

// chunk is a member's field in scratch.
type chunk struct {
	num        protowire.Number
	start, end int
}

func (t *transcoder) space() {
	for t.i < len(t.doc) && isSpace(t.doc[t.i]) {
		t.i++
	}
}

// next skips space and reports whether the next byte is c, taking it if so.
func (t *transcoder) next(c byte) bool {
	t.space()
	if t.i < len(t.doc) && t.doc[t.i] == c {
		t.i++
		return true
	}
	return false
}

// object encodes the members of the object at t.i as fields of s.
func (t *transcoder) object(s *schema, depth int) error {
	if depth > maxDepth || !t.next('{') {
		return errLeft
	}
	if t.next('}') {
		return nil
	}
	var seen uint64
	var oneof protoreflect.OneofDescriptor
	base := len(t.members)
	defer func() { t.members = t.members[:base] }()
	for {
		t.space()
		key, err := t.rawString()
		if err != nil {
			return err
		}
		f := s.byName[string(key)]
		if f == nil || seen&(1<<f.index) != 0 || !t.next(':') {
			return errLeft // unknown, given twice, or not JSON
		}
		seen |= 1 << f.index
		if f.oneof != nil {
			if oneof != nil {
				return errLeft // protojson refuses a second member of a oneof
			}
			oneof = f.oneof
		}
		t.space()
		mark := len(t.out)
		t.members = append(t.members, member{f.num, mark})
		if f.list {
			err = t.list(f, depth)
		} else {
			err = t.value(f, depth)
		}
		if err != nil {
			return err
		}
		if !f.list && f.oneof == nil && f.message == nil && isZero(f.wireType, t.out[mark+protowire.SizeTag(f.num):]) {
			t.out = t.out[:mark] // as protobuf's encoder leaves out a proto3 field at its default
		}
		if t.next('}') {
			t.order(t.members[base:])
			return nil
		}
		if !t.next(',') {
			return errLeft
		}
	}
}

func (t *transcoder) list(f *field, depth int) error {
	if !t.next('[') {
		return errLeft
	}
	if t.next(']') {
		return nil
	}
	for {
		t.space()
		if err := t.value(f, depth); err != nil {
			return err
		}
		if t.next(']') {
			return nil
		}
		if !t.next(',') {
			return errLeft
		}
	}
}

// value encodes the value at t.i as field f.
func (t *transcoder) value(f *field, depth int) error {
	if t.i >= len(t.doc) {
		return errLeft
	}
	switch f.kind {
	case protoreflect.MessageKind:
		t.out = protowire.AppendTag(t.out, f.num, protowire.BytesType)
		mark := t.openLength()
		if err := t.object(f.message, depth+1); err != nil {
			return err
		}
		t.closeLength(mark)
		return nil
	case protoreflect.StringKind:
		t.out = protowire.AppendTag(t.out, f.num, protowire.BytesType)
		return t.stringValue()
	case protoreflect.BytesKind:
		s, err := t.rawString()
		if err != nil {
			return err
		}
		t.out = protowire.AppendTag(t.out, f.num, protowire.BytesType)
		if f.hexID {
			if len(s)%2 != 0 {
				return errLeft
			}
			t.out = protowire.AppendVarint(t.out, uint64(len(s)/2))
			n := len(t.out)
			t.out = append(t.out, make([]byte, len(s)/2)...)
			if _, err := hex.Decode(t.out[n:], s); err != nil {
				return errLeft
			}
			return nil
		}
		// protojson also takes URL-safe and unpadded base64; those are
		// left to it.
		n := base64.StdEncoding.DecodedLen(len(s))
		mark := t.openLength()
		t.out = append(t.out, make([]byte, n)...)
		got, err := base64.StdEncoding.Decode(t.out[mark+lengthRoom:], s)
		if err != nil {
			return errLeft
		}
		t.out = t.out[:mark+lengthRoom+got]
		t.closeLength(mark)
		return nil
	case protoreflect.BoolKind:
		switch {
		case t.literal("true"):
			t.out = protowire.AppendVarint(protowire.AppendTag(t.out, f.num, protowire.VarintType), 1)
		case t.literal("false"):
			t.out = protowire.AppendVarint(protowire.AppendTag(t.out, f.num, protowire.VarintType), 0)
		default:
			return errLeft
		}
		return nil
	case protoreflect.DoubleKind:
		tok := t.numberToken()
		if !IsNumber(tok) {
			return errLeft
		}
		v, err := strconv.ParseFloat(string(tok), 64)
		if err != nil {
			return errLeft
		}
		t.out = protowire.AppendFixed64(protowire.AppendTag(t.out, f.num, protowire.Fixed64Type), math.Float64bits(v))
		return nil
	}
	// An integer: a plain number, or for every kind but an enum the same
	// digits quoted.
	var tok []byte
	if t.doc[t.i] == '"' && f.kind != protoreflect.EnumKind {
		s, err := t.rawString()
		if err != nil {
			return err
		}
		tok = s
	} else {
		tok = t.numberToken()
	}
	neg := len(tok) > 0 && tok[0] == '-'
	digits := tok
	if neg {
		digits = tok[1:]
	}
	if len(digits) == 0 || len(digits) > 1 && digits[0] == '0' {
		return errLeft
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return errLeft
		}
	}
	switch f.kind {
	case protoreflect.Int64Kind:
		v, err := strconv.ParseInt(string(tok), 10, 64)
		if err != nil {
			return errLeft
		}
		t.out = protowire.AppendVarint(protowire.AppendTag(t.out, f.num, protowire.VarintType), uint64(v))
		return nil
	case protoreflect.Int32Kind, protoreflect.EnumKind:
		v, err := strconv.ParseInt(string(tok), 10, 32)
		if err != nil {
			return errLeft
		}
		t.out = protowire.AppendVarint(protowire.AppendTag(t.out, f.num, protowire.VarintType), uint64(v))
		return nil
	}
	if neg {
		return errLeft
	}
	bits := 64
	if f.kind == protoreflect.Uint32Kind || f.kind == protoreflect.Fixed32Kind {
		bits = 32
	}
	v, err := strconv.ParseUint(string(digits), 10, bits)
	if err != nil {
		return errLeft
	}
	t.out = protowire.AppendTag(t.out, f.num, f.wireType)
	switch f.wireType {
	case protowire.Fixed64Type:
		t.out = protowire.AppendFixed64(t.out, v)
	case protowire.Fixed32Type:
		t.out = protowire.AppendFixed32(t.out, uint32(v))
	default:
		t.out = protowire.AppendVarint(t.out, v)
	}
	return nil
}

// order puts the fields of an object, written in the order of its members,
// in the order of their numbers, as protobuf encoders write them: the
// store reads a span whose fields come in order without walking it whole,
// and compresses spans of one shape better. Stable, so a repeated field's
// values keep their order.
func (t *transcoder) order(ms []member) {
	byNum := func(a, b member) int { return int(a.num) - int(b.num) }
	if slices.IsSortedFunc(ms, byNum) {
		return
	}
	start := ms[0].start
	t.scratch = append(t.scratch[:0], t.out[start:]...)
	// A member's field runs to the next member's start, the last to the end.
	t.chunks = t.chunks[:0]
	for i, m := range ms {
		end := len(t.out)
		if i+1 < len(ms) {
			end = ms[i+1].start
		}
		t.chunks = append(t.chunks, chunk{m.num, m.start - start, end - start})
	}
	slices.SortStableFunc(t.chunks, func(a, b chunk) int { return int(a.num) - int(b.num) })
	t.out = t.out[:start]
	for _, c := range t.chunks {
		t.out = append(t.out, t.scratch[c.start:c.end]...)
	}
}

// isZero reports whether a scalar field's encoded value is its default:
// 0, false, or empty.
func isZero(typ protowire.Type, value []byte) bool {
	switch typ {
	case protowire.Fixed64Type:
		return string(value) == "\x00\x00\x00\x00\x00\x00\x00\x00"
	case protowire.Fixed32Type:
		return string(value) == "\x00\x00\x00\x00"
	}
	return string(value) == "\x00" // a varint 0, or a length 0
}

// lengthRoom is the most bytes a field's length takes as a varint: a
// message is under 4 GiB.
const lengthRoom = 5

// openLength reserves room for the length of what follows and returns
// where it is, for closeLength; what follows starts lengthRoom after it.
func (t *transcoder) openLength() int {
	mark := len(t.out)
	t.out = append(t.out, make([]byte, lengthRoom)...)
	return mark
}

// closeLength writes the length of what follows the room reserved at mark
// into it, and moves it up behind the varint.
func (t *transcoder) closeLength(mark int) {
	n := len(t.out) - mark - lengthRoom
	size := protowire.SizeVarint(uint64(n))
	protowire.AppendVarint(t.out[mark:mark], uint64(n))
	copy(t.out[mark+size:], t.out[mark+lengthRoom:])
	t.out = t.out[:mark+size+n]
}

func (t *transcoder) literal(s string) bool {
	if len(t.doc)-t.i >= len(s) && string(t.doc[t.i:t.i+len(s)]) == s {
		t.i += len(s)
		return true
	}
	return false
}

// numberToken takes a JSON number's bytes, nil if there is none.
func (t *transcoder) numberToken() []byte {
	start := t.i
	for t.i < len(t.doc) {
		switch c := t.doc[t.i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			t.i++
			continue
		}
		break
	}
	if t.i == start {
		return nil
	}
	return t.doc[start:t.i]
}

// IsNumber reports whether tok is a number as JSON writes one:
// ParseFloat takes more (leading zeros, a leading '+', a bare '.5', Inf,
// NaN, hex and underscores).
func IsNumber[T string | []byte](tok T) bool {
	i := 0
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch start := i; {
	case digits() == 0:
		return false
	case tok[start] == '0' && i-start > 1:
		return false
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(tok)
}

// rawString takes a string without escapes and returns its bytes, valid
// UTF-8 without control characters; anything else is left to protojson.
func (t *transcoder) rawString() ([]byte, error) {
	if t.i >= len(t.doc) || t.doc[t.i] != '"' {
		return nil, errLeft
	}
	start := t.i + 1
	j := t.plainEnd(start)
	if j == len(t.doc) || t.doc[j] != '"' || !utf8.Valid(t.doc[start:j]) {
		return nil, errLeft
	}
	t.i = j + 1
	return t.doc[start:j], nil
}

// plainEnd is the offset of the first quote, backslash or control
// character from start on, or the document's end.
func (t *transcoder) plainEnd(start int) int {
	j := start
	for j < len(t.doc) && t.doc[j] != '"' && t.doc[j] != '\\' && t.doc[j] >= 0x20 {
		j++
	}
	return j
}

// stringValue appends the string at t.i, unescaped, with its length.
func (t *transcoder) stringValue() error {
	if t.i >= len(t.doc) || t.doc[t.i] != '"' {
		return errLeft
	}
	start := t.i + 1
	j := t.plainEnd(start)
	if j < len(t.doc) && t.doc[j] == '"' {
		s := t.doc[start:j]
		if !utf8.Valid(s) {
			s = appendValidUTF8(nil, s)
		}
		t.out = protowire.AppendBytes(t.out, s)
		t.i = j + 1
		return nil
	}
	// Escapes: unescape into the output behind room for the length.
	mark := t.openLength()
	t.out = append(t.out, t.doc[start:j]...)
	for j < len(t.doc) {
		c := t.doc[j]
		switch {
		case c == '"':
			if s := t.out[mark+lengthRoom:]; !utf8.Valid(s) {
				t.out = append(t.out[:mark+lengthRoom], appendValidUTF8(nil, s)...)
			}
			t.i = j + 1
			t.closeLength(mark)
			return nil
		case c < 0x20:
			return errLeft
		case c != '\\':
			t.out = append(t.out, c)
			j++
			continue
		}
		if j+1 >= len(t.doc) {
			return errLeft
		}
		switch e := t.doc[j+1]; e {
		case '"', '\\', '/':
			t.out = append(t.out, e)
		case 'b':
			t.out = append(t.out, '\b')
		case 'f':
			t.out = append(t.out, '\f')
		case 'n':
			t.out = append(t.out, '\n')
		case 'r':
			t.out = append(t.out, '\r')
		case 't':
			t.out = append(t.out, '\t')
		case 'u':
			r, n := unicodeEscape(t.doc, j)
			if n == 0 {
				return errLeft
			}
			t.out = utf8.AppendRune(t.out, r)
			j += n
			continue
		default:
			return errLeft
		}
		j += 2
	}
	return errLeft
}
