package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"cairn/query/analysis"
)

// criticalPathJSON is the output of `cairn critical-path --format json`.
type criticalPathJSON struct {
	TraceID    string              `json:"trace_id"`
	DurationMS float64             `json:"duration_ms"`
	Segments   []segmentJSON       `json:"segments"`
	Operations []operationSelfJSON `json:"operations"`
}

type segmentJSON struct {
	SpanID        string `json:"span_id"`
	Service       string `json:"service"`
	Operation     string `json:"operation"`
	StartUnixNano uint64 `json:"start_unix_nano"`
	EndUnixNano   uint64 `json:"end_unix_nano"`
}

type operationSelfJSON struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	SelfMS    float64 `json:"self_ms"`
	Share     float64 `json:"share"`
}

func criticalPathCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("critical-path")
	qf := addQueryFlags(fs)
	format := fs.String("format", "table", "output format: table or json")
	maxSegments := fs.Int("max-segments", 100, "table: print at most this many segments, the first in time, and sum up the rest in one line; 0 prints all")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	id, err := hex.DecodeString(pos[0])
	if err != nil || len(id) != 16 {
		return usagef("trace ID %q is not 32 hex digits", pos[0])
	}
	if *format != "table" && *format != "json" {
		return usagef("unknown format %q: want table or json", *format)
	}
	if err := refuseNegative(fs, "max-segments"); err != nil {
		return err
	}
	ctx, client, done, err := qf.connect()
	if err != nil {
		return err
	}
	defer done()
	td, err := fetchTrace(ctx, client, id)
	if err != nil {
		return qf.rpcError(err)
	}
	if len(td.ResourceSpans) == 0 {
		return fmt.Errorf("trace %s not found", pos[0])
	}
	return writeCriticalPath(stdout, td, *format, *maxSegments)
}

// writeCriticalPath prints the critical path of a trace: each operation's
// self time on it, the most first, then its segments in time order, as a
// table at most maxSegments of them (0 for all).
func writeCriticalPath(w io.Writer, td *tracepb.TracesData, format string, maxSegments int) error {
	t := analysis.FromOTLP(td)
	p := analysis.CriticalPath(&t, nil)
	out := criticalPathJSON{TraceID: hex.EncodeToString(t.ID[:]), DurationMS: float64(p.End-p.Start) / 1e6,
		Segments: []segmentJSON{}, Operations: []operationSelfJSON{}}
	for _, s := range p.Segments {
		sp := &t.Spans[s.Span]
		out.Segments = append(out.Segments, segmentJSON{SpanID: hex.EncodeToString(sp.ID[:]), Service: sp.Service,
			Operation: sp.Name, StartUnixNano: s.Start, EndUnixNano: s.End})
	}
	for _, o := range p.Operations {
		out.Operations = append(out.Operations, operationSelfJSON{Service: o.Service, Operation: o.Operation,
			SelfMS: float64(o.Self) / 1e6, Share: o.Share})
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "trace %s  %s ms  critical path of %s\n\n", out.TraceID, ms(p.End-p.Start), count(len(p.Segments), "segment"))
	fmt.Fprintf(w, "%12s %12s  %s\n", "self ms", "share", "operation")
	for _, o := range p.Operations {
		fmt.Fprintf(w, "%12s %11.1f%%  %s\n", ms(o.Self), 100*o.Share, truncate(o.Service+": "+o.Operation, maxNameWidth))
	}
	fmt.Fprintf(w, "\n%12s %12s  %s\n", "start ms", "self ms", "span")
	for i, s := range p.Segments {
		if i == maxSegments && maxSegments > 0 {
			rest := p.Segments[i:]
			fmt.Fprintf(w, "%12s %12s  … %s (--max-segments %d)\n", ms(rest[0].Start-p.Start), ms(p.End-rest[0].Start), count(len(rest), "more segment"), maxSegments)
			break
		}
		sp := &t.Spans[s.Span]
		fmt.Fprintf(w, "%12s %12s  %s\n", ms(s.Start-p.Start), ms(s.End-s.Start), truncate(sp.Service+": "+sp.Name, maxNameWidth))
	}
	return nil
}

// criticalSelf returns the time each span of a trace spends on its
// critical path, for the spans on it.
func criticalSelf(td *tracepb.TracesData) map[*tracepb.Span]uint64 {
	t := analysis.FromOTLP(td)
	p := analysis.CriticalPath(&t, nil)
	// FromOTLP keeps the order of the spans in td.
	var spans []*tracepb.Span
	for _, rs := range td.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			spans = append(spans, ss.Spans...)
		}
	}
	self := map[*tracepb.Span]uint64{}
	for _, s := range p.Segments {
		self[spans[s.Span]] += s.End - s.Start
	}
	return self
}
