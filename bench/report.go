package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run measured. Latencies are in milliseconds; fields that
// were not measured are zero and left out of JSON.
type Report struct {
	Started time.Time `json:"started"` // UTC
	// Version is the version of the cairn that ran the bench; its caller
	// sets it, and Args, the bench's command-line arguments.
	Version string   `json:"cairn_version,omitempty"`
	Args    []string `json:"args,omitempty"`
	Host    Host     `json:"host"`

	Target   string  `json:"target"`
	Protocol string  `json:"protocol"`
	Reader   string  `json:"reader,omitempty"`
	Embedded bool    `json:"embedded"`
	Seed     uint64  `json:"seed"`
	Batch    int     `json:"batch"`
	Conns    int     `json:"conns"`
	Inflight int     `json:"inflight"`
	Rate     float64 `json:"rate,omitempty"`
	Settle   float64 `json:"settle_sec,omitempty"` // pause before reads

	PoolSeconds   float64 `json:"pool_sec"` // encoding the workload, before the clock starts
	Spans         int64   `json:"spans"`    // acknowledged
	Requests      int64   `json:"requests"` // acknowledged
	Seconds       float64 `json:"elapsed_sec"`
	SpansPerSec   float64 `json:"spans_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"`
	ExportP50Ms   float64 `json:"export_p50_ms"`
	ExportP99Ms   float64 `json:"export_p99_ms"`
	ExportMaxMs   float64 `json:"export_max_ms"`
	RejectedSpans int64   `json:"rejected_spans"`
	FailedSpans   int64   `json:"failed_spans"`
	Retries       int64   `json:"retries"`
	FirstError    string  `json:"first_error,omitempty"`

	PeakRSSMB        float64 `json:"peak_rss_mb,omitempty"`
	DiskBytes        int64   `json:"disk_bytes,omitempty"`
	DiskBytesPerSpan float64 `json:"disk_bytes_per_span,omitempty"`

	VisibilityProbes int     `json:"visibility_probes,omitempty"`
	VisibilityP50Ms  float64 `json:"visibility_p50_ms,omitempty"`
	VisibilityP99Ms  float64 `json:"visibility_p99_ms,omitempty"`
	VisibilityMaxMs  float64 `json:"visibility_max_ms,omitempty"`

	GetTraces         []TraceReadReport `json:"get_traces,omitempty"`
	LargestTraceSpans int               `json:"largest_trace_spans,omitempty"`
	LargestTraceMs    float64           `json:"largest_trace_ms,omitempty"`
	Searches          []SearchReport    `json:"searches,omitempty"`
	TracesChecked     int               `json:"traces_checked,omitempty"`
	TracesComplete    int               `json:"traces_complete,omitempty"`
	CompleteFraction  float64           `json:"complete_fraction,omitempty"`

	Timeline Timeline `json:"timeline"`

	exportLatencies []time.Duration
	readLatencies   []time.Duration
}

// Host is the machine a run sent from.
type Host struct {
	Name      string `json:"name"`
	CPUModel  string `json:"cpu_model,omitempty"`
	CPUs      int    `json:"cpus"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go"`
}

// thisHost describes the machine, its CPU as /proc/cpuinfo names it where
// there is one.
func thisHost() Host {
	h := Host{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()}
	h.Name, _ = os.Hostname()
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(info)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}

// Timeline is the run in intervals of equal length, but for the last, which
// ends with the run and may be up to half an interval shorter or longer:
// the spans acknowledged per second in each, and the export latency of the
// requests acknowledged in it (zero where none was).
type Timeline struct {
	IntervalSec float64   `json:"interval_sec"`
	SpansPerSec []float64 `json:"spans_per_sec"`
	ExportP50Ms []float64 `json:"export_p50_ms"`
	ExportP99Ms []float64 `json:"export_p99_ms"`
}

// timelinePoints is the most intervals a timeline is cut into.
const timelinePoints = 300

// newTimeline cuts a run of the given length into intervals of at least
// 100 ms, and longer ones of round lengths for long runs.
func newTimeline(acks []ack, elapsed time.Duration) Timeline {
	step := elapsed / timelinePoints
	for _, s := range []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute} {
		if elapsed <= s*timelinePoints {
			step = s
			break
		}
	}
	n := max(1, int((elapsed+step/2)/step))
	spans := make([]int64, n)
	latencies := make([][]time.Duration, n)
	for _, a := range acks {
		i := min(n-1, int(a.at/step))
		spans[i] += a.spans
		latencies[i] = append(latencies[i], a.latency)
	}
	t := Timeline{IntervalSec: step.Seconds(), SpansPerSec: make([]float64, n),
		ExportP50Ms: make([]float64, n), ExportP99Ms: make([]float64, n)}
	for i := range n {
		width := step
		if i == n-1 {
			width = elapsed - time.Duration(n-1)*step
		}
		t.SpansPerSec[i] = float64(spans[i]) / width.Seconds()
		t.ExportP50Ms[i], t.ExportP99Ms[i], _ = percentiles(latencies[i])
	}
	return t
}

