package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query"
	"cairn/query/analysis"
	"cairn/query/analysispb"
	"cairn/query/jaegerpb"
)

const (
	// readBatch is the most traces one GetTraces call reads.
	readBatch = 100
	// fetchers is how many calls run at once.
	fetchers = 4
	// tableRows is the most rows each table of the table format prints.
	tableRows = 10
)

// The JSON of a diagnosis is the HTTP API's.
type (
	diagnoseJSON  = query.DiagnosisJSON
	windowJSON    = query.DiagnosisWindowJSON
	attributeJSON = query.AttributeScoreJSON
)

// timeRange is a time range [start, end).
type timeRange struct{ start, end time.Time }

func diagnoseCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("diagnose")
	qf := addQueryFlags(fs)
	service := fs.String("service", "", "service of the operation that regressed (required)")
	operation := fs.String("operation", "", "the operation that regressed (required)")
	since := fs.Duration("since", 0, "the regression window: this long before now")
	start := fs.String("start", "", "the regression window's start, an RFC 3339 time")
	end := fs.String("end", "", "the regression window's end, an RFC 3339 time")
	baseStart := fs.String("baseline-start", "", "the baseline's start, an RFC 3339 time; default: as long as the window, right before it")
	baseEnd := fs.String("baseline-end", "", "the baseline's end, an RFC 3339 time; default: the window's start")
	errorsMode := fs.Bool("errors", false, "diagnose a rise of the error rate rather than of latency")
	sample := fs.Int("sample", 1000, "most traces read of each window, spread over it")
	format := fs.String("format", "table", "output format: table or json")
	if _, err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := refuseNegative(fs, "since"); err != nil {
		return err
	}
	switch {
	case *service == "" || *operation == "":
		return usagef("--service and --operation name the operation to diagnose")
	case *format != "table" && *format != "json":
		return usagef("unknown format %q: want table or json", *format)
	case *sample < 10 || *sample > query.MaxSample:
		return usagef("--sample %d is not between 10 and %d", *sample, query.MaxSample)
	}
	window, baseline, err := diagnoseWindows(*since, *start, *end, *baseStart, *baseEnd, time.Now())
	if err != nil {
		return err
	}

	ctx, conn, done, err := qf.connectConn()
	if err != nil {
		return err
	}
	defer done()
	o := &analysis.DiagnoseOptions{Service: *service, Operation: *operation, Errors: *errorsMode}
	out, err := diagnoseOn(ctx, conn, o, window, baseline, *sample)
	if err != nil {
		return qf.rpcError(err)
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	writeDiagnosis(stdout, out, *service, *operation, *errorsMode, *sample)
	return nil
}

// diagnoseOn diagnoses a regression on the server, through
// cairn.analysis.v1.RootCause, or, if the server does not serve it (a
// jaeger.storage.v2 server that is not cairn), here from traces read
// through its TraceReader.
func diagnoseOn(ctx context.Context, conn grpc.ClientConnInterface, o *analysis.DiagnoseOptions, window, baseline timeRange, sample int) (diagnoseJSON, error) {
	resp, err := analysispb.NewRootCauseClient(conn).Diagnose(ctx, &analysispb.DiagnoseRequest{
		Service: o.Service, Operation: o.Operation, Errors: o.Errors, Sample: int32(sample),
		StartTime: timestamppb.New(window.start), EndTime: timestamppb.New(window.end),
		BaselineStartTime: timestamppb.New(baseline.start), BaselineEndTime: timestamppb.New(baseline.end),
	})
	if status.Code(err) == codes.Unimplemented {
		d, err := diagnose(ctx, jaegerpb.NewTraceReaderClient(conn), o, window, baseline, sample)
		return query.DiagnosisToJSON(d, window.start, window.end, baseline.start, baseline.end, o.Errors), err
	}
	if err != nil {
		return diagnoseJSON{}, err
	}
	return query.DiagnosisFromAPI(resp, o.Errors), nil
}

