package query

import (
	"cmp"
	"context"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	traceanalysis "cairn/query/analysis"
	"cairn/query/analysispb"
	"cairn/storage"
)

// analysis serves cairn.analysis.v1.
type analysis struct {
	analysispb.UnimplementedAnalysisServer
	*service
}

// Bounds of a span metrics request.
const (
	maxQuantiles = 16
	// maxPoints bounds the steps of a span metrics answer, which holds a
	// histogram (up to a few KiB) per series and step: a day of minutes, so that
	// a longer window asks for a coarser step.
	maxPoints = 24 * 60
)

var defaultQuantiles = []float64{0.5, 0.95, 0.99}

// spanMetricsArgs is a validated GetSpanMetrics request.
type spanMetricsArgs struct {
	// From and To are whole minutes. ByService merges the series of each
	// service into one, of all its operations and kinds kept; the web
	// UI's services page asks for it.
	storage.SpanMetricsQuery
	quantiles []float64
	// shapeNames merges the series of a service's names of one shape (see
	// traceanalysis.ShapeAt) into one.
	shapeNames bool
}

func (a analysis) spanMetricsArgs(req *analysispb.GetSpanMetricsRequest) (spanMetricsArgs, error) {
	var (
		args spanMetricsArgs
		err  error
	)
	if args.From, args.To, err = windowArgs(req.GetStartTime(), req.GetEndTime()); err != nil {
		return args, err
	}
	if args.Step, err = durationArg(req.GetStep(), "step"); err != nil {
		return args, err
	}
	switch {
	case args.Step == 0:
		args.Step = time.Minute
	case args.Step%time.Minute != 0:
		return args, status.Errorf(codes.InvalidArgument, "step %v is not a whole number of minutes", args.Step)
	}
	if n := args.points(); n > maxPoints {
		return args, status.Errorf(codes.InvalidArgument, "step %v gives %d points over the window, more than %d", args.Step, n, maxPoints)
	}
	if args.quantiles, err = quantileArgs(req.GetQuantiles()); err != nil {
		return args, err
	}
	var kinds [6]bool
	for _, k := range req.GetSpanKinds() {
		if k < 0 || int(k) >= len(kinds) {
			return args, status.Errorf(codes.InvalidArgument, "span kind %d is not one OTLP defines", k)
		}
		kinds[k] = true
	}
	anyKind := len(req.GetSpanKinds()) == 0
	args.Service, args.Operation, args.ByService = req.GetService(), req.GetOperation(), req.GetByService()
	args.shapeNames = req.GetShapeNames() && !args.ByService && args.Operation == ""
	args.Keep = func(s *storage.SpanSeries) bool {
		// The overflow series of a status code has no service or kind:
		// its spans may be of the ones asked for, and an answer without
		// it would undercount them and never say so.
		return s.Overflow && s.Service == "" || anyKind || kinds[s.Kind]
	}
	return args, nil
}

// windowArgs is the window of a request, in whole minutes: from the minute
// start falls in to the minute end falls in, excluded unless end is past
// its start. Default: the hour before end; end defaults to now.
func windowArgs(startTS, endTS *timestamppb.Timestamp) (from, to time.Time, err error) {
	start, err := timeArg(startTS, "start_time")
	if err != nil {
		return from, to, err
	}
	end, err := timeArg(endTS, "end_time")
	if err != nil {
		return from, to, err
	}
	// Not IsZero: 0001-01-01T00:00:00Z is the zero time, and a window
	// that starts there is a window from the first span on.
	if endTS == nil {
		end = time.Now()
	}
	if startTS == nil {
		start = end.Add(-time.Hour)
	}
	from = start.Truncate(time.Minute)
	if to = end.Truncate(time.Minute); to.Before(end) {
		to = to.Add(time.Minute)
	}
	if !from.Before(to) {
		return from, to, status.Errorf(codes.InvalidArgument, "start_time %s is not before end_time %s",
			start.UTC().Format(time.RFC3339Nano), end.UTC().Format(time.RFC3339Nano))
	}
	// Spans are timed in nanoseconds since 1970, which an int64 holds to
	// 2262: a window reaching past either has nothing more there, and
	// clamped, its length and its minutes never overflow.
	return clampTime(from), clampTime(to), nil
}

