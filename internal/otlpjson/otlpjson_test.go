package otlpjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"cairn/internal/otlptest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestDecodeGolden decodes each testdata/*.json and compares the result,
// re-encoded as indented OTLP/JSON, or the error, with its .golden file.
func TestDecodeGolden(t *testing.T) {
	docs, err := filepath.Glob("testdata/*.json")
	if err != nil || len(docs) == 0 {
		t.Fatal("no testdata", err)
	}
	for _, path := range docs {
		t.Run(filepath.Base(path), func(t *testing.T) {
			doc, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := describe(t, doc)
			golden := strings.TrimSuffix(path, ".json") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// describe is what a golden file holds: the error, or the decoded request
// encoded again. protojson varies whitespace, and the space after "proto:"
// in its errors, from build to build; both are normalized.
func describe(t *testing.T, doc []byte) []byte {
	wire, err := DecodeRequest(doc)
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("error %v does not wrap ErrMalformed", err)
		}
		return []byte("error: " + strings.ReplaceAll(err.Error(), "\u00a0", " ") + "\n")
	}
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(wire, &req); err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(&req)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "  "); err != nil {
		t.Fatal(err)
	}
	return append(buf.Bytes(), '\n')
}

// TestRoundTrip checks that every OTLP field survives Marshal then
// DecodeRequest, and that IDs are hex on the way.
func TestRoundTrip(t *testing.T) {
	want := otlptest.EveryField()
	doc, err := Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(`"traceId":"deadbeef0102030405060708090a0b0c"`)) &&
		!bytes.Contains(doc, []byte(`"traceId": "deadbeef0102030405060708090a0b0c"`)) {
		t.Fatalf("trace IDs are not hex:\n%s", doc)
	}
	wire, err := DecodeRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	var got collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	// NaN never equals itself; compare the encodings instead.
	a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(want)
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&got)
	if !bytes.Equal(a, b) {
		t.Fatalf("round trip differs:\n got  %v\n want %v", &got, want)
	}
}

// TestRewriteLeavesOtherStrings checks that only the values of ID fields
// change: keys, other values and strings that merely contain an ID field's
// name stay as they are.
func TestRewriteLeavesOtherStrings(t *testing.T) {
	for _, doc := range []string{
		`{"name":"traceId","key":"spanId","value":{"stringValue":"parentSpanId"}}`,
		`{"a":"\"traceId\":\"00\"","b":["traceId","x"]}`,
		`{"traceId":null,"spanId":12,"parentSpanId":{"x":"ab"}}`,
		`not json "traceId" : "zz`,
	} {
		got, err := rewriteIDs([]byte(doc), hexToBase64)
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if string(got) != doc {
			t.Errorf("rewrote %s into %s", doc, got)
		}
	}
}

// addTestdata seeds f with the golden documents.
func addTestdata(f *testing.F) {
	docs, _ := filepath.Glob("testdata/*.json")
	for _, path := range docs {
		doc, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(doc)
	}
}

// FuzzDecodeRequest checks that no document makes the decoder panic, and
// that whatever decodes, encodes and decodes again to the same request.
func FuzzDecodeRequest(f *testing.F) {
	addTestdata(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		wire, err := DecodeRequest(doc)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var req collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			t.Fatalf("decoded into invalid protobuf: %v", err)
		}
		again, err := Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		wire2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v\n%s", err, again)
		}
		var req2 collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(wire2, &req2); err != nil {
			t.Fatal(err)
		}
		a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&req)
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&req2)
		if !bytes.Equal(a, b) {
			t.Fatalf("decode(encode(decode(doc))) differs from decode(doc)")
		}
	})
}

