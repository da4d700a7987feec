package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/bench"
	"cairn/internal/grpctest"
	traceanalysis "cairn/query/analysis"
	"cairn/query/analysispb"
	"cairn/storage"
)

// rcaStore stores checkouts of the slow-db-version scenario: n before mid
// without the fault, n after it with.
func rcaStore(t *testing.T, start, mid, end time.Time, n int) (analysispb.RootCauseClient, []*tracepb.ResourceSpans) {
	t.Helper()
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := bench.RCAScenarios()[0]
	base, win := s.RCATraffic(1, n, start, mid, false), s.RCATraffic(2, n, mid, end, true)
	for _, rss := range [][]*tracepb.ResourceSpans{base, win} {
		writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: rss}))
	}
	return analysispb.NewRootCauseClient(serve(t, db)), win
}

// TestCriticalPathRPC reads a stored trace's critical path, which must be
// the one computed from the spans as written.
func TestCriticalPathRPC(t *testing.T) {
	end := time.Now().Truncate(time.Second)
	client, win := rcaStore(t, end.Add(-2*time.Minute), end.Add(-time.Minute), end, 5)
	var c traceanalysis.Collector
	c.Add(&tracepb.TracesData{ResourceSpans: win})
	want := c.Traces()[0]
	p := traceanalysis.CriticalPath(want, nil)

	resp, err := client.CriticalPath(context.Background(), &analysispb.CriticalPathRequest{TraceId: want.ID[:]})
	if err != nil {
		t.Fatal(err)
	}
	if resp.DurationMs != float64(p.End-p.Start)/1e6 || len(resp.Segments) != len(p.Segments) || len(resp.Operations) != len(p.Operations) {
		t.Fatalf("critical path of %.3f ms, %d segments, %d operations; want %.3f, %d, %d",
			resp.DurationMs, len(resp.Segments), len(resp.Operations), float64(p.End-p.Start)/1e6, len(p.Segments), len(p.Operations))
	}
	for i, s := range p.Segments {
		got, sp := resp.Segments[i], &want.Spans[s.Span]
		if string(got.SpanId) != string(sp.ID[:]) || got.StartUnixNano != s.Start || got.EndUnixNano != s.End || got.Operation != sp.Name {
			t.Errorf("segment %d: %v, want %s %d..%d", i, got, sp.Name, s.Start, s.End)
		}
	}

	for _, tc := range []struct {
		id   []byte
		code codes.Code
	}{{[]byte{15: 0xee}, codes.NotFound}, {[]byte{1, 2}, codes.InvalidArgument}} {
		if _, err := client.CriticalPath(context.Background(), &analysispb.CriticalPathRequest{TraceId: tc.id}); status.Code(err) != tc.code {
			t.Errorf("trace %x: %v, want %v", tc.id, err, tc.code)
		}
	}
}

