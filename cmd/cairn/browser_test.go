package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"cairn/bench"
	"cairn/internal/grpctest"
	"cairn/query"
)

// browser is a headless Chromium tab, and what the pages it shows write to
// the console.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string // the server's HTTP port

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
}

// newBrowser starts Chromium, from Debian's chromium package, which .ci/run
// installs. Without it the test is skipped, except in CI, where it fails.
func newBrowser(t *testing.T, s *server, width, height int) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no Chromium to test the web UI in: .ci/run installs it (apt-get install chromium)")
		}
		t.Skip("no Chromium (apt-get install chromium) to test the web UI in")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(width, height), chromedp.Flag("hide-scrollbars", true),
		// Chromium leaves a directory of its own in the temporary directory.
		chromedp.Env("TMPDIR="+t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	// For the whole session. Alone, TestBrowserSearchToTrace takes 16 s; beside
	// make test's other packages on two busy cores it took 40 s, and a
	// 30 s bound failed it midway.
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	b := &browser{t: t, ctx: ctx, base: "http://" + s.httpAddr.String()}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium: %v", err)
	}
	listen, stopListening := context.WithCancel(ctx)
	messages := chromedp.Console(listen)
	var done sync.WaitGroup
	done.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.messages = append(b.messages, m)
			b.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		stopListening()
		done.Wait()
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	return b
}

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// open loads a page of the UI and waits until sel is visible.
func (b *browser) open(fragment, sel string) {
	b.t.Helper()
	b.do("open "+fragment, chromedp.Navigate(b.base+"/"+fragment), chromedp.WaitVisible(sel))
}

// noConsoleErrors fails the test if a page wrote an error or a warning to
// the console, or threw.
func (b *browser) noConsoleErrors() {
	b.t.Helper()
	eval[int](b, "1") // the messages of what ran before have arrived
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.messages {
		if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
			b.t.Errorf("console: %s", m)
		}
	}
}

type tableRow struct {
	Href   string
	Spans  string
	Errors string
}

