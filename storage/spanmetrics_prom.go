package storage

import (
	"math"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// promBucketsMs are the bounds of the Prometheus duration histogram, in
// milliseconds: those of the OpenTelemetry Collector's spanmetrics
// connector, so that dashboards made for it work unchanged.
var promBucketsMs = [...]float64{2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000}

// promBucket is the index of the first bound a duration is at most, or
// len(promBucketsMs) for +Inf.
func promBucket(ns uint64) int {
	ms := float64(ns) / 1e6
	i, _ := slices.BinarySearch(promBucketsMs[:], ms)
	return i
}

// Prometheus label values of span kinds and status codes, as the
// spanmetrics connector writes them.
var (
	promKinds    = [...]string{"SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"}
	promStatuses = [...]string{"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"}
)

// spanTotals counts, for Prometheus, every span cut into a block since the
// process started, by series. Spans count when cut rather than when
// acknowledged: ingest pays nothing for it, and a span replayed from the
// write-ahead log after a restart counts once, in the process that cut it,
// since the one that acknowledged it had not. The series are bounded as
// in blocks, by Options.SpanMetricsMaxSeries.
type spanTotals struct {
	mu        sync.Mutex
	maxSeries int
	series    map[SpanSeries]*promSeries
	// overflowed counts spans into overflow series: of blocks, and of
	// these totals.
	blockOverflowed, overflowed uint64

	calls, duration, overflow *prometheus.Desc
}

type promSeries struct {
	buckets    [len(promBucketsMs) + 1]uint64
	count, sum uint64 // sum in nanoseconds, saturating
}

func newSpanTotals(maxSeries int) *spanTotals {
	labels := []string{"service_name", "span_name", "span_kind", "status_code"}
	return &spanTotals{
		maxSeries: maxSeries,
		series:    map[SpanSeries]*promSeries{},
		calls: prometheus.NewDesc("traces_span_metrics_calls_total",
			"Spans cut into blocks since cairn started, by service, span name, kind and status code; a service's overflow series of a kind and status code (its spans past a block's --span-metrics-max-series) has an empty span_name, and the overflow series of a status code (past the bound on series here, or on services' overflow series in a block) empty service_name and span_kind too.", labels, nil),
		duration: prometheus.NewDesc("traces_span_metrics_duration_milliseconds",
			"Durations of the spans counted in traces_span_metrics_calls_total, in milliseconds.", labels, nil),
		overflow: prometheus.NewDesc("cairn_span_metrics_overflow_spans_total",
			"Spans counted in an overflow series because their own would pass --span-metrics-max-series: of a block's stored span metrics (scope block), of the Prometheus totals (scope prometheus).", []string{"scope"}, nil),
	}
}

// add counts the spans of a cut's span metrics.
func (t *spanTotals) add(m *spanMetrics) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.blockOverflowed += m.overflowed
	for _, sm := range m.series {
		ps := t.series[sm.SpanSeries]
		if ps == nil {
			key := sm.SpanSeries
			if len(t.series) >= t.maxSeries && !(key.Overflow && key.Service == "") {
				key = SpanSeries{Status: key.Status, Overflow: true}
				for _, n := range sm.prom {
					t.overflowed += n
				}
			}
			if ps = t.series[key]; ps == nil {
				ps = new(promSeries)
				t.series[key] = ps
			}
		}
		for b, n := range sm.prom {
			ps.buckets[b] += n
		}
		for i := range sm.Minutes {
			ps.count += sm.Minutes[i].Latency.Count()
			ps.sum = addSat(ps.sum, sm.Minutes[i].Latency.Sum())
		}
	}
}

func addSat(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func (t *spanTotals) describe(ch chan<- *prometheus.Desc) {
	ch <- t.calls
	ch <- t.duration
	ch <- t.overflow
}

func (t *spanTotals) collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(t.overflow, prometheus.CounterValue, float64(t.blockOverflowed), "block")
	ch <- prometheus.MustNewConstMetric(t.overflow, prometheus.CounterValue, float64(t.overflowed), "prometheus")
	for s, ps := range t.series {
		labels := []string{s.Service, s.Name, promKinds[s.Kind], promStatuses[s.Status]}
		if s.Overflow && s.Service == "" {
			labels[2] = ""
		}
		ch <- prometheus.MustNewConstMetric(t.calls, prometheus.CounterValue, float64(ps.count), labels...)
		buckets := make(map[float64]uint64, len(promBucketsMs))
		var cum uint64
		for i, le := range promBucketsMs {
			cum += ps.buckets[i]
			buckets[le] = cum
		}
		ch <- prometheus.MustNewConstHistogram(t.duration, ps.count, float64(ps.sum)/1e6, buckets, labels...)
	}
}
