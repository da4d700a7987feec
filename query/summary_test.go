package query

import (
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/storage"
)

// TestSummaryRootOfContinuedTrace checks the root a summary names: the
// earliest span without a parent, or in a trace continued from one begun
// outside the store, where every span has a parent, the longest span
// whose parent is missing, as critical paths take it, among more spans
// than the summary keeps.
func TestSummaryRootOfContinuedTrace(t *testing.T) {
	span := func(id, parent byte, name string, start, end uint64) []byte {
		s := &tracepb.Span{TraceId: make([]byte, 16), SpanId: []byte{0, 0, 0, 0, 0, 0, 0, id}, Name: name,
			StartTimeUnixNano: start, EndTimeUnixNano: end}
		if parent != 0 {
			s.ParentSpanId = []byte{0, 0, 0, 0, 0, 0, 0, parent}
		}
		b, err := proto.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	group := func(service string, spans ...[]byte) storage.Group {
		r, err := proto.Marshal(&resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return storage.Group{Resource: r, Spans: spans}
	}
	// shop's GET /cart continues a browser's trace (parent 99, not stored)
	// and calls cart; a late callback names another missing parent; the
	// cart's own ten short steps come in another piece, before the rest.
	var steps [][]byte
	for i := range 10 {
		steps = append(steps, span(byte(10+i), 2, "step", 1000+uint64(i), 1001+uint64(i)))
	}
	continued := []storage.Trace{
		{Groups: []storage.Group{group("cart", steps...)}},
		{Groups: []storage.Group{
			group("shop", span(1, 99, "GET /cart", 100, 900), span(3, 98, "callback", 950, 990)),
			group("cart", span(2, 1, "GetCart", 200, 800)),
		}},
	}
	rooted := []storage.Trace{{Groups: []storage.Group{
		group("shop", span(1, 99, "GET /cart", 100, 900), span(4, 0, "cron", 50, 60)),
	}}}
	// A library's span started without context, inside the request that
	// continues the browser's trace, is not its root.
	stray := []storage.Trace{{Groups: []storage.Group{
		group("shop", span(1, 99, "GET /cart", 100, 900), span(5, 0, "stray", 300, 310)),
	}}}
	for _, c := range []struct {
		name, service, operation string
		pieces                   []storage.Trace
	}{
		{"continued", "shop", "GET /cart", continued},
		{"with a span without a parent", "shop", "cron", rooted},
		{"with a span without a parent inside it", "shop", "GET /cart", stray},
	} {
		s := newSummary(storage.TraceID{})
		for i := range c.pieces {
			s.add(&c.pieces[i])
		}
		got := s.finish()
		if got.RootServiceName != c.service || got.RootOperationName != c.operation {
			t.Errorf("%s: root %q %q, want %q %q", c.name, got.RootServiceName, got.RootOperationName, c.service, c.operation)
		}
	}
}
