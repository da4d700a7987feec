package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
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

	Target   string `json:"target"`
	Protocol string `json:"protocol"`
	// Compression of the requests, unless none.
	Compression string `json:"compression,omitempty"`
	Reader      string `json:"reader,omitempty"`
	Embedded    bool   `json:"embedded"`
	Seed        uint64 `json:"seed"`
	Batch       int    `json:"batch"`
	// Exporters: each request held one service instance's spans.
	Exporters bool    `json:"exporters,omitempty"`
	Conns     int     `json:"conns"`
	Inflight  int     `json:"inflight"`
	Rate      float64 `json:"rate,omitempty"`
	Settle    float64 `json:"settle_sec,omitempty"` // pause before reads

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

	// ReadsDuringIngest are reads made while spans were sent, and
	// ReadsAfterIngest those made from the last acknowledgement until the
	// target had finished the work the load left (cuts, compactions,
	// recompression), or for Settle if how busy it is cannot be seen.
	ReadsDuringIngest *PhaseReads `json:"reads_during_ingest,omitempty"`
	ReadsAfterIngest  *PhaseReads `json:"reads_after_ingest,omitempty"`

	// GetTraces, Searches and the figures between them are the settled
	// phase: reads timed one at a time, with nothing else sent, after
	// Settle.
	GetTraces         []TraceReadReport `json:"get_traces,omitempty"`
	LargestTraceSpans int               `json:"largest_trace_spans,omitempty"`
	LargestTraceMs    float64           `json:"largest_trace_ms,omitempty"`
	Searches          []SearchReport    `json:"searches,omitempty"`
	// SpanMetrics times span metrics queries of one service, settled; nil
	// if the reader does not serve them.
	SpanMetrics *SearchReport `json:"span_metrics,omitempty"`
	// SpanMetricsByService times span metrics queries of every service by
	// service (the web UI's services page), settled; nil as SpanMetrics.
	SpanMetricsByService *SearchReport `json:"span_metrics_by_service,omitempty"`
	// Dependencies times GetDependencies over a day, settled; nil if the
	// reader does not serve it.
	Dependencies     *SearchReport `json:"dependencies,omitempty"`
	TracesChecked    int           `json:"traces_checked,omitempty"`
	TracesComplete   int           `json:"traces_complete,omitempty"`
	CompleteFraction float64       `json:"complete_fraction,omitempty"`

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

	TargetP99Ms float64 `json:"target_p99_ms,omitempty"` // cairn's goal
}

// SearchReport is the latency of one search shape, limit 20.
type SearchReport struct {
	Shape      string  `json:"shape"`
	Queries    int     `json:"queries"`
	MeanTraces float64 `json:"mean_traces"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`

	TargetP99Ms float64 `json:"target_p99_ms"` // cairn's goal
}

// PhaseReads are the reads of a phase in which the target was busy with
// other work. Traces of each size class are read at random, and each search
// shape made, at a steady pace that leaves the target most of its CPU, so
// the latencies are what a user browsing traces meanwhile would see. The
// phase ran from FromSec to ToSec, counted from the first request.
type PhaseReads struct {
	FromSec    float64           `json:"from_sec"`
	ToSec      float64           `json:"to_sec"`
	GetTraces  []TraceReadReport `json:"get_traces,omitempty"`
	Searches   []SearchReport    `json:"searches,omitempty"`
	Failed     int               `json:"failed,omitempty"` // reads that returned an error
	FirstError string            `json:"first_error,omitempty"`
}

// readPhase is a phase's reads as the reports show them.
type readPhase struct {
	name, when string
	traces     []TraceReadReport
	searches   []SearchReport
	failed     int
	firstError string
}

