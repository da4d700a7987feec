package otlpjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

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

// FuzzDecodeRequest checks that no document makes the decoder panic, and
// that whatever decodes, encodes and decodes again to the same request.
func FuzzDecodeRequest(f *testing.F) {
	docs, _ := filepath.Glob("testdata/*.json")
	for _, path := range docs {
		doc, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(doc)
	}
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
