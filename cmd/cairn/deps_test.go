package main

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/grpctest"
	"cairn/query/analysispb"
)

// depsBase is when the traces of depsFixture start.
var depsBase = time.Date(2023, 11, 14, 22, 13, 0, 0, time.UTC)

// depsFixture is ten traces, ten seconds apart from depsBase. In each, web
// calls orders (taking 5, 10, … 50 ms; the fifth and tenth fail), which
// queries postgresql, sends no spans, and publishes to kafka, which mail
// consumes; and web calls payments.internal, whose server span only the
// odd traces have.
func depsFixture() *collectorpb.ExportTraceServiceRequest {
	spans := map[string][]*tracepb.Span{}
	str := func(k, v string) []*commonpb.KeyValue {
		return []*commonpb.KeyValue{{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}}
	}
	for i := range 10 {
		t0 := uint64(depsBase.Add(time.Duration(i) * 10 * time.Second).UnixNano())
		tid := []byte{0: 0xde, 15: byte(i + 1)}
		add := func(service string, id, parent byte, kind tracepb.Span_SpanKind, d time.Duration, attrs []*commonpb.KeyValue, failed bool) {
			s := &tracepb.Span{TraceId: tid, SpanId: []byte{7: id}, Name: service + " op", Kind: kind,
				StartTimeUnixNano: t0, EndTimeUnixNano: t0 + uint64(d), Attributes: attrs}
			if parent != 0 {
				s.ParentSpanId = []byte{7: parent}
			}
			if failed {
				s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
			}
			spans[service] = append(spans[service], s)
		}
		ms := time.Millisecond
		add("web", 1, 0, tracepb.Span_SPAN_KIND_SERVER, 100*ms, nil, false)
		add("web", 2, 1, tracepb.Span_SPAN_KIND_CLIENT, 60*ms, str("peer.service", "orders"), false)
		add("orders", 3, 2, tracepb.Span_SPAN_KIND_SERVER, time.Duration(i+1)*5*ms, nil, i%5 == 4)
		add("orders", 4, 3, tracepb.Span_SPAN_KIND_CLIENT, time.Duration(i%3+1)*ms, str("db.system", "postgresql"), false)
		add("orders", 5, 3, tracepb.Span_SPAN_KIND_PRODUCER, ms, str("messaging.system", "kafka"), false)
		add("mail", 6, 5, tracepb.Span_SPAN_KIND_CONSUMER, 2*ms, nil, false)
		add("web", 7, 1, tracepb.Span_SPAN_KIND_CLIENT, 30*ms, str("server.address", "payments.internal"), false)
		if i%2 == 1 {
			add("payments", 8, 7, tracepb.Span_SPAN_KIND_SERVER, 20*ms, nil, false)
		}
	}
	req := &collectorpb.ExportTraceServiceRequest{}
	for _, service := range []string{"web", "orders", "mail", "payments"} {
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
			Resource:   &resourcepb.Resource{Attributes: str("service.name", service)},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans[service]}},
		})
	}
	return req
}

// TestDepsGolden runs each testdata/deps/*.golden file's command, its
// first line, against a server holding depsFixture, and compares the output
// with the rest of the file; and reads the same graph from /metrics.
func TestDepsGolden(t *testing.T) {
	cfg := testConfig(t.TempDir())
	// Clients wait for a child no longer than until the next cut.
	cfg.pairingWindow = time.Nanosecond
	s := startConfigured(t, cfg)
	defer s.shutdown()
	exportRequest(t, s.otlpAddr.String(), depsFixture())
	client := analysispb.NewAnalysisClient(grpctest.Dial(t, s.queryAddr.String()))
	// Real and virtual edges apart: an idle store's next cut, a flush
	// interval later, may let the clients go before a poll sees the first.
	edges := func() (real, virtual int) {
		resp, err := client.GetServiceGraph(context.Background(), &analysispb.GetServiceGraphRequest{
			StartTime: timestamppb.New(depsBase), EndTime: timestamppb.New(depsBase.Add(time.Hour))})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Edges {
			if e.Virtual {
				virtual++
			} else {
				real++
			}
		}
		return real, virtual
	}
	waitFor(t, "the cut", func() bool { real, _ := edges(); return real == 3 })
	// The next cut, of a span a day later, lets the clients that got no
	// child go.
	later := uint64(depsBase.Add(24 * time.Hour).UnixNano())
	exportRequest(t, s.otlpAddr.String(), &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{0: 0xdf, 15: 1}, SpanId: []byte{7: 1},
			StartTimeUnixNano: later, EndTimeUnixNano: later}}}}}}})
	waitFor(t, "the edges to virtual nodes", func() bool { real, virtual := edges(); return real == 3 && virtual == 2 })

	checkGoldens(t, "testdata/deps", "", func(t *testing.T, args string) string {
		var out, errOut bytes.Buffer
		if err := run(append(splitCommand(args), "--addr", s.queryAddr.String()), &out, &errOut); err != nil {
			t.Fatalf("%v: %s", err, errOut.String())
		}
		return out.String()
	})

	m := scrape(t, http.DefaultClient, "http://"+s.httpAddr.String(), nil)
	for _, c := range []struct {
		name, client, server string
		want                 float64
	}{
		{"traces_service_graph_request_total", "web", "orders", 10},
		{"traces_service_graph_request_failed_total", "web", "orders", 2},
		{"traces_service_graph_request_total", "orders", "postgresql", 10},
		{"traces_service_graph_request_total", "orders", "mail", 10},
		{"traces_service_graph_request_total", "web", "payments", 5},
		{"traces_service_graph_request_total", "web", "payments.internal", 5},
		{"traces_service_graph_request_failed_total", "web", "payments.internal", 0},
	} {
		if got := metricValue(t, m, c.name, "client", c.client, "server", c.server); got != c.want {
			t.Errorf("%s{client=%q, server=%q} = %v, want %v", c.name, c.client, c.server, got, c.want)
		}
	}
}

func TestDepsRefusesWrongCalls(t *testing.T) {
	for _, args := range [][]string{
		{"deps", "web"},
		{"deps", "--format", "csv"},
		{"deps", "--since", "1h", "--end", "2023-11-14T22:13:00Z"},
		{"deps", "--start", "2023-11-14T22:13:00Z", "--end", "2023-11-14T22:12:00Z"},
		{"deps", "--start", "yesterday"},
	} {
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); exitStatus(err, &errOut) != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
