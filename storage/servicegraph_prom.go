package storage

import "github.com/prometheus/client_golang/prometheus"

// Prometheus descriptions of the service graph's totals, with the names
// and labels of Tempo's and the OpenTelemetry Collector's service graph
// metrics, so that dashboards made for them work unchanged.
var (
	graphRequests = prometheus.NewDesc("traces_service_graph_request_total",
		"Calls from client to server services since cairn started, counted as the cuts that pair their spans are stored; server is a peer that sends no spans when its client's spans got no child within --pairing-window.",
		[]string{"client", "server"}, nil)
	graphFailed = prometheus.NewDesc("traces_service_graph_request_failed_total",
		"Calls of traces_service_graph_request_total whose server span (or, for a peer that sends no spans, client span) failed.",
		[]string{"client", "server"}, nil)
	graphStragglers = prometheus.NewDesc("cairn_service_graph_stragglers_total",
		"Spans whose parent did not arrive within --pairing-window of them, so that the call they are went uncounted.", nil, nil)
	graphEvicted = prometheus.NewDesc("cairn_service_graph_evicted_spans_total",
		"Spans let go of before their pairing window passed, to hold at most --pairing-max-spans.", nil, nil)
	graphHeld = prometheus.NewDesc("cairn_service_graph_pairing_spans",
		"Spans held in memory for pairing with spans of later cuts.", nil, nil)
)

// Describe implements prometheus.Collector.
func (g *serviceGraph) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{graphRequests, graphFailed, graphStragglers, graphEvicted, graphHeld} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (g *serviceGraph) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, t := range g.totals {
		ch <- prometheus.MustNewConstMetric(graphRequests, prometheus.CounterValue, float64(t[0]), k[0], k[1])
		ch <- prometheus.MustNewConstMetric(graphFailed, prometheus.CounterValue, float64(t[1]), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(graphStragglers, prometheus.CounterValue, float64(g.stats.Stragglers))
	ch <- prometheus.MustNewConstMetric(graphEvicted, prometheus.CounterValue, float64(g.stats.Evicted))
	ch <- prometheus.MustNewConstMetric(graphHeld, prometheus.GaugeValue, float64(g.held))
}