// readPhases returns the phases in which reads were timed, in order.
func (r *Report) readPhases() []readPhase {
	var phases []readPhase
	if p := r.ReadsDuringIngest; p != nil {
		phases = append(phases, readPhase{"during ingest", fmt.Sprintf("%.1f–%.1f s, while spans were sent", p.FromSec, p.ToSec),
			p.GetTraces, p.Searches, p.Failed, p.FirstError})
	}
	if p := r.ReadsAfterIngest; p != nil {
		what := "until the target's files stopped changing"
		if !r.Embedded {
			what = "during the settle pause"
		}
		phases = append(phases, readPhase{"after ingest, store busy", fmt.Sprintf("%.1f–%.1f s, %s", p.FromSec, p.ToSec, what),
			p.GetTraces, p.Searches, p.Failed, p.FirstError})
	}
	if len(r.GetTraces) > 0 || len(r.Searches) > 0 {
		when := "at once after the last acknowledgement"
		if r.Settle > 0 {
			when = fmt.Sprintf("from %.0f s after the last acknowledgement, one read at a time", r.Settle)
		}
		phases = append(phases, readPhase{"settled", when, r.GetTraces, r.Searches, 0, ""})
	}
	return phases
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// row is a line of the report for people: what, the figure, and details.
// A zero row separates groups.
type row struct{ What, Figure, Detail string }

// runRows say how and where the run ran.
func (r *Report) runRows() []row {
	rows := []row{
		{What: "run", Figure: fmt.Sprintf("%s, cairn %s", r.Started.Format("2006-01-02 15:04:05 MST"), cmp.Or(r.Version, "(unknown version)"))},
		{What: "host", Figure: r.Host.String()},
		{What: "target", Figure: r.targetLine()},
	}
	if r.Reader != "" {
		rows = append(rows, row{What: "reader", Figure: r.Reader})
	}
	return append(rows, row{What: "workload", Figure: r.workloadLine()})
}

// figureRows are what the run measured.
func (r *Report) figureRows() []row {
	var rows []row
	add := func(what, figure, detail string) { rows = append(rows, row{what, figure, detail}) }
	add("ingest", fmt.Sprintf("%s spans/s, %.1f MB/s", count(r.SpansPerSec), r.MBPerSec),
		fmt.Sprintf("%s spans acknowledged in %.1fs", count(float64(r.Spans)), r.Seconds))
	add("export latency", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", r.ExportP50Ms, r.ExportP99Ms), fmt.Sprintf("max %.1f ms", r.ExportMaxMs))
	add("rejected / failed spans", fmt.Sprintf("%d / %d", r.RejectedSpans, r.FailedSpans), fmt.Sprintf("retries %d", r.Retries))
	if r.FirstError != "" {
		add("first error", r.FirstError, "")
	}
	if r.Embedded {
		add("peak RSS", fmt.Sprintf("%.0f MiB", r.PeakRSSMB), "")
		add("disk after flush", fmt.Sprintf("%.1f bytes/span", r.DiskBytesPerSpan), fmt.Sprintf("%.1f MB", float64(r.DiskBytes)/1e6))
	}
	if r.VisibilityProbes > 0 {
		add("ack → visible", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", r.VisibilityP50Ms, r.VisibilityP99Ms),
			fmt.Sprintf("max %.1f ms, %d probes", r.VisibilityMaxMs, r.VisibilityProbes))
	}
	for _, ph := range r.readPhases() {
		rows = append(rows, row{})
		add("reads "+ph.name, ph.when, "")
		for _, c := range ph.traces {
			add("trace by ID, "+c.Class, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", c.P50Ms, c.P99Ms), fmt.Sprintf("%d traces, %d reads", c.Traces, c.Queries))
		}
		if ph.name == "settled" && r.LargestTraceSpans > 0 {
			add("largest trace", fmt.Sprintf("%.1f ms", r.LargestTraceMs), count(float64(r.LargestTraceSpans))+" spans")
		}
		for _, s := range ph.searches {
			add("search "+s.Shape, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", s.P50Ms, s.P99Ms), fmt.Sprintf("%.1f traces/search, %d searches", s.MeanTraces, s.Queries))
		}
		if s := r.SpanMetrics; ph.name == "settled" && s != nil {
			add("span metrics, "+s.Shape, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", s.P50Ms, s.P99Ms), fmt.Sprintf("%d queries of one service", s.Queries))
		}
		if s := r.SpanMetricsByService; ph.name == "settled" && s != nil {
			add("span metrics, "+s.Shape, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", s.P50Ms, s.P99Ms), fmt.Sprintf("%d queries of every service's servers and consumers", s.Queries))
		}
		if s := r.Dependencies; ph.name == "settled" && s != nil {
			add(s.Shape, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", s.P50Ms, s.P99Ms), fmt.Sprintf("%d queries", s.Queries))
		}
		if ph.failed > 0 {
			add("failed reads", fmt.Sprint(ph.failed), ph.firstError)
		}
	}
	if r.TracesChecked > 0 {
		rows = append(rows, row{})
		add("complete traces", fmt.Sprintf("%d of %d (%.1f%%)", r.TracesComplete, r.TracesChecked, 100*r.CompleteFraction), "")
	}
	return rows
}

func (r *Report) targetLine() string {
	if r.Embedded {
		return fmt.Sprintf("embedded cairn at %s over %s", r.Target, r.protocolLine())
	}
	return r.Target + " over " + r.protocolLine()
}

// protocolLine is the protocol, and the compression if any.
func (r *Report) protocolLine() string {
	if r.Compression == "" || r.Compression == CompressionNone {
		return r.Protocol
	}
	return r.Protocol + ", " + r.Compression
}

func (r *Report) workloadLine() string {
	per := ""
	if r.Exporters {
		per = " of one service instance"
	}
	return fmt.Sprintf("seed %d, %d spans/request%s, %d conns × %d in flight%s", r.Seed, r.Batch, per, r.Conns, r.Inflight, rateNote(r.Rate))
}

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, rw := range slices.Concat(r.runRows(), []row{{}}, r.figureRows()) {
		switch {
		case rw == row{}:
			fmt.Fprint(tw, "\t\n") // a cell keeps the columns aligned across groups
		case rw.Detail == "":
			fmt.Fprintf(tw, "%s\t%s\n", rw.What, rw.Figure)
		default:
			fmt.Fprintf(tw, "%s\t%s\t%s\n", rw.What, rw.Figure, rw.Detail)
		}
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
