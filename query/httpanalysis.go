package query

import (
	"context"
	"encoding/hex"
	"math"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	traceanalysis "cairn/query/analysis"
	"cairn/query/analysispb"
)

// criticalPathJSON is the critical path of a trace: the segments of the
// spans that held it up, in time order, and the time each operation spent
// on it.
type criticalPathJSON struct {
	TraceID    string              `json:"trace_id"`
	DurationMS float64             `json:"duration_ms"`
	Segments   []pathSegmentJSON   `json:"segments"`
	Operations []operationSelfJSON `json:"operations"`
}

type pathSegmentJSON struct {
	SpanID        string `json:"span_id"`
	Service       string `json:"service"`
	Operation     string `json:"operation"`
	StartUnixNano string `json:"start_unix_nano"`
	EndUnixNano   string `json:"end_unix_nano"`
}

type operationSelfJSON struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	SelfMS    float64 `json:"self_ms"`
	Share     float64 `json:"share"`
}

func (s *service) httpCriticalPath(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r); err != nil {
		return err
	}
	raw, err := hex.DecodeString(r.PathValue("id"))
	if err != nil || len(raw) != 16 {
		return badRequest("trace ID %q is not 32 hex digits", r.PathValue("id"))
	}
	resp, err := rootCause{service: s}.CriticalPath(ctx, &analysispb.CriticalPathRequest{TraceId: raw})
	if err != nil {
		return err
	}
	out := criticalPathJSON{TraceID: hex.EncodeToString(resp.TraceId), DurationMS: resp.DurationMs,
		Segments: []pathSegmentJSON{}, Operations: []operationSelfJSON{}}
	for _, sg := range resp.Segments {
		out.Segments = append(out.Segments, pathSegmentJSON{hex.EncodeToString(sg.SpanId), sg.Service, sg.Operation,
			strconv.FormatUint(sg.StartUnixNano, 10), strconv.FormatUint(sg.EndUnixNano, 10)})
	}
	for _, o := range resp.Operations {
		out.Operations = append(out.Operations, operationSelfJSON{o.Service, o.Operation, o.SelfMs, o.Share})
	}
	return writeJSON(w, http.StatusOK, out)
}

// timeParam reads an RFC 3339 time parameter; nil if absent.
func timeParam(r *http.Request, name string) (*timestamppb.Timestamp, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil, nil
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, badRequest("%s %q is not an RFC 3339 time such as 2026-11-21T10:00:00Z", name, v)
	}
	return timestamppb.New(at), nil
}

// windowParams reads a window given as start and end, or as since, the
// time before now.
func windowParams(r *http.Request, now time.Time) (start, end *timestamppb.Timestamp, err error) {
	if since := r.URL.Query().Get("since"); since != "" {
		if r.URL.Query().Get("start") != "" || r.URL.Query().Get("end") != "" {
			return nil, nil, badRequest("give since or start/end, not both")
		}
		d, err := time.ParseDuration(since)
		if err != nil || d <= 0 {
			return nil, nil, badRequest("since %q is not a positive duration such as 15m or 1h", since)
		}
		return timestamppb.New(now.Add(-d)), timestamppb.New(now), nil
	}
	if start, err = timeParam(r, "start"); err != nil {
		return nil, nil, err
	}
	end, err = timeParam(r, "end")
	return start, end, err
}

