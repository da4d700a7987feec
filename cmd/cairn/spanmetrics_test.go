package main

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// metricsSpan is a span of a metrics fixture: its service, name, kind,
// status code and duration.
type metricsSpan struct {
	service, name string
	kind          tracepb.Span_SpanKind
	status        tracepb.Status_StatusCode
	duration      time.Duration
}

// metricsRequest makes an export request of spans, each in a trace of its
// own, starting a minute ago.
func metricsRequest(spans []metricsSpan) *collectorpb.ExportTraceServiceRequest {
	req := &collectorpb.ExportTraceServiceRequest{}
	start := uint64(time.Now().Add(-time.Minute).UnixNano())
	for i, s := range spans {
		span := &tracepb.Span{TraceId: []byte{0: 7, 15: byte(i + 1)}, SpanId: []byte{7: 1}, Name: s.name, Kind: s.kind,
			StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(s.duration)}
		if s.status != tracepb.Status_STATUS_CODE_UNSET {
			span.Status = &tracepb.Status{Code: s.status}
		}
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s.service}}}}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{span}}},
		})
	}
	return req
}

// findSeries returns the series of a family with exactly these labels.
func findSeries(t *testing.T, families map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	for _, m := range families[name].GetMetric() {
		if len(m.Label) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.Label {
			match = match && labels[l.GetName()] == l.GetValue()
		}
		if match {
			return m
		}
	}
	t.Fatalf("%s has no series %v", name, labels)
	return nil
}

// TestSpanMetricsOnHTTPPort scrapes the span metrics of exported spans, as
// the OpenTelemetry spanmetrics connector names them, through the
// Prometheus text parser.
func TestSpanMetricsOnHTTPPort(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	base := "http://" + s.httpAddr.String()
	server, errored := tracepb.Span_SPAN_KIND_SERVER, tracepb.Status_STATUS_CODE_ERROR
	exportRequest(t, s.otlpAddr.String(), metricsRequest([]metricsSpan{
		{"web", "GET /", server, 0, time.Millisecond},
		{"web", "GET /", server, 0, 2 * time.Millisecond}, // on a bound: in le="2"
		{"web", "GET /", server, 0, 20 * time.Millisecond},
		{"web", "GET /", server, errored, 3 * time.Second},
		{"db", "SELECT", tracepb.Span_SPAN_KIND_CLIENT, tracepb.Status_STATUS_CODE_OK, 20 * time.Second},
	}))
	waitForCalls(t, base, 5)
	m := scrape(t, http.DefaultClient, base, nil)
	ok := map[string]string{"service_name": "web", "span_name": "GET /", "span_kind": "SPAN_KIND_SERVER", "status_code": "STATUS_CODE_UNSET"}
	if c := findSeries(t, m, "traces_span_metrics_calls_total", ok).GetCounter().GetValue(); c != 3 {
		t.Fatalf("calls of GET / unset: %v, want 3", c)
	}
	h := findSeries(t, m, "traces_span_metrics_duration_milliseconds", ok).GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 23 {
		t.Fatalf("histogram of GET / unset: count %d, sum %v; want 3, 23", h.GetSampleCount(), h.GetSampleSum())
	}
	want := map[float64]uint64{2: 2, 4: 2, 10: 2, 50: 3, 15000: 3}
	for _, b := range h.GetBucket() {
		if n, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != n {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), n)
		}
	}
	failed := map[string]string{"service_name": "web", "span_name": "GET /", "span_kind": "SPAN_KIND_SERVER", "status_code": "STATUS_CODE_ERROR"}
	if c := findSeries(t, m, "traces_span_metrics_calls_total", failed).GetCounter().GetValue(); c != 1 {
		t.Fatalf("calls of GET / failed: %v, want 1", c)
	}
	client := map[string]string{"service_name": "db", "span_name": "SELECT", "span_kind": "SPAN_KIND_CLIENT", "status_code": "STATUS_CODE_OK"}
	for _, b := range findSeries(t, m, "traces_span_metrics_duration_milliseconds", client).GetHistogram().GetBucket() {
		if b.GetUpperBound() == 15000 && b.GetCumulativeCount() != 0 {
			t.Fatalf("a 20 s span is counted under le=15000")
		}
	}
}

// TestSpanMetricsOverflow bounds the series: spans past the bound count
// into an overflow series of their status code, and are counted.
func TestSpanMetricsOverflow(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.maxSeries = 2
	s := startConfigured(t, cfg)
	defer s.shutdown()
	base := "http://" + s.httpAddr.String()
	var spans []metricsSpan
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		spans = append(spans, metricsSpan{"web", name, tracepb.Span_SPAN_KIND_INTERNAL, 0, time.Millisecond})
	}
	exportRequest(t, s.otlpAddr.String(), metricsRequest(spans))
	waitForCalls(t, base, 5)
	m := scrape(t, http.DefaultClient, base, nil)
	overflow := map[string]string{"service_name": "", "span_name": "", "span_kind": "", "status_code": "STATUS_CODE_UNSET"}
	if c := findSeries(t, m, "traces_span_metrics_calls_total", overflow).GetCounter().GetValue(); c != 3 {
		t.Fatalf("overflow series: %v calls, want 3", c)
	}
	if n := len(m["traces_span_metrics_calls_total"].GetMetric()); n != 3 {
		t.Fatalf("%d series, want 2 and the overflow series", n)
	}
	if v := metricValue(t, m, "cairn_span_metrics_overflow_spans_total", "scope", "block"); v != 3 {
		t.Fatalf("overflowed spans of blocks: %v, want 3", v)
	}
}

// waitForCalls waits until the HTTP port counts n calls in span metrics.
func waitForCalls(t *testing.T, base string, n float64) {
	t.Helper()
	waitFor(t, "the cut", func() bool {
		m := scrape(t, http.DefaultClient, base, nil)
		return m["traces_span_metrics_calls_total"] != nil && metricValue(t, m, "traces_span_metrics_calls_total") == n
	})
}
