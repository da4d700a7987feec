package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"cairn/internal/otlpwire"
)

// Protocols, as metrics label them.
const (
	protoGRPC         = "grpc"
	protoHTTPProtobuf = "http/protobuf"
	protoHTTPJSON     = "http/json"
)

// Causes of refusing a whole request, as metrics label them.
const (
	causeMalformed   = "malformed"
	causeTooLarge    = "too_large"
	causeUnsupported = "unsupported_media_type"
	causeOverloaded  = "overloaded"
	causeUnavailable = "unavailable"
	causeCanceled    = "canceled"
	causeTimeout     = "timeout"
)

// metrics are what ingest counts, per protocol.
type metrics struct {
	accepted *prometheus.CounterVec
	rejected *prometheus.CounterVec
	refused  *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.GaugeFunc
	waiting  prometheus.GaugeFunc
}

func newMetrics(b *budget) *metrics {
	return &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_ingest_accepted_spans_total",
			Help: "Spans stored and acknowledged.",
		}, []string{"protocol"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_ingest_rejected_spans_total",
			Help: "Spans of acknowledged requests rejected one by one through partial_success, by reason.",
		}, []string{"protocol", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_ingest_refused_requests_total",
			Help: "Export requests refused whole, storing nothing of them, by cause.",
		}, []string{"protocol", "cause"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_ingest_received_bytes_total",
			Help: "Bytes of export requests received, after decompression.",
		}, []string{"protocol"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cairn_ingest_export_duration_seconds",
			Help:    "Time from receiving an export request to acknowledging it, durable.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"protocol"}),
		inflight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cairn_ingest_inflight_bytes",
			Help: "Memory reserved by export requests being taken in now: bodies as they arrive and decompress, their decoding, and their wait for the store.",
		}, func() float64 { return float64(b.inUse()) }),
		waiting: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cairn_ingest_waiting_requests",
			Help: "Export requests waiting for a share of the in-flight bound now.",
		}, func() float64 { return float64(b.waiters()) }),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.accepted, m.rejected, m.refused, m.bytes, m.duration, m.inflight, m.waiting}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// countRejected adds a request's per-span rejections by reason.
func (m *metrics) countRejected(proto string, r otlpwire.Rejection) {
	for _, c := range []struct {
		reason string
		n      int
	}{{"invalid_trace_id", r.BadTraceID}, {"invalid_span_id", r.BadSpanID}, {"invalid_utf8", r.BadUTF8},
		{"outside_retention", r.TooOld}, {"in_future", r.TooNew}} {
		if c.n > 0 {
			m.rejected.WithLabelValues(proto, c.reason).Add(float64(c.n))
		}
	}
}