// TraceReadReport is the latency of reading whole traces by ID, without time
// hints, for one size class.
type TraceReadReport struct {
	Class   string  `json:"class"`
	Traces  int     `json:"traces"`
	Queries int     `json:"queries"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// SearchReport is the latency of one search shape, limit 20.
type SearchReport struct {
	Shape      string  `json:"shape"`
	Queries    int     `json:"queries"`
	MeanTraces float64 `json:"mean_traces"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%s, cairn %s\n", r.Started.Format("2006-01-02 15:04:05 MST"), cmp.Or(r.Version, "(unknown version)"))
	fmt.Fprintf(tw, "host\t%s\n", r.Host)
	mode := r.Target + " over " + r.Protocol
	if r.Embedded {
		mode = "embedded cairn at " + mode
	}
	fmt.Fprintf(tw, "target\t%s\n", mode)
	if r.Reader != "" {
		fmt.Fprintf(tw, "reader\t%s\n", r.Reader)
	}
	fmt.Fprintf(tw, "workload\tseed %d, %d spans/request, %d conns × %d in flight%s\n", r.Seed, r.Batch, r.Conns, r.Inflight, rateNote(r.Rate))
	fmt.Fprintf(tw, "\t\n")
	fmt.Fprintf(tw, "ingest\t%s spans/s, %.1f MB/s\t%s spans acknowledged in %.1fs\n", count(r.SpansPerSec), r.MBPerSec, count(float64(r.Spans)), r.Seconds)
	fmt.Fprintf(tw, "export latency\tp50 %.1f ms, p99 %.1f ms\tmax %.1f ms\n", r.ExportP50Ms, r.ExportP99Ms, r.ExportMaxMs)
	fmt.Fprintf(tw, "rejected / failed spans\t%d / %d\tretries %d\n", r.RejectedSpans, r.FailedSpans, r.Retries)
	if r.FirstError != "" {
		fmt.Fprintf(tw, "first error\t%s\n", r.FirstError)
	}
	if r.Embedded {
		fmt.Fprintf(tw, "peak RSS\t%.0f MiB\n", r.PeakRSSMB)
		fmt.Fprintf(tw, "disk after flush\t%.1f bytes/span\t%.1f MB\n", r.DiskBytesPerSpan, float64(r.DiskBytes)/1e6)
	}
	if r.VisibilityProbes > 0 {
		fmt.Fprintf(tw, "ack → visible\tp50 %.1f ms, p99 %.1f ms\tmax %.1f ms, %d probes\n", r.VisibilityP50Ms, r.VisibilityP99Ms, r.VisibilityMaxMs, r.VisibilityProbes)
	}
	if len(r.GetTraces) > 0 {
		fmt.Fprintf(tw, "\t\n")
		if r.Settle > 0 {
			fmt.Fprintf(tw, "reads from\t%.0fs after the last ack\n", r.Settle)
		}
		for _, c := range r.GetTraces {
			fmt.Fprintf(tw, "trace by ID, %s\tp50 %.2f ms, p99 %.2f ms\t%d traces, %d reads\n", c.Class, c.P50Ms, c.P99Ms, c.Traces, c.Queries)
		}
		if r.LargestTraceSpans > 0 {
			fmt.Fprintf(tw, "largest trace\t%.1f ms\t%s spans\n", r.LargestTraceMs, count(float64(r.LargestTraceSpans)))
		}
	}
	if len(r.Searches) > 0 {
		fmt.Fprintf(tw, "\t\n")
		for _, s := range r.Searches {
			fmt.Fprintf(tw, "search %s\tp50 %.2f ms, p99 %.2f ms\t%.1f traces/search, %d searches\n", s.Shape, s.P50Ms, s.P99Ms, s.MeanTraces, s.Queries)
		}
	}
	if r.TracesChecked > 0 {
		fmt.Fprintf(tw, "\t\n")
		fmt.Fprintf(tw, "complete traces\t%d of %d (%.1f%%)\n", r.TracesComplete, r.TracesChecked, 100*r.CompleteFraction)
	}
	return tw.Flush()
}