var (
	firstTime = time.Unix(0, 0)
	lastTime  = time.Unix(0, math.MaxInt64).Truncate(time.Minute)
)

func clampTime(t time.Time) time.Time {
	switch {
	case t.Before(firstTime):
		return firstTime
	case t.After(lastTime):
		return lastTime
	}
	return t
}

// quantileArgs are the quantiles a request asks for, or the default ones.
func quantileArgs(qs []float64) ([]float64, error) {
	if len(qs) == 0 {
		return defaultQuantiles, nil
	}
	if len(qs) > maxQuantiles {
		return nil, status.Errorf(codes.InvalidArgument, "%d quantiles asked, at most %d", len(qs), maxQuantiles)
	}
	for _, q := range qs {
		if !(q >= 0 && q <= 1) {
			return nil, status.Errorf(codes.InvalidArgument, "quantile %v is not in [0, 1]", q)
		}
	}
	return qs, nil
}

// GetSpanMetrics merges the stored span metrics of a window into steps.
func (a analysis) GetSpanMetrics(ctx context.Context, req *analysispb.GetSpanMetricsRequest) (*analysispb.GetSpanMetricsResponse, error) {
	args, err := a.spanMetricsArgs(req)
	if err != nil {
		return nil, err
	}
	series, err := a.spanMetrics(ctx, args)
	if err != nil {
		return nil, err
	}
	return &analysispb.GetSpanMetricsResponse{Series: series}, nil
}

func (a analysis) spanMetrics(ctx context.Context, args spanMetricsArgs) ([]*analysispb.SpanMetricsSeries, error) {
	leave, err := a.reads.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	stored, err := a.r.SpanMetrics(ctx, args.SpanMetricsQuery)
	if err != nil {
		if storage.IsCorruption(err) {
			return nil, status.Error(codes.DataLoss, err.Error())
		}
		return nil, status.Errorf(codes.Internal, "span metrics: %v", err)
	}
	return args.steps(stored), nil
}

// step is what one step of a series adds up to: all its calls, and those
// that failed.
type step struct {
	all, failed storage.SpanMinute
}

// points is how many steps the answer has: the last may be partial.
func (args spanMetricsArgs) points() int {
	d := args.To.Sub(args.From) // at most 292 years: windowArgs clamps
	n := d / args.Step
	if d%args.Step != 0 {
		n++
	}
	return int(n)
}