// TestTranscodeTakesCommonShapes checks that what SDKs, the Collector and
// TestWideIntegersBecomeDoubles: integer attributes past int64's range,
// as OpenTelemetry JS's JSON exporter writes the doubles it holds, are
// stored as those doubles (-2^63 written with its digits rounded, as the
// int64 it is), in both spellings of the field, rather than refusing the
// request; what protojson takes is as it was.
func TestWideIntegersBecomeDoubles(t *testing.T) {
	doc := []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",` +
		`"spanId":"eee19b7ec3c1b174","name":"s","attributes":[` +
		`{"key":"a","value":{"intValue":9223372036854776000}},{"key":"b","value":{"intValue": 1e+21}},` +
		`{"key":"c","value":{"int_value":-9223372036854776000}},{"key":"d","value":{"intValue":"42"}},` +
		`{"key":"e","value":{"stringValue":"\"intValue\":9223372036854776000"}},{"key":"f","value":{"intValue":-1e300}}]}]}]}]}`)
	wire, err := DecodeRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(wire, &req); err != nil {
		t.Fatal(err)
	}
	want := []*commonpb.AnyValue{
		{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 9223372036854775808}},
		{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 1e21}},
		{Value: &commonpb.AnyValue_IntValue{IntValue: math.MinInt64}},
		{Value: &commonpb.AnyValue_IntValue{IntValue: 42}},
		{Value: &commonpb.AnyValue_StringValue{StringValue: `"intValue":9223372036854776000`}},
		{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: -1e300}},
	}
	got := req.ResourceSpans[0].ScopeSpans[0].Spans[0].Attributes
	for i, w := range want {
		if !proto.Equal(got[i].Value, w) {
			t.Errorf("attribute %s: %v, want %v", got[i].Key, got[i].Value, w)
		}
	}
	for _, bad := range []string{`1.5`, `"9223372036854775808"`, `1e400`} {
		doc := []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"intValue":` + bad + `}}]}]}]}]}`)
		if _, err := DecodeRequest(doc); err == nil {
			t.Errorf("intValue %s taken, want it refused", bad)
		}
	}
}

// Marshal write takes the direct path, and decodes as through protojson.
func TestTranscodeTakesCommonShapes(t *testing.T) {
	every, err := Marshal(otlptest.EveryField())
	if err != nil {
		t.Fatal(err)
	}
	// protojson writes non-finite doubles as strings, which are left to it.
	every = bytes.ReplaceAll(every, []byte(`"NaN"`), []byte(`-1.25e-3`))
	docs := map[string][]byte{"every field": every}
	// testdata/request.json holds what is left to protojson: NaN, an
	// unknown field, an enum by name, an escaped ID.
	for _, name := range []string{"empty.json"} {
		doc, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		docs[name] = doc
	}
	docs["escapes"] = []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"caf\u00e9 \"q\" \\ \/ \n\t\ud83d\ude00 ü",` +
		`"attributes":[{"key":"k","value":{"stringValue":""}},{"key":"b","value":{"boolValue":false}},` +
		`{"key":"i","value":{"intValue":-7}},{"key":"d","value":{"doubleValue":0}}]}]}]}]}`)
	// Defaults written out, as OpenTelemetry JS writes the dropped counts.
	docs["zeros"] = []byte(`{"resourceSpans":[{"resource":{"droppedAttributesCount":0},"schemaUrl":"","scopeSpans":[{"spans":[` +
		`{"traceId":"","name":"","kind":0,"flags":0,"startTimeUnixNano":"0","endTimeUnixNano":0,"droppedAttributesCount":0,` +
		`"droppedEventsCount":0,"droppedLinksCount":0,"events":[],"links":[],"status":{"code":0,"message":""}}]}]}]}`)
	for name, doc := range docs {
		fast, err := transcode(doc)
		if err != nil {
			t.Errorf("%s: left to protojson", name)
			continue
		}
		if diff := sameRequest(t, fast, doc); diff != "" {
			t.Errorf("%s: %s", name, diff)
		}
	}
}

// sameRequest compares what transcode made of doc with what protojson
// makes of it, and with protobuf's encoding of that.
func sameRequest(t *testing.T, fast, doc []byte) string {
	slow, err := DecodeRequest(doc)
	if err != nil {
		return "transcoded a document protojson refuses: " + err.Error()
	}
	var a, b collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(fast, &a); err != nil {
		return "transcoded into invalid protobuf: " + err.Error()
	}
	if err := proto.Unmarshal(slow, &b); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&a, &b) {
		return fmt.Sprintf("transcoded\n%v\nprotojson decoded\n%v", &a, &b)
	}
	if want, _ := proto.Marshal(&b); !bytes.Equal(fast, want) {
		return fmt.Sprintf("transcoded into %x, not protobuf's encoding %x", fast, want)
	}
	return ""
}

