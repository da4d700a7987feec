package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/internal/otlpjson"
	"cairn/internal/otlptest"
	"cairn/query/jaegerpb"
)

// shopTraces is what writeShop sends: shopCount traces of checkout calling
// payments, the i-th starting at base + i×10s and lasting 20 + 10i ms;
// those with i%4 == 3 fail in payments with a 500, and trace 5 has an
// orphan, a payments span whose parent is not in the trace.
type shopTraces struct {
	base  time.Time
	ids   []string // by i
	big   string   // a trace of bigSpans spans, if asked for
	start time.Time
}

const (
	shopCount = 12
	bigSpans  = 10_000
)

func shopDuration(i int) time.Duration { return time.Duration(20+10*i) * time.Millisecond }

// writeShop sends the shop's traces, and with big a trace of bigSpans spans
// as well, through the OpenTelemetry SDK.
func writeShop(t *testing.T, s *server, big bool) shopTraces {
	t.Helper()
	ctx := context.Background()
	provider := func(service string) *sdktrace.TracerProvider {
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(s.otlpAddr.String()), otlptracegrpc.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		res := sdkresource.NewWithAttributes("", attribute.String("service.name", service), attribute.Int("host.cpus", 4))
		return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithMaxExportBatchSize(2048), sdktrace.WithMaxQueueSize(bigSpans+100)), sdktrace.WithResource(res))
	}
	checkoutP, paymentsP := provider("checkout"), provider("payments")
	checkout, payments := checkoutP.Tracer("shop/checkout", trace.WithInstrumentationVersion("1.2.0")), paymentsP.Tracer("shop/payments")

	st := shopTraces{base: time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)}
	for i := range shopCount {
		start := st.base.Add(time.Duration(i) * 10 * time.Second)
		d := shopDuration(i)
		status := 200
		if i%4 == 3 {
			status = 500
		}
		rctx, root := checkout.Start(ctx, "GET /checkout", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start),
			trace.WithAttributes(attribute.Int("http.response.status_code", status), attribute.String("http.route", "/checkout"),
				attribute.Float64("sample.ratio", 0.5), attribute.Bool("cache.hit", i%2 == 0)))
		cctx, charge := checkout.Start(rctx, "charge", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start.Add(time.Millisecond)),
			trace.WithLinks(trace.Link{SpanContext: root.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("link.kind", "caller")}}))
		_, pay := payments.Start(cctx, "Charge", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start.Add(2*time.Millisecond)))
		if status == 500 {
			pay.AddEvent("exception", trace.WithTimestamp(start.Add(3*time.Millisecond)),
				trace.WithAttributes(attribute.String("exception.message", "card declined")))
			pay.SetStatus(codes.Error, "card declined")
		}
		pay.End(trace.WithTimestamp(start.Add(2*time.Millisecond + d/4)))
		charge.End(trace.WithTimestamp(start.Add(time.Millisecond + d/2)))
		if i == 5 {
			missing := trace.NewSpanContext(trace.SpanContextConfig{TraceID: root.SpanContext().TraceID(), SpanID: trace.SpanID{0xff, 7: 0xff}, TraceFlags: trace.FlagsSampled, Remote: true})
			_, orphan := payments.Start(trace.ContextWithRemoteSpanContext(ctx, missing), "refund", trace.WithTimestamp(start.Add(5*time.Millisecond)))
			orphan.End(trace.WithTimestamp(start.Add(6 * time.Millisecond)))
		}
		root.End(trace.WithTimestamp(start.Add(d)))
		st.ids = append(st.ids, root.SpanContext().TraceID().String())
	}
	if big {
		st.big = writeBig(checkout, st.base.Add(-time.Minute))
	}
	for _, p := range []*sdktrace.TracerProvider{checkoutP, paymentsP} {
		if err := p.Shutdown(ctx); err != nil {
			t.Fatalf("export: %v", err)
		}
	}
	return st
}

// writeBig writes a trace of bigSpans spans: a root over 100 batches of 99
// queries each.
func writeBig(tr trace.Tracer, start time.Time) string {
	ctx, root := tr.Start(context.Background(), "nightly report", trace.WithTimestamp(start))
	n := 1
	for b := range 100 {
		at := start.Add(time.Duration(b) * 50 * time.Millisecond)
		bctx, batch := tr.Start(ctx, fmt.Sprintf("batch %d", b), trace.WithTimestamp(at))
		n++
		for q := 0; q < 99 && n < bigSpans; q++ {
			_, sp := tr.Start(bctx, "SELECT rows", trace.WithTimestamp(at.Add(time.Duration(q)*400*time.Microsecond)))
			sp.End(trace.WithTimestamp(at.Add(time.Duration(q)*400*time.Microsecond + 300*time.Microsecond)))
			n++
		}
		batch.End(trace.WithTimestamp(at.Add(45 * time.Millisecond)))
	}
	root.End(trace.WithTimestamp(start.Add(5100 * time.Millisecond)))
	return root.SpanContext().TraceID().String()
}

