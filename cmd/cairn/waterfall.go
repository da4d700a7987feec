package main

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

const (
	barWidth     = 40
	maxNameWidth = 64
)

type wfSpan struct {
	span     *tracepb.Span
	service  string
	children []*wfSpan
	orphan   bool
}

// writeWaterfall prints a trace as a tree of spans by parent, each line with
// its start offset and duration in milliseconds and a bar on a shared time
// axis. Errors are marked; spans whose parent is missing are shown as extra
// roots, marked as orphans.
func writeWaterfall(w io.Writer, td *tracepb.TracesData) error {
	var spans []*wfSpan
	byID := map[string]*wfSpan{}
	services := map[string]bool{}
	for _, rs := range td.ResourceSpans {
		svc := serviceName(rs)
		services[svc] = true
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				n := &wfSpan{span: s, service: svc}
				spans = append(spans, n)
				byID[string(s.SpanId)] = n
			}
		}
	}
	if len(spans) == 0 {
		return nil
	}
	var roots []*wfSpan
	start, end := spans[0].span.StartTimeUnixNano, spans[0].span.EndTimeUnixNano
	errs := 0
	for _, n := range spans {
		start = min(start, n.span.StartTimeUnixNano)
		end = max(end, n.span.EndTimeUnixNano)
		if isError(n.span) {
			errs++
		}
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
	total := end - start

	fmt.Fprintf(w, "trace %x  %s  %s  %s ms", spans[0].span.TraceId, count(len(spans), "span"), count(len(services), "service"), ms(total))
	if errs > 0 {
		fmt.Fprintf(w, "  %s", count(errs, "error"))
	}
	fmt.Fprintln(w)

	type line struct {
		prefix string
		n      *wfSpan
	}
	var lines []line
	var walk func(n *wfSpan, prefix, childPrefix string, depth int)
	seen := map[*wfSpan]bool{}
	walk = func(n *wfSpan, prefix, childPrefix string, depth int) {
		if seen[n] { // a cycle of parent IDs
			return
		}
		seen[n] = true
		lines = append(lines, line{prefix, n})
		for i, c := range n.children {
			if i == len(n.children)-1 {
				walk(c, childPrefix+"└─ ", childPrefix+"   ", depth+1)
			} else {
				walk(c, childPrefix+"├─ ", childPrefix+"│  ", depth+1)
			}
		}
	}
	for _, r := range roots {
		walk(r, "", "", 0)
	}
	labels := make([]string, len(lines))
	width := 0
	for i, l := range lines {
		labels[i] = truncate(l.prefix+l.n.service+": "+l.n.span.Name, maxNameWidth)
		width = max(width, utf8.RuneCountInString(labels[i]))
	}
	fmt.Fprintf(w, "\n%12s %12s  %-*s  %s\n", "start ms", "duration ms", width, "span", "timeline")
	for i, l := range lines {
		s := l.n.span
		off := s.StartTimeUnixNano - start
		dur := uint64(0)
		if s.EndTimeUnixNano > s.StartTimeUnixNano {
			dur = s.EndTimeUnixNano - s.StartTimeUnixNano
		}
		fmt.Fprintf(w, "%12s %12s  %s%s  %s", ms(off), ms(dur), labels[i],
			strings.Repeat(" ", width-utf8.RuneCountInString(labels[i])), bar(off, dur, total))
		if isError(s) {
			fmt.Fprint(w, "  ✗ error")
			if m := s.GetStatus().GetMessage(); m != "" {
				fmt.Fprintf(w, ": %s", truncate(m, 80))
			}
		}
		if l.n.orphan {
			fmt.Fprintf(w, "  (orphan: parent %s not in trace)", hex.EncodeToString(s.ParentSpanId))
		}
		fmt.Fprintln(w)
	}
	return nil
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

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func ms(nanos uint64) string { return fmt.Sprintf("%.3f", float64(nanos)/1e6) }

// bar draws a span's extent on a barWidth-cell axis of length total.
func bar(off, dur, total uint64) string {
	if total == 0 {
		return "│"
	}
	from := int(off * barWidth / total)
	to := int((off + dur) * barWidth / total)
	from = min(from, barWidth-1)
	to = max(to, from+1)
	return strings.Repeat("·", from) + strings.Repeat("█", to-from) + strings.Repeat("·", barWidth-to)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
