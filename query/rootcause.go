package query

import (
	"context"
	"errors"
	"math"
	"slices"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	traceanalysis "cairn/query/analysis"
	"cairn/query/analysispb"
	"cairn/storage"
)

// maxAnalysisBytes bounds the encoded spans of one trace an analysis
// decodes and holds whole. (A variable, for tests.)
var maxAnalysisBytes = 64 << 20

// Bounds of the root-cause analyses.
const (
	// defaultSample is how many traces of each window a diagnosis reads
	// unless asked otherwise, and MaxSample the most.
	defaultSample = 1000
)

// rootCause serves cairn.analysis.v1's RootCause.
type rootCause struct {
	analysispb.UnimplementedRootCauseServer
	*service
}

// CriticalPath returns the critical path of a trace.
func (r rootCause) CriticalPath(ctx context.Context, req *analysispb.CriticalPathRequest) (*analysispb.CriticalPathResponse, error) {
	if len(req.GetTraceId()) != 16 {
		return nil, status.Errorf(codes.InvalidArgument, "trace_id has %d bytes, not 16", len(req.GetTraceId()))
	}
	tr, err := traceHint(req.GetStartTime(), req.GetEndTime())
	if err != nil {
		return nil, err
	}
	leave, err := r.reads.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	var c traceanalysis.Collector
	var id storage.TraceID
	copy(id[:], req.TraceId)
	var release func() // the search slot a large trace takes
	defer func() {
		if release != nil {
			release()
		}
	}()
	weight := 0
	admit := func(n int) error {
		weight += n
		switch {
		case weight > maxAnalysisBytes:
			return tooLarge(id)
		case weight > r.opts.MaxMessageBytes && release == nil:
			// As a large GetTraces does, a large trace takes a search slot.
			l, err := r.searches.enter(ctx)
			if err != nil {
				return err
			}
			release = l
		}
		return nil
	}
	found, err := r.readTrace(ctx, id, tr, &c, admit)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "trace %x not found", id)
	}
	return CriticalPathResponse(c.Traces()[0]), nil
}

// CriticalPathResponse computes the critical path of t as RootCause
// answers it; the CLI computes it so for servers that lack RootCause.
func CriticalPathResponse(t *traceanalysis.Trace) *analysispb.CriticalPathResponse {
	p := traceanalysis.CriticalPath(t, nil)
	resp := &analysispb.CriticalPathResponse{TraceId: t.ID[:], DurationMs: float64(p.End-p.Start) / 1e6}
	for _, s := range p.Segments {
		sp := &t.Spans[s.Span]
		resp.Segments = append(resp.Segments, &analysispb.PathSegment{SpanId: sp.ID[:], Service: sp.Service, Operation: sp.Name,
			StartUnixNano: s.Start, EndUnixNano: s.End})
	}
	for _, o := range p.Operations {
		resp.Operations = append(resp.Operations, &analysispb.OperationSelfTime{Service: o.Service, Operation: o.Operation,
			SelfMs: float64(o.Self) / 1e6, Share: o.Share})
	}
	return resp
}

// readTrace decodes trace id's stored spans into c and reports whether
// any is stored. admit is called before each stored fragment is decoded.
func (r rootCause) readTrace(ctx context.Context, id storage.TraceID, tr storage.TimeRange, c *traceanalysis.Collector, admit func(int) error) (bool, error) {
	var decodeErr error
	found, err := r.r.TracePieces(ctx, id, tr, r.opts.MaxMessageBytes, admit, func(t *storage.Trace) error {
		decodeErr = addPieces(c, t)
		return decodeErr
	})
	switch {
	case decodeErr != nil:
		return false, status.Errorf(codes.Internal, "decode trace %x: %v", id, decodeErr)
	case err != nil && status.Code(err) != codes.Unknown:
		return false, err // from admit
	case err != nil && ctx.Err() != nil:
		return false, ctxStatus(ctx)
	case err != nil:
		return false, readError(id, err)
	}
	return found, nil
}