// apiGet calls the HTTP API and decodes its answer into v, returning the
// status.
func apiGet(t *testing.T, s *server, path string, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + s.httpAddr.String() + path)
	body := readBody(t, resp, err)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
	return resp.StatusCode
}

type apiSearch struct {
	Traces []struct {
		TraceID       string `json:"trace_id"`
		Start         string `json:"start"`
		StartUnixNano string `json:"start_unix_nano"`
		DurationNS    int64  `json:"duration_ns"`
		RootService   string `json:"root_service"`
		RootOperation string `json:"root_operation"`
		Spans         int    `json:"spans"`
		Errors        int    `json:"errors"`
		Orphans       int    `json:"orphans"`
		Services      []struct {
			Name   string `json:"name"`
			Spans  int    `json:"spans"`
			Errors int    `json:"errors"`
		} `json:"services"`
	} `json:"traces"`
}

func (a apiSearch) ids() []string {
	var ids []string
	for _, tr := range a.Traces {
		ids = append(ids, tr.TraceID)
	}
	return ids
}

type apiValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

type apiTrace struct {
	TraceID   string `json:"trace_id"`
	Start     string `json:"start_unix_nano"`
	End       string `json:"end_unix_nano"`
	SpanCount int    `json:"span_count"`
	Truncated bool   `json:"truncated"`
	Resources []struct {
		Service    string     `json:"service"`
		Attributes []apiValue `json:"attributes"`
	} `json:"resources"`
	Scopes []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"scopes"`
	Spans []struct {
		SpanID     string     `json:"span_id"`
		Parent     string     `json:"parent_span_id"`
		Name       string     `json:"name"`
		Kind       string     `json:"kind"`
		Service    string     `json:"service"`
		Resource   int        `json:"resource"`
		Scope      int        `json:"scope"`
		Start      string     `json:"start_unix_nano"`
		DurationNS int64      `json:"duration_ns"`
		Attributes []apiValue `json:"attributes"`
		Status     struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"status"`
		Events []struct {
			Name       string     `json:"name"`
			Time       string     `json:"time_unix_nano"`
			Attributes []apiValue `json:"attributes"`
		} `json:"events"`
		Links []struct {
			TraceID    string     `json:"trace_id"`
			SpanID     string     `json:"span_id"`
			Attributes []apiValue `json:"attributes"`
		} `json:"links"`
	} `json:"spans"`
}

