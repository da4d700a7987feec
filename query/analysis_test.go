package query

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query/analysispb"
	"cairn/storage"
)

// metricsStore stores, for web's "GET /" server spans, one call a minute
// for six minutes from minute0, of 1..6 ms, the third and sixth failing,
// each in a trace of its own (trace i+1), and a client span of another
// operation; then reopens the store so that they are cut. opts may be nil.
func metricsStore(t *testing.T, minute0 time.Time, opts *storage.Options) analysispb.AnalysisClient {
	t.Helper()
	dir := t.TempDir()
	db, err := storage.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var spans []*tracepb.Span
	for i := range 6 {
		start := uint64(minute0.Add(time.Duration(i)*time.Minute + time.Second).UnixNano())
		s := &tracepb.Span{TraceId: []byte{15: byte(i + 1)}, SpanId: []byte{7: byte(i + 1)}, Name: "GET /",
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(i+1)*1e6}
		if i%3 == 2 {
			s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
		}
		spans = append(spans, s)
	}
	t0 := uint64(minute0.UnixNano())
	spans = append(spans, &tracepb.Span{TraceId: []byte{15: 9}, SpanId: []byte{7: 9}, Name: "SELECT",
		Kind: tracepb.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 5e6})
	writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "web"}}},
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = storage.Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	return analysispb.NewAnalysisClient(serve(t, db))
}