// diagnose samples up to sample traces of the window and of the baseline
// and diagnoses them.
func diagnose(ctx context.Context, client jaegerpb.TraceReaderClient, o *analysis.DiagnoseOptions, window, baseline timeRange, sample int) (analysis.Diagnosis, error) {
	w, err := sampleTraces(ctx, client, o.Service, o.Operation, window, sample)
	if err != nil {
		return analysis.Diagnosis{}, err
	}
	b, err := sampleTraces(ctx, client, o.Service, o.Operation, baseline, sample)
	if err != nil {
		return analysis.Diagnosis{}, err
	}
	return analysis.Diagnose(w, b, o), nil
}

// diagnoseWindows returns the regression window and the baseline the flags
// give, the baseline by default as long as the window and right before it.
func diagnoseWindows(since time.Duration, start, end, baseStart, baseEnd string, now time.Time) (window, baseline timeRange, err error) {
	if window, err = parseWindow(since, start, end, now); err != nil {
		return window, baseline, err
	}
	baseline = timeRange{window.start.Add(-window.end.Sub(window.start)), window.start}
	if baseStart != "" {
		if baseline.start, err = parseTime("baseline-start", baseStart); err != nil {
			return
		}
	}
	if baseEnd != "" {
		if baseline.end, err = parseTime("baseline-end", baseEnd); err != nil {
			return
		}
	}
	if !baseline.start.Before(baseline.end) {
		return window, baseline, usagef("the baseline's start %s is not before its end %s", baseline.start.Format(time.RFC3339), baseline.end.Format(time.RFC3339))
	}
	return window, baseline, nil
}

// parseWindow returns the window --since or --start and --end give.
func parseWindow(since time.Duration, start, end string, now time.Time) (window timeRange, err error) {
	switch {
	case since > 0 && (start != "" || end != ""):
		return window, usagef("give --since or --start and --end, not both")
	case since > 0:
		window = timeRange{now.Add(-since), now}
	case start == "" || end == "":
		return window, usagef("give the window: --since, or --start and --end")
	default:
		if window.start, err = parseTime("start", start); err != nil {
			return
		}
		if window.end, err = parseTime("end", end); err != nil {
			return
		}
	}
	if !window.start.Before(window.end) {
		return window, usagef("the window's start %s is not before its end %s", window.start.Format(time.RFC3339), window.end.Format(time.RFC3339))
	}
	return window, nil
}

func parseTime(flag, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, usagef("--%s %q is not an RFC 3339 time such as 2026-11-21T10:00:00Z", flag, s)
	}
	return t, nil
}

// sampleTraces reads up to n traces with a span of the operation that
// started in s, spread over it as the server spreads its samples
// (query.SampleFound), then reads the traces found, several calls at once.
func sampleTraces(ctx context.Context, client jaegerpb.TraceReaderClient, service, operation string, s timeRange, n int) ([]*analysis.Trace, error) {
	found, err := query.SampleFound(n, s.start, s.end, func(f *jaegerpb.FoundTraceID) string { return string(f.TraceId) },
		func(from, to time.Time, limit int) ([]*jaegerpb.FoundTraceID, error) {
			resp, err := client.FindTraceIDs(ctx, &jaegerpb.FindTraceIDsRequest{Query: &jaegerpb.TraceQueryParameters{
				ServiceName: service, OperationName: operation, SearchDepth: int32(min(limit, query.DefaultMaxSearchDepth)),
				// Search bounds are inclusive; windows are not at their end.
				StartTimeMin: timestamppb.New(from), StartTimeMax: timestamppb.New(to.Add(-time.Nanosecond)),
			}})
			return resp.GetTraceIds(), err
		})
	if err != nil {
		return nil, err
	}
	var ids []*jaegerpb.GetTraceParams
	for _, f := range found {
		ids = append(ids, &jaegerpb.GetTraceParams{TraceId: f.TraceId, StartTime: f.Start, EndTime: f.End})
	}
	batches := (len(ids) + readBatch - 1) / readBatch
	collectors := make([]analysis.Collector, batches)
	err = parallel(batches, func(i int) error {
		stream, err := client.GetTraces(ctx, &jaegerpb.GetTracesRequest{Query: ids[i*readBatch : min(len(ids), (i+1)*readBatch)]})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			collectors[i].Add(chunk)
		}
	})
	if err != nil {
		return nil, err
	}
	var traces []*analysis.Trace
	for i := range collectors {
		traces = append(traces, collectors[i].Traces()...)
	}
	return traces, nil
}

