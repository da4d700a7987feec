package ingest

import (
	"context"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
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
	conn := grpctest.Dial(t, grpctest.Serve(t, NewServer(NewService(db, &Options{MaxRequestBytes: limit}))))
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
}
