package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/internal/otlpjson"
	"cairn/internal/otlptest"
)

// httpTap is an HTTP transport that records, decoded by the reference
// protobuf implementation, every export request the server acknowledges.
type httpTap struct {
	mu        sync.Mutex
	sent      otlptest.Traces
	requests  int
	gzipped   int
	transport http.RoundTripper
}

func (tp *httpTap) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := tp.transport.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.requests++
	if req.Header.Get("Content-Encoding") == "gzip" {
		tp.gzipped++
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if body, err = io.ReadAll(zr); err != nil {
			return nil, err
		}
	}
	if req.Header.Get("Content-Type") != "application/x-protobuf" {
		return nil, fmt.Errorf("exporter sent %s", req.Header.Get("Content-Type"))
	}
	return resp, tp.sent.AddRequest(body)
}

// TestSDKExportOverHTTP sends traces with the OpenTelemetry Go SDK's
// OTLP/HTTP exporter, gzip-compressed, and reads them back, comparing every
// field with what the exporter put on the wire.
func TestSDKExportOverHTTP(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	tp := &httpTap{sent: otlptest.Traces{}, transport: http.DefaultTransport}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpoint(s.otlpHTTPAddr.String()),
		otlptracehttp.WithInsecure(),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression),
		otlptracehttp.WithHTTPClient(&http.Client{Transport: tp}))
	if err != nil {
		t.Fatal(err)
	}
	res := sdkresource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
		attribute.String("service.name", "storefront"), attribute.Int("host.cpus", 4))
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithMaxExportBatchSize(9)), sdktrace.WithResource(res))
	tracer := provider.Tracer("cairn/e2e/http", trace.WithInstrumentationVersion("0.2.0"))
	for i := range 25 {
		ctx, root := tracer.Start(context.Background(), "GET /cart", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.Int64("http.response.status_code", 200), attribute.StringSlice("tags", []string{"a", "b"})))
		_, child := tracer.Start(ctx, "cache lookup", trace.WithSpanKind(trace.SpanKindClient))
		child.AddEvent("miss", trace.WithAttributes(attribute.Bool("cold", i%2 == 0)))
		if i%4 == 0 {
			child.SetStatus(codes.Error, "timeout")
		}
		child.End()
		root.End()
	}
	if err := provider.Shutdown(context.Background()); err != nil {
		t.Fatalf("export: %v", err)
	}
	if len(tp.sent) != 25 || tp.sent.Spans() != 50 || tp.gzipped != tp.requests || tp.requests < 3 {
		t.Fatalf("tap saw %d traces, %d spans in %d requests (%d gzipped); want 25, 50, several, all", len(tp.sent), tp.sent.Spans(), tp.requests, tp.gzipped)
	}
	compareAll(t, grpctest.Dial(t, s.queryAddr.String()), tp.sent)
}