// addPieces decodes a piece of a trace into c.
func addPieces(c *traceanalysis.Collector, t *storage.Trace) error {
	for _, g := range t.Groups {
		if err := c.AddEncoded(t.ID, g.Resource, g.Spans); err != nil {
			return err
		}
	}
	return nil
}

// Diagnose explains a regression of an operation from a baseline to a
// window, from a sample of each window's traces.
func (r rootCause) Diagnose(ctx context.Context, req *analysispb.DiagnoseRequest) (*analysispb.DiagnoseResponse, error) {
	dg, err := r.diagnose(ctx, req)
	if err != nil {
		return nil, err
	}
	return dg.response(), nil
}

// diagnosis is a diagnosis with its windows and the traces sampled of
// each.
type diagnosis struct {
	traceanalysis.Diagnosis
	window, baseline             timeWindow
	windowTraces, baselineTraces []*traceanalysis.Trace
	// The traces of each window found but left out of its sample.
	windowLeftOut, baselineLeftOut int
}

// response is the diagnosis as RootCause answers it.
func (dg *diagnosis) response() *analysispb.DiagnoseResponse {
	resp := diagnoseResponse(dg.Diagnosis, dg.window, dg.baseline)
	resp.Window.LeftOut, resp.Baseline.LeftOut = int32(dg.windowLeftOut), int32(dg.baselineLeftOut)
	return resp
}

func (r rootCause) diagnose(ctx context.Context, req *analysispb.DiagnoseRequest) (diagnosis, error) {
	var dg diagnosis
	var sample int
	var err error
	if dg.window, dg.baseline, sample, err = diagnoseArgs(req); err != nil {
		return dg, err
	}
	// A diagnosis searches and reads much: it holds a search slot.
	leave, err := r.searches.enter(ctx)
	if err != nil {
		return dg, err
	}
	defer leave()
	w, err := r.sample(ctx, req.Service, req.Operation, dg.window, sample)
	if err != nil {
		return dg, err
	}
	b, err := r.sample(ctx, req.Service, req.Operation, dg.baseline, sample)
	if err != nil {
		return dg, err
	}
	dg.windowTraces, dg.windowLeftOut = w.traces, w.leftOut
	dg.baselineTraces, dg.baselineLeftOut = b.traces, b.leftOut
	if len(dg.windowTraces) == 0 && len(dg.baselineTraces) == 0 {
		if dg.windowLeftOut+dg.baselineLeftOut > 0 {
			return dg, status.Errorf(codes.FailedPrecondition, "every trace found was left out (%d in the window, %d in the baseline): each is held by a damaged file (cairn check names them) or has more than the %d MiB of spans an analysis reads",
				dg.windowLeftOut, dg.baselineLeftOut, maxAnalysisBytes>>20)
		}
		return dg, r.noSuchTraces(req.Service, req.Operation, dg.window, dg.baseline)
	}
	dg.Diagnosis = traceanalysis.Diagnose(dg.windowTraces, dg.baselineTraces, &traceanalysis.DiagnoseOptions{Service: req.Service, Operation: req.Operation, Errors: req.Errors})
	return dg, nil
}

// CriticalPaths aggregates the critical paths from an operation's spans in
// a sample of a window's traces.
func (r rootCause) CriticalPaths(ctx context.Context, req *analysispb.CriticalPathsRequest) (*analysispb.CriticalPathsResponse, error) {
	if req.GetService() == "" || req.GetOperation() == "" {
		return nil, status.Error(codes.InvalidArgument, "service and operation are required")
	}
	window, err := windowArg(req.GetStartTime(), req.GetEndTime())
	if err != nil {
		return nil, err
	}
	sample, err := sampleArg(req.GetSample())
	if err != nil {
		return nil, err
	}
	leave, err := r.searches.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	s, err := r.sample(ctx, req.Service, req.Operation, window, sample)
	if err != nil {
		return nil, err
	}
	resp := CriticalPathsResponse(traceanalysis.CriticalPaths(s.traces, req.Service, req.Operation, nil))
	resp.LeftOut = int32(s.leftOut)
	return resp, nil
}

