package bench

import (
	"cmp"
	"fmt"
	"html/template"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
)

// WriteHTML writes the report as one self-contained page: the headline
// figures, how and where the run ran, charts of throughput and latency over
// the run, of export and read latency and of reads and searches against
// cairn's goals, and every figure of the table.
func (r *Report) WriteHTML(w io.Writer) error {
	data := struct {
		R                *Report
		Cards            []card
		Meta             []row
		Rows             []row
		Throughput       template.HTML
		ExportOverTime   template.HTML
		ExportHistogram  template.HTML
		Reads            []template.HTML // per phase: trace reads, then searches
		TraceReadLatency template.HTML
		StartedAt, Spans string
		Protocol         string
	}{
		R:               r,
		Cards:           r.cards(),
		Meta:            r.meta(),
		Rows:            r.figureRows(),
		Throughput:      throughputChart(r),
		ExportOverTime:  exportOverTimeChart(r),
		ExportHistogram: histogramChart("Export latency", "requests", r.exportLatencies),
		StartedAt:       r.Started.Format("2006-01-02 15:04 MST"),
		Spans:           siLabel(r.SpansPerSec),
		Protocol:        r.protocolLine(),
	}
	phases := r.readPhases()
	for _, ph := range phases {
		title := ""
		if len(phases) > 1 {
			title = ", " + ph.name
		}
		if len(ph.traces) > 0 {
			data.Reads = append(data.Reads, traceReadsChart("Trace by ID, by trace size"+title, ph.traces))
		}
		if len(ph.searches) > 0 {
			data.Reads = append(data.Reads, searchChart("Search, limit 20, whole traces"+title, ph.searches))
		}
		if ph.name == "settled" && r.SpanMetrics != nil {
			reports := []SearchReport{*r.SpanMetrics}
			if r.SpanMetricsByService != nil {
				reports = append(reports, *r.SpanMetricsByService)
			}
			data.Reads = append(data.Reads, searchChart("Span metrics"+title, reports))
		}
	}
	if len(r.GetTraces) > 0 {
		title := "Trace-by-ID latency, all sizes"
		if len(phases) > 1 {
			title += ", settled"
		}
		data.TraceReadLatency = histogramChart(title, "reads", r.readLatencies)
	}
	return reportPage.Execute(w, data)
}