// steps merges stored series, which differ by status code, into series by
// service, operation and kind.
func (args spanMetricsArgs) steps(stored []storage.SpanMetricsSeries) []*analysispb.SpanMetricsSeries {
	type seriesKey struct {
		service, operation string
		kind               uint8
		overflow           bool
	}
	var (
		out   []*analysispb.SpanMetricsSeries
		steps [][]*step // by series in out, by step
		index = map[seriesKey]int{}
	)
	first := uint64(args.From.Unix() / 60)
	perStep := uint64(args.Step / time.Minute)
	nsteps := args.points()
	var shapes traceanalysis.NameShapes
	if args.shapeNames {
		for _, s := range stored {
			if !s.Overflow {
				shapes.Add(s.Service, s.Name)
			}
		}
	}
	shaped := false // some series went under a shape
	for _, s := range stored {
		k := seriesKey{s.Service, s.Name, s.Kind, s.Overflow}
		if args.ByService {
			k.operation, k.kind = "", 0
		}
		names := 0
		if shape := shapes.Shape(s.Service, s.Name); shape != "" {
			k.operation, names, shaped = shape, shapes.Names(s.Service, shape), true
		}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, &analysispb.SpanMetricsSeries{Service: k.service, Operation: k.operation,
				SpanKind: analysispb.SpanKind(k.kind), Overflow: s.Overflow, SpanNames: int32(min(names, math.MaxInt32))})
			steps = append(steps, make([]*step, nsteps))
		}
		for m := range s.Minutes {
			mi := &s.Minutes[m]
			j := (mi.Minute - first) / perStep
			st := steps[i][j]
			if st == nil {
				st = new(step)
				steps[i][j] = st
			}
			st.all.Merge(mi)
			if s.Status == statusError {
				st.failed.Merge(mi)
			}
		}
	}
	for i, series := range out {
		for j, st := range steps[i] {
			if st != nil {
				series.Points = append(series.Points, args.point(args.From.Add(time.Duration(j)*args.Step), st))
			}
		}
	}
	if shaped {
		// A shape sorts elsewhere than the names it stands for; overflow
		// series stay last.
		last := func(s *analysispb.SpanMetricsSeries) int {
			if s.Overflow {
				return 1
			}
			return 0
		}
		slices.SortStableFunc(out, func(a, b *analysispb.SpanMetricsSeries) int {
			return cmp.Or(cmp.Compare(last(a), last(b)), strings.Compare(a.Service, b.Service),
				strings.Compare(a.Operation, b.Operation), cmp.Compare(a.SpanKind, b.SpanKind))
		})
	}
	return out
}

// statusError is opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR.
const statusError = 2

func (args spanMetricsArgs) point(t time.Time, st *step) *analysispb.SpanMetricsPoint {
	p := &analysispb.SpanMetricsPoint{
		Time:          timestamppb.New(t),
		Calls:         st.all.Latency.Count(),
		Errors:        st.failed.Latency.Count(),
		DurationSumMs: float64(st.all.Latency.Sum()) / 1e6,
		Slowest:       exemplars(st.all.Slowest),
		Failing:       exemplars(st.failed.Slowest),
	}
	for _, q := range args.quantiles {
		p.Quantiles = append(p.Quantiles, &analysispb.Quantile{Quantile: q, DurationMs: st.all.Latency.Quantile(q) / 1e6})
	}
	return p
}

func exemplars(ex []storage.Exemplar) []*analysispb.Exemplar {
	out := make([]*analysispb.Exemplar, len(ex))
	for i, e := range ex {
		out[i] = &analysispb.Exemplar{TraceId: e.TraceID[:], DurationMs: float64(e.Duration) / 1e6}
	}
	return out
}

// GetServiceGraph sums the stored service graph edges of a window.
func (a analysis) GetServiceGraph(ctx context.Context, req *analysispb.GetServiceGraphRequest) (*analysispb.GetServiceGraphResponse, error) {
	from, to, err := windowArgs(req.GetStartTime(), req.GetEndTime())
	if err != nil {
		return nil, err
	}
	quantiles, err := quantileArgs(req.GetQuantiles())
	if err != nil {
		return nil, err
	}
	leave, err := a.reads.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	edges, err := a.r.ServiceGraph(ctx, from, to)
	if err != nil {
		if storage.IsCorruption(err) {
			return nil, status.Error(codes.DataLoss, err.Error())
		}
		return nil, status.Errorf(codes.Internal, "service graph: %v", err)
	}
	resp := &analysispb.GetServiceGraphResponse{Edges: make([]*analysispb.ServiceGraphEdge, len(edges))}
	for i := range edges {
		e := &edges[i]
		out := &analysispb.ServiceGraphEdge{Parent: e.Parent, Child: e.Child, Virtual: e.Virtual,
			Calls: e.Calls, Errors: e.Errors, DurationSumMs: float64(e.Latency.Sum()) / 1e6}
		for _, q := range quantiles {
			out.Quantiles = append(out.Quantiles, &analysispb.Quantile{Quantile: q, DurationMs: e.Latency.Quantile(q) / 1e6})
		}
		resp.Edges[i] = out
	}
	return resp, nil
}
