package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"cairn/bench"
	"cairn/internal/grpctest"
	"cairn/internal/rawcodec"
)

// TestScreenshots writes a PNG of each page of the web UI, over data of
// cairn bench's workload, into the directory $CAIRN_SCREENSHOTS; make
// screenshots runs it. Without the variable it is skipped.
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("CAIRN_SCREENSHOTS")
	if dir == "" {
		t.Skip("CAIRN_SCREENSHOTS names no directory to write screenshots into (make screenshots)")
	}
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	// 40 minutes of the web shop, ending 5 minutes ago.
	gen := bench.NewGenerator(bench.Config{Seed: 7, BatchSpans: 512, Start: time.Now().Add(-45 * time.Minute), TracesPerSecond: 0.4})
	conn := grpctest.Dial(t, s.otlpAddr.String())
	for sent := 0; sent < 40_000; {
		req := gen.Next()
		var out rawcodec.Message
		if err := conn.Invoke(context.Background(), exportMethod, rawcodec.Message(req.Bytes), &out, grpc.ForceCodecV2(rawcodec.Codec{})); err != nil {
			t.Fatal(err)
		}
		sent += req.Spans
	}
	var failed apiSearch
	apiGet(t, s, "/api/v1/search?errors=true&since=1h&limit=50", &failed)
	id := ""
	for _, tr := range failed.Traces {
		if tr.Spans >= 20 && tr.Spans <= 60 && tr.RootService == "frontend" {
			id = tr.TraceID
			break
		}
	}
	if id == "" {
		t.Fatalf("no failed frontend trace of 20 to 60 spans among %d", len(failed.Traces))
	}

	b := newBrowser(t, s, 1280, 800)
	// shot captures the window; full, the whole page.
	capture := func(name string, full bool) {
		action := chromedp.CaptureScreenshot()
		if full {
			action = chromedp.FullScreenshot(100)
		}
		png, err := chromedp.Run(b.ctx, action)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shot := func(name string) { capture(name, false) }
	b.open("#/services?range=1h", "table.metrics svg.spark")
	shot("services.png")
	b.open("#/services/frontend?range=1h", "table.metrics svg.spark")
	shot("operations.png")
	b.open("#/map?range=1h&focus=checkout", "svg.map .node.selected")
	b.do("panel", chromedp.WaitVisible(`.map-panel .node-rate`))
	shot("map.png")
	// The last 10 of the 40 minutes against the 10 before.
	ws := time.Now().Add(-15 * time.Minute).UTC().Format(time.RFC3339)
	we := time.Now().Add(-5 * time.Minute).UTC().Format(time.RFC3339)
	b.open("#/diagnose?range=1h&service=frontend&operation=GET+/api/checkout/{id}&window_start="+ws+"&window_end="+we, ".diagnosis .cause")
	capture("diagnose.png", true)
	b.open("#/diagnose?range=1h&service=frontend&operation=GET+/api/checkout/{id}", "table.ranked.paths tbody tr")
	capture("diagnose-paths.png", true)
	b.open("#/search?service=frontend&range=1h&limit=100", "svg.scatter")
	shot("search.png")
	b.open("#/trace/"+id, ".trace .row")
	b.do("open a failed span", chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll('.row.err')].pop().querySelector('.op').click()`), chromedp.WaitVisible(`.detail h2`))
	shot("trace.png")
	b.noConsoleErrors()

	// The map of a fleet of 200 services.
	cfg := testConfig(t.TempDir())
	cfg.pairingWindow = 100 * time.Millisecond // the databases become peers at once
	fleet := startConfigured(t, cfg)
	defer fleet.shutdown()
	exportRequest(t, fleet.otlpAddr.String(), graphRequest(200))
	// A cut after the pairing window makes the unanswered calls edges to
	// peers; a span more makes a cut.
	time.Sleep(200 * time.Millisecond)
	exportRequest(t, fleet.otlpAddr.String(), metricsRequest([]metricsSpan{{service: "edge-0", name: "tick", duration: time.Millisecond}}))
	waitFor(t, "the fleet's service graph", func() bool {
		var g struct{ Edges []struct{ Virtual bool } }
		apiGet(t, fleet, "/api/v1/service-graph?since=1h", &g)
		virtual := 0
		for _, e := range g.Edges {
			if e.Virtual {
				virtual++
			}
		}
		return len(g.Edges) > 300 && virtual > 0
	})
	fb := newBrowser(t, fleet, 1280, 800)
	fb.open("#/map?range=1h", "svg.map .node.virtual")
	fb.do("scroll to the databases", chromedp.Evaluate[chromedp.Void](`(a => a.scrollTo(a.scrollWidth, (a.scrollHeight - a.clientHeight) / 2))(document.querySelector('.map-area'))`))
	png, err := chromedp.Run(fb.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "map-200.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	fb.noConsoleErrors()
}

// graphRequest makes a call between services of a fleet of n in tiers,
// each calling two or three of the next tier: a trace of a client span
// and the server span it calls per edge, starting a minute ago, so that
// the service map has n services to lay out.
func graphRequest(n int) *collectorpb.ExportTraceServiceRequest {
	rnd := rand.New(rand.NewPCG(1, 2))
	tiers := []int{n / 20, n / 5, n * 2 / 5}
	tiers = append(tiers, n-tiers[0]-tiers[1]-tiers[2])
	var names [][]string
	for ti, size := range tiers {
		var tier []string
		for i := range size {
			tier = append(tier, fmt.Sprintf("%s-%d", []string{"edge", "api", "svc", "store"}[ti], i))
		}
		names = append(names, tier)
	}
	resource := func(service string) *resourcepb.Resource {
		return &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}}}}}
	}
	req := &collectorpb.ExportTraceServiceRequest{}
	start := uint64(time.Now().Add(-time.Minute).UnixNano())
	id := 0
	for ti := 0; ti+1 < len(names); ti++ {
		for _, parent := range names[ti] {
			for range 2 + rnd.IntN(2) {
				child := names[ti+1][rnd.IntN(len(names[ti+1]))]
				id++
				tid := []byte{0: 9, 14: byte(id >> 8), 15: byte(id)}
				client := &tracepb.Span{TraceId: tid, SpanId: []byte{7: 1}, Name: "call " + child, Kind: tracepb.Span_SPAN_KIND_CLIENT,
					StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(1+rnd.IntN(50))*1e6}
				server := &tracepb.Span{TraceId: tid, SpanId: []byte{7: 2}, ParentSpanId: []byte{7: 1}, Name: "serve", Kind: tracepb.Span_SPAN_KIND_SERVER,
					StartTimeUnixNano: start, EndTimeUnixNano: client.EndTimeUnixNano}
				if rnd.IntN(8) == 0 {
					server.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
				}
				req.ResourceSpans = append(req.ResourceSpans,
					&tracepb.ResourceSpans{Resource: resource(parent), ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{client}}}},
					&tracepb.ResourceSpans{Resource: resource(child), ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{server}}}})
			}
		}
	}
	// The last tier queries databases that send no spans: peers the
	// service graph names from their callers' peer.service.
	for i, store := range names[len(names)-1] {
		id++
		tid := []byte{0: 9, 14: byte(id >> 8), 15: byte(id)}
		query := &tracepb.Span{TraceId: tid, SpanId: []byte{7: 1}, Name: "SELECT", Kind: tracepb.Span_SPAN_KIND_CLIENT,
			StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(1+rnd.IntN(5))*1e6,
			Attributes: []*commonpb.KeyValue{{Key: "peer.service", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprintf("db-%d", i%6)}}}}}
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{Resource: resource(store), ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{query}}}})
	}
	return req
}