// String describes h in a line.
func (h Host) String() string {
	cpu := fmt.Sprintf("%d CPUs", h.CPUs)
	if h.CPUModel != "" {
		cpu = fmt.Sprintf("%d × %s", h.CPUs, h.CPUModel)
	}
	return fmt.Sprintf("%s: %s, %s/%s, %s", cmp.Or(h.Name, "unnamed host"), cpu, h.OS, h.Arch, h.GoVersion)
}

func rateNote(rate float64) string {
	if rate <= 0 {
		return ""
	}
	return fmt.Sprintf(", capped at %s spans/s", count(rate))
}

// count formats n with thousands separators.
func count(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// WriteHTML writes a self-contained page: the report's figures, acknowledged
// spans per second over time, and histograms of export and read latency.
func (r *Report) WriteHTML(w io.Writer) error {
	var table strings.Builder
	if err := r.WriteTable(&table); err != nil {
		return err
	}
	data := struct {
		Table      string
		Throughput template.HTML
		Export     template.HTML
		Read       template.HTML
	}{
		Table:      table.String(),
		Throughput: lineChart(r.Timeline.SpansPerSec, "seconds", "spans/s"),
		Export:     histogram(r.exportLatencies, "export latency, ms (log scale)"),
	}
	if len(r.readLatencies) > 0 {
		data.Read = histogram(r.readLatencies, "trace-by-ID latency, ms (log scale)")
	}
	return reportPage.Execute(w, data)
}

var reportPage = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cairn bench</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222 }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto }
svg { background: #fbfbfb; border: 1px solid #ddd; margin: .5em 0 1.5em }
svg text { font: 11px system-ui, sans-serif; fill: #555 }
</style></head><body>
<h1>cairn bench</h1>
<pre>{{.Table}}</pre>
<h2>Throughput</h2>
{{.Throughput}}
<h2>Export latency</h2>
{{.Export}}
{{if .Read}}<h2>Trace reads</h2>
{{.Read}}{{end}}
</body></html>
`))

const chartW, chartH, chartPad = 720.0, 240.0, 40.0

// lineChart draws ys (one per second) as an SVG polyline.
func lineChart(ys []float64, xlabel, ylabel string) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%.0f" height="%.0f" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH)
	top := 0.0
	for _, y := range ys {
		top = math.Max(top, y)
	}
	if len(ys) > 1 && top > 0 {
		b.WriteString(`<polyline fill="none" stroke="#2a6fdb" stroke-width="2" points="`)
		for i, y := range ys {
			x := chartPad + float64(i)/float64(len(ys)-1)*(chartW-2*chartPad)
			fmt.Fprintf(&b, "%.1f,%.1f ", x, chartH-chartPad-y/top*(chartH-2*chartPad))
		}
		b.WriteString(`"/>`)
	}
	axes(&b, fmt.Sprintf("%s (0–%d)", xlabel, len(ys)), fmt.Sprintf("%s (max %s)", ylabel, count(top)))
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// histogram draws the distribution of ds over log-spaced millisecond buckets.
func histogram(ds []time.Duration, xlabel string) template.HTML {
	const buckets = 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%.0f" height="%.0f" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH)
	if len(ds) > 0 {
		lo, hi := math.Inf(1), 0.0
		for _, d := range ds {
			ms := math.Max(float64(d)/1e6, 0.001)
			lo, hi = math.Min(lo, ms), math.Max(hi, ms)
		}
		span := math.Log(hi/lo) + 1e-9
		var n [buckets]int
		most := 0
		for _, d := range ds {
			ms := math.Max(float64(d)/1e6, 0.001)
			i := min(buckets-1, int(math.Log(ms/lo)/span*buckets))
			n[i]++
			most = max(most, n[i])
		}
		bw := (chartW - 2*chartPad) / buckets
		for i, c := range n {
			h := float64(c) / float64(most) * (chartH - 2*chartPad)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#2a6fdb"/>`,
				chartPad+float64(i)*bw, chartH-chartPad-h, bw-1, h)
		}
		xlabel = fmt.Sprintf("%s: %.2f – %.1f", xlabel, lo, hi)
	}
	axes(&b, xlabel, fmt.Sprintf("count (%d)", len(ds)))
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func axes(b *strings.Builder, xlabel, ylabel string) {
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, chartPad, chartH-chartPad, chartW-chartPad, chartH-chartPad)
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, chartPad, chartPad, chartPad, chartH-chartPad)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f">%s</text>`, chartPad, chartH-chartPad/3, template.HTMLEscapeString(xlabel))
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f">%s</text>`, chartPad, chartPad*0.7, template.HTMLEscapeString(ylabel))
}
