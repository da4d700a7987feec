package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/internal/otlptest"
	"cairn/query/jaegerpb"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// sampleTrace is a small checkout trace: a root, two children, a grandchild
// with an error, and an orphan whose parent never arrived.
func sampleTrace() *collectorpb.ExportTraceServiceRequest {
	tid := []byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	id := func(n byte) []byte { return []byte{0, 0, 0, 0, 0, 0, 0, n} }
	const t0 = 1_700_000_000_000_000_000
	sp := func(n, parent byte, name string, start, end uint64) *tracepb.Span {
		s := &tracepb.Span{TraceId: tid, SpanId: id(n), Name: name, StartTimeUnixNano: t0 + start, EndTimeUnixNano: t0 + end}
		if parent != 0 {
			s.ParentSpanId = id(parent)
		}
		return s
	}
	failed := sp(4, 3, "Charge", 90e6, 140e6)
	failed.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "card declined"}
	return &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "frontend")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{sp(1, 0, "GET /checkout", 0, 200e6), sp(2, 1, "GetCart", 10e6, 60e6), sp(3, 1, "POST /pay", 80e6, 150e6)}}},
		},
		{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "payment")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{failed, sp(5, 9, "late callback", 160e6, 180e6)}}},
		},
	}}
}

func exportRequest(t *testing.T, addr string, req *collectorpb.ExportTraceServiceRequest) {
	t.Helper()
	if _, err := collectorpb.NewTraceServiceClient(grpctest.Dial(t, addr)).Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

func TestTraceCommandWaterfall(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	exportRequest(t, s.otlpAddr.String(), sampleTrace())

	var out, errOut bytes.Buffer
	// Flags may stand after the trace ID.
	err := run([]string{"trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--addr", s.queryAddr.String()}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"trace 4bf92f3577b34da6a3ce929d0e0e4736  5 spans  2 services  200.000 ms  1 error",
		"frontend: GET /checkout",
		"├─ frontend: GetCart",
		"└─ frontend: POST /pay",
		"   └─ payment: Charge",
		"✗ error: card declined",
		"payment: late callback",
		"(orphan: parent 0000000000000009 not in trace)",
		"      10.000       50.000",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("waterfall lacks %q:\n%s", want, got)
		}
	}
	// The orphan comes after the tree.
	if strings.Index(got, "late callback") < strings.Index(got, "Charge") {
		t.Errorf("orphan listed before the tree:\n%s", got)
	}

	// The header says what --max-spans left out, and the last line sums it up.
	out.Reset()
	if err := run([]string{"trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--max-spans", "2", "--addr", s.queryAddr.String()}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	for _, want := range []string{
		"(showing 2 spans: 3 past --max-spans 2; --max-spans 0 shows all)",
		"… 3 more spans",
		"(--max-spans 2)  ✗ 1 error",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("waterfall with --max-spans 2 lacks %q:\n%s", want, out.String())
		}
	}

	err = run([]string{"trace", "--addr", s.queryAddr.String(), "00000000000000000000000000000001"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown trace: %v", err)
	}
	if err := run([]string{"trace", "xyz"}, &out, &errOut); err == nil {
		t.Fatal("a malformed trace ID was accepted")
	}
}

// fromOTLPJSON undoes the hex encoding of IDs so protojson can parse it. It
// walks a decoded document, unlike the code under test.
func fromOTLPJSON(t *testing.T, doc []byte) *tracepb.TracesData {
	t.Helper()
	idFields := map[string]bool{"traceId": true, "spanId": true, "parentSpanId": true}
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && idFields[k] {
					raw, err := hex.DecodeString(s)
					if err != nil {
						t.Fatalf("%s %q is not hex", k, s)
					}
					x[k] = base64.StdEncoding.EncodeToString(raw)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	b, _ := json.Marshal(v)
	td := &tracepb.TracesData{}
	if err := protojson.Unmarshal(b, td); err != nil {
		t.Fatal(err)
	}
	return td
}

func TestTraceCommandOTLPJSON(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	req := otlptest.EveryField()
	exportRequest(t, s.otlpAddr.String(), req)

	var out, errOut bytes.Buffer
	if err := run([]string{"trace", "--format", "otlp-json", "deadbeef0102030405060708090a0b0c", "--addr", s.queryAddr.String()}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), `"traceId": "deadbeef0102030405060708090a0b0c"`) ||
		!strings.Contains(out.String(), `"spanId": "0000000000000001"`) ||
		!strings.Contains(out.String(), `"kind": 1`) {
		t.Fatalf("not OTLP JSON with hex IDs and numeric enums:\n%.2000s", out.String())
	}
	got := otlptest.Traces{}
	got.Add(fromOTLPJSON(t, out.Bytes()).ResourceSpans)
	want := getTraces(t, grpctest.Dial(t, s.queryAddr.String()), []string{"deadbeef0102030405060708090a0b0c"})
	for id := range want {
		if d := otlptest.DiffTrace(want[id], got[id]); d != "" {
			t.Fatal(d)
		}
	}
}

// TestLargeTraceChunked reads a 20,000-span trace through a client with
// jaeger-query's default 4 MiB message limit.
func TestLargeTraceChunked(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	tid := bytes.Repeat([]byte{7}, 16)
	sent := otlptest.Traces{}
	for r := range 20 {
		req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "batch")}},
		}}}
		ss := &tracepb.ScopeSpans{}
		for i := range 1000 {
			sid := make([]byte, 8)
			binary.BigEndian.PutUint64(sid, uint64(r*1000+i+1))
			ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: tid, SpanId: sid, Name: "item", StartTimeUnixNano: uint64(1e18) + uint64(r*1000+i),
				Attributes: []*commonpb.KeyValue{str("payload", strings.Repeat("p", 250))}})
		}
		req.ResourceSpans[0].ScopeSpans = []*tracepb.ScopeSpans{ss}
		exportRequest(t, s.otlpAddr.String(), req)
		b, _ := proto.Marshal(req)
		sent.AddRequest(b)
	}

	conn := grpctest.Dial(t, s.queryAddr.String()) // 4 MiB receive limit
	stream, err := jaegerpb.NewTraceReaderClient(conn).GetTraces(context.Background(),
		&jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: tid}}})
	if err != nil {
		t.Fatal(err)
	}
	got := otlptest.Traces{}
	chunks := 0
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks++
		got.Add(chunk.ResourceSpans)
	}
	if chunks < 2 {
		t.Fatalf("a 6 MB trace came in %d chunk(s)", chunks)
	}
	for id := range sent {
		if d := otlptest.DiffTrace(sent[id], got[id]); d != "" {
			t.Fatal(d)
		}
	}
}

