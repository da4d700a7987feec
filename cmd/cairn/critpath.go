package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"cairn/query/analysis"
	"cairn/query/analysispb"
	"cairn/query/jaegerpb"
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
	ctx, conn, done, err := qf.connectConn()
	if err != nil {
		return err
	}
	defer done()
	out, found, err := criticalPathOn(ctx, conn, id)
	if err != nil {
		return qf.rpcError(err)
	}
	if !found {
		return fmt.Errorf("trace %s not found", pos[0])
	}
	return writeCriticalPath(stdout, out, *format, *maxSegments)
}

// criticalPathOn returns the critical path of a trace computed on the
// server, through cairn.analysis.v1.RootCause, or, if the server does not
// serve it, here from the trace read through its TraceReader.
func criticalPathOn(ctx context.Context, conn grpc.ClientConnInterface, id []byte) (criticalPathJSON, bool, error) {
	resp, err := analysispb.NewRootCauseClient(conn).CriticalPath(ctx, &analysispb.CriticalPathRequest{TraceId: id})
	switch status.Code(err) {
	case codes.OK:
		return criticalPathFromAPI(resp), true, nil
	case codes.NotFound:
		return criticalPathJSON{}, false, nil
	case codes.Unimplemented:
		td, err := fetchTrace(ctx, jaegerpb.NewTraceReaderClient(conn), id)
		if err != nil || len(td.ResourceSpans) == 0 {
			return criticalPathJSON{}, false, err
		}
		return criticalPathOf(td), true, nil
	}
	return criticalPathJSON{}, false, err
}

// criticalPathOf computes the critical path of a trace.
func criticalPathOf(td *tracepb.TracesData) criticalPathJSON {
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
	return out
}

func criticalPathFromAPI(resp *analysispb.CriticalPathResponse) criticalPathJSON {
	out := criticalPathJSON{TraceID: hex.EncodeToString(resp.TraceId), DurationMS: resp.DurationMs,
		Segments: []segmentJSON{}, Operations: []operationSelfJSON{}}
	for _, s := range resp.Segments {
		out.Segments = append(out.Segments, segmentJSON{SpanID: hex.EncodeToString(s.SpanId), Service: s.Service,
			Operation: s.Operation, StartUnixNano: s.StartUnixNano, EndUnixNano: s.EndUnixNano})
	}
	for _, o := range resp.Operations {
		out.Operations = append(out.Operations, operationSelfJSON{Service: o.Service, Operation: o.Operation, SelfMS: o.SelfMs, Share: o.Share})
	}
	return out
}

// writeCriticalPath prints a critical path: each operation's self time on
// it, the most first, then its segments in time order, as a table at most
// maxSegments of them (0 for all).
func writeCriticalPath(w io.Writer, out criticalPathJSON, format string, maxSegments int) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "trace %s  %.3f ms  critical path of %s\n\n", out.TraceID, out.DurationMS, count(len(out.Segments), "segment"))
	fmt.Fprintf(w, "%12s %12s  %s\n", "self ms", "share", "operation")
	for _, o := range out.Operations {
		fmt.Fprintf(w, "%12.3f %11.1f%%  %s\n", o.SelfMS, 100*o.Share, truncate(o.Service+": "+o.Operation, maxNameWidth))
	}
	fmt.Fprintf(w, "\n%12s %12s  %s\n", "start ms", "self ms", "span")
	if len(out.Segments) == 0 {
		return nil
	}
	start, end := out.Segments[0].StartUnixNano, out.Segments[len(out.Segments)-1].EndUnixNano
	for i, s := range out.Segments {
		if i == maxSegments && maxSegments > 0 {
			fmt.Fprintf(w, "%12s %12s  … %s (--max-segments %d)\n", ms(s.StartUnixNano-start), ms(end-s.StartUnixNano),
				count(len(out.Segments)-i, "more segment"), maxSegments)
			break
		}
		fmt.Fprintf(w, "%12s %12s  %s\n", ms(s.StartUnixNano-start), ms(s.EndUnixNano-s.StartUnixNano), truncate(s.Service+": "+s.Operation, maxNameWidth))
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
