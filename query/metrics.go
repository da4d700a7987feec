package query

import (
	"context"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics records the latency of the query API's calls. Register it with
// Prometheus and pass it in Options.
type Metrics struct {
	duration *prometheus.HistogramVec
}

// NewMetrics returns an empty Metrics.
func NewMetrics() *Metrics {
	return &Metrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cairn_query_duration_seconds",
		Help:    "Latency of query API calls, to the last message streamed, by method and gRPC status code.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"method", "code"})}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { m.duration.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) { m.duration.Collect(ch) }

func (m *Metrics) observe(fullMethod string, start time.Time, err error) {
	m.duration.WithLabelValues(path.Base(fullMethod), status.Code(err).String()).Observe(time.Since(start).Seconds())
}

func (m *Metrics) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := handler(ctx, req)
			m.observe(info.FullMethod, start, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			start := time.Now()
			err := handler(srv, ss)
			m.observe(info.FullMethod, start, err)
			return err
		}),
	}
}
