package main

import (
	"cmp"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

const (
	barWidth     = 40
	maxNameWidth = 64
	// minRun is the fewest alike siblings collapsed into one line.
	minRun = 3
)

// waterfallOptions bound what a waterfall prints of a large trace.
type waterfallOptions struct {
	maxSpans int  // span lines; 0 for all
	depth    int  // levels of the tree, roots being the first; 0 for all
	collapse bool // runs of alike siblings as their first and a summary
}

func addWaterfallFlags(fs *flag.FlagSet) *waterfallOptions {
	var o waterfallOptions
	fs.IntVar(&o.maxSpans, "max-spans", 200, "waterfall: print at most this many spans, in tree order, and sum up the rest in one line; 0 prints all")
	fs.IntVar(&o.depth, "depth", 0, "waterfall: print this many levels of the span tree, roots being the first, and sum up each subtree cut off in one line; 0 prints all")
	fs.BoolVar(&o.collapse, "collapse", true, fmt.Sprintf("waterfall: print a run of %d or more consecutive siblings alike in service, name and subtree as the first and one summary line", minRun))
	return &o
}

type wfSpan struct {
	span     *tracepb.Span
	service  string
	children []*wfSpan
	orphan   bool
	cycle    bool // listed as a root to cut a cycle of parent IDs
	// shape is equal for spans whose subtrees are alike: same services,
	// names and root marks, in the same tree shape.
	shape   int
	subtree tally
	path    uint64 // own time on the critical path, nanoseconds
}

// tally sums up spans: how many, how many failed, their extent, and their
// time on the critical path.
type tally struct {
	spans, errors int
	from, to      uint64 // unix nanoseconds
	path          uint64
}

func (t *tally) add(u tally) {
	switch {
	case u.spans == 0:
	case t.spans == 0:
		*t = u
	default:
		t.spans += u.spans
		t.errors += u.errors
		t.path += u.path
		t.from, t.to = min(t.from, u.from), max(t.to, u.to)
	}
}

type lineKind int

const (
	spanLine  lineKind = iota
	runLine            // siblings collapsed after the first of their run
	depthLine          // the subtree below a span at --depth
	cutLine            // the spans past --max-spans
)

// wfLine is a line of a waterfall under its header: a span, or a summary
// of spans left out.
type wfLine struct {
	kind   lineKind
	prefix string
	span   *wfSpan // of a spanLine
	// Of a summary:
	label string
	note  string
	tally tally
}

// writeWaterfall prints a trace as a tree of spans by parent, each line with
// its start offset and duration in milliseconds, its own time on the
// trace's critical path, and a bar on a shared time axis. Errors are marked; spans whose parent is missing are shown as extra
// roots, marked as orphans. What opts leaves out is summed up in lines of
// its own, errors included, and named in the header.
func writeWaterfall(w io.Writer, td *tracepb.TracesData, opts waterfallOptions) error {
	spans, roots, services := spanTree(td, criticalSelf(td))
	if len(spans) == 0 {
		return nil
	}
	var whole tally
	for _, n := range spans {
		whole.add(n.own())
	}
	l := &wfLayout{opts: opts}
	l.siblings(roots, "", 1)
	lines, shown := l.cut()

	fmt.Fprintf(w, "trace %x  %s  %s  %s ms", spans[0].span.TraceId, count(len(spans), "span"), count(services, "service"), ms(whole.to-whole.from))
	if whole.errors > 0 {
		fmt.Fprintf(w, "  %s", count(whole.errors, "error"))
	}
	if shown < len(spans) {
		fmt.Fprintf(w, "  (showing %s: %s)", count(shown, "span"), l.leftOut(lines, len(spans)))
	}
	fmt.Fprintln(w)

	labels := make([]string, len(lines))
	width := 0
	for i, ln := range lines {
		label := ln.label
		if ln.kind == spanLine {
			label = ln.span.service + ": " + ln.span.span.Name
		}
		labels[i] = truncate(ln.prefix+label, maxNameWidth)
		width = max(width, utf8.RuneCountInString(labels[i]))
	}
	fmt.Fprintf(w, "\n%12s %12s %9s  %-*s  %s\n", "start ms", "duration ms", "path ms", width, "span", "timeline")
	for i, ln := range lines {
		pad := strings.Repeat(" ", width-utf8.RuneCountInString(labels[i]))
		if ln.kind != spanLine {
			t := ln.tally
			fmt.Fprintf(w, "%12s %12s %9s  %s%s  %s  %s", "", "", pathMS(t.path), labels[i], pad, bar(t.from-whole.from, t.to-t.from, whole.to-whole.from, "░"), ln.note)
			if t.errors > 0 {
				fmt.Fprintf(w, "  ✗ %s", count(t.errors, "error"))
			}
			fmt.Fprintln(w)
			continue
		}
		s := ln.span.span
		off := s.StartTimeUnixNano - whole.from
		fmt.Fprintf(w, "%12s %12s %9s  %s%s  %s", ms(off), ms(duration(s)), pathMS(ln.span.path), labels[i], pad, bar(off, duration(s), whole.to-whole.from, "█"))
		if isError(s) {
			fmt.Fprint(w, "  ✗ error")
			if m := s.GetStatus().GetMessage(); m != "" {
				fmt.Fprintf(w, ": %s", truncate(m, 80))
			}
		}
		switch {
		case ln.span.orphan:
			fmt.Fprintf(w, "  (orphan: parent %s not in trace)", hex.EncodeToString(s.ParentSpanId))
		case ln.span.cycle:
			fmt.Fprintf(w, "  (parent %s is below it: a cycle of parent IDs)", hex.EncodeToString(s.ParentSpanId))
		}
		fmt.Fprintln(w)
	}
	return nil
}

// spanTree returns the spans of a trace, with their time on the critical
// path, the roots of their tree by parent, children in order of start and
// every subtree measured, and the number of services.
func spanTree(td *tracepb.TracesData, onPath map[*tracepb.Span]uint64) (spans, roots []*wfSpan, services int) {
	byID := map[string]*wfSpan{}
	names := map[string]bool{}
	for _, rs := range td.ResourceSpans {
		svc := serviceName(rs)
		names[svc] = true
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				n := &wfSpan{span: s, service: svc, path: onPath[s]}
				spans = append(spans, n)
				byID[string(s.SpanId)] = n
			}
		}
	}
	for _, n := range spans {
		parent, ok := byID[string(n.span.ParentSpanId)]
		switch {
		case len(n.span.ParentSpanId) == 0:
			roots = append(roots, n)
		case ok && parent != n:
			parent.children = append(parent.children, n)
		default:
			n.orphan = true
			roots = append(roots, n)
		}
	}
	byStart := func(a, b *wfSpan) int {
		if a.orphan != b.orphan {
			if a.orphan {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.span.StartTimeUnixNano, b.span.StartTimeUnixNano)
	}
	slices.SortStableFunc(roots, byStart)
	for _, n := range spans {
		slices.SortStableFunc(n.children, byStart)
	}
	// Every span has one parent, so what hangs from the roots is a forest.
	shapes := map[string]int{}
	for _, r := range roots {
		measure(r, shapes)
	}
	// A span not measured yet is in a cycle of parent IDs, or below one.
	// Each cycle is cut above a span of it, which is listed as a root.
	for _, n := range spans {
		if n.subtree.spans > 0 {
			continue
		}
		up := map[*wfSpan]bool{}
		for !up[n] {
			up[n] = true
			n = byID[string(n.span.ParentSpanId)]
		}
		parent := byID[string(n.span.ParentSpanId)]
		parent.children = slices.DeleteFunc(parent.children, func(c *wfSpan) bool { return c == n })
		n.cycle = true
		measure(n, shapes)
		roots = append(roots, n)
	}
	return spans, roots, len(names)
}