// FuzzTranscode checks that whatever transcode takes, protojson takes too,
// to the same request.
func FuzzTranscode(f *testing.F) {
	addTestdata(f)
	every, _ := Marshal(otlptest.EveryField())
	f.Add(bytes.ReplaceAll(every, []byte(`"NaN"`), []byte(`2.5`)))
	f.Add([]byte(`{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"00","name":"\u00e9\ud83d\ude00","kind":2,"flags":"1"}]}]}]}`))
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"\ud83d\u0041\udc00` + "\xff\xe2\x82" + `"}]}]}]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		fast, err := transcode(doc)
		if err != nil {
			return
		}
		if diff := sameRequest(t, fast, doc); diff != "" {
			t.Fatal(diff)
		}
	})
}

// TestTranscodeRandomRequests encodes random requests as protojson writes
// them, in both spellings of field names, and checks that each takes the
// direct path to the same request, encoded as protobuf's encoder does.
func TestTranscodeRandomRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	runes := []rune{'a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', 0x01, 0x7f, 'é', '€', '😀', 0xfffd, 0x2028}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteRune(runes[rng.IntN(len(runes))])
		}
		return b.String()
	}
	id := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var value func(depth int) *commonpb.AnyValue
	attrs := func(depth int) []*commonpb.KeyValue {
		var kvs []*commonpb.KeyValue
		for range rng.IntN(4) {
			kvs = append(kvs, &commonpb.KeyValue{Key: str(), Value: value(depth + 1)})
		}
		return kvs
	}
	value = func(depth int) *commonpb.AnyValue {
		switch n := rng.IntN(7); {
		case n == 0:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: str()}}
		case n == 1:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: rng.IntN(2) == 0}}
		case n == 2:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(rng.Uint64())}}
		case n == 3:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: rng.NormFloat64() * math.Pow(10, float64(rng.IntN(40)-20))}}
		case n == 4:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: id(rng.IntN(9))}}
		case n == 5 && depth < 4:
			var vs []*commonpb.AnyValue
			for range rng.IntN(3) {
				vs = append(vs, value(depth+1))
			}
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}
		case n == 6 && depth < 4:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: attrs(depth)}}}
		}
		return &commonpb.AnyValue{}
	}
	for i := range 300 {
		req := &collectorpb.ExportTraceServiceRequest{}
		for range 1 + rng.IntN(2) {
			rs := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: attrs(0), DroppedAttributesCount: rng.Uint32()}, SchemaUrl: str()}
			for range 1 + rng.IntN(2) {
				ss := &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: str(), Version: str(), Attributes: attrs(0)}}
				for range rng.IntN(4) {
					start := rng.Uint64()
					ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: id(16), SpanId: id(8), ParentSpanId: id(8 * rng.IntN(2)),
						TraceState: str(), Flags: rng.Uint32(), Name: str(), Kind: tracepb.Span_SpanKind(rng.IntN(6)),
						StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(rng.IntN(1e9)), Attributes: attrs(0),
						DroppedAttributesCount: uint32(rng.IntN(3)), DroppedEventsCount: uint32(rng.IntN(3)), DroppedLinksCount: uint32(rng.IntN(3)),
						Events: []*tracepb.Span_Event{{TimeUnixNano: rng.Uint64(), Name: str(), Attributes: attrs(0)}},
						Links:  []*tracepb.Span_Link{{TraceId: id(16), SpanId: id(8), TraceState: str(), Attributes: attrs(0), Flags: rng.Uint32()}},
						Status: &tracepb.Status{Code: tracepb.Status_StatusCode(rng.IntN(3)), Message: str()}})
				}
				rs.ScopeSpans = append(rs.ScopeSpans, ss)
			}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		b, err := protojson.MarshalOptions{UseEnumNumbers: true, UseProtoNames: i%2 == 1, Multiline: i%3 == 0}.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := rewriteIDs(b, base64ToHex)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := transcode(doc)
		if err != nil {
			t.Fatalf("request %d left to protojson:\n%s", i, doc)
		}
		var got collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(fast, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, req) {
			t.Fatalf("request %d transcoded\n%v\nwant\n%v", i, &got, req)
		}
		// Fields in number order, as protobuf's encoder writes them.
		if want, _ := proto.Marshal(req); !bytes.Equal(fast, want) {
			t.Fatalf("request %d: the encoding is not protobuf's", i)
		}
	}
}