// TestDiagnoseRPC diagnoses the scenario over the API, on a sample of each
// window, and wants the query and the version named.
func TestDiagnoseRPC(t *testing.T) {
	end := time.Now().Truncate(time.Second)
	mid, start := end.Add(-10*time.Minute), end.Add(-20*time.Minute)
	client, _ := rcaStore(t, start, mid, end, 300)
	resp, err := client.Diagnose(context.Background(), &analysispb.DiagnoseRequest{Service: bench.RCARootService, Operation: bench.RCARootOperation,
		StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end), Sample: 200})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Window.Traces != 200 || resp.Baseline.Traces != 200 || !resp.Baseline.StartTime.AsTime().Equal(start) {
		t.Errorf("window %v, baseline %v: want 200 traces each, the baseline from %v", resp.Window, resp.Baseline, start)
	}
	if len(resp.Operations) == 0 || resp.Operations[0].Operation != "SELECT inventory.stock" || len(resp.Operations[0].Exemplars) != 3 {
		t.Fatalf("operations %v, want SELECT inventory.stock first", resp.Operations)
	}
	if len(resp.Attributes) == 0 || resp.Attributes[0].Key != "service.version" || resp.Attributes[0].Value.GetStringValue() != "2.9.0" {
		t.Fatalf("attributes %v, want service.version 2.9.0 first", resp.Attributes)
	}

	// Where the window's checkouts spend their time: in SELECT most, and
	// every operation's mean self time sums to the mean duration.
	paths, err := client.CriticalPaths(context.Background(), &analysispb.CriticalPathsRequest{Service: bench.RCARootService, Operation: bench.RCARootOperation,
		StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end), Sample: 200})
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, o := range paths.Operations {
		sum += o.MeanMs
	}
	if paths.Traces != 200 || paths.Operations[0].Operation != "SELECT inventory.stock" || math.Abs(sum-paths.MeanMs) > 1e-6 {
		t.Errorf("%d traces, first %v, means summing to %.6f of %.6f ms; want 200, SELECT inventory.stock, the mean", paths.Traces, paths.Operations[0], sum, paths.MeanMs)
	}
	if _, err := client.CriticalPaths(context.Background(), &analysispb.CriticalPathsRequest{Service: "web", Operation: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("CriticalPaths without a window: %v, want InvalidArgument", err)
	}

	for _, req := range []*analysispb.DiagnoseRequest{
		{Service: "web", StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end)},
		{Service: "web", Operation: "x", StartTime: timestamppb.New(end), EndTime: timestamppb.New(mid)},
		{Service: "web", Operation: "x", StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end), Sample: -1},
		{Service: "web", Operation: "x", StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end), Sample: 10_001},
	} {
		if _, err := client.Diagnose(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}

	// A misspelled operation, an empty pair of windows and a baseline
	// that overlaps the window are told apart from a diagnosis of nothing.
	for _, tc := range []struct {
		req  *analysispb.DiagnoseRequest
		code codes.Code
		msg  string
	}{
		{&analysispb.DiagnoseRequest{Service: bench.RCARootService, Operation: "POST /chekout", StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end)},
			codes.NotFound, `service "web" has no operation "POST /chekout" within retention (cairn operations "web" lists those it has)`},
		{&analysispb.DiagnoseRequest{Service: bench.RCARootService, Operation: bench.RCARootOperation,
			StartTime: timestamppb.New(end.Add(time.Hour)), EndTime: timestamppb.New(end.Add(2 * time.Hour))},
			codes.NotFound, `no trace of "web"'s operation "POST /checkout" started in the window`},
		{&analysispb.DiagnoseRequest{Service: bench.RCARootService, Operation: bench.RCARootOperation, StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end),
			BaselineStartTime: timestamppb.New(start), BaselineEndTime: timestamppb.New(mid.Add(time.Second))},
			codes.InvalidArgument, "overlaps the window"},
	} {
		_, err := client.Diagnose(context.Background(), tc.req)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%v: %v, want %v containing %q", tc.req, err, tc.code, tc.msg)
		}
	}
	// With one window empty, there is nothing to compare and nothing ranked.
	resp, err = client.Diagnose(context.Background(), &analysispb.DiagnoseRequest{Service: bench.RCARootService, Operation: bench.RCARootOperation,
		StartTime: timestamppb.New(mid), EndTime: timestamppb.New(end), BaselineStartTime: timestamppb.New(start.Add(-time.Hour)), BaselineEndTime: timestamppb.New(start)})
	if err != nil || resp.Baseline.Traces != 0 || len(resp.Operations) != 0 || len(resp.Attributes) != 0 {
		t.Errorf("empty baseline: %v, %v; want no operation or attribute ranked", resp, err)
	}
}

// TestSampleReadsATraceOnce stores a trace with spans of the operation in
// both slices a sample of 200 searches: it is one trace of the sample, read
// once, and its query is on its path.
func TestSampleReadsATraceOnce(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Truncate(time.Minute).Add(-10 * time.Minute)
	span := func(id, parent byte, name string, kind tracepb.Span_SpanKind, from, to time.Duration) *tracepb.Span {
		s := &tracepb.Span{TraceId: []byte{0: 1, 15: 1}, SpanId: []byte{7: id}, Name: name, Kind: kind,
			StartTimeUnixNano: uint64(t0.Add(from).UnixNano()), EndTimeUnixNano: uint64(t0.Add(to).UnixNano())}
		if parent != 0 {
			s.ParentSpanId = []byte{7: parent}
		}
		return s
	}
	ms := time.Millisecond
	writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", "web")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			span(1, 0, "GET /a", tracepb.Span_SPAN_KIND_SERVER, 900*ms, 1300*ms),
			span(2, 1, "SELECT", tracepb.Span_SPAN_KIND_CLIENT, 950*ms, 1050*ms),
			span(3, 1, "GET /a", tracepb.Span_SPAN_KIND_INTERNAL, 1100*ms, 1200*ms),
		}}},
	}}}))
	resp, err := analysispb.NewRootCauseClient(serve(t, db)).CriticalPaths(context.Background(), &analysispb.CriticalPathsRequest{
		Service: "web", Operation: "GET /a", StartTime: timestamppb.New(t0), EndTime: timestamppb.New(t0.Add(2 * time.Second)), Sample: 200})
	if err != nil {
		t.Fatal(err)
	}
	onPath := slices.ContainsFunc(resp.GetOperations(), func(o *analysispb.OperationPathStats) bool { return o.GetOperation() == "SELECT" })
	if resp.GetTraces() != 1 || !onPath {
		t.Fatalf("%d traces in the sample, SELECT on the path: %v; want 1, true", resp.GetTraces(), onPath)
	}
}

