package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/grpctest"
	"cairn/query/analysispb"
)

// metricsBase is when the spans of metricsFixture start.
var metricsBase = time.Date(2023, 11, 14, 22, 13, 0, 0, time.UTC)

// metricsFixture is web's spans over five minutes from metricsBase: POST
// /checkout served 2, 4, … 10 times a minute, taking 10, 20, … ms, one call
// failing in minute 2; GET /cart once in minutes 0 and 3; three SELECTs in
// minute 1; and a span of another service. It has 36 spans.
func metricsFixture() *collectorpb.ExportTraceServiceRequest {
	var web, pay []*tracepb.Span
	trace := byte(0)
	add := func(spans *[]*tracepb.Span, name string, kind tracepb.Span_SpanKind, minute int, offset, duration time.Duration, failed bool) {
		trace++
		start := uint64(metricsBase.Add(time.Duration(minute)*time.Minute + offset).UnixNano())
		s := &tracepb.Span{TraceId: []byte{0: 0xab, 15: trace}, SpanId: []byte{7: 1}, Name: name, Kind: kind,
			StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(duration)}
		if failed {
			s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "declined"}
		}
		*spans = append(*spans, s)
	}
	for m := range 5 {
		for j := range 2 * (m + 1) {
			add(&web, "POST /checkout", tracepb.Span_SPAN_KIND_SERVER, m, time.Duration(j)*time.Second, time.Duration(j+1)*10*time.Millisecond, m == 2 && j == 1)
		}
	}
	add(&web, "GET /cart", tracepb.Span_SPAN_KIND_SERVER, 0, 0, 5*time.Millisecond, false)
	add(&web, "GET /cart", tracepb.Span_SPAN_KIND_SERVER, 3, 0, 5*time.Millisecond, false)
	for j := range 3 {
		add(&web, "SELECT", tracepb.Span_SPAN_KIND_CLIENT, 1, time.Duration(j)*time.Second, time.Millisecond, false)
	}
	add(&pay, "Charge", tracepb.Span_SPAN_KIND_SERVER, 0, 0, time.Second, false)
	resource := func(service string, spans []*tracepb.Span) *tracepb.ResourceSpans {
		return &tracepb.ResourceSpans{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}}}}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
		}
	}
	return &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{resource("web", web), resource("pay", pay)}}
}

// splitCommand splits a command line at spaces outside single quotes.
func splitCommand(line string) []string {
	var (
		args   []string
		cur    strings.Builder
		quoted bool
	)
	for _, r := range line {
		switch {
		case r == '\'':
			quoted = !quoted
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	return args
}

// TestMetricsGolden runs each testdata/metrics/*.golden file's command, its
// first line, against a server holding metricsFixture, and compares the
// output with the rest of the file.
func TestMetricsGolden(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	exportRequest(t, s.otlpAddr.String(), metricsFixture())
	client := analysispb.NewAnalysisClient(grpctest.Dial(t, s.queryAddr.String()))
	waitFor(t, "the cut", func() bool {
		resp, err := client.GetSpanMetrics(context.Background(), &analysispb.GetSpanMetricsRequest{
			StartTime: timestamppb.New(metricsBase), EndTime: timestamppb.New(metricsBase.Add(time.Hour)), Step: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		calls := uint64(0)
		for _, s := range resp.Series {
			for _, p := range s.Points {
				calls += p.Calls
			}
		}
		return calls == 36
	})
	checkGoldens(t, "testdata/metrics", "", func(t *testing.T, args string) string {
		var out, errOut bytes.Buffer
		if err := run(append(splitCommand(args), "--addr", s.queryAddr.String()), &out, &errOut); err != nil {
			t.Fatalf("%v: %s", err, errOut.String())
		}
		return out.String()
	})
}

func TestMetricsRefusesWrongCalls(t *testing.T) {
	for _, args := range [][]string{
		{"metrics"},
		{"metrics", "web", "--step", "90s"},
		{"metrics", "web", "--kind", "server-side"},
		{"metrics", "web", "--since", "1h", "--start", "2023-11-14T22:13:00Z"},
		{"metrics", "web", "--start", "2023-11-14T22:13:00Z", "--end", "2023-11-14T22:13:00Z"},
		{"metrics", "web", "--format", "csv"},
		{"metrics", "--by", "host"},
		{"metrics", "--by", "operation"},
	} {
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); exitStatus(err, &errOut) != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

// TestMetricsShapeNames reads the span metrics of inventory, whose stock
// query is named by its SQL with the SKU in it: with --shape-names, the
// queries are one series, their shape, counting their names, as the web
// UI's page of a service shows them.
func TestMetricsShapeNames(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	start, _, end := writeScenario(t, s, "literal-sql")
	args := []string{"metrics", "inventory", "--kind", "client", "--start", start.Format(time.RFC3339), "--end", end.Format(time.RFC3339),
		"--step", "20m", "--format", "json", "--addr", s.queryAddr.String()}
	var calls uint64
	waitFor(t, "the cut", func() bool {
		var m metricsJSON
		if err := json.Unmarshal([]byte(runJSON(t, args...)), &m); err != nil {
			t.Fatal(err)
		}
		calls = 0
		for _, se := range m.Series {
			for _, p := range se.Points {
				calls += p.Calls
			}
		}
		return calls > 0 && len(m.Series) > 100
	})
	var shaped metricsJSON
	if err := json.Unmarshal([]byte(runJSON(t, append(args, "--shape-names")...)), &shaped); err != nil {
		t.Fatal(err)
	}
	shapedCalls := uint64(0)
	for _, se := range shaped.Series {
		for _, p := range se.Points {
			shapedCalls += p.Calls
		}
	}
	if len(shaped.Series) != 1 || shaped.Series[0].Operation != "SELECT stock FROM inventory WHERE sku = ?" || shaped.Series[0].SpanNames < 100 ||
		shapedCalls != calls {
		t.Fatalf("shaped series %+v, want the query's shape alone, of its many names and all %d calls", shaped.Series, calls)
	}
}