var reportPage = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cairn bench: {{.Spans}} spans/s, {{.StartedAt}}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2937; background: #f3f4f6 }
main { max-width: 62em; margin: 0 auto; padding: 1.5em 1.5em 3em }
h1 { font-size: 1.6em; margin: .2em 0 0 }
h2 { font-size: 1.15em; margin: 2em 0 .6em; padding-bottom: .3em; border-bottom: 1px solid #d1d5db }
.sub { color: #6b7280; margin: .2em 0 1.2em }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(11em, 1fr)); gap: .7em }
.card { background: #fff; border-radius: 6px; padding: .7em .9em; border-top: 3px solid #2563eb }
.card.ok { border-top-color: #16a34a } .card.miss { border-top-color: #dc2626 }
.card .v { font-size: 1.5em; font-weight: 600; font-variant-numeric: tabular-nums }
.card .k { color: #374151 } .card .n { color: #6b7280; font-size: .85em }
table { border-collapse: collapse; background: #fff; width: 100%; border-radius: 6px }
td, th { padding: .3em .8em; text-align: left; vertical-align: top }
th { font-weight: 500; color: #6b7280; white-space: nowrap; width: 12em }
td { font-variant-numeric: tabular-nums }
tr.gap td { padding: .35em; border-top: 1px solid #e5e7eb }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, monospace; word-break: break-all }
.chart { display: block; width: 100%; height: auto; background: #fff; border-radius: 6px; margin: 0 0 1em }
.chart text { font: 12px system-ui, -apple-system, "Segoe UI", sans-serif; fill: #374151 }
.chart text.title { font-size: 14px; font-weight: 600; fill: #111827 }
.chart text.unit { fill: #6b7280 }
.chart .grid { stroke: #e5e7eb } .chart .grid.minor { stroke: #f3f4f6 } .chart .axis { stroke: #6b7280 }
.error { color: #b91c1c }
</style></head><body><main>
<h1>cairn bench</h1>
<p class="sub">{{.StartedAt}} · cairn {{or .R.Version "(unknown version)"}} · {{.Protocol}} to {{if .R.Embedded}}an embedded cairn{{else}}{{.R.Target}}{{end}} · {{.R.Host.Name}}</p>
<div class="cards">{{range .Cards}}
<div class="card {{.Class}}"><div class="v">{{.Value}}</div><div class="k">{{.Label}}</div>{{if .Note}}<div class="n">{{.Note}}</div>{{end}}</div>{{end}}
</div>
{{if .R.FirstError}}<p class="error">First error: {{.R.FirstError}}</p>{{end}}
<h2>Run</h2>
<table>{{range .Meta}}
<tr><th>{{.What}}</th><td>{{if eq .What "command"}}<code>{{.Figure}}</code>{{else}}{{.Figure}}{{end}}</td></tr>{{end}}
</table>
<h2>Ingest</h2>
{{.Throughput}}
{{.ExportOverTime}}
{{.ExportHistogram}}
{{if .Reads}}<h2>Reads</h2>
{{range .Reads}}{{.}}
{{end}}{{.TraceReadLatency}}{{end}}
<h2>All figures</h2>
<table>{{range .Rows}}{{if .What}}
<tr><th>{{.What}}</th><td{{if not .Detail}} colspan="2"{{end}}>{{.Figure}}</td>{{if .Detail}}<td>{{.Detail}}</td>{{end}}</tr>{{else}}
<tr class="gap"><td colspan="3"></td></tr>{{end}}{{end}}
</table>
</main></body></html>
`))

// card is a headline figure; Class is ok or miss where cairn has a goal
// for it.
type card struct{ Value, Label, Note, Class string }

func (r *Report) cards() []card {
	cards := []card{
		{siLabel(r.SpansPerSec), "spans/s acknowledged", fmt.Sprintf("%s spans in %.1f s, %.1f MB/s", count(float64(r.Spans)), r.Seconds, r.MBPerSec), ""},
		{msLabel(r.ExportP99Ms), "export p99", "p50 " + msLabel(r.ExportP50Ms), ""},
		{count(float64(r.RejectedSpans + r.FailedSpans)), "spans rejected or failed", fmt.Sprintf("%d retries", r.Retries),
			goal(float64(r.RejectedSpans+r.FailedSpans), 0)},
	}
	if r.VisibilityProbes > 0 {
		cards = append(cards, card{msLabel(r.VisibilityP99Ms), "ack → visible p99", fmt.Sprintf("%d probes during ingest", r.VisibilityProbes), ""})
	}
	if r.Embedded {
		cards = append(cards, card{fmt.Sprintf("%.1f B", r.DiskBytesPerSpan), "disk per span", fmt.Sprintf("%.1f MB after flush", float64(r.DiskBytes)/1e6), ""},
			card{fmt.Sprintf("%.0f MiB", r.PeakRSSMB), "peak RSS of cairn serve", "", ""})
	}
	cards = append(cards, r.readCards()...)
	if r.TracesChecked > 0 {
		cards = append(cards, card{fmt.Sprintf("%d / %d", r.TracesComplete, r.TracesChecked), "sampled traces complete", "",
			goal(float64(r.TracesChecked-r.TracesComplete), 0)})
	}
	return cards
}

// readCards are the trace-read and search p99s against cairn's goals, each
// the worst of the phases in which reads were timed.
func (r *Report) readCards() []card {
	phases := r.readPhases()
	var cards []card
	// With more than one phase, the note gives the p99 of each.
	worst := func(value float64, label, note string, p99s []string, target float64) card {
		if len(phases) > 1 {
			note += strings.Join(p99s, " · ") + "; "
		}
		return card{msLabel(value), label, note + "goal ≤ " + msLabel(target), goal(value, target)}
	}
	for _, class := range sizeClasses {
		if class.targetP99Ms == 0 {
			continue
		}
		hi, seen := 0.0, false
		var p99s []string
		for _, ph := range phases {
			for _, c := range ph.traces {
				if c.Class == class.name {
					hi, seen = math.Max(hi, c.P99Ms), true
					p99s = append(p99s, ph.name+" "+msLabel(c.P99Ms))
				}
			}
		}
		if seen {
			cards = append(cards, worst(hi, "trace by ID p99, "+class.name, "", p99s, class.targetP99Ms))
		}
	}
	var (
		slowest SearchReport
		p99s    []string
	)
	for _, ph := range phases {
		if len(ph.searches) == 0 {
			continue
		}
		w := slices.MaxFunc(ph.searches, func(a, b SearchReport) int { return cmp.Compare(a.P99Ms, b.P99Ms) })
		p99s = append(p99s, ph.name+" "+msLabel(w.P99Ms))
		if w.P99Ms >= slowest.P99Ms {
			slowest = w
		}
	}
	if len(p99s) > 0 {
		cards = append(cards, worst(slowest.P99Ms, "search p99, slowest shape", slowest.Shape+", ", p99s, slowest.TargetP99Ms))
	}
	return cards
}

func goal(v, most float64) string {
	if v <= most {
		return "ok"
	}
	return "miss"
}

// meta describes how and where the run ran.
func (r *Report) meta() []row {
	rows := []row{
		{What: "started", Figure: r.Started.Format("2006-01-02 15:04:05 MST")},
		{What: "cairn", Figure: cmp.Or(r.Version, "(unknown version)")},
		{What: "command", Figure: commandLine(r.Args)},
		{What: "protocol", Figure: r.protocolLine()},
		{What: "target", Figure: r.targetLine()},
	}
	if r.Reader != "" {
		rows = append(rows, row{What: "reader", Figure: r.Reader})
	}
	return append(rows,
		row{What: "workload", Figure: r.workloadLine() + fmt.Sprintf(", encoded in %.1f s before the clock started", r.PoolSeconds)},
		row{What: "host", Figure: cmp.Or(r.Host.Name, "unnamed")},
		row{What: "CPU", Figure: fmt.Sprintf("%d × %s", r.Host.CPUs, cmp.Or(r.Host.CPUModel, "unknown model"))},
		row{What: "OS, Go", Figure: fmt.Sprintf("%s/%s, %s", r.Host.OS, r.Host.Arch, r.Host.GoVersion)},
	)
}

// commandLine writes the bench's arguments as a shell would take them.
func commandLine(args []string) string {
	quoted := []string{"cairn", "bench"}
	for _, a := range args {
		if a == "" || unsafeInShell.MatchString(a) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		quoted = append(quoted, a)
	}
	return strings.Join(quoted, " ")
}

var unsafeInShell = regexp.MustCompile(`[^\w@%+=:,./-]`)

// midpoints are the middles of a timeline's intervals, in seconds, the last
// ending at the end of the run.
func (t Timeline) midpoints(elapsed float64) []float64 {
	xs := make([]float64, len(t.SpansPerSec))
	for i := range xs {
		end := math.Min(float64(i+1)*t.IntervalSec, elapsed)
		if i == len(xs)-1 {
			end = elapsed
		}
		xs[i] = (float64(i)*t.IntervalSec + end) / 2
	}
	return xs
}

func (t Timeline) interval() string { return plainLabel(t.IntervalSec) + " s" }

func throughputChart(r *Report) template.HTML {
	t := r.Timeline
	xs := t.midpoints(r.Seconds)
	f := newFrame("Acknowledged spans per second", timeScale(r.Seconds),
		linearScale(slices.Max(append([]float64{r.SpansPerSec}, t.SpansPerSec...)), "spans/s", siLabel))
	f.area(xs, t.SpansPerSec, colourMain)
	f.line(xs, t.SpansPerSec, colourMain)
	f.hline(r.SpansPerSec, colourGrey)
	f.legend = []legendEntry{{"per " + t.interval(), colourMain, false}, {"mean " + siLabel(r.SpansPerSec), colourGrey, true}}
	return f.svg()
}

func exportOverTimeChart(r *Report) template.HTML {
	t := r.Timeline
	xs := t.midpoints(r.Seconds)
	f := newFrame("Export latency over the run, per "+t.interval(), timeScale(r.Seconds),
		linearScale(slices.Max(append([]float64{0}, t.ExportP99Ms...)), "milliseconds", plainLabel))
	// An interval with no acknowledgement has no latency: break the lines.
	p50, p99 := slices.Clone(t.ExportP50Ms), slices.Clone(t.ExportP99Ms)
	for i := range p50 {
		if p99[i] == 0 {
			p50[i], p99[i] = math.NaN(), math.NaN()
		}
	}
	f.line(xs, p99, colourSecond)
	f.line(xs, p50, colourMain)
	f.legend = []legendEntry{{"p50", colourMain, false}, {"p99", colourSecond, false}}
	return f.svg()
}

// histogramChart plots how ds spread over ten log-spaced bins per decade of
// milliseconds, with their p50 and p99.
func histogramChart(title, counted string, ds []time.Duration) template.HTML {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = math.Max(float64(d)/1e6, 1e-3)
	}
	lo, hi := 0.1, 1.0
	if len(ms) > 0 {
		lo, hi = slices.Min(ms), slices.Max(ms)
	}
	x := logScale(lo, hi, "milliseconds (log scale)", plainLabel)
	bins := make([]int, int(math.Round(10*math.Log10(x.hi/x.lo))))
	for _, v := range ms {
		bins[max(0, min(len(bins)-1, int(10*math.Log10(v/x.lo))))]++
	}
	f := newFrame(fmt.Sprintf("%s (%s %s)", title, count(float64(len(ms))), counted), x, linearScale(1.05*float64(slices.Max(bins)), counted, siLabel))
	for i, n := range bins {
		if n > 0 {
			b0, b1 := x.lo*math.Pow(10, float64(i)/10), x.lo*math.Pow(10, float64(i+1)/10)
			f.rect(b0, b1, 0, float64(n), colourMain, fmt.Sprintf("%s–%s: %d %s", msLabel(b0), msLabel(b1), n, counted))
		}
	}
	if len(ds) > 0 {
		p50, p99, _ := percentiles(ds)
		f.vline(math.Max(p50, 1e-3), f.y.lo, f.y.hi, "#111827", true)
		f.vline(math.Max(p99, 1e-3), f.y.lo, f.y.hi, colourSecond, true)
		f.legend = []legendEntry{{"p50 " + msLabel(p50), "#111827", true}, {"p99 " + msLabel(p99), colourSecond, true}}
	}
	return f.svg()
}

// latencyRow is a row of a bar chart: p50 and p99, and cairn's goal for
// the p99 if it has one.
type latencyRow struct {
	label         string
	p50, p99, max float64
	goalMs        float64
}

// latencyRowsChart draws, per row, a p50 bar over a p99 bar, and the goal
// as a dashed line across its row.
func latencyRowsChart(title string, rows []latencyRow, x scale) template.HTML {
	n := float64(len(rows))
	f := newFrame(title, x, scale{lo: 0, hi: n})
	f.left = 170
	for i, r := range rows {
		y := n - float64(i) - 1 // rows run top to bottom
		f.rect(x.lo, r.p50, y+0.52, y+0.82, colourMain, "p50 "+msLabel(r.p50))
		f.rect(x.lo, r.p99, y+0.18, y+0.48, colourLight, fmt.Sprintf("p99 %s, max %s", msLabel(r.p99), msLabel(r.max)))
		f.text(r.p50, y+0.67, 4, 4, "start", msLabel(r.p50))
		f.text(r.p99, y+0.33, 4, 4, "start", msLabel(r.p99))
		if r.goalMs > 0 {
			f.vline(r.goalMs, y+0.05, y+0.95, colourTarget, true)
		}
		f.text(x.lo, y+0.5, -10, 4, "end", r.label)
	}
	f.legend = []legendEntry{{"p50", colourMain, false}, {"p99", colourLight, false}, {"goal for p99", colourTarget, true}}
	return f.svg()
}

func traceReadsChart(title string, classes []TraceReadReport) template.HTML {
	rows := make([]latencyRow, len(classes))
	lo, hi := math.Inf(1), 0.0
	for i, c := range classes {
		rows[i] = latencyRow{c.Class, c.P50Ms, c.P99Ms, c.MaxMs, c.TargetP99Ms}
		lo, hi = math.Min(lo, c.P50Ms), math.Max(hi, math.Max(c.P99Ms, c.TargetP99Ms))
	}
	// Room to the right of the longest bar for its label.
	x := logScale(lo, hi*2, "milliseconds (log scale)", plainLabel)
	return latencyRowsChart(title, rows, x)
}

func searchChart(title string, searches []SearchReport) template.HTML {
	rows := make([]latencyRow, len(searches))
	hi := 0.0
	for i, s := range searches {
		rows[i] = latencyRow{s.Shape, s.P50Ms, s.P99Ms, s.MaxMs, s.TargetP99Ms}
		hi = math.Max(hi, math.Max(s.P99Ms, s.TargetP99Ms))
	}
	x := linearScale(hi*1.15, "milliseconds", plainLabel)
	return latencyRowsChart(title, rows, x)
}