// timeWindow is [start, end).
type timeWindow struct{ start, end time.Time }

// String is the window as [start, end) in RFC 3339.
func (w timeWindow) String() string {
	return "[" + w.start.UTC().Format(time.RFC3339Nano) + ", " + w.end.UTC().Format(time.RFC3339Nano) + ")"
}

// windowArg is the window [start, end) a request names; both are required.
func windowArg(start, end *timestamppb.Timestamp) (timeWindow, error) {
	var w timeWindow
	var err error
	if w.start, err = timeArg(start, "start_time"); err != nil {
		return w, err
	}
	if w.end, err = timeArg(end, "end_time"); err != nil {
		return w, err
	}
	switch {
	case start == nil || end == nil:
		return w, status.Error(codes.InvalidArgument, "start_time and end_time are required")
	case !w.start.Before(w.end):
		return w, status.Errorf(codes.InvalidArgument, "start_time %s is not before end_time %s",
			w.start.UTC().Format(time.RFC3339Nano), w.end.UTC().Format(time.RFC3339Nano))
	}
	return w, nil
}

// MaxSample is the most traces of a window a diagnosis or a critical path
// of an operation reads, here and in the CLI.
const MaxSample = 10_000

// sampleArg is how many traces of a window a request may read.
func sampleArg(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, status.Errorf(codes.InvalidArgument, "sample %d is negative", n)
	case n == 0:
		return defaultSample, nil
	case n > MaxSample:
		// Refused rather than cut to fewer traces than asked without a
		// word, as search_depth is.
		return 0, status.Errorf(codes.InvalidArgument, "sample %d is over the maximum of %d", n, MaxSample)
	}
	return int(n), nil
}

func diagnoseArgs(req *analysispb.DiagnoseRequest) (window, baseline timeWindow, sample int, err error) {
	if req.GetService() == "" || req.GetOperation() == "" {
		return window, baseline, 0, status.Error(codes.InvalidArgument, "service and operation are required")
	}
	if window, err = windowArg(req.GetStartTime(), req.GetEndTime()); err != nil {
		return window, baseline, 0, err
	}
	if baseline.start, err = timeArg(req.GetBaselineStartTime(), "baseline_start_time"); err != nil {
		return window, baseline, 0, err
	}
	if baseline.end, err = timeArg(req.GetBaselineEndTime(), "baseline_end_time"); err != nil {
		return window, baseline, 0, err
	}
	if baseline.end.IsZero() {
		baseline.end = window.start
	}
	if baseline.start.IsZero() {
		baseline.start = baseline.end.Add(-window.end.Sub(window.start))
	}
	if !baseline.start.Before(baseline.end) {
		return window, baseline, 0, status.Error(codes.InvalidArgument, "baseline_start_time is not before baseline_end_time")
	}
	// Traces in both would count on both sides of the comparison, and
	// what changed would look smaller than it is, or like nothing.
	if baseline.start.Before(window.end) && window.start.Before(baseline.end) {
		return window, baseline, 0, status.Errorf(codes.InvalidArgument, "the baseline %s overlaps the window %s: compare the window with a time before it", baseline, window)
	}
	sample, err = sampleArg(req.GetSample())
	return window, baseline, sample, err
}

// noSuchTraces is the error of a diagnosis that found no trace of the
// operation in either window: a misspelled name, most often, which an
// empty diagnosis would not tell from a quiet service.
func (r rootCause) noSuchTraces(service, operation string, window, baseline timeWindow) error {
	ops, more, err := r.r.Operations(service)
	if err != nil {
		return status.Errorf(codes.Internal, "operations of %q: %v", service, err)
	}
	// Past the names a service's list keeps, an unlisted one may exist.
	if !more && !slices.ContainsFunc(ops, func(o storage.Operation) bool { return o.Name == operation }) {
		return status.Errorf(codes.NotFound, "service %q has no operation %q within retention (cairn operations %q lists those it has)", service, operation, service)
	}
	return status.Errorf(codes.NotFound, "no trace of %q's operation %q started in the window %s or the baseline %s", service, operation, window, baseline)
}