// quantileParams reads the repeated quantile parameter.
func quantileParams(r *http.Request) ([]float64, error) {
	var qs []float64
	for _, v := range r.URL.Query()["quantile"] {
		q, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, badRequest("quantile %q is not a number", v)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

type quantileJSON struct {
	Quantile   float64 `json:"quantile"`
	DurationMS float64 `json:"duration_ms"`
}

func quantilesJSON(qs []*analysispb.Quantile) []quantileJSON {
	out := []quantileJSON{}
	for _, q := range qs {
		out = append(out, quantileJSON{q.Quantile, q.DurationMs})
	}
	return out
}

type exemplarJSON struct {
	TraceID    string  `json:"trace_id"`
	DurationMS float64 `json:"duration_ms"`
}

func exemplarsJSON(es []*analysispb.Exemplar) []exemplarJSON {
	out := []exemplarJSON{}
	for _, e := range es {
		out = append(out, exemplarJSON{hex.EncodeToString(e.TraceId), e.DurationMs})
	}
	return out
}

type spanMetricsSeriesJSON struct {
	Service   string `json:"service"`
	Operation string `json:"operation"`
	SpanKind  string `json:"span_kind"`
	Overflow  bool   `json:"overflow"`
	// SpanNames: the operation is the shape of this many span names (see
	// shape_names); 0 for one name.
	SpanNames int                    `json:"span_names,omitempty"`
	Points    []spanMetricsPointJSON `json:"points"`
}

type spanMetricsPointJSON struct {
	Time          string         `json:"time"`
	Calls         uint64         `json:"calls"`
	Errors        uint64         `json:"errors"`
	DurationSumMS float64        `json:"duration_sum_ms"`
	Quantiles     []quantileJSON `json:"quantiles"`
	Slowest       []exemplarJSON `json:"slowest"`
	Failing       []exemplarJSON `json:"failing"`
}

func (s *service) httpSpanMetrics(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r, "service", "operation", "span_kind*", "start", "end", "since", "step", "quantile*", "by", "shape_names"); err != nil {
		return err
	}
	v := r.URL.Query()
	req := &analysispb.GetSpanMetricsRequest{Service: v.Get("service"), Operation: v.Get("operation")}
	var err error
	if req.StartTime, req.EndTime, err = windowParams(r, time.Now()); err != nil {
		return err
	}
	for _, k := range v["span_kind"] {
		kind, ok := kindByName[k]
		if !ok || k == "" {
			return badRequest("unknown span_kind %q: want server, client, producer, consumer or internal", k)
		}
		req.SpanKinds = append(req.SpanKinds, analysispb.SpanKind(kind))
	}
	if st := v.Get("step"); st != "" {
		d, err := time.ParseDuration(st)
		if err != nil {
			return badRequest("step %q is not a duration such as 1m or 1h", st)
		}
		req.Step = durationpb.New(d)
	}
	if req.Quantiles, err = quantileParams(r); err != nil {
		return err
	}
	switch v.Get("by") {
	case "", "operation":
	case "service":
		req.ByService = true
	default:
		return badRequest("by %q is not service or operation", v.Get("by"))
	}
	if req.ShapeNames, err = boolParam(r, "shape_names"); err != nil {
		return err
	}
	a := analysis{service: s}
	args, err := a.spanMetricsArgs(req)
	if err != nil {
		return err
	}
	series, err := a.spanMetrics(ctx, args)
	if err != nil {
		return err
	}
	out := []spanMetricsSeriesJSON{}
	for _, se := range series {
		sj := spanMetricsSeriesJSON{Service: se.Service, Operation: se.Operation, SpanKind: kindName(int32(se.SpanKind)),
			Overflow: se.Overflow, SpanNames: int(se.SpanNames), Points: []spanMetricsPointJSON{}}
		for _, p := range se.Points {
			sj.Points = append(sj.Points, spanMetricsPointJSON{Time: p.Time.AsTime().UTC().Format(time.RFC3339), Calls: p.Calls,
				Errors: p.Errors, DurationSumMS: p.DurationSumMs, Quantiles: quantilesJSON(p.Quantiles),
				Slowest: exemplarsJSON(p.Slowest), Failing: exemplarsJSON(p.Failing)})
		}
		out = append(out, sj)
	}
	return writeJSON(w, http.StatusOK, struct {
		Series []spanMetricsSeriesJSON `json:"series"`
	}{out})
}

type serviceGraphEdgeJSON struct {
	Parent        string         `json:"parent"`
	Child         string         `json:"child"`
	Virtual       bool           `json:"virtual"`
	Calls         uint64         `json:"calls"`
	Errors        uint64         `json:"errors"`
	DurationSumMS float64        `json:"duration_sum_ms"`
	Quantiles     []quantileJSON `json:"quantiles"`
}

func (s *service) httpServiceGraph(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r, "start", "end", "since", "quantile*"); err != nil {
		return err
	}
	req := &analysispb.GetServiceGraphRequest{}
	var err error
	if req.StartTime, req.EndTime, err = windowParams(r, time.Now()); err != nil {
		return err
	}
	if req.Quantiles, err = quantileParams(r); err != nil {
		return err
	}
	resp, err := analysis{service: s}.GetServiceGraph(ctx, req)
	if err != nil {
		return err
	}
	edges := []serviceGraphEdgeJSON{}
	for _, e := range resp.Edges {
		edges = append(edges, serviceGraphEdgeJSON{e.Parent, e.Child, e.Virtual, e.Calls, e.Errors, e.DurationSumMs, quantilesJSON(e.Quantiles)})
	}
	return writeJSON(w, http.StatusOK, struct {
		Edges []serviceGraphEdgeJSON `json:"edges"`
	}{edges})
}

// diagnoseHTTPJSON is a diagnosis as `cairn diagnose --format json` writes
// it, with the sentence naming its cause and the latencies of the
// operation in each window's sample.
type diagnoseHTTPJSON struct {
	DiagnosisJSON
	Cause   string            `json:"cause"`
	Latency latencyHistograms `json:"latency"`
}