// TestJSONExportEqualsProtobuf sends the request that sets every OTLP field
// to one server as binary protobuf and to another as OTLP/JSON, and reads
// both back: they must be equal field by field.
func TestJSONExportEqualsProtobuf(t *testing.T) {
	req := otlptest.EveryField()
	wire, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := otlpjson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var read [2]otlptest.Traces
	for i, body := range [][]byte{wire, doc} {
		s := startTestServer(t, t.TempDir())
		content := []string{"application/x-protobuf", "application/json"}[i]
		resp, err := http.Post("http://"+s.otlpHTTPAddr.String()+"/v1/traces", content, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("3 spans rejected")) {
			t.Fatalf("%s export: %d %q", content, resp.StatusCode, b)
		}
		read[i] = getTraces(t, grpctest.Dial(t, s.queryAddr.String()), []string{"deadbeef0102030405060708090a0b0c"})
		if err := s.shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	if read[0].Spans() != 4 {
		t.Fatalf("protobuf export read back as %d spans, want 4", read[0].Spans())
	}
	for id := range read[0] {
		if d := otlptest.DiffTrace(read[0][id], read[1][id]); d != "" {
			t.Fatalf("JSON export differs from protobuf export: %s", d)
		}
	}
}

// scrape reads the HTTP port's /metrics.
func scrape(t *testing.T, client *http.Client, base string, header http.Header) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// metricValue is the value of a family's series whose labels include
// labels (name=value pairs), summed over the series that match.
func metricValue(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	sum := 0.0
	for _, m := range f.Metric {
		match := true
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// TestHTTPPort checks the metrics of a server that took exports over both
// protocols and answered queries, and its health endpoints and profiler.
func TestHTTPPort(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	base := "http://" + s.httpAddr.String()
	for _, path := range []string{"/healthz", "/readyz", "/debug/pprof/", "/"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}

	exportRequest(t, s.otlpAddr.String(), sampleTrace()) // 5 spans over gRPC
	valid, _ := proto.Marshal(otlptest.EveryField())     // 4 spans, 3 rejected
	for _, body := range [][]byte{valid, {0x0a, 0x05, 0x01}} {
		resp, err := http.Post("http://"+s.otlpHTTPAddr.String()+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	getTraces(t, grpctest.Dial(t, s.queryAddr.String()), []string{"deadbeef0102030405060708090a0b0c"})
	waitFor(t, "a cut", func() bool {
		return metricValue(t, scrape(t, http.DefaultClient, base, nil), "cairn_storage_cut_spans_total") == 9
	})

	m := scrape(t, http.DefaultClient, base, nil)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cairn_ingest_accepted_spans_total", []string{"protocol", "grpc"}, 5},
		{"cairn_ingest_accepted_spans_total", []string{"protocol", "http/protobuf"}, 4},
		{"cairn_ingest_rejected_spans_total", []string{"protocol", "http/protobuf", "reason", "invalid_trace_id"}, 2},
		{"cairn_ingest_rejected_spans_total", []string{"protocol", "http/protobuf", "reason", "invalid_span_id"}, 1},
		{"cairn_ingest_refused_requests_total", []string{"protocol", "http/protobuf", "cause", "malformed"}, 1},
		{"cairn_ingest_export_duration_seconds", []string{"protocol", "grpc"}, 1},
		{"cairn_ingest_export_duration_seconds", []string{"protocol", "http/protobuf"}, 1},
		{"cairn_ingest_received_bytes_total", []string{"protocol", "http/protobuf"}, float64(len(valid) + 3)},
		{"cairn_ingest_inflight_bytes", nil, 0},
		{"cairn_query_duration_seconds", []string{"method", "GetTraces", "code", "OK"}, 1},
		{"cairn_storage_live_buffer_spans", nil, 0},
		{"cairn_storage_partitions", nil, 1},
		{"cairn_build_info", []string{"version", cairnVersion()}, 1},
	} {
		if got := metricValue(t, m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"cairn_storage_wal_fsync_duration_seconds", nil},
		{"cairn_storage_cut_duration_seconds", nil},
		{"cairn_storage_disk_bytes", []string{"store", "index"}},
		{"cairn_storage_disk_bytes", []string{"store", "spans"}},
		{"cairn_pebble_block_cache_misses_total", nil},
		{"go_goroutines", nil},
		{"process_resident_memory_bytes", nil},
	} {
		if got := metricValue(t, m, c.name, c.labels...); got <= 0 {
			t.Errorf("%s%v = %v, want more than 0", c.name, c.labels, got)
		}
	}
	for _, name := range []string{"cairn_pebble_compactions_total", "cairn_pebble_l0_files", "cairn_storage_recompression_backlog_bytes", "cairn_storage_recompressed_bytes_total"} {
		metricValue(t, m, name) // present
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadyOnlyOnceOpen checks what /readyz reports in each phase: not
// ready while the store opens, ready while serving, not ready once shutdown
// has begun. (TestHTTPPort reads it over HTTP.)
func TestReadyOnlyOnceOpen(t *testing.T) {
	s := &server{}
	if ok, why := s.readiness(); ok || !strings.Contains(why, "replaying") {
		t.Fatalf("before the store opens: %v %q", ok, why)
	}
	s = startTestServer(t, t.TempDir())
	if ok, _ := s.readiness(); !ok {
		t.Fatal("not ready once serving")
	}
	if err := s.shutdown(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.readiness(); ok {
		t.Fatal("ready after shutdown")
	}
	if err := s.shutdown(); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
}
