package ingest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"cairn/internal/rawcodec"
	"cairn/storage"
)

// TestPerSpanRejections checks that a span with invalid UTF-8 or starting
// far in the future is rejected alone through partial_success, and the
// rest of its request stored.
func TestPerSpanRejections(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn := serve(t, db)
	y2200 := uint64(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	var spans []*tracepb.Span
	for i := range 100 {
		spans = append(spans, &tracepb.Span{TraceId: []byte{15: 7}, SpanId: []byte{7: byte(i + 1)}, Name: "ok", StartTimeUnixNano: now})
	}
	spans[10].Name = "~~" // made invalid UTF-8 below: proto.Marshal refuses it
	spans[20].StartTimeUnixNano = y2200
	raw, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte("~~"), []byte{0xc3, 0x28}, 1)
	var resp collectorpb.ExportTraceServiceResponse
	if err := conn.Invoke(context.Background(), exportMethod, rawcodec.Message(raw), &resp, grpc.ForceCodecV2(rawcodec.Codec{})); err != nil {
		t.Fatal(err)
	}
	ps := resp.GetPartialSuccess()
	if msg := ps.GetErrorMessage(); ps.GetRejectedSpans() != 2 || !strings.Contains(msg, "1 with a string that is not valid UTF-8 (first: span: Span.name)") ||
		!strings.Contains(msg, "1 starting after") {
		t.Fatalf("partial success %v, want the span with invalid UTF-8 and the one in 2200 rejected", ps)
	}
	if tr, err := db.Trace(context.Background(), storage.TraceID{15: 7}, storage.TimeRange{}); err != nil || tr == nil || tr.Spans != 98 {
		t.Fatalf("stored %v, %v; want the 98 other spans", tr, err)
	}
}
