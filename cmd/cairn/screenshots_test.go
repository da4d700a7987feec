package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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
	shot := func(name string) {
		png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
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
	shot("diagnose.png")
	b.open("#/search?service=frontend&range=1h&limit=100", "svg.scatter")
	shot("search.png")
	b.open("#/trace/"+id, ".trace .row")
	b.do("open a failed span", chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll('.row.err')].pop().querySelector('.op').click()`), chromedp.WaitVisible(`.detail h2`))
	shot("trace.png")
	b.noConsoleErrors()
}
