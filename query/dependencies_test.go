package query

import (
	"context"
	"fmt"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query/analysispb"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// callTrace is a trace of web calling orders, which queries postgresql:
// web's server and client spans, orders' server span (failed if failed)
// and its database client span, which names its peer.
func callTrace(id byte, start time.Time, failed bool) []*tracepb.ResourceSpans {
	t0 := uint64(start.UnixNano())
	tid := []byte{0: id, 15: 1}
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	rs := func(service string, spans ...*tracepb.Span) *tracepb.ResourceSpans {
		return &tracepb.ResourceSpans{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", service)}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
		}
	}
	server := &tracepb.Span{TraceId: tid, SpanId: []byte{7: 1}, Name: "POST /checkout", Kind: tracepb.Span_SPAN_KIND_SERVER,
		StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 9e6}
	if failed {
		server.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	}
	return []*tracepb.ResourceSpans{
		rs("web",
			&tracepb.Span{TraceId: tid, SpanId: []byte{7: 2}, Name: "POST /checkout", Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1e7},
			&tracepb.Span{TraceId: tid, SpanId: []byte{7: 3}, ParentSpanId: []byte{7: 2}, Name: "POST /orders", Kind: tracepb.Span_SPAN_KIND_CLIENT,
				StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1e7, Attributes: []*commonpb.KeyValue{str("peer.service", "orders")}}),
		rs("orders",
			&tracepb.Span{TraceId: tid, SpanId: []byte{7: 1}, ParentSpanId: []byte{7: 3}, Name: server.Name, Kind: server.Kind,
				StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 9e6, Status: server.Status},
			&tracepb.Span{TraceId: tid, SpanId: []byte{7: 4}, ParentSpanId: []byte{7: 1}, Name: "SELECT orders", Kind: tracepb.Span_SPAN_KIND_CLIENT,
				StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1e6, Attributes: []*commonpb.KeyValue{str("db.system", "postgresql")}}),
	}
}

// TestGetDependencies reads the service graph through a jaeger.storage.v2
// client: three calls from web to orders, one failed, each of which made
// one call to postgresql, which sends no spans.
func TestGetDependencies(t *testing.T) {
	dir := t.TempDir()
	// A window shorter than the time between cuts lets the database calls
	// become edges at the next cut.
	o := &storage.Options{PairingWindow: time.Nanosecond}
	at := hour0.Add(10 * time.Minute)
	for i, failed := range []bool{false, true, false} {
		db, err := storage.Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: callTrace(byte(i+1), at.Add(time.Duration(i)*time.Minute), failed)}))
		if err := db.Close(); err != nil { // cuts a block
			t.Fatal(err)
		}
	}
	db, err := storage.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: callTrace(9, hour0, false)[:1]}))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = storage.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	conn := serve(t, db)
	client := jaegerpb.NewDependencyReaderClient(conn)
	ctx := context.Background()

	get := func(start, end time.Time) map[string]uint64 {
		t.Helper()
		resp, err := client.GetDependencies(ctx, &jaegerpb.GetDependenciesRequest{StartTime: timestamppb.New(start), EndTime: timestamppb.New(end)})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, d := range resp.Dependencies {
			if d.Source != "cairn" {
				t.Errorf("source %q", d.Source)
			}
			got[d.Parent+"->"+d.Child] = d.CallCount
		}
		return got
	}
	check := func(got map[string]uint64, want map[string]uint64) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("dependencies %v, want %v", got, want)
		}
		for k, n := range want {
			if got[k] != n {
				t.Errorf("dependencies %v, want %v", got, want)
			}
		}
	}
	check(get(hour0, hour0.Add(time.Hour)), map[string]uint64{"web->orders": 3, "orders->postgresql": 3})
	// Minute resolution: the range from the second call's minute to a
	// second into the third's holds two calls.
	check(get(at.Add(time.Minute+30*time.Second), at.Add(2*time.Minute+time.Second)), map[string]uint64{"web->orders": 2, "orders->postgresql": 2})
	check(get(hour0.Add(time.Hour), hour0.Add(2*time.Hour)), map[string]uint64{})

	_, err = client.GetDependencies(ctx, &jaegerpb.GetDependenciesRequest{StartTime: timestamppb.New(at), EndTime: timestamppb.New(hour0)})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("start after end: %v, want InvalidArgument", err)
	}

	// cairn.analysis.v1 has the same graph, with errors, latencies and
	// the database marked as a virtual node.
	graph, err := analysispb.NewAnalysisClient(conn).GetServiceGraph(ctx, &analysispb.GetServiceGraphRequest{
		StartTime: timestamppb.New(hour0), EndTime: timestamppb.New(hour0.Add(time.Hour)), Quantiles: []float64{0.5}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"orders->postgresql virtual=true calls=3 errors=0 p50=1.0ms", "web->orders virtual=false calls=3 errors=1 p50=9.0ms"}
	if len(graph.Edges) != len(want) {
		t.Fatalf("edges %v, want %v", graph.Edges, want)
	}
	for i, e := range graph.Edges {
		got := fmt.Sprintf("%s->%s virtual=%v calls=%d errors=%d p50=%.1fms", e.Parent, e.Child, e.Virtual, e.Calls, e.Errors, e.Quantiles[0].DurationMs)
		if got != want[i] {
			t.Errorf("edge %d: %s, want %s", i, got, want[i])
		}
	}
	// A window to year 9999 or from year 1 has the same edges: its last
	// minute, rounded up, overflowed and left none.
	for _, w := range [][2]time.Time{{hour0, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, {time.Time{}, hour0.Add(time.Hour)}} {
		far, err := analysispb.NewAnalysisClient(conn).GetServiceGraph(ctx, &analysispb.GetServiceGraphRequest{
			StartTime: timestamppb.New(w[0]), EndTime: timestamppb.New(w[1])})
		if err != nil || len(far.Edges) != len(want) {
			t.Errorf("%v: %v, %v; want %d edges", w, far, err, len(want))
		}
	}
	check(get(time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)), map[string]uint64{"web->orders": 3, "orders->postgresql": 3})
}