func TestGetSpanMetrics(t *testing.T) {
	minute0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	client := metricsStore(t, minute0, nil)
	ctx := context.Background()
	resp, err := client.GetSpanMetrics(ctx, &analysispb.GetSpanMetricsRequest{
		Service: "web", SpanKinds: []analysispb.SpanKind{analysispb.SpanKind_SPAN_KIND_SERVER},
		StartTime: timestamppb.New(minute0.Add(30 * time.Second)), EndTime: timestamppb.New(minute0.Add(6 * time.Minute)),
		Step: durationpb.New(2 * time.Minute), Quantiles: []float64{0.5, 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Series) != 1 {
		t.Fatalf("%d series, want 1: %v", len(resp.Series), resp.Series)
	}
	s := resp.Series[0]
	if s.Service != "web" || s.Operation != "GET /" || s.SpanKind != analysispb.SpanKind_SPAN_KIND_SERVER || len(s.Points) != 3 {
		t.Fatalf("series %v", s)
	}
	for j, p := range s.Points {
		// Step j holds the calls of minutes 2j and 2j+1: of 2j+1 and 2j+2 ms.
		slow := float64(2*j + 2)
		var failing []string
		if j > 0 {
			failing = []string{fmt.Sprintf("%d ms in trace %d", 2*j+2-j%2, 2*j+2-j%2)}
		}
		var gotFailing []string
		for _, e := range p.Failing {
			gotFailing = append(gotFailing, fmt.Sprintf("%g ms in trace %d", e.DurationMs, e.TraceId[15]))
		}
		switch {
		case !p.Time.AsTime().Equal(minute0.Add(time.Duration(2*j) * time.Minute)):
			t.Errorf("point %d at %v", j, p.Time.AsTime())
		case p.Calls != 2 || p.Errors != uint64(min(j, 1)):
			t.Errorf("point %d: %d calls, %d errors", j, p.Calls, p.Errors)
		case len(p.Quantiles) != 2 || p.Quantiles[1].Quantile != 1 || p.Quantiles[1].DurationMs < slow*0.99 || p.Quantiles[1].DurationMs > slow*1.01:
			t.Errorf("point %d: quantiles %v, want the max %g ms", j, p.Quantiles, slow)
		case len(p.Slowest) != 2 || p.Slowest[0].DurationMs != slow || p.Slowest[0].TraceId[15] != byte(2*j+2):
			t.Errorf("point %d: slowest %v", j, p.Slowest)
		case fmt.Sprint(gotFailing) != fmt.Sprint(failing):
			t.Errorf("point %d: failing %v, want %v", j, gotFailing, failing)
		case p.DurationSumMs != float64(4*j+3):
			t.Errorf("point %d: sum %g ms", j, p.DurationSumMs)
		}
	}

	// Without a kind, both operations; a step as long as the window gives
	// one point.
	resp, err = client.GetSpanMetrics(ctx, &analysispb.GetSpanMetricsRequest{Service: "web",
		StartTime: timestamppb.New(minute0), EndTime: timestamppb.New(minute0.Add(10 * time.Minute)), Step: durationpb.New(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Series) != 2 || resp.Series[0].Operation != "GET /" || len(resp.Series[0].Points) != 1 || resp.Series[0].Points[0].Calls != 6 ||
		resp.Series[1].Operation != "SELECT" || resp.Series[1].Points[0].Calls != 1 {
		t.Fatalf("all kinds: %v", resp.Series)
	}
}

// TestGetSpanMetricsKeepsOverflowUnderFilters: spans that a block counted
// into an overflow series have no service or name left, so an answer
// filtered by them still holds the overflow series rather than leave their
// spans out unsaid.
func TestGetSpanMetricsKeepsOverflowUnderFilters(t *testing.T) {
	minute0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	// The block keeps one series of each status code; the rest overflow.
	client := metricsStore(t, minute0, &storage.Options{SpanMetricsMaxSeries: 1})
	window := func(req *analysispb.GetSpanMetricsRequest) *analysispb.GetSpanMetricsRequest {
		req.StartTime, req.EndTime, req.Step = timestamppb.New(minute0), timestamppb.New(minute0.Add(10*time.Minute)), durationpb.New(10*time.Minute)
		return req
	}
	for name, req := range map[string]*analysispb.GetSpanMetricsRequest{
		"none":      {},
		"service":   {Service: "web"},
		"operation": {Service: "web", Operation: "SELECT"},
		"kind":      {SpanKinds: []analysispb.SpanKind{analysispb.SpanKind_SPAN_KIND_CLIENT}},
	} {
		resp, err := client.GetSpanMetrics(context.Background(), window(req))
		if err != nil {
			t.Fatal(err)
		}
		var calls, overflowed uint64
		for _, s := range resp.Series {
			calls += s.Points[0].Calls
			if s.Overflow {
				overflowed += s.Points[0].Calls
			}
		}
		// All seven spans are web's; the one SELECT client span counts in
		// its named series or in an overflow series.
		want := map[string]uint64{"none": 7, "service": 7}[name]
		if overflowed == 0 || want > 0 && calls != want || calls < 1 {
			t.Errorf("%s: %d calls, %d overflowed, in %v", name, calls, overflowed, resp.Series)
		}
	}
}

func TestGetSpanMetricsRefuses(t *testing.T) {
	client := metricsStore(t, time.Now().Add(-time.Hour).Truncate(time.Minute), nil)
	now := time.Now()
	for name, req := range map[string]*analysispb.GetSpanMetricsRequest{
		"step not whole minutes": {Step: durationpb.New(90 * time.Second)},
		"too many points":        {StartTime: timestamppb.New(now.Add(-30 * 24 * time.Hour))},
		// 1,440 whole steps and a partial one.
		"one point too many": {StartTime: timestamppb.New(now.Add(-10081 * time.Minute)), EndTime: timestamppb.New(now),
			Step: durationpb.New(7 * time.Minute)},
		"quantile over 1": {Quantiles: []float64{1.5}},
		"unknown kind":    {SpanKinds: []analysispb.SpanKind{9}},
		"start after end": {StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(-time.Hour))},
	} {
		if _, err := client.GetSpanMetrics(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	// The window's ends are named as the caller gives them, in RFC 3339.
	end := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	_, err := client.GetSpanMetrics(context.Background(), &analysispb.GetSpanMetricsRequest{
		StartTime: timestamppb.New(end.Add(time.Hour)), EndTime: timestamppb.New(end)})
	if want := "start_time 2026-03-01T11:00:00Z is not before end_time 2026-03-01T10:00:00Z"; status.Convert(err).Message() != want {
		t.Errorf("start after end: %v, want %q", err, want)
	}
}

// TestWindowsPastTimeItself checks windows and steps at the edges of what
// times hold: a step of 292 years, and windows from year 1 or to year
// 9999, answer what the store holds in them, where they overflowed the
// count of steps, a panic that ended the server (for the service graph,
// see TestDependencies).
func TestWindowsPastTimeItself(t *testing.T) {
	minute0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	client := metricsStore(t, minute0, nil)
	ctx := context.Background()
	first, last := timestamppb.New(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)), timestamppb.New(time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC))
	for name, req := range map[string]*analysispb.GetSpanMetricsRequest{
		"step of 292 years": {Step: durationpb.New(time.Duration(math.MaxInt64).Truncate(time.Minute))},
		"year 1 to 9999":    {StartTime: first, EndTime: last, Step: durationpb.New(time.Duration(math.MaxInt64).Truncate(time.Minute))},
		"to year 9999":      {StartTime: timestamppb.New(minute0), EndTime: last, Step: durationpb.New(time.Duration(math.MaxInt64).Truncate(time.Minute))},
	} {
		resp, err := client.GetSpanMetrics(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		calls := uint64(0)
		for _, s := range resp.Series {
			for _, p := range s.Points {
				calls += p.Calls
			}
		}
		if calls != 7 {
			t.Errorf("%s: %d calls, want 7", name, calls)
		}
	}
	if _, err := client.GetSpanMetrics(ctx, &analysispb.GetSpanMetricsRequest{StartTime: first, EndTime: last}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("year 1 to 9999 by minutes: %v, want InvalidArgument", err)
	}
}

// TestSpanMetricsShapeNames merges, when asked, the series of a service's
// names that share a shape with at least nine others into one, named by
// the shape and counting the names, per kind; fewer names of a shape,
// another service's names and the overflow series stay apart, and nothing
// merges when not asked or when merged by service.
func TestSpanMetricsShapeNames(t *testing.T) {
	minute0 := time.Now().Truncate(time.Minute)
	var stored []storage.SpanMetricsSeries
	add := func(service, name string, kind uint8, overflow bool) {
		s := storage.SpanMetricsSeries{SpanSeries: storage.SpanSeries{Service: service, Name: name, Kind: kind, Overflow: overflow}}
		m := storage.SpanMinute{Minute: uint64(minute0.Unix() / 60)}
		m.Latency.Add(uint64(len(stored)+1) * 1e6)
		s.Minutes = append(s.Minutes, m)
		stored = append(stored, s)
	}
	for i := range 12 {
		add("db", fmt.Sprintf("SELECT * FROM orders WHERE id = %d", 1000+i), 3, false)
	}
	add("db", "SELECT * FROM orders WHERE id = 7", 2, false) // another kind
	for i := range 3 {
		add("db", fmt.Sprintf("step-%d", i), 1, false)
	}
	for i := range 12 {
		add("web", fmt.Sprintf("GET /users/%d", i), 2, false)
	}
	add("db", "", 3, true)
	args := spanMetricsArgs{SpanMetricsQuery: storage.SpanMetricsQuery{From: minute0, To: minute0.Add(time.Minute), Step: time.Minute},
		quantiles: defaultQuantiles, shapeNames: true}
	got := map[string]string{}
	for _, s := range args.steps(stored) {
		got[fmt.Sprintf("%s: %s (%s)", s.Service, s.Operation, s.SpanKind)] = fmt.Sprintf("%d calls, %d names", s.Points[0].Calls, s.SpanNames)
	}
	want := map[string]string{
		"db: SELECT * FROM orders WHERE id = ? (SPAN_KIND_CLIENT)": "12 calls, 13 names",
		"db: SELECT * FROM orders WHERE id = ? (SPAN_KIND_SERVER)": "1 calls, 13 names",
		"db: step-0 (SPAN_KIND_INTERNAL)":                          "1 calls, 0 names",
		"db: step-1 (SPAN_KIND_INTERNAL)":                          "1 calls, 0 names",
		"db: step-2 (SPAN_KIND_INTERNAL)":                          "1 calls, 0 names",
		"web: GET /users/? (SPAN_KIND_SERVER)":                     "12 calls, 12 names",
		"db:  (SPAN_KIND_CLIENT)":                                  "1 calls, 0 names",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("shaped series\n%v\nwant\n%v", got, want)
	}
	args.shapeNames = false
	if n := len(args.steps(stored)); n != len(stored) {
		t.Errorf("%d series without shape_names, want %d", n, len(stored))
	}
}