// parallel runs f(0) to f(n-1), fetchers at a time, and returns the first
// error.
func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range min(n, fetchers) {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// leftOutNote says how many traces a sample left out, if any.
func leftOutNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("  (%s left out: damaged, or over 64 MiB of spans)", count(n, "trace"))
}

// writeDiagnosis prints a diagnosis: one sentence naming the most likely
// cause and its evidence, the two windows, then the ranked operations,
// attributes and symptoms.
func writeDiagnosis(w io.Writer, d diagnoseJSON, service, operation string, errorsMode bool, sample int) {
	fmt.Fprintln(w, d.Cause(errorsMode))
	fmt.Fprintf(w, "\n%s: %s\n%-9s %-41s %8s %10s %10s %8s\n", service, operation, "", "from – to", "traces", "p50 ms", "p99 ms", "errors")
	for _, s := range []struct {
		name string
		w    windowJSON
	}{{"baseline", d.Baseline}, {"window", d.Window}} {
		note := ""
		if s.w.Traces >= sample {
			note = fmt.Sprintf("  (a sample: --sample %d)", sample)
		}
		note += leftOutNote(s.w.LeftOut)
		fmt.Fprintf(w, "%-9s %-41s %8d %10.3f %10.3f %7.1f%%%s\n", s.name, shortTime(s.w.Start)+" – "+shortTime(s.w.End), s.w.Traces, s.w.P50MS, s.w.P99MS, 100*s.w.ErrorRate, note)
	}
	if len(d.Operations) > 0 {
		what := "self ms on the critical path per trace"
		if errorsMode {
			what = "failures originating in it, share of traces"
		}
		shown := d.Operations[:min(len(d.Operations), tableRows)]
		width := len("operation")
		for _, c := range shown {
			width = max(width, utf8.RuneCountInString(truncate(c.Name(), maxNameWidth)))
		}
		fmt.Fprintf(w, "\nOperations, the most likely cause first (%s):\n%8s %12s %12s  %-*s  %s\n", what, "score", "baseline", "window", width, "operation", "exemplars")
		for i, c := range d.Operations {
			if i == tableRows {
				fmt.Fprintf(w, "… %s (--format json lists all)\n", count(len(d.Operations)-i, "more operation"))
				break
			}
			base, win := fmt.Sprintf("%.3f", c.BaselineMS), fmt.Sprintf("%.3f", c.WindowMS)
			if errorsMode {
				base, win = fmt.Sprintf("%.1f%%", 100**c.BaselineOriginRate), fmt.Sprintf("%.1f%%", 100**c.WindowOriginRate)
			}
			name := truncate(c.Name(), maxNameWidth)
			fmt.Fprintf(w, "%8.3f %12s %12s  %s%s  %s\n", c.Score, base, win, name, strings.Repeat(" ", width-utf8.RuneCountInString(name)), strings.Join(c.Exemplars, " "))
		}
	}
	selection := "slow traces"
	if errorsMode {
		selection = "failed traces"
	}
	for _, list := range []struct {
		title string
		attrs []attributeJSON
	}{
		{"Attributes of " + selection + ", the most likely cause first", d.Attributes},
		{"Symptoms, which restate the failure and are not ranked as causes", d.Symptoms},
	} {
		if len(list.attrs) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n%8s %8s %9s  %s\n", list.title, "score", "window", "baseline", "attribute")
		for i, a := range list.attrs {
			if i == tableRows {
				fmt.Fprintf(w, "… %s (--format json lists all)\n", count(len(list.attrs)-i, "more attribute"))
				break
			}
			fmt.Fprintf(w, "%8.3f %7.1f%% %8.1f%%  %s\n", a.Score, 100*a.WindowShare, 100*a.BaselineShare, truncate(a.Name(), 2*maxNameWidth))
			if len(a.Aliases) > 0 {
				// Values on exactly the same traces: the same finding.
				fmt.Fprintf(w, "%29s%s\n", "", truncate("alias "+a.AliasNames(), 2*maxNameWidth))
			}
		}
	}
}

func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.Format("2006-01-02 15:04:05")
}