// sample reads up to n traces with a span of the operation that started
// in w, spread over it (SampleFound). A trace left out (sampleTrace) still
// counts towards n, so that a window of huge traces costs no more reads
// than any other; once those left out have cost more than one trace may,
// the sample ends with what it has.
func (r rootCause) sample(ctx context.Context, service, operation string, w timeWindow, n int) (sampled, error) {
	found, err := SampleFound(n, w.start, w.end, func(f storage.Found) storage.TraceID { return f.ID },
		func(from, to time.Time, limit int) ([]storage.Found, error) {
			// Search bounds are inclusive; windows are not at their end.
			found, err := r.r.Find(ctx, storage.Query{Service: service, Operation: operation, StartMin: from, StartMax: to.Add(-time.Nanosecond), Limit: limit})
			switch {
			case err != nil && ctx.Err() != nil:
				return nil, ctxStatus(ctx)
			case err != nil:
				return nil, status.Errorf(codes.Internal, "search: %v", err)
			}
			return found, nil
		})
	if err != nil {
		return sampled{}, err
	}
	var c traceanalysis.Collector
	leftOut, wasted := 0, 0
	for _, f := range found {
		if wasted > maxAnalysisBytes {
			break
		}
		switch cost, err := r.sampleTrace(ctx, f, &c); {
		case errors.Is(err, errLeftOut):
			leftOut++
			wasted += cost
		case err != nil:
			return sampled{}, err
		}
	}
	return sampled{c.Traces(), leftOut}, nil
}

// SampleFound searches [start, end) for up to n traces, spread over it. A
// search finds the most recent traces first, so the window is searched in
// slices (SampleSlices), each for its share; then the slices that had
// more than theirs are searched again, what the others lacked shared
// among them, until n are found or no slice has more: a window whose
// traffic came in a burst still yields n traces, as spread as it can be.
// id names a found trace: one that two slices find counts once.
func SampleFound[F any, ID comparable](n int, start, end time.Time, id func(F) ID, find func(from, to time.Time, limit int) ([]F, error)) ([]F, error) {
	parts, per := SampleSlices(n)
	step := end.Sub(start) / time.Duration(parts)
	var out []F
	seen := map[ID]bool{}
	limits := make([]int, parts)
	// search asks slice i for limit traces, keeps those not kept before,
	// and reports whether the slice may hold more.
	search := func(i, limit int) (more bool, err error) {
		from := start.Add(time.Duration(i) * step)
		to := from.Add(step)
		if i == parts-1 {
			to = end
		}
		found, err := find(from, to, limit)
		if err != nil {
			return false, err
		}
		limits[i] = limit
		for _, f := range found {
			if len(out) == n {
				break
			}
			if !seen[id(f)] {
				seen[id(f)] = true
				out = append(out, f)
			}
		}
		return len(found) == limit, nil
	}
	var full []int
	for i := range parts {
		more, err := search(i, per)
		if err != nil {
			return nil, err
		}
		if more {
			full = append(full, i)
		}
	}
	for len(full) > 0 && len(out) < n {
		share := (n - len(out) + len(full) - 1) / len(full)
		var still []int
		for _, i := range full {
			if len(out) == n {
				break
			}
			more, err := search(i, limits[i]+share)
			if err != nil {
				return nil, err
			}
			if more {
				still = append(still, i)
			}
		}
		full = still
	}
	return out, nil
}

// SampleSlices is how many slices a sample of n traces searches a window
// in, and how many traces it asks of each at first: as many slices as
// take 100 traces each, at least 10 (a sample of 100 read from one search
// was the 100 most recent traces, from the window's last minutes), and no
// more than n.
func SampleSlices(n int) (parts, per int) {
	const sliceTraces, minSlices = 100, 10
	parts = max(min(n, max((n+sliceTraces-1)/sliceTraces, minSlices)), 1)
	return parts, (n + parts - 1) / parts
}