type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// TestHTTPAPI calls each call of the HTTP API against a server holding
// traces sent by the OpenTelemetry SDK, and checks its answers against what
// was sent and against the gRPC API's.
func TestHTTPAPI(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	shop := writeShop(t, s, false)

	var services struct{ Services []string }
	if code := apiGet(t, s, "/api/v1/services", &services); code != 200 || !slices.Equal(services.Services, []string{"checkout", "payments"}) {
		t.Fatalf("services: %d %v", code, services)
	}
	var ops struct{ Operations []operationJSONTest }
	apiGet(t, s, "/api/v1/operations?service=checkout", &ops)
	if want := []operationJSONTest{{"GET /checkout", "server"}, {"charge", "client"}}; !sameElements(ops.Operations, want) {
		t.Fatalf("operations of checkout: %v, want %v", ops.Operations, want)
	}
	apiGet(t, s, "/api/v1/operations?service=checkout&span_kind=client", &ops)
	if want := []operationJSONTest{{"charge", "client"}}; !slices.Equal(ops.Operations, want) {
		t.Fatalf("client operations of checkout: %v, want %v", ops.Operations, want)
	}

	// newest lists the shop's traces with the given i, the most recent
	// first, as searches list them.
	newest := func(is ...int) []string {
		var ids []string
		for _, i := range slices.Backward(is) {
			ids = append(ids, shop.ids[i])
		}
		return ids
	}
	all := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	rfc := func(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339Nano)) }
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"service=checkout&operation=GET+/checkout&limit=100", newest(all...)},
		{"service=payments&errors=true", newest(3, 7, 11)},
		{"attr=http.response.status_code=500", newest(3, 7, 11)},
		{`attr=http.response.status_code="500"`, newest(3, 7, 11)}, // as text, as Jaeger's UI sends it
		{`attr=http.response.status_code="500.0"`, nil},            // a string is compared as it is
		{"attr=cache.hit=true&attr=sample.ratio=0.5", newest(0, 2, 4, 6, 8, 10)},
		{"service=checkout&min_duration=100ms", newest(8, 9, 10, 11)},
		{"service=checkout&min_duration=50ms&max_duration=70ms", newest(3, 4, 5, 8, 9, 10, 11)}, // roots of 50–70 ms, charges of 100–140 ms
		{"start=" + rfc(shop.base) + "&end=" + rfc(shop.base.Add(35*time.Second)), newest(0, 1, 2, 3)},
		{"service=checkout&limit=2", newest(10, 11)},
		{"since=1m", nil},
		{"since=1h&service=payments&operation=refund", newest(5)},
	} {
		var got apiSearch
		if code := apiGet(t, s, "/api/v1/search?"+c.query, &got); code != 200 {
			t.Fatalf("search %s: %d", c.query, code)
		}
		if !slices.Equal(got.ids(), c.want) {
			t.Errorf("search %s: %v, want %v", c.query, got.ids(), c.want)
		}
	}

	// A search answers what the gRPC API answers, field for field.
	var found apiSearch
	apiGet(t, s, "/api/v1/search?service=checkout&limit=100", &found)
	stream, err := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, s.queryAddr.String())).FindTraceSummaries(context.Background(),
		&jaegerpb.FindTraceSummariesRequest{Query: &jaegerpb.TraceQueryParameters{ServiceName: "checkout", SearchDepth: 100}})
	if err != nil {
		t.Fatal(err)
	}
	var sums []*jaegerpb.TraceSummary
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, resp.Summaries...)
	}
	if len(sums) != len(found.Traces) || len(sums) != shopCount {
		t.Fatalf("%d traces over HTTP, %d over gRPC, want %d", len(found.Traces), len(sums), shopCount)
	}
	for k, sum := range sums {
		got := found.Traces[k]
		i := shopCount - 1 - k
		start := time.Unix(0, int64(sum.MinStartTimeUnixNano)).UTC()
		if got.TraceID != hex.EncodeToString(sum.TraceId) || got.StartUnixNano != fmt.Sprint(sum.MinStartTimeUnixNano) ||
			got.Start != start.Format(time.RFC3339Nano) || got.DurationNS != int64(sum.MaxEndTimeUnixNano-sum.MinStartTimeUnixNano) ||
			got.RootService != sum.RootServiceName || got.RootOperation != sum.RootOperationName ||
			got.Spans != int(sum.SpanCount) || got.Errors != int(sum.ErrorSpanCount) || got.Orphans != int(sum.OrphanSpanCount) ||
			len(got.Services) != len(sum.Services) {
			t.Fatalf("trace %d over HTTP: %+v; over gRPC: %v", k, got, sum)
		}
		if got.DurationNS != int64(shopDuration(i)) || !start.Equal(shop.base.Add(time.Duration(i)*10*time.Second)) {
			t.Fatalf("trace %d: start %v, duration %v", i, start, time.Duration(got.DurationNS))
		}
	}

	// The trace with an orphan and the error: every field of its spans.
	var tr apiTrace
	if code := apiGet(t, s, "/api/v1/traces/"+shop.ids[5], &tr); code != 200 || tr.SpanCount != 4 || len(tr.Spans) != 4 || tr.Truncated {
		t.Fatalf("trace 5: %d, %d spans", code, tr.SpanCount)
	}
	if fmt.Sprint(shop.base.Add(50*time.Second).UnixNano()) != tr.Start {
		t.Errorf("trace 5 starts at %s", tr.Start)
	}
	bySpan := map[string]int{}
	for k, sp := range tr.Spans {
		bySpan[sp.Name] = k
	}
	root, charge, orphan := tr.Spans[bySpan["GET /checkout"]], tr.Spans[bySpan["charge"]], tr.Spans[bySpan["refund"]]
	if root.Parent != "" || root.Kind != "server" || root.Service != "checkout" || root.DurationNS != int64(shopDuration(5)) ||
		tr.Resources[root.Resource].Service != "checkout" || tr.Scopes[root.Scope].Name != "shop/checkout" || tr.Scopes[root.Scope].Version != "1.2.0" {
		t.Errorf("root span: %+v", root)
	}
	wantAttrs := []apiValue{{"http.response.status_code", "int", "200"}, {"http.route", "string", "/checkout"}, {"sample.ratio", "double", 0.5}, {"cache.hit", "bool", false}}
	if !slices.Equal(root.Attributes, wantAttrs) {
		t.Errorf("root attributes: %v, want %v", root.Attributes, wantAttrs)
	}
	if len(charge.Links) != 1 || charge.Links[0].SpanID != root.SpanID || charge.Links[0].TraceID != shop.ids[5] ||
		!slices.Equal(charge.Links[0].Attributes, []apiValue{{"link.kind", "string", "caller"}}) || charge.Parent != root.SpanID {
		t.Errorf("charge span: %+v", charge)
	}
	if orphan.Parent != "ff000000000000ff" || orphan.Service != "payments" {
		t.Errorf("orphan span: %+v", orphan)
	}
	if res := tr.Resources[orphan.Resource]; !slices.Contains(res.Attributes, apiValue{"host.cpus", "int", "4"}) {
		t.Errorf("payments resource: %+v", res)
	}
	apiGet(t, s, "/api/v1/traces/"+shop.ids[7], &tr)
	for _, sp := range tr.Spans {
		if sp.Name != "Charge" {
			continue
		}
		if sp.Status.Code != "error" || sp.Status.Message != "card declined" || len(sp.Events) != 1 || sp.Events[0].Name != "exception" ||
			sp.Events[0].Time != fmt.Sprint(shop.base.Add(70*time.Second+3*time.Millisecond).UnixNano()) ||
			!slices.Equal(sp.Events[0].Attributes, []apiValue{{"exception.message", "string", "card declined"}}) {
			t.Errorf("failed Charge: %+v", sp)
		}
	}

	// OTLP JSON is the trace as gRPC streams it.
	for _, id := range []string{shop.ids[5], shop.ids[7]} {
		resp, err := http.Get("http://" + s.httpAddr.String() + "/api/v1/traces/" + id + "/otlp")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		raw, err := otlpjson.DecodeRequest(body)
		if err != nil {
			t.Fatalf("OTLP JSON of %s: %v", id, err)
		}
		var req collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			t.Fatal(err)
		}
		got := otlptest.Traces{}
		got.Add(req.ResourceSpans)
		want := getTraces(t, grpctest.Dial(t, s.queryAddr.String()), []string{id})
		if d := otlptest.DiffTrace(want[id], got[id]); d != "" || len(got[id]) == 0 {
			t.Errorf("OTLP JSON of %s: %s", id, d)
		}
	}

	// Calls are timed as the gRPC methods are.
	m := scrape(t, http.DefaultClient, "http://"+s.httpAddr.String(), nil)
	for _, method := range []string{"http_services", "http_operations", "http_search", "http_trace", "http_trace_otlp"} {
		if metricValue(t, m, "cairn_query_duration_seconds", "method", method, "code", "OK") == 0 {
			t.Errorf("no call of %s timed", method)
		}
	}

	// Failures are JSON with an HTTP status.
	for _, c := range []struct {
		path string
		code int
		want apiError
	}{
		{"/api/v1/search?service=checkout&sevrice=x", 400, apiError{`unknown parameter "sevrice": this call takes [service operation attr errors min_duration max_duration start end since limit]`, "InvalidArgument"}},
		{"/api/v1/search?service=checkout&service=cart", 400, apiError{`parameter "service" is given 2 times: this call takes one`, "InvalidArgument"}},
		{"/api/v1/search?service=checkout;x", 400, apiError{`the query string does not parse: invalid semicolon separator in query`, "InvalidArgument"}},
		{"/api/v1/search?operation=charge", 400, apiError{"operation_name needs service_name", "InvalidArgument"}},
		{"/api/v1/search?limit=0", 400, apiError{`limit "0" is not a positive number`, "InvalidArgument"}},
		{"/api/v1/search?min_duration=fast", 400, apiError{`min_duration "fast" is not a duration such as 250ms or 1h`, "InvalidArgument"}},
		{"/api/v1/search?since=1h&start=2026-01-01T00:00:00Z", 400, apiError{"give since or start/end, not both", "InvalidArgument"}},
		{"/api/v1/search?attr=novalue", 400, apiError{`attr: attribute "novalue" is not key=value`, "InvalidArgument"}},
		{"/api/v1/operations", 400, apiError{"service is required", "InvalidArgument"}},
		{"/api/v1/operations?service=checkout&span_kind=odd", 400, apiError{`unknown span_kind "odd": want one of server, client, producer, consumer, internal, or empty for all`, "InvalidArgument"}},
		{"/api/v1/traces/abc", 400, apiError{`trace ID "abc" is not 32 hex digits`, "InvalidArgument"}},
		{"/api/v1/traces/0102030405060708090a0b0c0d0e0f10", 404, apiError{"trace 0102030405060708090a0b0c0d0e0f10 not found", "NotFound"}},
		{"/api/v1/traces/0102030405060708090a0b0c0d0e0f10/otlp", 404, apiError{"trace 0102030405060708090a0b0c0d0e0f10 not found", "NotFound"}},
		{"/api/v2/anything", 404, apiError{"no API call GET /api/v2/anything", "NotFound"}},
	} {
		var got apiError
		if code := apiGet(t, s, c.path, &got); code != c.code || got != c.want {
			t.Errorf("GET %s: %d %+v, want %d %+v", c.path, code, got, c.code, c.want)
		}
	}
	// Another method on a call's path is told that the call takes GET.
	resp, err := http.Post("http://"+s.httpAddr.String()+"/api/v1/services", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /api/v1/services: %d, Allow %q; want 405 and GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestHTTPAPIUnavailable checks that the API answers 503 with the reason
// while the store opens, before the query service exists.
func TestHTTPAPIUnavailable(t *testing.T) {
	w := httptest.NewRecorder()
	(&server{}).apiHandler().ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/services", nil))
	var got apiError
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 503 || w.Header().Get("Retry-After") != "1" ||
		got != (apiError{"opening the store and replaying its write-ahead log", "Unavailable"}) {
		t.Fatalf("API of an opening server: %d %s (%v)", w.Code, w.Body, err)
	}
}

type operationJSONTest struct {
	Name     string `json:"name"`
	SpanKind string `json:"span_kind"`
}

func sameElements[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// TestHTTPOperationsOfUnnamedService checks that the operations of spans
// whose resource has no service.name, which the services list names as "",
// are listed for service= as gRPC lists them for "".
func TestHTTPOperationsOfUnnamedService(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	req := sampleTrace()
	req.ResourceSpans[1].Resource.Attributes = nil
	exportRequest(t, s.otlpAddr.String(), req)

	var services struct{ Services []string }
	if code := apiGet(t, s, "/api/v1/services", &services); code != 200 || !slices.Equal(services.Services, []string{"", "frontend"}) {
		t.Fatalf("services: %d %v, want \"\" and frontend", code, services)
	}
	var ops struct{ Operations []operationJSONTest }
	if code := apiGet(t, s, "/api/v1/operations?service=", &ops); code != 200 ||
		!sameElements(ops.Operations, []operationJSONTest{{"Charge", ""}, {"late callback", ""}}) {
		t.Fatalf("operations of service \"\": %d %v", code, ops.Operations)
	}
	// cairn services names it so that it reads as a service.
	var out, errOut bytes.Buffer
	if err := run([]string{"services", "--addr", s.queryAddr.String()}, &out, &errOut); err != nil ||
		out.String() != "\"\" (resources without service.name)\nfrontend\n" {
		t.Errorf("cairn services: %v %q %s", err, out.String(), errOut.String())
	}
}

// TestHTTPCompression checks that the API and the UI answer compressed
// as the client accepts, the same bytes once decompressed, and plain to
// a client that accepts neither.
func TestHTTPCompression(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	shop := writeShop(t, s, false)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	get := func(path, accept string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+s.httpAddr.String()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := client.Do(req)
		return resp, readBody(t, resp, err)
	}
	for _, path := range []string{"/api/v1/traces/" + shop.ids[5], "/api/v1/search?limit=100", "/assets/app.js"} {
		resp, plain := get(path, "")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" || len(plain) < 1024 {
			t.Fatalf("GET %s plain: %d, Content-Encoding %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Encoding"), len(plain))
		}
		for _, c := range []struct {
			accept, encoding string
			decode           func([]byte) ([]byte, error)
		}{
			{"gzip", "gzip", func(b []byte) ([]byte, error) {
				r, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					return nil, err
				}
				return io.ReadAll(r)
			}},
			{"gzip, deflate, br, zstd", "zstd", func(b []byte) ([]byte, error) {
				d, err := zstd.NewReader(nil)
				if err != nil {
					return nil, err
				}
				defer d.Close()
				return d.DecodeAll(b, nil)
			}},
		} {
			resp, body := get(path, c.accept)
			if got := resp.Header.Get("Content-Encoding"); got != c.encoding || !slices.Contains(resp.Header.Values("Vary"), "Accept-Encoding") {
				t.Fatalf("GET %s accepting %q: Content-Encoding %q, Vary %q", path, c.accept, got, resp.Header.Values("Vary"))
			}
			if len(body) >= len(plain) {
				t.Errorf("GET %s as %s: %d bytes, plain %d", path, c.encoding, len(body), len(plain))
			}
			if got, err := c.decode(body); err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("GET %s as %s: %v, or not the plain answer once decoded", path, c.encoding, err)
			}
		}
	}
}
