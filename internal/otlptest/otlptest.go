// Package otlptest compares OTLP trace data for tests: it flattens
// ResourceSpans into one entry per span, carrying the span's resource and
// scope with their schema URLs, so that two encodings of the same spans that
// group them differently compare equal, and nothing else does. EveryField
// builds a request that sets every field OTLP defines.
package otlptest

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Entry is one span with its context.
type Entry struct {
	Resource *tracepb.ResourceSpans // Resource and SchemaUrl only
	Scope    *tracepb.ScopeSpans    // Scope and SchemaUrl only
	Span     *tracepb.Span
}

// Traces maps hex trace IDs to their entries, ordered by span ID.
type Traces map[string][]Entry

// Add flattens resource spans into t.
func (t Traces) Add(rss []*tracepb.ResourceSpans) {
	for _, rs := range rss {
		res := &tracepb.ResourceSpans{Resource: rs.Resource, SchemaUrl: rs.SchemaUrl}
		for _, ss := range rs.ScopeSpans {
			sc := &tracepb.ScopeSpans{Scope: ss.Scope, SchemaUrl: ss.SchemaUrl}
			for _, s := range ss.Spans {
				id := fmt.Sprintf("%x", s.TraceId)
				t[id] = append(t[id], Entry{res, sc, s})
			}
		}
	}
	for id := range t {
		slices.SortStableFunc(t[id], func(a, b Entry) int {
			if c := bytes.Compare(a.Span.SpanId, b.Span.SpanId); c != 0 {
				return c
			}
			return cmp.Compare(a.Span.StartTimeUnixNano, b.Span.StartTimeUnixNano)
		})
	}
}

// AddRequest flattens an encoded ExportTraceServiceRequest into t.
func (t Traces) AddRequest(req []byte) error {
	var r collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(req, &r); err != nil {
		return err
	}
	t.Add(r.ResourceSpans)
	return nil
}

// Spans is the number of entries.
func (t Traces) Spans() int {
	n := 0
	for _, es := range t {
		n += len(es)
	}
	return n
}

// DiffTrace describes how got differs from want for one trace, or returns "".
func DiffTrace(want, got []Entry) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d spans, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		switch {
		case !proto.Equal(w.Span, g.Span):
			return fmt.Sprintf("span %d differs:\n got  %v\n want %v", i, g.Span, w.Span)
		case !proto.Equal(w.Resource, g.Resource):
			return fmt.Sprintf("resource of span %x differs:\n got  %v\n want %v", w.Span.SpanId, g.Resource, w.Resource)
		case !proto.Equal(w.Scope, g.Scope):
			return fmt.Sprintf("scope of span %x differs:\n got  %v\n want %v", w.Span.SpanId, g.Scope, w.Scope)
		}
	}
	return ""
}

func anyStr(v string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}
}

// EveryField builds a request that sets every field OTLP defines for spans,
// their resources and scopes, including those the Go SDK never emits.
func EveryField() *collectorpb.ExportTraceServiceRequest {
	tid := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	nested := &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{
		{Key: "s", Value: anyStr("x")},
		{Key: "arr", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{
			{Value: &commonpb.AnyValue_IntValue{IntValue: -7}},
			{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: math.NaN()}},
			{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{}}},
			{},
		}}}}},
	}}}}
	attrs := []*commonpb.KeyValue{
		{Key: "str", Value: anyStr("héllo")},
		{Key: "bool", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
		{Key: "int", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: math.MinInt64}}},
		{Key: "double", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: -0.5}}},
		{Key: "bytes", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0, 1, 0xff}}}},
		{Key: "kvlist", Value: nested},
		{Key: "empty"},
	}
	span := func(id byte, parent []byte) *tracepb.Span {
		return &tracepb.Span{
			TraceId: tid, SpanId: []byte{0, 0, 0, 0, 0, 0, 0, id}, ParentSpanId: parent,
			TraceState: "k=v", Flags: 0x301, Name: "op-" + string('a'+rune(id)),
			Kind:              tracepb.Span_SpanKind(int32(id) % 6),
			StartTimeUnixNano: 1_700_000_000_000_000_000 + uint64(id), EndTimeUnixNano: 1_700_000_000_500_000_000,
			Attributes: attrs, DroppedAttributesCount: 3,
			Events:             []*tracepb.Span_Event{{TimeUnixNano: 1_700_000_000_100_000_000, Name: "ev", Attributes: attrs, DroppedAttributesCount: 1}},
			DroppedEventsCount: 4,
			Links:              []*tracepb.Span_Link{{TraceId: tid, SpanId: []byte{9, 9, 9, 9, 9, 9, 9, 9}, TraceState: "l=1", Attributes: attrs, DroppedAttributesCount: 2, Flags: 0x100}},
			DroppedLinksCount:  5,
			Status:             &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "boom"},
		}
	}
	return &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{
			Resource: &resourcepb.Resource{Attributes: attrs, DroppedAttributesCount: 6, EntityRefs: []*commonpb.EntityRef{
				{SchemaUrl: "https://e", Type: "service", IdKeys: []string{"service.name"}, DescriptionKeys: []string{"service.version"}},
			}},
			SchemaUrl: "https://opentelemetry.io/schemas/1.26.0",
			ScopeSpans: []*tracepb.ScopeSpans{
				{
					Scope:     &commonpb.InstrumentationScope{Name: "lib", Version: "1.0", Attributes: attrs, DroppedAttributesCount: 7},
					SchemaUrl: "https://opentelemetry.io/schemas/1.25.0",
					Spans:     []*tracepb.Span{span(1, nil), span(2, []byte{0, 0, 0, 0, 0, 0, 0, 1})},
				},
				{Spans: []*tracepb.Span{span(3, []byte{0, 0, 0, 0, 0, 0, 0, 1})}}, // no scope at all
			},
		},
		{ // no resource at all, an empty scope
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{}, Spans: []*tracepb.Span{span(4, []byte{0, 0, 0, 0, 0, 0, 0, 2})}}},
		},
		{ // spans with invalid IDs, rejected one by one
			Resource: &resourcepb.Resource{},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
				{TraceId: make([]byte, 16), SpanId: []byte{1, 1, 1, 1, 1, 1, 1, 1}},
				{TraceId: tid[:8], SpanId: []byte{1, 1, 1, 1, 1, 1, 1, 1}},
				{TraceId: tid, SpanId: make([]byte, 8)},
			}}},
		},
	}}
}
