package ingest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/internal/rawcodec"
	"cairn/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, db *storage.DB) *grpc.ClientConn {
	t.Helper()
	return grpctest.Dial(t, grpctest.Serve(t, NewServer(NewService(db, nil))))
}

var now = uint64(time.Now().UnixNano())

func request(trace byte) *collectorpb.ExportTraceServiceRequest {
	return &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			{TraceId: []byte{15: trace}, SpanId: []byte{7: 1}, Name: "ok", StartTimeUnixNano: now},
			{TraceId: []byte{15: trace}, SpanId: []byte{7: 0}, Name: "zero span id", StartTimeUnixNano: now},
			{TraceId: []byte{15: trace}, SpanId: []byte{7: 2}, Name: "too old", StartTimeUnixNano: now - uint64(73*time.Hour)},
		}}},
	}}}
}

// TestStatusCodes checks what clients are told: partial success for invalid
// spans, InvalidArgument for a malformed request (storing nothing of it), and
// Unavailable, which OTLP clients retry, once the store is closed.
func TestStatusCodes(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := serve(t, db)
	client := collectorpb.NewTraceServiceClient(conn)

	resp, err := client.Export(context.Background(), request(1))
	if err != nil {
		t.Fatal(err)
	}
	ps := resp.GetPartialSuccess()
	if ps.GetRejectedSpans() != 2 || !strings.Contains(ps.GetErrorMessage(), "1 with invalid span_id") ||
		!strings.Contains(ps.GetErrorMessage(), "outside the retention period") {
		t.Fatalf("partial success %v, want the zero span ID and the span older than 72h rejected", ps)
	}
	if tr, _ := db.Trace(context.Background(), storage.TraceID{15: 1}, storage.TimeRange{}); tr == nil || tr.Spans != 1 {
		t.Fatalf("stored %v, want the one valid span", tr)
	}

	valid, _ := proto.Marshal(request(2))
	malformed := append(valid, 0x0a, 0x7f) // a field whose length runs past the end
	var out rawcodec.Message
	err = conn.Invoke(context.Background(), exportMethod, rawcodec.Message(malformed), &out, grpc.ForceCodecV2(rawcodec.Codec{}))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed request: %v, want InvalidArgument", err)
	}
	if tr, _ := db.Trace(context.Background(), storage.TraceID{15: 2}, storage.TimeRange{}); tr != nil {
		t.Fatal("a span of a malformed request was stored")
	}

	// Empty requests are valid and acknowledged.
	if _, err := client.Export(context.Background(), &collectorpb.ExportTraceServiceRequest{}); err != nil {
		t.Fatalf("empty request: %v", err)
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Export(context.Background(), request(3)); status.Code(err) != codes.Unavailable {
		t.Fatalf("export to a closed store: %v, want Unavailable", err)
	}
}

// TestLargeRequests checks that requests far above gRPC's 4 MiB default are
// accepted up to the configured limit and refused, whole, above it.
func TestLargeRequests(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const limit = 64 << 20
	svc := NewService(db, &Options{MaxRequestBytes: limit})
	conn := grpctest.Dial(t, grpctest.Serve(t, NewServer(svc)))
	client := collectorpb.NewTraceServiceClient(conn)

	big := func(spans int, trace byte) *collectorpb.ExportTraceServiceRequest {
		ss := &tracepb.ScopeSpans{}
		name := string(make([]byte, 1000))
		for i := range spans {
			ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: []byte{15: trace}, SpanId: []byte{0: 1, 6: byte(i >> 8), 7: byte(i)}, Name: name, StartTimeUnixNano: now})
		}
		return &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{ss}}}}
	}
	ok := big(60_000, 1) // ~61 MB
	if size := proto.Size(ok); size <= 32<<20 || size > limit {
		t.Fatalf("test request is %d bytes", size)
	}
	if _, err := client.Export(context.Background(), ok); err != nil {
		t.Fatalf("%d-byte request: %v", proto.Size(ok), err)
	}
	if tr, err := db.Trace(context.Background(), storage.TraceID{15: 1}, storage.TimeRange{}); err != nil || tr.Spans != 60_000 {
		t.Fatalf("stored %v spans, %v", tr, err)
	}
	_, err = client.Export(context.Background(), big(70_000, 2))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("request over the limit: %v, want ResourceExhausted", err)
	}
	if tr, _ := db.Trace(context.Background(), storage.TraceID{15: 2}, storage.TimeRange{}); tr != nil {
		t.Fatal("part of a refused request was stored")
	}
	if n := testutil.ToFloat64(svc.metrics.refused.WithLabelValues(protoGRPC, causeTooLarge)); n != 1 {
		t.Fatalf("%v requests counted as too large, want 1", n)
	}
}

// TestGRPCOverload checks that a request that would take the in-flight
// bound past its limit is refused with ResourceExhausted and the RetryInfo
// OTLP clients need to retry it, while another is held in flight.
func TestGRPCOverload(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g := &gate{Writer: db, entered: make(chan struct{}, 8), open: make(chan struct{})}
	first, _ := proto.Marshal(request(1))
	svc := NewService(g, &Options{MaxInflightBytes: int64(len(first)) + 10, RetryAfter: 3 * time.Second, AdmitWait: 10 * time.Millisecond})
	client := collectorpb.NewTraceServiceClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(svc))))

	done := make(chan error)
	go func() { _, err := client.Export(context.Background(), request(1)); done <- err }()
	<-g.entered
	_, err = client.Export(context.Background(), request(2))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || len(st.Details()) != 1 {
		t.Fatalf("export while the bound is taken: %v, want ResourceExhausted with RetryInfo", err)
	}
	if ri, ok := st.Details()[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 3*time.Second {
		t.Fatalf("details %v, want RetryInfo of 3s", st.Details())
	}
	close(g.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := svc.InflightBytes(); n != 0 {
		t.Fatalf("%d bytes still reserved", n)
	}
}
