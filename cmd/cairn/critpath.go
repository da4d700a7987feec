package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query"
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
	service := fs.String("service", "", "without a trace ID: aggregate the critical paths from this service's operation")
	operation := fs.String("operation", "", "without a trace ID: the operation whose critical paths to aggregate")
	since := fs.Duration("since", 0, "without a trace ID: aggregate the traces of this long before now")
	start := fs.String("start", "", "without a trace ID: the window's start, an RFC 3339 time")
	end := fs.String("end", "", "without a trace ID: the window's end, an RFC 3339 time")
	sample := fs.Int("sample", 1000, "without a trace ID: most traces read of the window, spread over it")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return usagef("unknown format %q: want table or json", *format)
	}
	if err := refuseNegative(fs, "max-segments", "since"); err != nil {
		return err
	}
	if len(pos) == 0 {
		switch {
		case *service == "" || *operation == "":
			return usagef("give a trace ID, or --service and --operation and a window")
		case *sample < 10 || *sample > query.MaxSample:
			return usagef("--sample %d is not between 10 and %d", *sample, query.MaxSample)
		}
		window, err := parseWindow(*since, *start, *end, time.Now())
		if err != nil {
			return err
		}
		ctx, conn, done, err := qf.connectConn()
		if err != nil {
			return err
		}
		defer done()
		out, err := criticalPathsOn(ctx, conn, *service, *operation, window, *sample)
		if err != nil {
			return qf.rpcError(err)
		}
		return writeCriticalPaths(stdout, out, *format, *sample)
	}
	if *service != "" || *operation != "" {
		return usagef("give a trace ID, or --service and --operation, not both")
	}
	id, err := hex.DecodeString(pos[0])
	if err != nil || len(id) != 16 {
		return usagef("trace ID %q is not 32 hex digits", pos[0])
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

// criticalPathsOn aggregates the critical paths from an operation's spans
// in a window on the server, through cairn.analysis.v1.RootCause, or, if
// the server does not serve it, here from traces read through its
// TraceReader.
func criticalPathsOn(ctx context.Context, conn grpc.ClientConnInterface, service, operation string, w timeRange, sample int) (query.CriticalPathsJSON, error) {
	resp, err := analysispb.NewRootCauseClient(conn).CriticalPaths(ctx, &analysispb.CriticalPathsRequest{Service: service, Operation: operation,
		StartTime: timestamppb.New(w.start), EndTime: timestamppb.New(w.end), Sample: int32(sample)})
	if status.Code(err) == codes.Unimplemented {
		var traces []*analysis.Trace
		traces, err = sampleTraces(ctx, jaegerpb.NewTraceReaderClient(conn), service, operation, w, sample)
		resp = query.CriticalPathsResponse(analysis.CriticalPaths(traces, service, operation, nil))
	}
	if err != nil {
		return query.CriticalPathsJSON{}, err
	}
	return query.CriticalPathsFromAPI(service, operation, w.start, w.end, resp), nil
}

// writeCriticalPaths prints where an operation's time went in a window:
// each operation's self time on the critical paths, the most first.
func writeCriticalPaths(w io.Writer, out query.CriticalPathsJSON, format string, sample int) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	note := ""
	if out.Traces >= sample {
		note = fmt.Sprintf(" (a sample: --sample %d)", sample)
	}
	note += leftOutNote(out.LeftOut)
	fmt.Fprintf(w, "%s: %s  %s – %s  %s%s  mean %.3f ms\n\n", out.Service, out.Operation, shortTime(out.Start), shortTime(out.End),
		count(out.Traces, "trace"), note, out.MeanMS)
	fmt.Fprintf(w, "%12s %12s %12s %8s %8s  %s\n", "mean ms", "p50 ms", "p95 ms", "on path", "share", "operation")
	for _, o := range out.Operations {
		fmt.Fprintf(w, "%12.3f %12.3f %12.3f %7.1f%% %7.1f%%  %s\n", o.MeanMS, o.P50MS, o.P95MS, 100*float64(o.Traces)/float64(max(out.Traces, 1)),
			100*o.Share, truncate(o.Name(), 2*maxNameWidth))
	}
	return nil
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
	return criticalPathFromAPI(query.CriticalPathResponse(&t))
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