// sampled is a sample of a window's traces.
type sampled struct {
	traces []*traceanalysis.Trace
	// leftOut counts the traces found but not read whole: those a damaged
	// file holds, and those larger than an analysis reads.
	leftOut int
}

// errLeftOut is sampleTrace's error for a trace it left out.
var errLeftOut = errors.New("trace left out of the sample")

// sampleTrace reads a trace of a sample into c, and says how many bytes
// of spans it decoded. A trace that a damaged file holds is left out, as
// search leaves out what it cannot read, and so is one larger than an
// analysis reads: one such trace must not stop every diagnosis of its
// operation. What was read of either is dropped.
func (r rootCause) sampleTrace(ctx context.Context, f storage.Found, c *traceanalysis.Collector) (int, error) {
	weight := 0
	admit := func(b int) error {
		if weight += b; weight > maxAnalysisBytes {
			return tooLarge(f.ID)
		}
		return nil
	}
	tr := storage.TimeRange{Start: unixNano(f.Start), End: unixNano(f.End)}
	_, err := r.readTrace(ctx, f.ID, tr, c, admit)
	if code := status.Code(err); code == codes.DataLoss || code == codes.FailedPrecondition {
		c.Drop(f.ID)
		return weight, errLeftOut
	}
	return weight, err
}

// tooLarge is the error of a trace with more spans than an analysis reads.
// No retry can read it: FailedPrecondition, not ResourceExhausted.
func tooLarge(id storage.TraceID) error {
	return status.Errorf(codes.FailedPrecondition, "trace %x holds more than the %d MiB of spans an analysis reads", id, maxAnalysisBytes>>20)
}

func diagnoseResponse(d traceanalysis.Diagnosis, window, baseline timeWindow) *analysispb.DiagnoseResponse {
	side := func(w timeWindow, s traceanalysis.WindowStats) *analysispb.DiagnoseWindow {
		return &analysispb.DiagnoseWindow{StartTime: timestamppb.New(w.start), EndTime: timestamppb.New(w.end), Traces: int32(s.Traces),
			P50Ms: float64(s.P50) / 1e6, P99Ms: float64(s.P99) / 1e6, ErrorRate: s.ErrorRate}
	}
	resp := &analysispb.DiagnoseResponse{Window: side(window, d.Window), Baseline: side(baseline, d.Baseline),
		Attributes: attributeScores(d.Attributes), Symptoms: attributeScores(d.Symptoms), WithinNoise: d.WithinNoise}
	for _, c := range d.Operations {
		cp := &analysispb.Culprit{Service: c.Service, Operation: c.Operation, Score: c.Score, BaselineMs: c.Baseline / 1e6,
			WindowMs: c.Window / 1e6, BaselineOriginRate: c.BaselineOrigin, WindowOriginRate: c.WindowOrigin,
			BaselineOnPathRate: c.BaselineOnPath, WindowOnPathRate: c.WindowOnPath, Call: c.Call, SpanNames: int32(min(c.Names, math.MaxInt32)),
			BaselineCallsPerTrace: c.BaselineCalls, WindowCallsPerTrace: c.WindowCalls,
			FallbackService: c.FallbackService, FallbackOperation: c.FallbackOperation,
			BaselineFailedRate: c.BaselineFailed, WindowFailedRate: c.WindowFailed}
		for _, id := range c.Exemplars {
			cp.Exemplars = append(cp.Exemplars, id[:])
		}
		resp.Operations = append(resp.Operations, cp)
	}
	return resp
}

func attributeScores(cs []traceanalysis.Correlation) []*analysispb.AttributeScore {
	var out []*analysispb.AttributeScore
	for _, c := range cs {
		v := c.Value
		if v == nil {
			v = &commonpb.AnyValue{}
		}
		out = append(out, &analysispb.AttributeScore{Key: c.Key, Value: v, Service: c.Service, Score: c.Score,
			WindowShare: c.SelectedShare, BaselineShare: c.BaselineShare, Aliases: c.Aliases})
	}
	return out
}