// writeCalls stores one trace of web's GET /a per start, each of its
// duration.
func writeCalls(t *testing.T, db *storage.DB, starts []time.Time, dur func(i int) time.Duration) {
	t.Helper()
	var spans []*tracepb.Span
	for i, at := range starts {
		spans = append(spans, &tracepb.Span{TraceId: []byte{0: 2, 14: byte(i >> 8), 15: byte(i)}, SpanId: []byte{7: 1}, Name: "GET /a",
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: uint64(at.UnixNano()), EndTimeUnixNano: uint64(at.Add(dur(i)).UnixNano())})
	}
	writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", "web")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}))
}

// TestSampleSpreadsOverTheWindow samples 100 of 200 traces spread evenly
// over a window whose first half took 10 ms and second 50: a sample of
// the most recent traces alone would say 50. A window whose traces came
// in its last minute still yields the whole sample.
func TestSampleSpreadsOverTheWindow(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Truncate(time.Minute).Add(-90 * time.Minute)
	var spread, burst []time.Time
	for i := range 200 {
		spread = append(spread, t0.Add(time.Duration(i)*6*time.Second))
		burst = append(burst, t0.Add(59*time.Minute+time.Duration(i)*250*time.Millisecond))
	}
	writeCalls(t, db, spread, func(i int) time.Duration { return time.Duration(10+40*(i/100)) * time.Millisecond })
	client := analysispb.NewRootCauseClient(serve(t, db))
	paths := func(from, to time.Time) *analysispb.CriticalPathsResponse {
		t.Helper()
		resp, err := client.CriticalPaths(context.Background(), &analysispb.CriticalPathsRequest{Service: "web", Operation: "GET /a",
			StartTime: timestamppb.New(from), EndTime: timestamppb.New(to), Sample: 100})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := paths(t0, t0.Add(20*time.Minute)); resp.Traces != 100 || resp.MeanMs < 25 || resp.MeanMs > 35 {
		t.Errorf("spread window: %d traces, mean %.1f ms; want 100, about 30", resp.Traces, resp.MeanMs)
	}
	writeCalls(t, db, burst, func(int) time.Duration { return time.Millisecond })
	if resp := paths(t0.Add(40*time.Minute), t0.Add(60*time.Minute)); resp.Traces != 100 {
		t.Errorf("window with a burst at its end: %d traces, want 100", resp.Traces)
	}
	// Traffic at both ends of a window, none between: what the empty
	// slices lacked is shared between the two ends.
	var ends []time.Time
	for i := range 200 {
		at := t0.Add(2*time.Hour + time.Duration(i%100)*time.Second)
		if i >= 100 {
			at = at.Add(19 * time.Minute)
		}
		ends = append(ends, at)
	}
	writeCalls(t, db, ends, func(i int) time.Duration { return time.Duration(10+40*(i/100)) * time.Millisecond })
	if resp := paths(t0.Add(2*time.Hour), t0.Add(2*time.Hour+21*time.Minute)); resp.Traces != 100 || resp.MeanMs < 25 || resp.MeanMs > 35 {
		t.Errorf("window busy at both ends: %d traces, mean %.1f ms; want 100, about 30", resp.Traces, resp.MeanMs)
	}
}

// damagedTraces is the store, but for the traces it names, which it reads
// whole and then finds damaged, as a read that meets a damaged block
// after its first fragments does.
type damagedTraces struct {
	*storage.DB
	ids map[storage.TraceID]bool
}

func (d damagedTraces) TracePieces(ctx context.Context, id storage.TraceID, tr storage.TimeRange, pieceBytes int, admit func(int) error, fn func(*storage.Trace) error) (bool, error) {
	found, err := d.DB.TracePieces(ctx, id, tr, pieceBytes, admit, fn)
	if err == nil && d.ids[id] {
		return found, &storage.CorruptionError{What: fmt.Sprintf("trace %x", id), Path: "/data/spans/000042.sst", Err: errors.New("checksum mismatch")}
	}
	return found, err
}

// TestSampleLeavesOutDamagedTraces: traces a damaged file holds are left
// out of a sample, what was read of them dropped, and counted.
func TestSampleLeavesOutDamagedTraces(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	t0 := time.Now().Truncate(time.Minute).Add(-30 * time.Minute)
	var starts []time.Time
	for i := range 20 {
		starts = append(starts, t0.Add(time.Duration(i)*time.Second))
	}
	writeCalls(t, db, starts, func(int) time.Duration { return time.Millisecond })
	damaged := map[storage.TraceID]bool{}
	for i := range 4 {
		damaged[storage.TraceID{0: 2, 15: byte(i * 5)}] = true
	}
	client := analysispb.NewRootCauseClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(damagedTraces{db, damaged}, nil))))
	resp, err := client.CriticalPaths(context.Background(), &analysispb.CriticalPathsRequest{Service: "web", Operation: "GET /a",
		StartTime: timestamppb.New(t0), EndTime: timestamppb.New(t0.Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Traces != 16 || resp.LeftOut != 4 {
		t.Errorf("%d traces, %d left out; want 16 and the 4 damaged", resp.Traces, resp.LeftOut)
	}
}

// TestSampleLeavesOutATraceTooLarge: a trace with more spans than an
// analysis reads is left out of a diagnosis's sample, and said to be, not
// the end of every diagnosis of its operation; read alone, it is refused
// as no retry would help.
func TestSampleLeavesOutATraceTooLarge(t *testing.T) {
	defer func(old int) { maxAnalysisBytes = old }(maxAnalysisBytes)
	maxAnalysisBytes = 4 << 10
	// Live spans are bounded by the live buffer; what is cut is read a
	// fragment at a time, and counted.
	db, err := storage.Open(t.TempDir(), &storage.Options{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Truncate(time.Minute).Add(-30 * time.Minute)
	var starts []time.Time
	for i := range 20 {
		starts = append(starts, t0.Add(time.Duration(i)*time.Second))
	}
	writeCalls(t, db, starts, func(int) time.Duration { return time.Millisecond })
	big := []byte{0: 3, 15: 3}
	var spans []*tracepb.Span
	for i := range 100 {
		spans = append(spans, &tracepb.Span{TraceId: big, SpanId: []byte{6: 1, 7: byte(i)}, Name: "GET /a", Kind: tracepb.Span_SPAN_KIND_SERVER,
			StartTimeUnixNano: uint64(t0.Add(30 * time.Second).UnixNano()), EndTimeUnixNano: uint64(t0.Add(31 * time.Second).UnixNano()),
			Attributes: []*commonpb.KeyValue{stringAttr("payload", fmt.Sprintf("%0100x", uint64(i)*0x9e3779b97f4a7c15))}})
	}
	writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", "web")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}))
	client := analysispb.NewRootCauseClient(serve(t, db))
	var resp *analysispb.DiagnoseResponse
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err = client.Diagnose(context.Background(), &analysispb.DiagnoseRequest{Service: "web", Operation: "GET /a",
			StartTime: timestamppb.New(t0.Add(15 * time.Second)), EndTime: timestamppb.New(t0.Add(time.Minute))})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Window.LeftOut > 0 || time.Now().After(deadline) {
			break
		}
	}
	if resp.Window.Traces != 5 || resp.Window.LeftOut != 1 || resp.Baseline.Traces != 15 || resp.Baseline.LeftOut != 0 {
		t.Errorf("window %v, baseline %v: want 5 traces and 1 left out, 15 and none", resp.Window, resp.Baseline)
	}
	_, err = client.CriticalPath(context.Background(), &analysispb.CriticalPathRequest{TraceId: big})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "more than") {
		t.Errorf("critical path of the large trace: %v, want FailedPrecondition", err)
	}
	// A window of that trace alone has nothing to diagnose, and says why.
	_, err = client.Diagnose(context.Background(), &analysispb.DiagnoseRequest{Service: "web", Operation: "GET /a",
		StartTime: timestamppb.New(t0.Add(30 * time.Second)), EndTime: timestamppb.New(t0.Add(31 * time.Second))})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "every trace found was left out (1 in the window, 0 in the baseline)") {
		t.Errorf("diagnosis of the large trace alone: %v, want FailedPrecondition saying it was left out", err)
	}
	// Over HTTP, 422 without Retry-After: a client that retries on 429
	// would retry for ever.
	rec := httptest.NewRecorder()
	NewService(db, nil).HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", fmt.Sprintf("/api/v1/traces/%x/critical-path", big), nil))
	if rec.Code != http.StatusUnprocessableEntity || rec.Header().Get("Retry-After") != "" {
		t.Errorf("critical path of the large trace over HTTP: %d, Retry-After %q; want 422 and none", rec.Code, rec.Header().Get("Retry-After"))
	}
}
