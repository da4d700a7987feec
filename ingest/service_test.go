package ingest

import (
	"context"
	"testing"

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
	return grpctest.Dial(t, grpctest.Serve(t, NewServer(NewService(db))))
}

func request(trace byte) *collectorpb.ExportTraceServiceRequest {
	return &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			{TraceId: []byte{15: trace}, SpanId: []byte{7: 1}, Name: "ok"},
			{TraceId: []byte{15: trace}, SpanId: []byte{7: 0}, Name: "zero span id"},
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
	if ps := resp.GetPartialSuccess(); ps.GetRejectedSpans() != 1 || ps.GetErrorMessage() == "" {
		t.Fatalf("partial success %v, want 1 rejected span with a message", ps)
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
