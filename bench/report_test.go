package bench

import (
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTimeline checks that a timeline keeps every acknowledged span, in
// 100 ms intervals for a short run and in at most timelinePoints round ones
// for a long run.
func TestTimeline(t *testing.T) {
	for _, c := range []struct {
		elapsed time.Duration
		step    time.Duration
		points  int
	}{
		{time.Second, 100 * time.Millisecond, 10},
		{1030 * time.Millisecond, 100 * time.Millisecond, 10}, // the last interval is 130 ms
		{1070 * time.Millisecond, 100 * time.Millisecond, 11}, // the last interval is 70 ms
		{40 * time.Millisecond, 100 * time.Millisecond, 1},
		{time.Hour, 15 * time.Second, 240},
	} {
		var acks []ack
		for at := time.Duration(0); at < c.elapsed; at += c.elapsed / 1000 {
			acks = append(acks, ack{at: at, latency: time.Duration(len(acks)%10+1) * time.Millisecond, spans: 100})
		}
		tl := newTimeline(acks, c.elapsed)
		if tl.IntervalSec != c.step.Seconds() || len(tl.SpansPerSec) != c.points || len(tl.ExportP99Ms) != c.points {
			t.Errorf("%s: %d intervals of %gs, want %d of %s", c.elapsed, len(tl.SpansPerSec), tl.IntervalSec, c.points, c.step)
			continue
		}
		total := 0.0
		for i, r := range tl.SpansPerSec {
			width := c.step.Seconds()
			if i == len(tl.SpansPerSec)-1 {
				width = c.elapsed.Seconds() - float64(i)*width
			}
			total += r * width
		}
		if math.Abs(total-float64(100*len(acks))) > 1e-6*total {
			t.Errorf("%s: the timeline holds %.0f spans, the run acknowledged %d", c.elapsed, total, 100*len(acks))
		}
		if tl.ExportP50Ms[0] <= 0 || tl.ExportP99Ms[0] < tl.ExportP50Ms[0] {
			t.Errorf("%s: export latency p50 %g, p99 %g", c.elapsed, tl.ExportP50Ms[0], tl.ExportP99Ms[0])
		}
	}
}

// oneSecondReport is the report of a one-second run with reads, as Run
// would make it.
func oneSecondReport() *Report {
	var acks []ack
	for i := range 200 {
		acks = append(acks, ack{at: time.Duration(i) * 5 * time.Millisecond, latency: time.Duration(2+i%40) * time.Millisecond, spans: 1024})
	}
	r := &Report{
		Started: time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC), Version: "v1.2.3",
		Args:   []string{"--target", "<script>alert(1)</script>", "--protocol", "http/json", "--html", "my report.html"},
		Host:   Host{Name: "bench-host", CPUModel: "AMD EPYC 7B13", CPUs: 2, OS: "linux", Arch: "amd64", GoVersion: "go1.26.8"},
		Target: "<script>alert(1)</script>", Protocol: ProtocolHTTPJSON, Seed: 1, Batch: 1024, Conns: 4, Inflight: 4,
		Spans: 204800, Requests: 200, Seconds: 1, SpansPerSec: 204800, ExportP50Ms: 20, ExportP99Ms: 41, ExportMaxMs: 41,
		Timeline: newTimeline(acks, time.Second),
		GetTraces: []TraceReadReport{
			{Class: "1-10 spans", Traces: 100, Queries: 300, P50Ms: 0.3, P99Ms: 0.9, MaxMs: 1.2, TargetP99Ms: 2},
			{Class: "10000+ spans", Traces: 2, Queries: 20, P50Ms: 11, P99Ms: 61, MaxMs: 61, TargetP99Ms: 50},
		},
		Searches:      []SearchReport{{Shape: "service", Queries: 300, MeanTraces: 20, P50Ms: 4, P99Ms: 6, MaxMs: 7, TargetP99Ms: 20}},
		TracesChecked: 100, TracesComplete: 100, CompleteFraction: 1,
	}
	for _, a := range acks {
		r.exportLatencies = append(r.exportLatencies, a.latency)
		r.readLatencies = append(r.readLatencies, a.latency/20)
	}
	return r
}