// TestTranscodeKnowsEveryField checks that the direct path knows every
// field of the OTLP messages cairn is built with, by both names: a field
// it did not know would send every document that has it to protojson.
func TestTranscodeKnowsEveryField(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor, s *schema)
	walk = func(md protoreflect.MessageDescriptor, s *schema) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			f, g := s.byName[fd.JSONName()], s.byName[string(fd.Name())]
			if f == nil || f != g || f.num != fd.Number() {
				t.Errorf("%s: field %s is not known by both names", md.FullName(), fd.Name())
				continue
			}
			if f.message != nil {
				walk(fd.Message(), f.message)
			}
		}
	}
	walk((&collectorpb.ExportTraceServiceRequest{}).ProtoReflect().Descriptor(), requestSchema)
	if len(seen) < 10 {
		t.Errorf("walked %d messages", len(seen))
	}
}

// TestInvalidStringsBecomeReplacementCharacters checks that bytes that are
// not UTF-8 and escapes of half a surrogate pair decode to U+FFFD, on the
// direct path and through protojson alike, and that the rest of the
// document is kept: the JavaScript SDK, cutting a string at its length
// limit, splits an emoji into a lone \ud83d.
func TestInvalidStringsBecomeReplacementCharacters(t *testing.T) {
	for _, c := range []struct{ name, value, want string }{
		{"half an emoji", `ok \ud83d`, "ok \ufffd"},
		{"a low surrogate alone", `\udc00x`, "\ufffdx"},
		{"a high surrogate before a letter's escape", `\uD83D\u0041`, "\ufffdA"},
		{"a high surrogate before a pair", `\ud83d\ud83d\ude00`, "\ufffd😀"},
		{"a whole pair", `\ud83d\ude00`, "😀"},
		{"bytes that are not UTF-8", "a\xff\xfeb", "a\ufffd\ufffdb"},
		{"a cut UTF-8 sequence", "\xe2\x82", "\ufffd\ufffd"},
		{"bytes that are not UTF-8 beside an escape", "\xff\\n", "\ufffd\n"},
	} {
		doc := []byte(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},` +
			`"scopeSpans":[{"spans":[` +
			`{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"first"},` +
			`{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0202030405060708","name":"cut","attributes":[{"key":"note","value":{"stringValue":"` + c.value + `"}}]},` +
			`{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0302030405060708","name":"last"}]}]}]}`)
		fast, ok := Transcode(doc)
		if !ok {
			t.Errorf("%s: left to protojson", c.name)
			continue
		}
		if diff := sameRequest(t, fast, doc); diff != "" {
			t.Errorf("%s: %s", c.name, diff)
			continue
		}
		var req collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(fast, &req); err != nil {
			t.Fatal(err)
		}
		spans := req.ResourceSpans[0].ScopeSpans[0].Spans
		if len(spans) != 3 || spans[1].Attributes[0].Value.GetStringValue() != c.want {
			t.Errorf("%s: %d spans, the value %q, want 3 and %q", c.name, len(spans), spans[1].Attributes[0].Value.GetStringValue(), c.want)
		}
	}
	// A document protojson decodes (here for an enum by name) takes the
	// same values.
	doc := []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",` +
		`"name":"n\ud83d` + "\xff" + `","kind":"SPAN_KIND_SERVER"}]}]}]}`)
	if _, ok := Transcode(doc); ok {
		t.Fatal("an enum by name took the direct path")
	}
	wire, err := DecodeRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(wire, &req); err != nil {
		t.Fatal(err)
	}
	if name := req.ResourceSpans[0].ScopeSpans[0].Spans[0].Name; name != "n\ufffd\ufffd" {
		t.Errorf("through protojson: name %q, want %q", name, "n\ufffd\ufffd")
	}
}
