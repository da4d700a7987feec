package query

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// modelValue is the documented JSON of a value, built plainly for
// encoding/json to write: the model appendValue is checked against.
func modelValue(v *commonpb.AnyValue) map[string]any {
	switch v := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return map[string]any{"type": "string", "value": v.StringValue}
	case *commonpb.AnyValue_BoolValue:
		return map[string]any{"type": "bool", "value": v.BoolValue}
	case *commonpb.AnyValue_IntValue:
		return map[string]any{"type": "int", "value": strconv.FormatInt(v.IntValue, 10)}
	case *commonpb.AnyValue_DoubleValue:
		f := v.DoubleValue
		switch {
		case math.IsNaN(f):
			return map[string]any{"type": "double", "value": "NaN"}
		case math.IsInf(f, 0):
			return map[string]any{"type": "double", "value": map[bool]string{true: "Infinity", false: "-Infinity"}[f > 0]}
		}
		return map[string]any{"type": "double", "value": f}
	case *commonpb.AnyValue_BytesValue:
		return map[string]any{"type": "bytes", "value": base64.StdEncoding.EncodeToString(v.BytesValue)}
	case *commonpb.AnyValue_ArrayValue:
		vals := []any{}
		for _, e := range v.ArrayValue.Values {
			vals = append(vals, modelValue(e))
		}
		return map[string]any{"type": "array", "value": vals}
	case *commonpb.AnyValue_KvlistValue:
		return map[string]any{"type": "kvlist", "value": modelAttrs(v.KvlistValue.Values)}
	}
	return map[string]any{"type": "empty", "value": nil}
}

func modelAttrs(kvs []*commonpb.KeyValue) []any {
	out := []any{}
	for _, kv := range kvs {
		m := modelValue(kv.Value)
		m["key"] = kv.Key
		out = append(out, m)
	}
	return out
}

var tricky = []string{"", "plain", `quote " and \ backslash`, "tab\tnewline\n\x00\x1f", "héllo wörld", "emoji 🙂", "<html>&amp;", "\u2028", "bad \xff utf-8"}

// anyTypeValue is a value of any type, lists and maps nested up to depth 3,
// strings among those that need escaping.
func anyTypeValue(r *rand.Rand, depth int) *commonpb.AnyValue {
	switch r.IntN(map[bool]int{true: 6, false: 8}[depth > 2]) {
	case 0:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: tricky[r.IntN(len(tricky))]}}
	case 1:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: r.IntN(2) == 0}}
	case 2:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(r.Uint64())}}
	case 3:
		f := []float64{0.5, -1e300, 1e-300, math.NaN(), math.Inf(1), math.Inf(-1), math.Float64frombits(r.Uint64())}[r.IntN(7)]
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: f}}
	case 4:
		b := make([]byte, r.IntN(10))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: b}}
	case 5:
		return &commonpb.AnyValue{}
	case 6:
		a := &commonpb.ArrayValue{}
		for range r.IntN(4) {
			a.Values = append(a.Values, anyTypeValue(r, depth+1))
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: a}}
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: anyTypeAttrs(r, depth+1)}}}
}

func anyTypeAttrs(r *rand.Rand, depth int) []*commonpb.KeyValue {
	var kvs []*commonpb.KeyValue
	for range r.IntN(5) {
		kvs = append(kvs, &commonpb.KeyValue{Key: tricky[r.IntN(len(tricky))], Value: anyTypeValue(r, depth)})
	}
	return kvs
}

// TestAppendAttrs checks the JSON of random attributes, of every type and
// nesting, with strings that need escaping, against the model.
func TestAppendAttrs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		kvs := anyTypeAttrs(r, 0)
		b := appendAttrs(nil, kvs)
		var got, want any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("invalid JSON %s: %v", b, err)
		}
		wb, _ := json.Marshal(modelAttrs(kvs))
		if err := json.Unmarshal(wb, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("attributes\n%s\nwant\n%s", b, wb)
		}
	}
}

// FuzzAppendString checks that every string is written as JSON that reads
// back as the same string (invalid UTF-8 replaced, as encoding/json does).
func FuzzAppendString(f *testing.F) {
	for _, s := range tricky {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString([]byte("x"), s)
		var got string
		if err := json.Unmarshal(b[1:], &got); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", s, b, err)
		}
		if want := strings.ToValidUTF8(s, "\uFFFD"); got != want && utf8.ValidString(s) {
			t.Fatalf("%q came back as %q", s, got)
		}
	})
}

// TestTraceJSONDropped checks that what a sender dropped is counted
// wherever OTLP counts it: resources, scopes, spans, events and links.
func TestTraceJSONDropped(t *testing.T) {
	tj := newTraceJSON("01")
	err := tj.add(&tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{DroppedAttributesCount: 1},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "s", DroppedAttributesCount: 2},
			Spans: []*tracepb.Span{{
				SpanId: []byte{1}, DroppedAttributesCount: 3, DroppedEventsCount: 4, DroppedLinksCount: 5,
				Events: []*tracepb.Span_Event{{Name: "e", DroppedAttributesCount: 6}, {Name: "f"}},
				Links:  []*tracepb.Span_Link{{SpanId: []byte{2}, Flags: 0x301, DroppedAttributesCount: 7}, {SpanId: []byte{3}}},
			}},
		}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tj.marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Resources []struct{ Dropped map[string]int }
		Scopes    []struct{ Dropped map[string]int }
		Spans     []struct {
			Dropped map[string]int
			Events  []struct{ Dropped map[string]int }
			Links   []struct {
				Flags   int
				Dropped map[string]int
			}
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	sp := got.Spans[0]
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"resource", got.Resources[0].Dropped, map[string]int{"attributes": 1}},
		{"scope", got.Scopes[0].Dropped, map[string]int{"attributes": 2}},
		{"span", sp.Dropped, map[string]int{"attributes": 3, "events": 4, "links": 5}},
		{"event", sp.Events[0].Dropped, map[string]int{"attributes": 6}},
		{"event without drops", sp.Events[1].Dropped, map[string]int(nil)},
		{"link", sp.Links[0].Dropped, map[string]int{"attributes": 7}},
		{"link flags", sp.Links[0].Flags, 0x301},
		{"link without drops", sp.Links[1].Dropped, map[string]int(nil)},
		{"link without flags", sp.Links[1].Flags, 0},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %v, want %v in %s", c.what, c.got, c.want, b)
		}
	}
}