// measure fills in the shape and tally of n's subtree. Shapes are numbered
// by a key of the span's own fields and its children's shapes, so that
// alike subtrees are told apart from others exactly, in one pass.
func measure(n *wfSpan, shapes map[string]int) {
	n.subtree = n.own()
	key := []string{n.service, n.span.Name, strconv.FormatBool(n.orphan), strconv.FormatBool(n.cycle)}
	for _, c := range n.children {
		measure(c, shapes)
		n.subtree.add(c.subtree)
		key = append(key, strconv.Itoa(c.shape))
	}
	k := strings.Join(key, "\x00")
	shape, ok := shapes[k]
	if !ok {
		shape = len(shapes)
		shapes[k] = shape
	}
	n.shape = shape
}

// wfLayout lays out the lines of a waterfall in tree order.
type wfLayout struct {
	opts  waterfallOptions
	lines []wfLine
}

// siblings lays out the children of one span, or the roots, at level depth;
// prefix is what their lines start with.
func (l *wfLayout) siblings(nodes []*wfSpan, prefix string, depth int) {
	for i := 0; i < len(nodes); {
		run := 1
		if l.opts.collapse {
			for i+run < len(nodes) && nodes[i+run].shape == nodes[i].shape {
				run++
			}
			if run < minRun {
				run = 1
			}
		}
		last := i+run == len(nodes)
		branch, cont := branches(prefix, depth, last && run == 1)
		l.span(nodes[i], branch, cont, depth)
		if run > 1 {
			branch, _ = branches(prefix, depth, last)
			l.lines = append(l.lines, runSummary(nodes[i+1:i+run], branch))
		}
		i += run
	}
}

// branches returns the prefix of a span's line and of its children's.
func branches(prefix string, depth int, last bool) (branch, cont string) {
	switch {
	case depth == 1:
		return "", ""
	case last:
		return prefix + "└─ ", prefix + "   "
	default:
		return prefix + "├─ ", prefix + "│  "
	}
}