// TestBrowserSearchToTrace loads the search page and the trace view in
// Chromium against a server holding the shop's traces, checks that they
// show what the API answers, and goes from a search to a trace.
func TestBrowserSearchToTrace(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	shop := writeShop(t, s, true)
	b := newBrowser(t, s, 1400, 900)

	b.open("#/search?service=checkout&range=1h&limit=20", "table.traces tbody tr")
	var api apiSearch
	apiGet(t, s, "/api/v1/search?service=checkout&since=1h&limit=20", &api)
	if len(api.Traces) != shopCount+1 {
		t.Fatalf("API found %d traces, want %d", len(api.Traces), shopCount+1)
	}
	rows := eval[[]tableRow](b, `[...document.querySelectorAll('table.traces tbody tr')].map(r =>
		({Href: r.querySelector('a').getAttribute('href'), Spans: r.cells[3].textContent, Errors: r.cells[4].textContent}))`)
	var want []tableRow
	for _, tr := range api.Traces {
		want = append(want, tableRow{"#/trace/" + tr.TraceID, fmt.Sprint(tr.Spans), fmt.Sprint(tr.Errors)})
	}
	if !slices.Equal(rows, want) {
		t.Fatalf("search table:\n%v\nAPI:\n%v", rows, want)
	}
	if n := eval[int](b, `document.querySelectorAll('svg.scatter circle').length`); n != len(api.Traces) {
		t.Errorf("%d dots in the scatter plot, want %d", n, len(api.Traces))
	}
	if n := eval[int](b, `document.querySelectorAll('svg.scatter circle.err').length`); n != 3 {
		t.Errorf("%d red dots, want 3", n)
	}
	if got := eval[string](b, `document.querySelector('.results .count').textContent`); !strings.HasPrefix(got, "13 traces") {
		t.Errorf("count line %q", got)
	}

	// The form holds the search, and a new one goes through the URL.
	b.do("search for errors", chromedp.WaitReady(`select[name=service] option[value=payments]`),
		chromedp.SetValue(`select[name=service]`, "payments"), chromedp.Click(`input[name=errors]`),
		chromedp.Click(`.search-form button[type=submit]`),
		chromedp.Poll[chromedp.Void](`location.hash.includes('errors=true') && document.querySelectorAll('table.traces tbody tr').length === 3`, chromedp.WithPollingTimeout(10*time.Second)))

	// From the search to the trace with the failed payment.
	failed := shop.ids[7]
	// The waterfall's rows are drawn after the trace's header.
	b.do("click the failed trace", chromedp.Click(`table.traces a[href="#/trace/`+failed+`"]`), chromedp.WaitVisible(`.trace .span-count`),
		chromedp.WaitVisible(`.row .op`))
	var tr apiTrace
	apiGet(t, s, "/api/v1/traces/"+failed, &tr)
	if got := eval[string](b, `document.querySelector('.span-count').textContent`); got != fmt.Sprint(tr.SpanCount) {
		t.Errorf("trace view says %s spans, the API %d", got, tr.SpanCount)
	}
	if got := eval[string](b, `document.querySelector('.error-count').textContent`); got != "1" {
		t.Errorf("trace view says %s errors, want 1", got)
	}
	names := eval[[]string](b, `[...document.querySelectorAll('.row')].map(r => r.querySelector('.svc').textContent + ': ' + r.querySelector('.op').textContent)`)
	if want := []string{"checkout: GET /checkout", "checkout: charge", "payments: Charge"}; !slices.Equal(names, want) {
		t.Errorf("waterfall rows %v, want %v", names, want)
	}
	// The critical path's spans are outlined, as the API answers them.
	var path struct {
		Segments []struct {
			SpanID string `json:"span_id"`
		} `json:"segments"`
	}
	apiGet(t, s, "/api/v1/traces/"+failed+"/critical-path", &path)
	onPath := map[string]bool{}
	for _, sg := range path.Segments {
		onPath[sg.SpanID] = true
	}
	if got := eval[string](b, `document.querySelector('.crit-count').textContent`); len(onPath) == 0 || got != fmt.Sprintf("%d spans", len(onPath)) {
		t.Errorf("trace view says the critical path has %s, the API %d", got, len(onPath))
	}
	if n := eval[int](b, `document.querySelectorAll('.row.crit').length`); n != len(onPath) {
		t.Errorf("%d rows outlined as on the critical path, want %d", n, len(onPath))
	}
	b.do("open the failed span", chromedp.Click(`.row.err .op`), chromedp.WaitVisible(`.detail h2`))
	detail := eval[string](b, `document.querySelector('.detail').textContent`)
	for _, want := range []string{"Charge", "error: card declined", "Critical path", "of self time on it", "% of the path", "exception", "exception.message", "service.name", "payments", "shop/payments"} {
		if !strings.Contains(detail, want) {
			t.Errorf("span details lack %q: %s", want, detail)
		}
	}
	if href := eval[string](b, `document.querySelector('a.otlp').getAttribute('href')`); href != "/api/v1/traces/"+failed+"/otlp" {
		t.Errorf("OTLP JSON link %q", href)
	}

	// An orphan is among the roots, marked.
	b.open("#/trace/"+shop.ids[5], ".row .orphan")
	if got := eval[string](b, `document.querySelector('.orphan-count').textContent`); got != "1" {
		t.Errorf("orphans: %s, want 1", got)
	}

	// Two spans that name each other as parent, and a child of one of them
	// that starts first: the cycle is broken at one of its spans, shown as
	// an orphan, the child keeps its parent, and every span is drawn once.
	cycle := writeCycle(t, s)
	b.open("#/trace/"+cycle, ".row .orphan")
	if rows, orphans := eval[int](b, `document.querySelectorAll('.trace .row').length`), eval[string](b, `document.querySelector('.orphan-count').textContent`); rows != 4 || orphans != "1" {
		t.Errorf("a trace with a cycle of parents: %d rows and %s orphans, want 4 and 1", rows, orphans)
	}

	// A trace of 10,000 spans: all counted, few drawn, the last reachable.
	began := time.Now()
	b.open("#/trace/"+shop.big, ".trace .row")
	t.Logf("the trace of %d spans was drawn %v after it was asked for", bigSpans, time.Since(began))
	if got := eval[string](b, `document.querySelector('.span-count').textContent`); got != fmt.Sprint(bigSpans) {
		t.Errorf("large trace: %s spans, want %d", got, bigSpans)
	}
	if n := eval[int](b, `document.querySelectorAll('.row').length`); n > 100 {
		t.Errorf("%d rows in the page for a trace of %d spans: not only those in sight", n, bigSpans)
	} else {
		t.Logf("%d rows in the page", n)
	}
	// Dragging across the minimap zooms into that time window; a double
	// click shows the whole trace again.
	b.do("zoom", chromedp.Evaluate[chromedp.Void](`(() => {
		const mm = document.querySelector('.mm'), r = mm.getBoundingClientRect(), y = r.top + 10;
		const at = (type, f) => mm.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: r.left + f * r.width, clientY: y}));
		at('mousedown', 0.1); at('mousemove', 0.2); at('mouseup', 0.2);
	})()`), chromedp.Poll[chromedp.Void](`document.querySelector('.zoom').textContent.startsWith('zoomed')`))
	if got := eval[string](b, `document.querySelector('.ticks span:last-child').textContent`); got == "5 s" {
		t.Errorf("zoomed into a tenth of the trace, the ruler still ends at %s", got)
	}
	b.do("unzoom", chromedp.Evaluate[chromedp.Void](`document.querySelector('.mm').dispatchEvent(new MouseEvent('dblclick', {bubbles: true}))`),
		chromedp.Poll[chromedp.Void](`document.querySelector('.zoom').textContent === ''`))
	b.do("scroll to the end", chromedp.Evaluate[chromedp.Void](`(s => s.scrollTop = s.scrollHeight)(document.querySelector('.wf-scroll'))`),
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector('.row[data-row="%d"]')`, bigSpans-1)))
	b.do("collapse all", chromedp.Click(`.wf-ruler button:nth-child(2)`), chromedp.Poll[chromedp.Void](`document.querySelectorAll('.row').length === 1`))
	if got := eval[string](b, `document.querySelector('.hidden-count').textContent`); got != fmt.Sprintf("+%d", bigSpans-1) {
		t.Errorf("collapsed root hides %s, want +%d", got, bigSpans-1)
	}
	// The root's 100 children come back, collapsed: 101 rows, 22 pixels each.
	b.do("expand the root", chromedp.Click(`.row [data-toggle]`), chromedp.Poll[chromedp.Void](`document.querySelector('.spacer').style.height === '2222px'`))
	// Finding a span hidden under a collapsed one shows it, selected, and
	// only it.
	b.do("find a batch", chromedp.Click(`.wf-ruler button:nth-child(2)`), chromedp.SendKeys(`input.find`, "batch 42"), chromedp.Poll[chromedp.Void](`document.querySelector('.find-count').textContent === '1 found'`),
		chromedp.SendKeys(`input.find`, "\r"), chromedp.WaitVisible(`.row.match.selected`))
	if got := eval[string](b, `document.querySelector('.row.match.selected .op').textContent + ' / ' + document.querySelector('.detail h2').textContent`); got != "batch 42 / batch 42" {
		t.Errorf("found and selected: %q", got)
	}
	if got := eval[string](b, `document.querySelector('.spacer').style.height`); got != "2222px" {
		t.Errorf("after finding a batch under the collapsed root, the rows take %s, want 2222px (the root and its 100 batches)", got)
	}

	// A page left while it waits for the API does not draw over the next
	// one: the large trace asked for, then at once the services page,
	// which answers first.
	b.do("leave the large trace at once", chromedp.Evaluate[chromedp.Void](`location.hash = '#/trace/`+shop.big+`';
		setTimeout(() => location.hash = '#/services', 100)`), chromedp.WaitVisible(`.metrics-body table`))
	time.Sleep(2 * time.Second) // for the trace's answer, and a draw it must not make
	if got := eval[string](b, `location.hash + ' ' + document.querySelectorAll('.trace').length + ' ' + document.querySelectorAll('.metrics-body table').length`); got != "#/services 0 1" {
		t.Errorf("after leaving the trace for the services: %q, want the services alone", got)
	}
	// An address that does not decode says so.
	b.do("a lone %", chromedp.Evaluate[chromedp.Void](`location.hash = '#/trace/%'`), chromedp.WaitVisible(`#main .error`))
	if got := eval[string](b, `document.querySelector('#main .error').textContent`); !strings.Contains(got, "does not decode") {
		t.Errorf("a lone %%: %q", got)
	}
	b.noConsoleErrors()
}

// TestBrowserToken checks that with query tokens the page asks for one,
// and with it shows the services.
func TestBrowserToken(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.queryTokenFile = writeTestFile(t, t.TempDir(), "query.tokens", "ui-secret\n")
	s := startConfigured(t, cfg)
	defer s.shutdown()
	b := newBrowser(t, s, 1000, 700)
	b.open("#/search", "form.token")
	// A wrong token is asked for again, saying it was refused.
	b.do("give a wrong token", chromedp.SendKeys(`form.token input`, "guess"), chromedp.Click(`form.token button`),
		chromedp.WaitVisible(`form.token .error`))
	if got := eval[string](b, `document.querySelector('form.token .error').textContent`); got != "The token given was refused." {
		t.Errorf("after a wrong token: %q", got)
	}
	// One that no header can carry (a pasted curly quote) is refused at
	// once, not sent: fetch would throw as if cairn did not answer.
	b.do("give a token with a curly quote", chromedp.Evaluate[chromedp.Void](`document.querySelector('form.token input').value = '“ui-secret'`),
		chromedp.Click(`form.token button`), chromedp.WaitVisible(`form.token .token-problem`))
	b.do("give the token", chromedp.Evaluate[chromedp.Void](`document.querySelector('form.token input').value = ''`), chromedp.SendKeys(`form.token input`, "ui-secret"), chromedp.Click(`form.token button`),
		chromedp.WaitVisible(`.search-form`), chromedp.WaitVisible(`.results .count`))
	if got := eval[string](b, `document.querySelector('.results .count').textContent`); !strings.HasPrefix(got, "0 traces") {
		t.Errorf("with the token: %q", got)
	}
	// A search the API refuses says why under the form, which stays.
	b.do("search for nonsense", chromedp.SendKeys(`input[name=min_duration]`, "fast"), chromedp.Click(`.search-form button[type=submit]`),
		chromedp.WaitVisible(`.results .error`))
	if got := eval[string](b, `document.querySelector('.results .error').textContent`); got != `min_duration "fast" is not a duration such as 250ms or 1h` {
		t.Errorf("refused search: %q", got)
	}
	if got := eval[string](b, `document.querySelector('input[name=min_duration]').value`); got != "fast" {
		t.Errorf("the form lost what was typed: %q", got)
	}
}

// TestBrowserServicesMapDiagnose goes from the services page to a
// service's operations, to the service map, to the diagnosis of an
// operation and to an exemplar trace, checking the figures of each page
// against the API's.
func TestBrowserServicesMapDiagnose(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	shop := writeShop(t, s, false)
	waitFor(t, "the shop's span metrics", func() bool {
		var m struct {
			Series []struct{ Points []struct{ Calls int } }
		}
		apiGet(t, s, "/api/v1/span-metrics?since=1h&by=service&span_kind=server&step=61m", &m)
		calls := 0
		for _, se := range m.Series {
			for _, p := range se.Points {
				calls += p.Calls
			}
		}
		var g struct{ Edges []struct{} }
		apiGet(t, s, "/api/v1/service-graph?since=1h", &g)
		return calls == 2*shopCount && len(g.Edges) > 0
	})
	b := newBrowser(t, s, 1400, 900)

	type row struct{ Name, Calls, Errors string }
	rows := func() []row {
		return eval[[]row](b, `[...document.querySelectorAll('table.metrics tbody tr')].map(r => ({Name: r.dataset.name, Calls: r.dataset.calls || '', Errors: r.dataset.errors || ''}))`)
	}
	// The landing page is the services page.
	began := time.Now()
	b.open("", "table.metrics svg.spark")
	t.Logf("the services page was drawn %v after it was asked for", time.Since(began))
	if got := eval[string](b, `location.hash + ' ' + document.querySelector('#nav a.active').textContent`); got != " Services" {
		t.Errorf("landing page: %q", got)
	}
	var byService struct {
		Series []struct {
			Service string
			Points  []struct{ Calls, Errors int }
		}
	}
	apiGet(t, s, "/api/v1/span-metrics?since=1h&by=service&span_kind=server&span_kind=consumer&step=61m", &byService)
	var want []row
	for _, se := range byService.Series {
		want = append(want, row{se.Service, fmt.Sprint(se.Points[0].Calls), fmt.Sprint(se.Points[0].Errors)})
	}
	slices.SortFunc(want, func(a, b row) int { return strings.Compare(a.Name, b.Name) })
	if got := rows(); !slices.Equal(got, want) || len(got) != 2 {
		t.Errorf("services page: %v, API %v", got, want)
	}
	// Auto-refresh is kept in the URL, as the range is.
	b.do("auto-refresh", chromedp.Click(`input[name=refresh]`), chromedp.Poll[chromedp.Void](`location.hash.includes('refresh=on')`),
		chromedp.WaitVisible(`table.metrics svg.spark`), chromedp.Poll[chromedp.Void](`document.querySelector('input[name=refresh]').checked`))
	// Sorting by p99, then to checkout's operations.
	// The table is drawn again once its data is fetched again: its p99
	// heading then carries the sort's arrow, and a link clicked before that
	// may be gone when the click lands.
	b.do("sort by p99", chromedp.Click(`th[data-sort=p99] a`), chromedp.Poll[chromedp.Void](`location.hash.includes('sort=p99')`),
		chromedp.Poll[chromedp.Void](`document.querySelector('th[data-sort=p99] a')?.textContent.endsWith('▾')`))
	if got := rows(); len(got) != 2 || got[0].Name != "checkout" {
		t.Errorf("by p99, slowest first: %v", got)
	}
	b.do("open checkout", chromedp.Click(`table.metrics a[href^="#/services/checkout"]`), chromedp.WaitVisible(`td.kind`))
	var ops struct {
		Series []struct {
			Operation string
			Points    []struct{ Calls, Errors int }
		}
	}
	apiGet(t, s, "/api/v1/span-metrics?since=1h&service=checkout&step=61m", &ops)
	want = nil
	for _, se := range ops.Series {
		want = append(want, row{se.Operation, fmt.Sprint(se.Points[0].Calls), fmt.Sprint(se.Points[0].Errors)})
	}
	if got := rows(); !sameElements(got, want) || len(got) != 2 {
		t.Errorf("checkout's operations: %v, want %v", got, want)
	}

	// To the map: the two services and the edge between them.
	b.do("to the map", chromedp.Click(`.actions a[href^="#/map"]`), chromedp.WaitVisible(`svg.map .node.selected`), chromedp.WaitVisible(`.map-panel .node-rate`))
	nodes := eval[[]string](b, `[...document.querySelectorAll('svg.map .node')].map(n => n.dataset.name).sort()`)
	if !slices.Equal(nodes, []string{"checkout", "payments"}) {
		t.Errorf("map nodes %v", nodes)
	}
	var graph struct {
		Edges []struct{ Parent, Child string }
	}
	apiGet(t, s, "/api/v1/service-graph?since=1h", &graph)
	if n := eval[int](b, `document.querySelectorAll('svg.map .edge').length`); n != len(graph.Edges) {
		t.Errorf("%d edges drawn, the API has %d", n, len(graph.Edges))
	}
	b.do("click the edge", chromedp.Evaluate[chromedp.Void](`document.querySelector('svg.map .edge[data-parent=checkout][data-child=payments]').dispatchEvent(new MouseEvent('click', {bubbles: true}))`),
		chromedp.WaitVisible(`.map-panel a.edge-search`))
	if got := eval[string](b, `document.querySelector('.map-panel a.edge-search').getAttribute('href')`); got != "#/search?service=payments&range=1h" {
		t.Errorf("the edge's search: %q", got)
	}
	b.do("click checkout", chromedp.Evaluate[chromedp.Void](`document.querySelector('svg.map .node[data-name=checkout]').dispatchEvent(new MouseEvent('click', {bubbles: true}))`),
		chromedp.WaitVisible(`.map-panel a[href^="#/diagnose"]`))

	// To diagnose checkout's GET /checkout: dragging over the second half
	// of the shop's two minutes makes it the window, the first the
	// baseline.
	b.do("to diagnose", chromedp.Click(`.map-panel a[href^="#/diagnose"]`), chromedp.WaitReady(`select[name=operation] option[value="GET /checkout"]`),
		chromedp.SetValue(`select[name=operation]`, "GET /checkout"), chromedp.WaitVisible(`svg.chart.latency`))
	mid := shop.base.Add(60 * time.Second)
	b.do("drag", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const svg = document.querySelector('svg.chart.latency'), r = svg.getBoundingClientRect();
		const t0 = Date.now() - 3600e3, t1 = Date.now();
		const at = (t) => r.left + (64 + (t - t0) / (t1 - t0) * (1000 - 76)) / 1000 * r.width;
		const ev = (type, t) => svg.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: at(t), clientY: r.top + 40}));
		ev('mousedown', %d); ev('mousemove', %d); ev('mouseup', %d);
	})()`, mid.UnixMilli(), mid.Add(time.Minute).UnixMilli(), mid.Add(time.Minute).UnixMilli())),
		chromedp.WaitVisible(`.diagnosis .cause`))
	t.Logf("diagnosed: %q", eval[string](b, `document.querySelector('.diagnosis .cause').textContent`))
	params := eval[string](b, `(p => 'service=' + encodeURIComponent(p.get('service')) + '&operation=' + encodeURIComponent(p.get('operation')) +
		'&start=' + p.get('window_start') + '&end=' + p.get('window_end') + '&sample=' + document.querySelector('select[name=sample]').value)(new URLSearchParams(location.hash.split('?')[1]))`)
	var diag struct {
		Cause  string
		Window struct{ Traces int }
	}
	apiGet(t, s, "/api/v1/diagnose?"+params, &diag)
	if got := eval[string](b, `document.querySelector('.diagnosis .cause').textContent`); got != diag.Cause || diag.Window.Traces < 4 {
		t.Errorf("diagnosis says %q, the API %q (of %d traces)", got, diag.Cause, diag.Window.Traces)
	}
	if got := eval[string](b, `document.querySelector('table.windows tr.window .traces').textContent`); got != fmt.Sprint(diag.Window.Traces) {
		t.Errorf("window of %s traces, the API %d", got, diag.Window.Traces)
	}
	if got := eval[string](b, `document.querySelector('.diagnosis').textContent`); strings.Contains(got, "null") || strings.Contains(got, "undefined") {
		t.Errorf("the diagnosis shows a missing value: %s", got)
	}
	if n := eval[int](b, `document.querySelectorAll('svg.histogram rect.window').length`); n == 0 {
		t.Error("no histogram of the window's latencies")
	}
	// An exemplar trace opens with its critical path.
	b.do("open an exemplar", chromedp.Click(`table.ranked.ops td.exemplars a`), chromedp.WaitVisible(`.trace .row.crit`), chromedp.WaitVisible(`.crit-count`))
	b.noConsoleErrors()
}

// TestBrowserDiagnoseAliases diagnoses the bench's upgraded pod: the
// version ranks first, and the pod's name and identifiers, on exactly the
// same traces, are listed under it as its aliases, as the API gives them.
func TestBrowserDiagnoseAliases(t *testing.T) {
	s, b, mid, end := openDiagnosis(t, "slow-db-version", "table.ranked.attrs .aliases")
	var diag diagnoseJSON
	apiGet(t, s, "/api/v1/diagnose?service=web&operation="+url.QueryEscape(bench.RCARootOperation)+"&start="+mid.UTC().Format(time.RFC3339)+
		"&end="+end.UTC().Format(time.RFC3339)+"&sample=100", &diag)
	if len(diag.Attributes) == 0 || len(diag.Attributes[0].Aliases) == 0 {
		t.Fatalf("the API's attributes %+v, want the version first, with aliases", diag.Attributes)
	}
	first := diag.Attributes[0]
	row := eval[string](b, `document.querySelector('table.ranked.attrs tbody tr').textContent`)
	if want := "service.version=2.9.0 on inventoryalias " + first.AliasNames(); !strings.HasSuffix(row, want) {
		t.Errorf("first attribute row %q, want it to end %q", row, want)
	}
	shown, want := eval[int](b, `document.querySelectorAll('table.ranked.attrs .aliases').length`), 0
	for _, a := range diag.Attributes[:min(15, len(diag.Attributes))] {
		if len(a.Aliases) > 0 {
			want++
		}
	}
	if shown != want {
		t.Errorf("%d attributes shown with aliases, the API has %d", shown, want)
	}
	b.noConsoleErrors()
}

// TestBrowserDiagnoseCall diagnoses calls to one payment pod that are slow
// on the network, and wants the page to name the calls to payment's
// Charge, as the API does.
func TestBrowserDiagnoseCall(t *testing.T) {
	_, b, _, _ := openDiagnosis(t, "network-delay", "table.ranked.ops")
	row := eval[string](b, `document.querySelector('table.ranked.ops tbody tr td:nth-child(2)').textContent`)
	if want := "payment: Charge (calls to it)"; row != want {
		t.Errorf("first operation %q, want %q", row, want)
	}
	if cause := eval[string](b, `document.querySelector('p.cause').textContent`); !strings.Contains(cause, "its callers' wait on it outside its spans") {
		t.Errorf("cause %q does not say where the time went", cause)
	}
	b.noConsoleErrors()
}

// TestBrowserDiagnoseSpanNames diagnoses a slow database query whose spans
// are each named by their SQL with a literal in it, and wants the page to
// name the query's shape and how many span names it stands for, as the
// API does.
func TestBrowserDiagnoseSpanNames(t *testing.T) {
	s, b, mid, end := openDiagnosis(t, "literal-sql", "table.ranked.ops")
	var diag diagnoseJSON
	apiGet(t, s, "/api/v1/diagnose?service=web&operation="+url.QueryEscape(bench.RCARootOperation)+"&start="+mid.UTC().Format(time.RFC3339)+
		"&end="+end.UTC().Format(time.RFC3339)+"&sample=100", &diag)
	if len(diag.Operations) == 0 || diag.Operations[0].SpanNames < 10 {
		t.Fatalf("the API's operations %+v, want the query's shape first, standing for many names", diag.Operations)
	}
	row := eval[string](b, `document.querySelector('table.ranked.ops tbody tr td:nth-child(2)').textContent`)
	if want := fmt.Sprintf("inventory: SELECT stock FROM inventory WHERE sku = ? (%d span names)", diag.Operations[0].SpanNames); row != want {
		t.Errorf("first operation %q, want %q", row, want)
	}
	b.noConsoleErrors()
}

// TestBrowserDiagnoseWhereTimeGoes opens the diagnosis page of checkouts
// before a window is picked, on the scenario whose stock query is named
// by its SQL with a literal in it: the page sums up the critical paths of
// the range (the fault's), the query's shape first, as the API does.
func TestBrowserDiagnoseWhereTimeGoes(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	// The fault's window: a sample spreads over its range.
	_, mid, end := writeScenario(t, s, "literal-sql")
	window := "start=" + mid.UTC().Format(time.RFC3339) + "&end=" + end.UTC().Format(time.RFC3339)
	var paths query.CriticalPathsJSON
	apiGet(t, s, "/api/v1/critical-paths?service=web&operation="+url.QueryEscape(bench.RCARootOperation)+"&"+window+"&sample=100", &paths)
	if len(paths.Operations) == 0 || paths.Operations[0].SpanNames < 10 {
		t.Fatalf("the API's operations %+v, want the query's shape first, standing for many names", paths.Operations)
	}
	b := newBrowser(t, s, 1280, 900)
	b.open("#/diagnose?service=web&operation="+url.QueryEscape(bench.RCARootOperation)+"&range=custom&"+window, "table.ranked.paths tbody tr")
	first := eval[[]string](b, `[...document.querySelectorAll('table.ranked.paths tbody tr:first-child td')].map((td) => td.textContent)`)
	if len(first) != 6 || !strings.HasPrefix(first[0], "inventory: SELECT stock FROM inventory WHERE sku = ? (") || !strings.HasSuffix(first[0], " span names)") ||
		!strings.HasSuffix(first[2], "%") || first[5] != "100.0%" {
		t.Errorf("first row %q, want the query's shape, its count of names, its share, on every path", first)
	}
	if width := eval[float64](b, `document.querySelector('table.ranked.paths .share-bar').getBoundingClientRect().width`); width < 20 {
		t.Errorf("the first share's bar is %.1f px wide", width)
	}
	if heading := eval[string](b, `document.querySelector('table.ranked.paths').closest('section').querySelector('h3').textContent`); !strings.Contains(heading, "critical paths of 100 traces") {
		t.Errorf("heading %q, want the critical paths of the page's sample of 100 traces", heading)
	}
	b.noConsoleErrors()
}

// TestBrowserServiceShapeNames opens inventory's page on the scenario
// whose stock query is named by its SQL with the SKU in it: its hundreds of
// names are one row, the shape with their count, without the diagnose and
// traces links that need one operation's name.
func TestBrowserServiceShapeNames(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	writeScenario(t, s, "literal-sql")
	waitFor(t, "the cut", func() bool {
		var m struct{ Series []struct{ Operation string } }
		apiGet(t, s, "/api/v1/span-metrics?service=inventory&since=1h&step=1h", &m)
		return len(m.Series) > 100
	})
	b := newBrowser(t, s, 1280, 900)
	b.open("#/services/inventory?range=1h", "table.metrics td.kind")
	rows := eval[[]string](b, `[...document.querySelectorAll('table.metrics tbody tr')].map((tr) => tr.textContent)`)
	shaped := 0
	for _, r := range rows {
		if strings.Contains(r, "SKU-") {
			t.Fatalf("a stock query's own row: %q", r)
		}
		if strings.HasPrefix(r, "SELECT stock FROM inventory WHERE sku = ? (") {
			shaped++
			if strings.Contains(r, "diagnose") {
				t.Errorf("the shape's row %q links to a diagnosis", r)
			}
		}
	}
	if shaped != 1 || len(rows) > 10 {
		t.Errorf("%d rows of the query's shape among %d: %q", shaped, len(rows), rows)
	}
	b.noConsoleErrors()
}

// openDiagnosis writes one of the bench's faults (see writeScenario) to a
// server of its own, stopped when the test ends, and opens the web UI's
// diagnosis of the fault's window once ready is on the page.
func openDiagnosis(t *testing.T, scenario, ready string) (s *server, b *browser, mid, end time.Time) {
	t.Helper()
	s = startTestServer(t, t.TempDir())
	t.Cleanup(func() { s.shutdown() })
	_, mid, end = writeScenario(t, s, scenario)
	b = newBrowser(t, s, 1280, 900)
	window := "window_start=" + mid.UTC().Format(time.RFC3339) + "&window_end=" + end.UTC().Format(time.RFC3339)
	b.open("#/diagnose?service=web&operation="+url.QueryEscape(bench.RCARootOperation)+"&"+window, ready)
	return s, b, mid, end
}

// writeCycle stores a trace of a root, two spans whose parents are each
// other, which no SDK makes but any client may send, and a child of one of
// them that starts before both, and returns its ID.
func writeCycle(t *testing.T, s *server) string {
	t.Helper()
	id := []byte{0: 0xc0, 15: 0xc0}
	start := uint64(time.Now().Add(-time.Minute).UnixNano())
	span := func(sid, parent byte, name string) *tracepb.Span {
		sp := &tracepb.Span{TraceId: id, SpanId: []byte{7: sid}, Name: name, StartTimeUnixNano: start + 10 - uint64(sid), EndTimeUnixNano: start + 1e6}
		if parent != 0 {
			sp.ParentSpanId = []byte{7: parent}
		}
		return sp
	}
	req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "cycle"}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{span(1, 0, "root"), span(2, 3, "A"), span(3, 2, "B"), span(4, 2, "child of A")}}},
	}}}
	if _, err := collectorpb.NewTraceServiceClient(grpctest.Dial(t, s.otlpAddr.String())).Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", id)
}

// TestBrowserBigMap checks that a service graph of more services than the
// map draws shows the busiest, says so, and shows any service's own calls
// on request: a gateway calling 219 services, the first 70 once and the
// rest twice.
func TestBrowserBigMap(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	const services, quiet = 219, 70
	var calls [][2]string
	for i := range services {
		calls = append(calls, [2]string{"gw", fmt.Sprintf("svc-%03d", i)})
		if i >= quiet {
			calls = append(calls, [2]string{"gw", fmt.Sprintf("svc-%03d", i)})
		}
	}
	writeCalls(t, s, calls)
	waitForEdges(t, s, services)
	b := newBrowser(t, s, 1280, 900)
	nodes := func() []string {
		return eval[[]string](b, `[...document.querySelectorAll('svg.map .node')].map(n => n.dataset.name).sort()`)
	}
	note := func() string { return eval[string](b, `document.querySelector('.map-note p').textContent`) }

	b.open("#/map?range=1h", "svg.map .node")
	if got := nodes(); len(got) != services-quiet+1 || !slices.Contains(got, "gw") || slices.Contains(got, "svc-000") {
		t.Fatalf("%d busiest services drawn, of them gw %v and svc-000 %v", len(got), slices.Contains(got, "gw"), slices.Contains(got, "svc-000"))
	}
	if got, want := note(), "150 of 220 services, the busiest by the calls they make and take, and the calls between them."; got != want {
		t.Errorf("note %q, want %q", got, want)
	}

	// A quiet service's calls, asked for by name.
	b.do("show svc-005's calls", chromedp.SetValue(`.map-focus input`, "svc-005"), chromedp.Click(`.map-focus button[type=submit]`),
		chromedp.WaitVisible(`svg.map .node.selected[data-name="svc-005"]`))
	if got := nodes(); !slices.Equal(got, []string{"gw", "svc-005"}) {
		t.Errorf("svc-005's calls: %v", got)
	}
	if got, want := note(), "svc-005 and the one service it calls or is called by, of 220."; got != want {
		t.Errorf("note %q, want %q", got, want)
	}
	// The gateway's: it calls every service, past what the map draws.
	b.open("#/map?range=1h&focus=gw", `svg.map .node.selected[data-name="gw"]`)
	if got := nodes(); len(got) != 150 || !slices.Contains(got, "svc-218") || slices.Contains(got, "svc-000") {
		t.Errorf("gw's calls: %d services drawn", len(got))
	}
	b.do("back to the busiest", chromedp.Click(`.map-note button.map-busiest`), chromedp.WaitNotPresent(`.map-note button.map-busiest`),
		chromedp.WaitVisible(`svg.map .node`))
	if got := nodes(); len(got) != 150 {
		t.Errorf("the busiest again: %d", len(got))
	}
	b.noConsoleErrors()
}

// waitForEdges waits until the last hour's service graph has n edges:
// until the calls written are cut.
func waitForEdges(t *testing.T, s *server, n int) {
	t.Helper()
	waitFor(t, "the cut", func() bool {
		var g struct{ Edges []struct{ Parent string } }
		apiGet(t, s, "/api/v1/service-graph?since=1h", &g)
		return len(g.Edges) == n
	})
}

// writeCalls stores a trace for each call, of a client span of the
// caller's and a server span of the called service's.
func writeCalls(t *testing.T, s *server, calls [][2]string) {
	t.Helper()
	start := uint64(time.Now().Add(-time.Minute).UnixNano())
	resource := func(name string, spans ...*tracepb.Span) *tracepb.ResourceSpans {
		return &tracepb.ResourceSpans{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: name}}}}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
		}
	}
	var req collectorpb.ExportTraceServiceRequest
	for n, c := range calls {
		id := []byte{0: 0xb1, 14: byte(n >> 8), 15: byte(n)}
		client := &tracepb.Span{TraceId: id, SpanId: []byte{0: 1, 6: byte(n >> 8), 7: byte(n)}, Name: "call", Kind: tracepb.Span_SPAN_KIND_CLIENT,
			StartTimeUnixNano: start, EndTimeUnixNano: start + 2e6}
		server := &tracepb.Span{TraceId: id, SpanId: []byte{0: 2, 6: byte(n >> 8), 7: byte(n)}, ParentSpanId: client.SpanId, Name: "serve",
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: start + 1e5, EndTimeUnixNano: start + 19e5}
		req.ResourceSpans = append(req.ResourceSpans, resource(c[0], client), resource(c[1], server))
	}
	exportRequest(t, s.otlpAddr.String(), &req)
}

// TestBrowserMapLoops checks that a call back to a service on the left,
// which the map draws as a loop under the nodes, lies within the drawing
// rather than past its bottom edge.
func TestBrowserMapLoops(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	writeCalls(t, s, [][2]string{{"web", "api"}, {"api", "db-proxy"}, {"db-proxy", "web"}})
	waitForEdges(t, s, 3)
	b := newBrowser(t, s, 1280, 900)
	b.open("#/map?range=1h", "svg.map .node")
	if n := eval[int](b, `document.querySelectorAll('svg.map .edge').length`); n != 3 {
		t.Fatalf("%d edges drawn", n)
	}
	if past := eval[float64](b, `(() => {
		const svg = document.querySelector('svg.map'), box = svg.querySelector('g.edges').getBBox();
		return box.y + box.height - svg.viewBox.baseVal.height;
	})()`); past > 0 {
		t.Errorf("the loops reach %.0f past the drawing's bottom", past)
	}
	b.noConsoleErrors()
}

// TestBrowserOddData checks the pages against what a store may hold and a
// user may do that the shop does not: a service with no name, span metrics
// past the series limit, a long attribute value and an event with no
// time; a custom range followed to Search, an address that names no page,
// and cairn not answering for a while.
func TestBrowserOddData(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.maxSeries = 2
	s := startConfigured(t, cfg)
	defer s.shutdown()
	writeCalls(t, s, [][2]string{{"", "api"}, {"web", "api"}, {"web", "db"}, {"web", "db"}})
	start := uint64(time.Now().Add(-time.Minute).UnixNano())
	long := strings.Repeat("0123456789", 500)
	exportRequest(t, s.otlpAddr.String(), &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "web"}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{0: 0xa7, 15: 0xa7}, SpanId: []byte{7: 1}, Name: "long",
			StartTimeUnixNano: start, EndTimeUnixNano: start + 1e6,
			Attributes: []*commonpb.KeyValue{{Key: "body", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: long}}}},
			Events:     []*tracepb.Span_Event{{Name: "untimed"}}}}}},
	}}})
	// And a trace of an hour, beside which the others' durations are on a
	// log scale.
	hour := uint64(time.Now().Add(-62 * time.Minute).UnixNano())
	exportRequest(t, s.otlpAddr.String(), &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "web"}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{0: 0xa8, 15: 0xa8}, SpanId: []byte{7: 1}, Name: "batch",
			StartTimeUnixNano: hour, EndTimeUnixNano: hour + uint64(time.Hour)}}}},
	}}})
	waitForEdges(t, s, 3)
	b := newBrowser(t, s, 1280, 900)

	b.open("#/search?range=6h", "svg.scatter circle")
	if got := eval[string](b, `document.querySelector('svg.scatter').getAttribute('class') + ': ' + [...document.querySelectorAll('svg.scatter text')].map((t) => t.textContent).join(', ')`); !strings.HasPrefix(got, "scatter log: ") || !strings.Contains(got, "log scale") {
		t.Errorf("search beside an hour-long trace: %q, want its durations on a log scale", got)
	}

	// The service with no name is drawn as such, and its panel shows no
	// other service's figures.
	b.open("#/map?range=1h", "svg.map .node")
	if got := eval[string](b, `document.querySelector('svg.map .node[data-name=""] text').textContent`); got != "(no service name)" {
		t.Errorf("the unnamed service is drawn as %q", got)
	}
	b.do("click it", chromedp.Evaluate[chromedp.Void](`document.querySelector('svg.map .node[data-name=""]').dispatchEvent(new MouseEvent('click', {bubbles: true}))`),
		chromedp.WaitVisible(`.map-panel h2`))
	if got := eval[string](b, `document.querySelector('.map-panel').textContent`); !strings.Contains(got, "(no service name)") || strings.Contains(got, "Rate") {
		t.Errorf("its panel: %q", got)
	}

	// Past the series limit, each overflow series is a row of its own, as
	// the API answers them: none is dropped.
	end := time.Now().UTC().Add(time.Minute).Truncate(time.Second)
	from := end.Add(-time.Hour)
	custom := "range=custom&start=" + from.Format(time.RFC3339) + "&end=" + end.Format(time.RFC3339)
	var web struct {
		Series []struct{ Points []struct{ Calls int } }
	}
	apiGet(t, s, "/api/v1/span-metrics?service=web&shape_names=true&step=62m&start="+from.Format(time.RFC3339)+"&end="+end.Format(time.RFC3339), &web)
	b.open("#/services/web?"+custom, "table.metrics tbody tr")
	if rows := eval[int](b, `document.querySelectorAll('table.metrics tbody tr').length`); rows != len(web.Series) || rows < 2 {
		t.Errorf("%d rows of web's operations, the API has %d series", rows, len(web.Series))
	}
	// Its traces are searched within the same custom range.
	href := eval[string](b, `document.querySelector('.actions a[href^="#/search"]').getAttribute('href')`)
	if !strings.Contains(href, "range=custom") || !strings.Contains(href, "start="+url.QueryEscape(from.Format("2006-01-02T15:04:05"))) {
		t.Errorf("search its traces: %q, want the custom range from %v", href, from)
	}
	b.do("search its traces", chromedp.Click(`.actions a[href^="#/search"]`), chromedp.WaitVisible(`.results table`))
	if got := eval[string](b, `document.querySelector('select[name=range]').value + ' ' + !!document.querySelector('input[name=start]').value`); got != "custom true" {
		t.Errorf("search's range: %q", got)
	}

	// A long value is cut, with the rest a click away; an event with no
	// time says so.
	b.open("#/trace/a70000000000000000000000000000a7", ".trace .row")
	b.do("open the span", chromedp.Click(`.trace .row .names`), chromedp.WaitVisible(`.detail button.more`))
	if got := eval[string](b, `document.querySelector('.detail button.more').textContent`); got != "show all 5,000 characters" {
		t.Errorf("the long value's button: %q", got)
	}
	if got := eval[string](b, `document.querySelector('.detail .event').textContent`); got != "untimed (no time given)none" {
		t.Errorf("the event: %q", got)
	}
	b.do("show all", chromedp.Click(`.detail button.more`), chromedp.WaitNotPresent(`.detail button.more`))
	if !eval[bool](b, `document.querySelector('.detail table.attrs').textContent.includes(`+"`"+long+"`"+`)`) {
		t.Error("the whole value is not shown")
	}

	// An address that names no page shows the services, whatever it names;
	// a range with nothing counted says so above the services that are.
	b.open("#/constructor", "table.metrics")
	b.open("#/trace/", "p.error")
	if got := eval[string](b, `document.querySelector('p.error').textContent`); !strings.HasPrefix(got, "This address names no trace") {
		t.Errorf("#/trace/ says %q", got)
	}
	b.open("#/services?range=custom&start=2020-01-01T00:00:00Z&end=2020-01-01T01:00:00Z", "p.no-metrics")

	// While cairn does not answer, the page says so and tries again; once
	// it answers, the page is drawn.
	block := func(patterns ...*network.BlockPattern) {
		t.Helper()
		if _, err := chromedp.Call(b.ctx, network.Enable, network.EnableParams{}); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(b.ctx, network.SetBlockedURLs, network.SetBlockedURLsParams{URLPatterns: patterns}); err != nil {
			t.Fatal(err)
		}
	}
	block(&network.BlockPattern{URLPattern: b.base + "/api/*", Block: true})
	b.open("#/services", "p.retrying")
	if got := eval[string](b, `document.querySelector('p.error').textContent`); !strings.HasPrefix(got, "cairn did not answer") {
		t.Errorf("with cairn not answering: %q", got)
	}
	block()
	b.do("wait for cairn", chromedp.WaitVisible(`table.metrics`))
	b.noConsoleErrors()
}