func TestServicesAndOperationsCommands(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	exportRequest(t, s.otlpAddr.String(), sampleTrace())
	var out, errOut bytes.Buffer
	if err := run([]string{"services", "--addr", s.queryAddr.String()}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	if out.String() != "frontend\npayment\n" {
		t.Fatalf("services printed %q", out.String())
	}
	out.Reset()
	if err := run([]string{"operations", "frontend", "--addr", s.queryAddr.String()}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	const want = "KIND  OPERATION\n-     GET /checkout\n-     GetCart\n-     POST /pay\n"
	if out.String() != want {
		t.Fatalf("operations printed\n%s\nwant\n%s", out.String(), want)
	}
	if err := run([]string{"operations", "--addr", s.queryAddr.String()}, &out, &errOut); err == nil {
		t.Fatal("operations without a service was accepted")
	}
}

func TestSearchCommand(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	exportRequest(t, s.otlpAddr.String(), sampleTrace())
	addr := s.queryAddr.String()
	run1 := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(append([]string{"search"}, args...), &out, &errOut); err != nil {
			t.Fatalf("search %v: %v: %s", args, err, errOut.String())
		}
		return out.String()
	}

	table := run1("--service", "payment", "--addr", addr)
	for _, want := range []string{"START", "TRACE ID", "4bf92f3577b34da6a3ce929d0e0e4736", "frontend: GET /checkout", "200.000 ms", "2023-11-14 22:13:20.000"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	var got []searchResult
	if err := json.Unmarshal([]byte(run1("--errors", "--format", "json", "--addr", addr)), &got); err != nil {
		t.Fatal(err)
	}
	want := []searchResult{{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Start: "2023-11-14T22:13:20Z", DurationMS: 200,
		RootService: "frontend", RootOperation: "GET /checkout", Spans: 5, Errors: 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("json %+v, want %+v", got, want)
	}

	// No span is that slow, none is that recent.
	if out := run1("--min-duration", "1s", "--format", "json", "--addr", addr); strings.TrimSpace(out) != "[]" {
		t.Fatalf("--min-duration 1s found %s", out)
	}
	if out := run1("--since", "1h", "--format", "json", "--addr", addr); strings.TrimSpace(out) != "[]" {
		t.Fatalf("--since 1h found %s", out)
	}
}

func TestAttrFlagTyping(t *testing.T) {
	for in, want := range map[string]string{
		`code=200`:   "int_value:200",
		`code="200"`: `string_value:"200"`,
		`ratio=0.5`:  "double_value:0.5",
		`retry=true`: "bool_value:true",
		`path=/a/b`:  `string_value:"/a/b"`,
		`name=True`:  `string_value:"True"`,
	} {
		var a attrFlags
		if err := a.Set(in); err != nil {
			t.Fatal(err)
		}
		if got := strings.ReplaceAll(a[0].Value.String(), "  ", " "); got != want {
			t.Errorf("%s typed as %s, want %s", in, got, want)
		}
	}
	var a attrFlags
	if err := a.Set("novalue"); err == nil {
		t.Error("an attribute without = was accepted")
	}
}