func (l *wfLayout) span(n *wfSpan, prefix, childPrefix string, depth int) {
	l.lines = append(l.lines, wfLine{kind: spanLine, prefix: prefix, span: n})
	if len(n.children) == 0 {
		return
	}
	if depth == l.opts.depth {
		var below tally
		for _, c := range n.children {
			below.add(c.subtree)
		}
		l.lines = append(l.lines, wfLine{kind: depthLine, prefix: childPrefix + "└─ ",
			label: "… " + count(below.spans, "span") + " below", note: fmt.Sprintf("(--depth %d)", depth), tally: below})
		return
	}
	l.siblings(n.children, childPrefix, depth+1)
}

// runSummary sums up the spans of a run after its first, and their
// subtrees.
func runSummary(run []*wfSpan, prefix string) wfLine {
	var t tally
	shortest, longest := duration(run[0].span), duration(run[0].span)
	for _, n := range run {
		t.add(n.subtree)
		shortest, longest = min(shortest, duration(n.span)), max(longest, duration(n.span))
	}
	note := "each "
	if size := run[0].subtree.spans; size > 1 {
		note += count(size, "span") + ", "
	}
	note += ms(shortest)
	if longest > shortest {
		note += "–" + ms(longest)
	}
	note += " ms"
	if run[0].orphan {
		note += ", orphans"
	}
	return wfLine{kind: runLine, prefix: prefix, label: fmt.Sprintf("… ×%d more %s: %s", len(run), run[0].service, run[0].span.Name), note: note, tally: t}
}

// cut keeps the lines up to the last of --max-spans span lines, sums up the
// rest in one line, and returns the lines and the number of spans shown.
func (l *wfLayout) cut() ([]wfLine, int) {
	shown := 0
	for i, ln := range l.lines {
		if ln.kind != spanLine {
			continue
		}
		if shown == l.opts.maxSpans && l.opts.maxSpans > 0 {
			var rest tally
			for _, r := range l.lines[i:] {
				if r.kind == spanLine {
					rest.add(r.span.own())
				} else {
					rest.add(r.tally)
				}
			}
			return append(l.lines[:i:i], wfLine{kind: cutLine, label: "… " + count(rest.spans, "more span"),
				note: fmt.Sprintf("(--max-spans %d)", l.opts.maxSpans), tally: rest}), shown
		}
		shown++
	}
	return l.lines, shown
}

// leftOut says how many of the total spans each option left out of lines,
// and which flags show them all: those that would leave any out of the
// whole tree, whatever the others show of it.
func (l *wfLayout) leftOut(lines []wfLine, total int) string {
	var left [cutLine + 1]int
	for _, ln := range lines {
		left[ln.kind] += ln.tally.spans
	}
	var would [cutLine + 1]bool
	for _, ln := range l.lines {
		would[ln.kind] = true
	}
	would[cutLine] = l.opts.maxSpans > 0 && total > l.opts.maxSpans
	var parts, flags []string
	for _, o := range []struct {
		kind       lineKind
		what, flag string
	}{
		{runLine, "collapsed", "--collapse=false"},
		{depthLine, fmt.Sprintf("below --depth %d", l.opts.depth), "--depth 0"},
		{cutLine, fmt.Sprintf("past --max-spans %d", l.opts.maxSpans), "--max-spans 0"},
	} {
		if left[o.kind] > 0 {
			parts = append(parts, thousands(left[o.kind])+" "+o.what)
		}
		if would[o.kind] {
			flags = append(flags, o.flag)
		}
	}
	return strings.Join(parts, ", ") + "; " + strings.Join(flags, " ") + " shows all"
}

func serviceName(rs *tracepb.ResourceSpans) string {
	for _, kv := range rs.GetResource().GetAttributes() {
		if kv.Key == "service.name" {
			return kv.GetValue().GetStringValue()
		}
	}
	return "unknown_service"
}

func isError(s *tracepb.Span) bool {
	return s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR
}

func duration(s *tracepb.Span) uint64 {
	if s.EndTimeUnixNano > s.StartTimeUnixNano {
		return s.EndTimeUnixNano - s.StartTimeUnixNano
	}
	return 0
}

// pathMS is a time on the critical path in milliseconds, blank if none.
func pathMS(nanos uint64) string {
	if nanos == 0 {
		return ""
	}
	return ms(nanos)
}

// own is the tally of one span.
func (n *wfSpan) own() tally {
	s := n.span
	t := tally{spans: 1, from: s.StartTimeUnixNano, to: s.StartTimeUnixNano + duration(s), path: n.path}
	if isError(s) {
		t.errors = 1
	}
	return t
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return thousands(n) + " " + noun + "s"
}

// thousands writes n with commas between groups of three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func ms(nanos uint64) string { return fmt.Sprintf("%.3f", float64(nanos)/1e6) }

// bar draws an extent on a barWidth-cell axis of length total, in fill.
func bar(off, dur, total uint64, fill string) string {
	if total == 0 {
		return "│"
	}
	from := int(off * barWidth / total)
	to := int((off + dur) * barWidth / total)
	from = min(from, barWidth-1)
	to = max(to, from+1)
	return strings.Repeat("·", from) + strings.Repeat(fill, to-from) + strings.Repeat("·", barWidth-to)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