// TestHTMLReport checks the page's structure: every chart drawn, with ticks,
// units, titles and legends, the goals drawn, the run's metadata shown, and
// nothing from the command line unescaped or loaded from elsewhere.
func TestHTMLReport(t *testing.T) {
	var b strings.Builder
	if err := oneSecondReport().WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if n := strings.Count(page, "<svg"); n != 6 {
		t.Errorf("%d charts, want 6", n)
	}
	// The throughput chart of a one-second run has a point per 100 ms.
	throughput := page[strings.Index(page, "Acknowledged spans per second"):]
	throughput = throughput[:strings.Index(throughput, "</svg>")]
	points := regexp.MustCompile(`<polyline[^>]*points="([^"]*)"`).FindStringSubmatch(throughput)
	if points == nil || len(strings.Fields(points[1])) != 10 {
		t.Errorf("throughput line: %v", points)
	}
	for _, want := range []string{
		">200k<", ">250k<", // spans/s ticks, k-suffixed
		">0.2<", ">1<", "seconds since the first request",
		"milliseconds (log scale)", ">0.1<", ">10<", ">100<", // log ticks in ms
		"Export latency over the run, per 0.1 s", "Trace by ID, by trace size", "Search, limit 20, whole traces",
		"> p50<", "> p99<", "> goal for p99<", "mean 205k",
		`stroke="#dc2626" stroke-width="1.5" stroke-dasharray`, // goals
		"2026-03-01 12:30 UTC", "v1.2.3", "bench-host", "2 × AMD EPYC 7B13", "linux/amd64, go1.26.8",
		"http/json", "&#39;my report.html&#39;",
		`<div class="card miss"><div class="v">61 ms</div><div class="k">trace by ID p99, 10000&#43; spans</div>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the target from the command line is not escaped")
	}
	for _, external := range []string{"src=", "href=", "@import", "url("} {
		if strings.Contains(page, external) {
			t.Errorf("page refers to something outside it: %s", external)
		}
	}
}

func TestWriteTableMetadata(t *testing.T) {
	var b strings.Builder
	if err := oneSecondReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"run                        2026-03-01 12:30:00 UTC, cairn v1.2.3\n",
		"host                       bench-host: 2 × AMD EPYC 7B13, linux/amd64, go1.26.8\n",
		"over http/json\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestScales(t *testing.T) {
	for _, c := range []struct {
		s     scale
		ticks []float64
		hi    float64
	}{
		{linearScale(412345, "", siLabel), []float64{0, 100e3, 200e3, 300e3, 400e3, 500e3}, 500e3},
		{linearScale(1.01, "", plainLabel), []float64{0, 0.25, 0.5, 0.75, 1, 1.25}, 1.25},
		{linearScale(0, "", plainLabel), []float64{0, 0.2, 0.4, 0.6, 0.8, 1}, 1},
		{timeScale(1.01), []float64{0, 0.25, 0.5, 0.75, 1}, 1.01},
		{logScale(0.2, 9, "", plainLabel), []float64{0.1, 0.2, 0.5, 1, 2, 5, 10}, 10},
		{logScale(0.3, 200, "", plainLabel), []float64{0.1, 1, 10, 100, 1000}, 1000},
		{logScale(5, 5, "", plainLabel), []float64{1, 2, 5, 10}, 10},
	} {
		if !slices.Equal(c.s.ticks, c.ticks) || c.s.hi != c.hi {
			t.Errorf("ticks %v up to %g, want %v up to %g", c.s.ticks, c.s.hi, c.ticks, c.hi)
		}
	}
	for v, want := range map[float64]string{0: "0", 250e3: "250k", 296675.1: "297k", 1.5e6: "1.5M", 0.25: "0.25", 999.6: "1k"} {
		if got := siLabel(v); got != want {
			t.Errorf("siLabel(%g) = %s, want %s", v, got, want)
		}
	}
}

// phasedReport is oneSecondReport with reads during ingest and while the
// store was busy after it, as Run makes it against an embedded cairn.
func phasedReport() *Report {
	r := oneSecondReport()
	r.Embedded, r.Settle = true, 15
	r.LargestTraceSpans, r.LargestTraceMs = 11794, 14
	r.ReadsDuringIngest = &PhaseReads{FromSec: 0, ToSec: 1,
		GetTraces: []TraceReadReport{
			{Class: "1-10 spans", Traces: 40, Queries: 41, P50Ms: 0.8, P99Ms: 7.5, MaxMs: 9, TargetP99Ms: 2},
			{Class: "10000+ spans", Traces: 2, Queries: 2, P50Ms: 30, P99Ms: 45, MaxMs: 45, TargetP99Ms: 50},
		},
		Searches: []SearchReport{{Shape: "service", Queries: 5, MeanTraces: 20, P50Ms: 9, P99Ms: 31, MaxMs: 31, TargetP99Ms: 20}},
		Failed:   1, FirstError: "rpc error: code = Unavailable",
	}
	r.ReadsAfterIngest = &PhaseReads{FromSec: 1, ToSec: 9.5,
		GetTraces: []TraceReadReport{{Class: "1-10 spans", Traces: 300, Queries: 310, P50Ms: 0.4, P99Ms: 1.9, MaxMs: 3, TargetP99Ms: 2}},
		Searches:  []SearchReport{{Shape: "service", Queries: 40, MeanTraces: 20, P50Ms: 5, P99Ms: 12, MaxMs: 14, TargetP99Ms: 20}},
	}
	return r
}

// TestReadPhasesTable checks that the table gives each phase's reads under
// a heading saying when they were made, in order, and its failed reads.
func TestReadPhasesTable(t *testing.T) {
	var b strings.Builder
	if err := phasedReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	table := strings.Join(strings.Fields(strings.ReplaceAll(b.String(), "\n", " | ")), " ")
	pos := 0
	for _, want := range []string{
		"reads during ingest 0.0–1.0 s, while spans were sent",
		"trace by ID, 1-10 spans p50 0.80 ms, p99 7.50 ms 40 traces, 41 reads",
		"search service p50 9.00 ms, p99 31.00 ms 20.0 traces/search, 5 searches",
		"failed reads 1 rpc error: code = Unavailable",
		"reads after ingest, store busy 1.0–9.5 s, until the target's files stopped changing",
		"trace by ID, 1-10 spans p50 0.40 ms, p99 1.90 ms",
		"reads settled from 15 s after the last acknowledgement, one read at a time",
		"trace by ID, 1-10 spans p50 0.30 ms, p99 0.90 ms",
		"search service p50 4.00 ms, p99 6.00 ms",
		"complete traces",
	} {
		i := strings.Index(table[pos:], want)
		if i < 0 {
			t.Errorf("table lacks %q after the lines before it:\n%s", want, table)
			continue
		}
		pos += i + len(want)
	}
	if strings.Count(table, "largest trace 14.0 ms 11,794 spans") != 1 {
		t.Errorf("the largest trace is not given once, for the settled reads:\n%s", table)
	}
}

// TestReadPhasesHTML checks that the page charts each phase's reads and
// that each goal's card shows the worst phase, with every phase's p99.
func TestReadPhasesHTML(t *testing.T) {
	var b strings.Builder
	if err := phasedReport().WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if n := strings.Count(page, "<svg"); n != 10 {
		t.Errorf("%d charts, want 10: 3 of ingest, 2 per phase of reads, the histogram", n)
	}
	for _, want := range []string{
		"Trace by ID, by trace size, during ingest", "Search, limit 20, whole traces, after ingest, store busy",
		"Trace by ID, by trace size, settled", "Trace-by-ID latency, all sizes, settled",
		`<div class="card miss"><div class="v">7.5 ms</div><div class="k">trace by ID p99, 1-10 spans</div>` +
			`<div class="n">during ingest 7.5 ms · after ingest, store busy 1.9 ms · settled 0.9 ms; goal ≤ 2 ms</div>`,
		`<div class="card miss"><div class="v">31 ms</div><div class="k">search p99, slowest shape</div>` +
			`<div class="n">service, during ingest 31 ms · after ingest, store busy 12 ms · settled 6 ms; goal ≤ 20 ms</div>`,
		// The largest class was not read while the store was busy.
		`<div class="v">61 ms</div><div class="k">trace by ID p99, 10000&#43; spans</div><div class="n">during ingest 45 ms · settled 61 ms;`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
