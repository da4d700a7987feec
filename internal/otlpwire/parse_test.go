package otlpwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
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
	if err := Parse(marshal(t, req), &b, Window{}); err != nil {
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

// wireRequest is an Export request of encoded spans, in one scope of one
// resource, encoded by hand so that the spans stay byte for byte.
func wireRequest(spans ...[]byte) []byte {
	var ss []byte
	for _, s := range spans {
		ss = protowire.AppendBytes(protowire.AppendTag(ss, 2, protowire.BytesType), s) // ScopeSpans.spans
	}
	rs := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), ss)  // ResourceSpans.scope_spans
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rs) // resource_spans
}

func TestParseOrdered(t *testing.T) {
	trace, sid := []byte{1, 15: 1}, []byte{1, 7: 1}
	ordered := marshal(t, span(trace, sid))
	withAttrs := marshal(t, &tracepb.Span{TraceId: trace, SpanId: sid, StartTimeUnixNano: 1, EndTimeUnixNano: 2,
		Attributes: []*commonpb.KeyValue{{Key: "a"}, {Key: "b"}}}) // a repeated field: still in order
	nameLast := append(marshal(t, &tracepb.Span{TraceId: trace, SpanId: sid, StartTimeUnixNano: 1, EndTimeUnixNano: 2, Kind: 2}),
		protowire.AppendString(protowire.AppendTag(nil, 5, protowire.BytesType), "op")...)
	var b Batch
	if err := Parse(wireRequest(ordered, withAttrs, nameLast), &b, Window{}); err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, s := range b.Spans {
		got = append(got, s.Ordered)
	}
	if want := []bool{true, true, false}; !slices.Equal(got, want) {
		t.Fatalf("Ordered %v, want %v", got, want)
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
		"bad utf8 and truncated":   func() []byte { b := replaceOnce(valid, []byte("ok"), []byte(badString)); return b[:len(b)-1] }(),
		"group":                    {0x0b},
		"resource spans as varint": {0x08, 0x01},
	} {
		var b Batch
		err := Parse(req, &b, Window{})
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
		if len(b.Spans) != 0 {
			t.Errorf("%s: batch keeps %d spans after an error", name, len(b.Spans))
		}
	}
}

// badString is not valid UTF-8: 0xc3 starts a two-byte sequence that 0x28
// does not continue. proto.Marshal refuses it, so requests are marshalled
// with placeholder in its place, which withBadUTF8 then replaces: both are
// two bytes long, so the encoding stays valid.
const (
	badString   = "\xc3\x28"
	placeholder = "~~"
)

func withBadUTF8(req []byte) []byte {
	return bytes.ReplaceAll(req, []byte(placeholder), []byte(badString))
}

func TestParseRejectsInvalidUTF8WhereItIs(t *testing.T) {
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	kv := func(k, v string) []*commonpb.KeyValue { return []*commonpb.KeyValue{{Key: k, Value: str(v)}} }
	named := func(name string) *tracepb.Span {
		sp := span([]byte{15: 1}, []byte{7: 1})
		sp.Name = name
		return sp
	}
	spans := func(n int, edit func(*tracepb.Span)) []*tracepb.Span {
		out := make([]*tracepb.Span, n)
		for i := range out {
			out[i] = named("op")
			if edit != nil && i == 0 {
				edit(out[i])
			}
		}
		return out
	}
	for _, c := range []struct {
		name     string
		rs       []*tracepb.ResourceSpans
		accepted int
		field    string
	}{{
		name: "span name",
		rs: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(100, func(s *tracepb.Span) {
			s.Name = placeholder
		})}}}},
		accepted: 99, field: "span: Span.name",
	}, {
		name: "span attribute in an array",
		rs: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(3, func(s *tracepb.Span) {
			s.Attributes = []*commonpb.KeyValue{{Key: "k", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{
				ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{str("ok"), str(placeholder)}}}}}}
		})}}}},
		accepted: 2, field: "span: AnyValue.string_value",
	}, {
		name: "event name",
		rs: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(3, func(s *tracepb.Span) {
			s.Events = []*tracepb.Span_Event{{Name: placeholder}}
		})}}}},
		accepted: 2, field: "span: Span.Event.name",
	}, {
		name: "resource attribute key",
		rs: []*tracepb.ResourceSpans{
			{Resource: &resourcepb.Resource{Attributes: kv(placeholder, "x")}, ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(3, nil)}, {Spans: spans(2, nil)}}},
			{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(4, nil)}}},
		},
		accepted: 4, field: "resource: KeyValue.key",
	}, {
		name: "resource schema URL",
		rs: []*tracepb.ResourceSpans{
			{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(4, nil)}}},
			{SchemaUrl: placeholder, ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans(3, nil)}}},
		},
		accepted: 4, field: "resource: ResourceSpans.schema_url",
	}, {
		name: "scope name",
		rs: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{
			{Scope: &commonpb.InstrumentationScope{Name: placeholder}, Spans: spans(3, nil)},
			{Spans: spans(5, nil)},
		}}},
		accepted: 5, field: "scope: InstrumentationScope string field",
	}} {
		t.Run(c.name, func(t *testing.T) {
			req := withBadUTF8(marshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: c.rs}))
			var b Batch
			if err := Parse(req, &b, Window{}); err != nil {
				t.Fatal(err)
			}
			total := 0
			for _, rs := range c.rs {
				for _, ss := range rs.ScopeSpans {
					total += len(ss.Spans)
				}
			}
			want := Rejection{BadUTF8: total - c.accepted, BadUTF8Field: c.field}
			if len(b.Spans) != c.accepted || b.Rejected != want {
				t.Fatalf("accepted %d, rejected %+v; want %d, %+v", len(b.Spans), b.Rejected, c.accepted, want)
			}
			for _, s := range b.Spans {
				if string(s.Name) != "op" {
					t.Fatalf("accepted span named %q", s.Name)
				}
				if sc := b.Scopes[s.Scope]; int(sc.Resource) >= len(b.Resources) {
					t.Fatalf("scope names resource %d of %d", sc.Resource, len(b.Resources))
				}
			}
			msg := fmt.Sprintf("%d spans rejected: %d with a string that is not valid UTF-8 (first: %s)", want.BadUTF8, want.BadUTF8, c.field)
			if got := b.Rejected.Message(); got != msg {
				t.Fatalf("message %q, want %q", got, msg)
			}
		})
	}
}

