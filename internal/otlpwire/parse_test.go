package otlpwire

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
)

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func span(trace, id []byte) *tracepb.Span {
	return &tracepb.Span{TraceId: trace, SpanId: id, Name: "op", StartTimeUnixNano: 5, EndTimeUnixNano: 9}
}

func TestParseRejectsInvalidIDsOneByOne(t *testing.T) {
	good := []byte{1: 1, 15: 0}
	good[0] = 7
	sid := []byte{0, 0, 0, 0, 0, 0, 0, 1}
	req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			span(good, sid),
			span(make([]byte, 16), sid), // all-zero trace ID
			span(good[:8], sid),         // short trace ID
			span(good, make([]byte, 8)), // all-zero span ID
			span(good, []byte{1, 2, 3}), // short span ID
			span(nil, nil),              // both missing: counted once, as a trace ID fault
			span(good, sid),
		}}},
	}}}
	var b Batch
	if err := Parse(marshal(t, req), &b, 0); err != nil {
		t.Fatal(err)
	}
	if len(b.Spans) != 2 {
		t.Fatalf("accepted %d spans, want 2", len(b.Spans))
	}
	want := Rejection{BadTraceID: 3, BadSpanID: 2}
	if b.Rejected != want {
		t.Fatalf("rejected %+v, want %+v", b.Rejected, want)
	}
	const msg = "5 spans rejected: 3 with invalid trace_id (must be 16 bytes, not all zero), 2 with invalid span_id (must be 8 bytes, not all zero)"
	if got := b.Rejected.Message(); got != msg {
		t.Fatalf("message %q, want %q", got, msg)
	}
	if b.Spans[0].Start != 5 || b.Spans[0].End != 9 || b.Spans[0].SpanID != [8]byte(sid) {
		t.Fatalf("span fields not read: %+v", b.Spans[0])
	}
}

func TestParseMalformed(t *testing.T) {
	badUTF8 := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: []byte{15: 1}, SpanId: []byte{7: 1},
			Attributes: []*commonpb.KeyValue{{Key: "k", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "ok"}}}},
		}}}},
	}}}
	valid := marshal(t, badUTF8)
	for name, req := range map[string][]byte{
		"truncated":                valid[:len(valid)-1],
		"garbage":                  []byte{0xff, 0xff, 0xff},
		"bad utf8":                 replaceOnce(valid, []byte("ok"), []byte{0xc3, 0x28}),
		"group":                    {0x0b},
		"resource spans as varint": {0x08, 0x01},
	} {
		var b Batch
		err := Parse(req, &b, 0)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
		if len(b.Spans) != 0 {
			t.Errorf("%s: batch keeps %d spans after an error", name, len(b.Spans))
		}
	}
}

func replaceOnce(b, old, new []byte) []byte {
	for i := 0; i+len(old) <= len(b); i++ {
		if string(b[i:i+len(old)]) == string(old) {
			out := append([]byte{}, b[:i]...)
			out = append(out, new...)
			return append(out, b[i+len(old):]...)
		}
	}
	panic("not found")
}

func TestServiceName(t *testing.T) {
	req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "host.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "h"}}},
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "cart"}}},
		}}},
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 3}}},
		}}},
		{},
	}}
	var b Batch
	if err := Parse(marshal(t, req), &b, 0); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range b.Resources {
		got = append(got, string(r.Service))
	}
	if want := []string{"cart", "", ""}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("services %q, want %q", got, want)
	}
}

