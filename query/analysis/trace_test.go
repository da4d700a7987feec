package analysis

import (
	"reflect"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
)

// TestAddEncodedAgreesWithAdd checks that traces collected from encoded
// spans, as the server reads them from the store, are the traces collected
// from decoded ones, over the bench's workload and spans with every kind
// of attribute value, events and links, and that each value is kept once.
func TestAddEncodedAgreesWithAdd(t *testing.T) {
	gen := bench.NewGenerator(bench.Config{BatchSpans: 300})
	var reqs []*collectorpb.ExportTraceServiceRequest
	for range 5 {
		r := &collectorpb.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(gen.Next().Bytes, r); err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	odd := &tracepb.Span{
		TraceId: make([]byte, 16), SpanId: []byte{1, 2, 3, 4, 5, 6, 7, 8}, ParentSpanId: []byte{8, 7, 6, 5, 4, 3, 2, 1},
		Name: "odd", Kind: tracepb.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: 5, EndTimeUnixNano: 3,
		Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR},
		Attributes: []*commonpb.KeyValue{
			{Key: "s", Value: str("x")}, {Key: "i", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -1}}},
			{Key: "d", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 1.5}}},
			{Key: "b", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
			{Key: "y", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0}}}},
			{Key: "a", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{str("p")}}}}},
			{Key: "e"}, {Key: "s", Value: str("x")},
		},
		Events: []*tracepb.Span_Event{
			{Name: "exception", Attributes: []*commonpb.KeyValue{{Key: "s", Value: str("ev")}, {Key: "exception.stacktrace", Value: str("at main()")}}},
			{Name: "feature_flag.evaluation", Attributes: []*commonpb.KeyValue{
				{Key: "feature_flag.key", Value: str("new_checkout")}, {Key: "feature_flag.result.variant", Value: str("on")}}},
		},
		Links: []*tracepb.Span_Link{{TraceId: make([]byte, 16), SpanId: make([]byte, 8)}},
	}
	reqs = append(reqs, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "host", Value: str("h")}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{odd}}},
	}}})

	var decoded, encoded Collector
	for _, r := range reqs {
		// Marshalled before Add, which keeps some of r's attributes in
		// place of others.
		type group struct {
			id    [16]byte
			res   []byte
			spans [][]byte
		}
		var groups []group
		for _, rs := range r.ResourceSpans {
			res, err := proto.Marshal(rs.GetResource())
			if err != nil {
				t.Fatal(err)
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					b, err := proto.Marshal(s)
					if err != nil {
						t.Fatal(err)
					}
					groups = append(groups, group{[16]byte(s.TraceId), res, [][]byte{b}})
				}
			}
		}
		decoded.Add(&tracepb.TracesData{ResourceSpans: r.ResourceSpans})
		for _, g := range groups {
			if err := encoded.AddEncoded(g.id, g.res, g.spans); err != nil {
				t.Fatal(err)
			}
		}
	}

	if len(decoded.traces) != len(encoded.traces) {
		t.Fatalf("%d traces from encoded spans, want %d", len(encoded.traces), len(decoded.traces))
	}
	kept := map[string]*commonpb.KeyValue{}
	for _, want := range decoded.traces {
		got := encoded.traces[encoded.byID[want.ID]]
		if got.ID != want.ID || len(got.Spans) != len(want.Spans) || len(got.Resources) != len(want.Resources) {
			t.Fatalf("trace %x: %d spans, %d resources; want %d, %d", want.ID, len(got.Spans), len(got.Resources), len(want.Spans), len(want.Resources))
		}
		for i := range want.Resources {
			if !equalAttrs(got.Resources[i], want.Resources[i]) {
				t.Fatalf("trace %x: resource %d %v, want %v", want.ID, i, got.Resources[i], want.Resources[i])
			}
		}
		for i := range want.Spans {
			g, w := got.Spans[i], want.Spans[i]
			if !equalAttrs(g.Attrs, w.Attrs) {
				t.Fatalf("span %x: attributes %v, want %v", w.ID, g.Attrs, w.Attrs)
			}
			g.Attrs, w.Attrs = nil, nil
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("span %x: %+v, want %+v", w.ID, g, w)
			}
			for _, kv := range got.Spans[i].Attrs {
				k := kv.Key + "\x00" + valueString(kv.Value)
				if was, ok := kept[k]; ok && was != kv {
					t.Fatalf("attribute %v kept twice", kv)
				}
				kept[k] = kv
			}
		}
	}
	// An event's attributes follow the span's own, but a stack trace: a
	// flag's variant may be recorded only in its evaluation's event, and
	// is read again keyed by its flag.
	var want []string
	for _, kv := range odd.Attributes {
		want = append(want, kv.Key)
	}
	want = append(want, "s", "feature_flag.key", "feature_flag.result.variant[new_checkout]", "feature_flag.result.variant")
	for _, c := range []*Collector{&decoded, &encoded} {
		var got []string
		for _, kv := range c.traces[c.byID[[16]byte{}]].Spans[0].Attrs {
			got = append(got, kv.Key)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("odd span's attribute keys %q, want %q", got, want)
		}
	}
	if err := encoded.AddEncoded([16]byte{}, nil, [][]byte{{0x4a, 0x05, 0x0a}}); err == nil {
		t.Fatal("a span with a truncated attribute was added")
	}
	if err := encoded.AddEncoded([16]byte{}, nil, [][]byte{{0x5a, 0x04, 0x1a, 0x02, 0x0a, 0x05}}); err == nil {
		t.Fatal("a span with an event's truncated attribute was added")
	}
}

func equalAttrs(a, b []*commonpb.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestDropTrace drops a trace from between two others: the others keep
// their order, and spans added later go to the trace they belong to.
func TestDropTrace(t *testing.T) {
	span := func(trace, id byte) *tracepb.TracesData {
		return &tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			{TraceId: []byte{15: trace}, SpanId: []byte{7: id}, Name: "s"},
		}}}}}}
	}
	var c Collector
	for trace := byte(1); trace <= 3; trace++ {
		c.Add(span(trace, 1))
	}
	c.Drop([16]byte{15: 2})
	c.Drop([16]byte{15: 9}) // not there
	c.Add(span(3, 2))
	c.Add(span(2, 3))
	var got [][2]int
	for _, tr := range c.Traces() {
		got = append(got, [2]int{int(tr.ID[15]), len(tr.Spans)})
	}
	if want := [][2]int{{1, 1}, {3, 2}, {2, 1}}; !reflect.DeepEqual(got, want) {
		t.Errorf("traces (ID, spans) %v, want %v", got, want)
	}
}