func TestParseWindow(t *testing.T) {
	const maxU64 = ^uint64(0)
	at := func(start uint64) *tracepb.Span {
		sp := span([]byte{15: 1}, []byte{7: 1})
		sp.StartTimeUnixNano, sp.EndTimeUnixNano = start, 0 // an end before the start is kept as sent
		return sp
	}
	req := marshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{at(0), at(99), at(100), at(200), at(201), at(maxU64)}}},
	}}})
	for _, c := range []struct {
		w            Window
		accepted     []uint64
		tooOld, tooN int
	}{
		{Window{}, []uint64{0, 99, 100, 200, 201, maxU64}, 0, 0},
		{Window{NotBefore: 100, NotAfter: 200}, []uint64{100, 200}, 2, 2},
		{Window{NotAfter: maxU64}, []uint64{0, 99, 100, 200, 201, maxU64}, 0, 0},
		{Window{NotBefore: maxU64}, []uint64{maxU64}, 5, 0},
	} {
		var b Batch
		if err := Parse(req, &b, c.w); err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, s := range b.Spans {
			got = append(got, s.Start)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.accepted) || b.Rejected.TooOld != c.tooOld || b.Rejected.TooNew != c.tooN {
			t.Errorf("window %+v: accepted %v, rejected %+v; want %v, %d too old, %d too new", c.w, got, b.Rejected, c.accepted, c.tooOld, c.tooN)
		}
	}
	var b Batch
	if err := Parse(req, &b, Window{NotBefore: 100, NotAfter: 200}); err != nil {
		t.Fatal(err)
	}
	const msg = "4 spans rejected: 2 starting before 1970-01-01T00:00:00Z, outside the retention period, " +
		"2 starting after 1970-01-01T00:00:00Z, too far in the future (check the sender's clock)"
	if got := b.Rejected.Message(); got != msg {
		t.Fatalf("message %q, want %q", got, msg)
	}
	if got := (Rejection{TooNew: 1, Window: Window{NotAfter: maxU64}}).Message(); got != "1 spans rejected: 1 starting after 2262-04-11T23:47:16Z, too far in the future (check the sender's clock)" {
		t.Fatalf("message past int64 nanoseconds: %q", got)
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
	if err := Parse(marshal(t, req), &b, Window{}); err != nil {
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

// statusOf is the status a span counts under: its code, or unset for a
// code OTLP does not define.
func statusOf(sp *tracepb.Span) uint8 {
	if c := sp.GetStatus().GetCode(); c <= tracepb.Status_STATUS_CODE_ERROR {
		return uint8(c)
	}
	return 0
}

// TestParseMergedStatus sends a span whose status field comes twice, as
// protobuf allows: the second merges over the first, so an error followed
// by a code OTLP does not define leaves the span unset, not an error.
func TestParseMergedStatus(t *testing.T) {
	for _, second := range []tracepb.Status_StatusCode{tracepb.Status_STATUS_CODE_OK, 3} {
		sp := span([]byte{15: 1}, []byte{1, 2, 3, 4, 5, 6, 7, 8})
		sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
		raw := marshal(t, sp)
		raw = protowire.AppendTag(raw, 15, protowire.BytesType) // Span.status again
		raw = protowire.AppendBytes(raw, marshal(t, &tracepb.Status{Code: second}))
		var decoded tracepb.Span
		if err := proto.Unmarshal(raw, &decoded); err != nil {
			t.Fatal(err)
		}
		var b Batch
		if err := Parse(wireRequest(raw), &b, Window{}); err != nil || len(b.Spans) != 1 {
			t.Fatalf("parse: %v, %d spans", err, len(b.Spans))
		}
		if got := b.Spans[0]; got.Status != statusOf(&decoded) || got.Error {
			t.Errorf("error then %v: status %d, error %v; protobuf decodes %v", second, got.Status, got.Error, decoded.GetStatus())
		}
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

// TestFactsOfDamagedSpans reads every truncation of a span, and the span
// with each byte replaced by one that makes a bad length or wire type:
// Facts must not panic, and a truncation keeps the fields wholly before
// the cut.
func TestFactsOfDamagedSpans(t *testing.T) {
	sp := span([]byte{15: 1}, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	raw := marshal(t, sp)
	whole := Facts(raw)
	for n := range raw {
		f := Facts(raw[:n])
		if f.ID != whole.ID && f.ID != ([8]byte{}) {
			t.Fatalf("cut at %d: ID %x", n, f.ID)
		}
		if f.Start != whole.Start && f.Start != 0 {
			t.Fatalf("cut at %d: start %d", n, f.Start)
		}
	}
	for i := range raw {
		for _, b := range []byte{0xff, 0x07, 0x7f} {
			damaged := slices.Clone(raw)
			damaged[i] = b
			Facts(damaged)
		}
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
	sp.Events = []*tracepb.Span_Event{{Name: "e", Attributes: []*commonpb.KeyValue{
		kv("ev", &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}),
	}}}
	var got []string
	Attributes(marshal(t, sp), SpanAttributes, func(k []byte, typ ValueType, b []byte, num uint64) {
		got = append(got, fmt.Sprintf("%s:%d:%s", k, typ, AppendText(nil, typ, b, num)))
	})
	want := "[s:1:x b:2:true i:3:-2 d:4:1.5 y:7:CQ==]"
	if fmt.Sprint(got) != want {
		t.Fatalf("attributes %v, want %s", got, want)
	}
	got = got[:0]
	SpanAndEventAttributes(marshal(t, sp), func(k []byte, typ ValueType, b []byte, num uint64) {
		got = append(got, fmt.Sprintf("%s:%s", k, AppendText(nil, typ, b, num)))
	})
	if want := "[s:x b:true i:-2 d:1.5 y:CQ== ev:7]"; fmt.Sprint(got) != want {
		t.Fatalf("span and event attributes %v, want %s", got, want)
	}
}

// TestAppendText checks values against the text protobuf's JSON encoding
// gives them, the form OTLP JSON writes, but for -0, which is 0 as
// JavaScript writes it: search matches numbers by value.
func TestAppendText(t *testing.T) {
	doubles := []float64{0, math.Copysign(0, -1), 1, 123, 72.5, -0.1, 1e-6, 1e-7, 1.5e-300, 1e20, 1e21, 123456789e15,
		1 << 60, math.MaxFloat64, math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1)}
	var values []*commonpb.AnyValue
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		doubles = append(doubles, math.Float64frombits(rng.Uint64()), float64(rng.Int64N(1<<60))/float64(rng.Int64N(1<<20)+1))
	}
	for _, d := range doubles {
		values = append(values, &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: d}})
	}
	for _, i := range []int64{0, -1, 404, math.MaxInt64, math.MinInt64} {
		values = append(values, &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: i}})
	}
	values = append(values,
		&commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}},
		&commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: false}},
		&commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "a \"b\" ü"}},
		&commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0xff, 0, 1}}},
	)
	for _, v := range values {
		j, err := protojson.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		// {"doubleValue":72.5}: the value is the field's JSON, unquoted.
		var field map[string]any
		if err := json.Unmarshal(j, &field); err != nil {
			t.Fatal(err)
		}
		var want string
		for _, raw := range field {
			switch raw := raw.(type) {
			case string:
				want = raw
			default:
				_, rest, _ := strings.Cut(string(j), ":")
				want = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "}"))
			}
		}
		if want == "-0" {
			want = "0"
		}
		kv := marshal(t, &tracepb.Span{Attributes: []*commonpb.KeyValue{{Key: "k", Value: v}}})
		Attributes(kv, SpanAttributes, func(_ []byte, typ ValueType, b []byte, num uint64) {
			if got := string(AppendText(nil, typ, b, num)); got != want {
				t.Errorf("%v: text %q, OTLP JSON writes %q", v, got, want)
			}
		})
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
	bad := marshal(f, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:  &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "s1"}}}}},
		SchemaUrl: "r1",
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "c1"}, SchemaUrl: "u1",
			Spans: []*tracepb.Span{span([]byte{15: 1}, []byte{7: 1}), span([]byte{15: 2}, []byte{7: 2})},
		}},
	}}})
	f.Add(bad)
	for _, s := range []string{"s1", "r1", "c1", "u1", "op"} {
		f.Add(replaceOnce(bad, []byte(s), []byte(badString)))
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		var b Batch
		if err := Parse(req, &b, Window{NotBefore: 1, NotAfter: 1 << 62}); err != nil {
			return
		}
		var ref collectorpb.ExportTraceServiceRequest
		total, err := countSpans(req)
		if err != nil {
			t.Fatalf("Parse accepted a request whose structure does not walk: %v", err)
		}
		// Invalid UTF-8, which proto.Unmarshal refuses, only rejects spans.
		if err := proto.Unmarshal(req, &ref); err != nil && b.Rejected.BadUTF8Field == "" {
			t.Fatalf("Parse accepted what proto.Unmarshal rejects: %v", err)
		}
		if got := len(b.Spans) + b.Rejected.Total(); got != total {
			t.Fatalf("accepted+rejected = %d, request has %d spans", got, total)
		}
		for _, r := range b.Resources {
			if err := proto.Unmarshal(r.Raw, &resourcepb.Resource{}); err != nil || !utf8.Valid(r.SchemaURL) {
				t.Fatalf("accepted resource does not decode (%v) or has a schema URL %q", err, r.SchemaURL)
			}
		}
		for _, sc := range b.Scopes {
			if err := proto.Unmarshal(sc.Raw, &commonpb.InstrumentationScope{}); err != nil || !utf8.Valid(sc.SchemaURL) {
				t.Fatalf("accepted scope does not decode (%v) or has a schema URL %q", err, sc.SchemaURL)
			}
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
			if want := statusOf(&sp); s.Status != want {
				t.Fatalf("status %d, decoded %v", s.Status, sp.GetStatus())
			}
			if s.Start < 1 || s.Start > 1<<62 {
				t.Fatalf("accepted a span starting at %d, outside the window", s.Start)
			}
			// Ingest indexes the attributes Parse recorded; search checks
			// those Attributes reads from the stored span. They must agree.
			type attr struct {
				Key, B string
				Type   ValueType
				Num    uint64
			}
			var walked, recorded []attr
			SpanAndEventAttributes(s.Raw, func(key []byte, t ValueType, b []byte, num uint64) {
				walked = append(walked, attr{string(key), string(b), t, num})
			})
			// Read through a copy: an attribute is found in its span's
			// bytes wherever they are kept.
			raw := bytes.Clone(s.Raw)
			for _, a := range b.SpanAttrs(&s) {
				recorded = append(recorded, attr{string(a.Key(raw)), string(a.B(raw)), a.Type, a.Num})
			}
			if !reflect.DeepEqual(recorded, walked) && (len(recorded) > 0 || len(walked) > 0) {
				t.Fatalf("Parse recorded attributes %v, Attributes reads %v", recorded, walked)
			}
		}
	})
}

// countSpans counts the spans of an encoded request by its wire structure
// alone, for requests that proto.Unmarshal refuses for their strings.
func countSpans(req []byte) (int, error) {
	n := 0
	var walk func(msg []byte, depth int) error
	walk = func(msg []byte, depth int) error {
		for len(msg) > 0 {
			num, typ, k := protowire.ConsumeTag(msg)
			if k < 0 {
				return protowire.ParseError(k)
			}
			msg = msg[k:]
			k = protowire.ConsumeFieldValue(num, typ, msg)
			if k < 0 {
				return protowire.ParseError(k)
			}
			field := msg[:k]
			msg = msg[k:]
			// resource_spans, scope_spans and spans are each field 1 or 2
			// of their parent.
			if typ != protowire.BytesType || num != map[int]protowire.Number{0: 1, 1: 2, 2: 2}[depth] {
				continue
			}
			if depth == 2 {
				n++
				continue
			}
			v, _ := protowire.ConsumeBytes(field)
			if err := walk(v, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return n, walk(req, 0)
}