// latencyHistograms counts the durations of an operation's spans in the
// two samples, in buckets common to both.
type latencyHistograms struct {
	// BoundsMS are the buckets' bounds: bucket i holds durations from
	// BoundsMS[i] up to BoundsMS[i+1].
	BoundsMS []float64 `json:"bounds_ms"`
	Window   []int     `json:"window"`
	Baseline []int     `json:"baseline"`
}

// histogramBuckets is how many buckets the latency histograms have,
// spaced evenly on a log scale between the shortest and longest span.
const histogramBuckets = 30

func histograms(window, baseline []*traceanalysis.Trace, service, operation string) latencyHistograms {
	durations := func(ts []*traceanalysis.Trace) []uint64 {
		var out []uint64
		for _, t := range ts {
			for i := range t.Spans {
				if sp := &t.Spans[i]; sp.Service == service && sp.Name == operation {
					out = append(out, sp.Duration())
				}
			}
		}
		return out
	}
	w, b := durations(window), durations(baseline)
	h := latencyHistograms{BoundsMS: []float64{}, Window: []int{}, Baseline: []int{}}
	if len(w)+len(b) == 0 {
		return h
	}
	lo, hi := uint64(math.MaxUint64), uint64(0)
	for _, ds := range [][]uint64{w, b} {
		for _, d := range ds {
			lo, hi = min(lo, d), max(hi, d)
		}
	}
	// Durations are at least 1µs here, so that the log scale has a floor.
	from, to := math.Log(float64(max(lo, 1000))), math.Log(float64(max(hi, 1000))*1.0001)
	if to-from < 1e-9 {
		to = from + 1e-3
	}
	for i := 0; i <= histogramBuckets; i++ {
		h.BoundsMS = append(h.BoundsMS, math.Exp(from+(to-from)*float64(i)/histogramBuckets)/1e6)
	}
	count := func(ds []uint64) []int {
		n := make([]int, histogramBuckets)
		for _, d := range ds {
			i := int((math.Log(float64(max(d, 1000))) - from) / (to - from) * histogramBuckets)
			n[min(max(i, 0), histogramBuckets-1)]++
		}
		return n
	}
	h.Window, h.Baseline = count(w), count(b)
	return h
}

func (s *service) httpDiagnose(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r, "service", "operation", "start", "end", "since", "baseline_start", "baseline_end", "errors", "sample"); err != nil {
		return err
	}
	v := r.URL.Query()
	req := &analysispb.DiagnoseRequest{Service: v.Get("service"), Operation: v.Get("operation")}
	var err error
	if req.StartTime, req.EndTime, err = windowParams(r, time.Now()); err != nil {
		return err
	}
	if req.BaselineStartTime, err = timeParam(r, "baseline_start"); err != nil {
		return err
	}
	if req.BaselineEndTime, err = timeParam(r, "baseline_end"); err != nil {
		return err
	}
	if req.Errors, err = boolParam(r, "errors"); err != nil {
		return err
	}
	if req.Sample, err = sampleParam(r); err != nil {
		return err
	}
	dg, err := rootCause{service: s}.diagnose(ctx, req)
	if err != nil {
		return err
	}
	d := DiagnosisFromAPI(dg.response(), req.Errors)
	return writeJSON(w, http.StatusOK, diagnoseHTTPJSON{DiagnosisJSON: d, Cause: d.Cause(req.Errors),
		Latency: histograms(dg.windowTraces, dg.baselineTraces, req.Service, req.Operation)})
}

// boolParam reads a parameter that is true or false; false if absent.
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s %q is not true or false", name, v)
	}
	return b, nil
}

// sampleParam reads the sample parameter: how many traces of a window to
// read; 0 for the default.
func sampleParam(r *http.Request) (int32, error) {
	n := r.URL.Query().Get("sample")
	if n == "" {
		return 0, nil
	}
	sample, err := strconv.ParseInt(n, 10, 32)
	if err != nil || sample < 1 {
		return 0, badRequest("sample %q is not a positive number", n)
	}
	return int32(sample), nil
}

func (s *service) httpCriticalPaths(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r, "service", "operation", "start", "end", "since", "sample"); err != nil {
		return err
	}
	v := r.URL.Query()
	req := &analysispb.CriticalPathsRequest{Service: v.Get("service"), Operation: v.Get("operation")}
	var err error
	if req.StartTime, req.EndTime, err = windowParams(r, time.Now()); err != nil {
		return err
	}
	if req.Sample, err = sampleParam(r); err != nil {
		return err
	}
	resp, err := rootCause{service: s}.CriticalPaths(ctx, req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, CriticalPathsFromAPI(req.Service, req.Operation, req.StartTime.AsTime(), req.EndTime.AsTime(), resp))
}