func TestFacts(t *testing.T) {
	sp := span([]byte{15: 1}, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	sp.Kind = tracepb.Span_SPAN_KIND_CONSUMER
	sp.ParentSpanId = []byte{9, 9, 9, 9, 9, 9, 9, 9}
	sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	f := Facts(marshal(t, sp))
	want := SpanFacts{ID: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Parent: []byte{9, 9, 9, 9, 9, 9, 9, 9}, Name: []byte("op"), Kind: 5, Start: 5, End: 9, Error: true}
	if fmt.Sprint(f) != fmt.Sprint(want) {
		t.Fatalf("Facts = %+v, want %+v", f, want)
	}
	sp.Status.Code = tracepb.Status_STATUS_CODE_OK
	if Facts(marshal(t, sp)).Error {
		t.Fatal("an OK status reads as an error")
	}
}

func TestAttributes(t *testing.T) {
	kv := func(k string, v *commonpb.AnyValue) *commonpb.KeyValue { return &commonpb.KeyValue{Key: k, Value: v} }
	sp := &tracepb.Span{Attributes: []*commonpb.KeyValue{
		kv("s", &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "x"}}),
		kv("b", &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}),
		kv("i", &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -2}}),
		kv("d", &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 1.5}}),
		kv("y", &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{9}}}),
		kv("arr", &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{}}}),
		kv("none", nil),
	}}
	var got []string
	Attributes(marshal(t, sp), SpanAttributes, func(k []byte, typ ValueType, b []byte, num uint64) {
		got = append(got, fmt.Sprintf("%s:%d:%x", k, typ, AppendCanonical(nil, typ, b, num)))
	})
	want := "[s:1:78 b:2:01 i:3:fffffffffffffffe d:4:3ff8000000000000 y:7:09]"
	if fmt.Sprint(got) != want {
		t.Fatalf("attributes %v, want %s", got, want)
	}
}

// FuzzParse checks that whatever Parse accepts, the reference protobuf
// implementation accepts too, and that every span is either accepted or
// counted as rejected: stored bytes can always be served to any client.
func FuzzParse(f *testing.F) {
	gen := bench.NewGenerator(bench.Config{BatchSpans: 4})
	for range 3 {
		f.Add(gen.Next().Bytes)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, req []byte) {
		var b Batch
		if err := Parse(req, &b, 0); err != nil {
			return
		}
		var ref collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(req, &ref); err != nil {
			t.Fatalf("Parse accepted what proto.Unmarshal rejects: %v", err)
		}
		total := 0
		for _, rs := range ref.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				total += len(ss.Spans)
			}
		}
		if got := len(b.Spans) + b.Rejected.Total(); got != total {
			t.Fatalf("accepted+rejected = %d, request has %d spans", got, total)
		}
		for _, s := range b.Spans {
			var sp tracepb.Span
			if err := proto.Unmarshal(s.Raw, &sp); err != nil {
				t.Fatalf("accepted span does not decode: %v", err)
			}
			if [16]byte(sp.TraceId) != s.TraceID || [8]byte(sp.SpanId) != s.SpanID {
				t.Fatalf("IDs %x/%x, decoded %x/%x", s.TraceID, s.SpanID, sp.TraceId, sp.SpanId)
			}
			if sp.StartTimeUnixNano != s.Start || sp.EndTimeUnixNano != s.End {
				t.Fatalf("times %d-%d, decoded %d-%d", s.Start, s.End, sp.StartTimeUnixNano, sp.EndTimeUnixNano)
			}
			if sp.Name != string(s.Name) || int32(sp.Kind) != s.Kind {
				t.Fatalf("name/kind %q/%d, decoded %q/%d", s.Name, s.Kind, sp.Name, sp.Kind)
			}
			if want := sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; s.Error != want || Facts(s.Raw).Error != want {
				t.Fatalf("error %v (facts %v), decoded status %v", s.Error, Facts(s.Raw).Error, sp.GetStatus())
			}
			// Ingest indexes the attributes Parse recorded; search checks
			// those Attributes reads from the stored span. They must agree.
			var walked []Attribute
			Attributes(s.Raw, SpanAttributes, func(key []byte, t ValueType, b []byte, num uint64) {
				walked = append(walked, Attribute{Key: key, Type: t, B: b, Num: num})
			})
			if !reflect.DeepEqual(s.Attrs, walked) && (len(s.Attrs) > 0 || len(walked) > 0) {
				t.Fatalf("Parse recorded attributes %v, Attributes reads %v", s.Attrs, walked)
			}
		}
	})
}
