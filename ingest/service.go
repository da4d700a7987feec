package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed requests
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"cairn/internal/otlpwire"
	"cairn/internal/rawcodec"
)

// Writer is what ingest needs of storage.
type Writer interface {
	// Write makes a parsed request's spans durable. req is the encoded
	// request that batch aliases; the writer may keep it.
	Write(ctx context.Context, req []byte, batch *otlpwire.Batch) error
	// Accepts is the window of span start times the writer takes: spans
	// outside it are rejected.
	Accepts() otlpwire.Window
}

const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// Service takes OTLP export requests, over gRPC and HTTP, into a Writer.
type Service struct {
	w        Writer
	opts     Options
	batches  sync.Pool
	inflight atomic.Int64 // bytes of requests admitted and not yet answered
	metrics  *metrics
}

// NewService returns a Service that stores spans in w.
func NewService(w Writer, o *Options) *Service {
	svc := &Service{w: w, opts: o.EnsureDefaults(), batches: sync.Pool{New: func() any { return new(otlpwire.Batch) }}}
	svc.metrics = newMetrics(&svc.inflight)
	return svc
}

// Metrics returns the service's Prometheus metrics, to register.
func (svc *Service) Metrics() prometheus.Collector { return svc.metrics }

// NewServer returns a gRPC server that serves svc's TraceService, with
// svc's request size limit. Options such as credentials are passed through.
func NewServer(svc *Service, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append(opts, rawcodec.ServerOption(), grpc.MaxRecvMsgSize(svc.opts.MaxRequestBytes))...)
	svc.register(s)
	return s
}

// register adds the TraceService to s, which must use rawcodec's server
// option.
func (svc *Service) register(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Export",
			Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				var req rawcodec.Message
				if err := dec(&req); err != nil {
					cause := causeMalformed
					if status.Code(err) == codes.ResourceExhausted {
						cause = causeTooLarge
					}
					svc.metrics.refused.WithLabelValues(protoGRPC, cause).Inc()
					return nil, err
				}
				if interceptor == nil {
					return svc.Export(ctx, req)
				}
				info := &grpc.UnaryServerInfo{Server: svc, FullMethod: exportMethod}
				return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
					return svc.Export(ctx, req.(rawcodec.Message))
				})
			},
		}},
		Metadata: "opentelemetry/proto/collector/trace/v1/trace_service.proto",
	}, svc)
}

// Export stores the spans of one encoded ExportTraceServiceRequest received
// over gRPC. Errors are gRPC statuses.
func (svc *Service) Export(ctx context.Context, req []byte) (*coltracepb.ExportTraceServiceResponse, error) {
	r := svc.reserve(protoGRPC)
	defer r.release()
	if err := r.grow(len(req)); err != nil {
		return nil, err
	}
	svc.metrics.bytes.WithLabelValues(protoGRPC).Add(float64(len(req)))
	return svc.export(ctx, protoGRPC, req, time.Now())
}

// reservation is a request's share of the in-flight bound, which grows
// with the memory the request takes as it is read and decoded.
type reservation struct {
	svc   *Service
	proto string
	n     int64
}

func (svc *Service) reserve(proto string) *reservation { return &reservation{svc: svc, proto: proto} }

// grow raises the reservation to n bytes, or refuses the request as
// overload if that would take the bound past MaxInflightBytes while other
// requests hold part of it.
func (r *reservation) grow(n int) error {
	inflight, limit := &r.svc.inflight, r.svc.opts.MaxInflightBytes
	for int64(n) > r.n {
		used := inflight.Load()
		if used > r.n && used-r.n+int64(n) > limit {
			r.svc.metrics.refused.WithLabelValues(r.proto, causeOverloaded).Inc()
			return r.svc.retryable(codes.ResourceExhausted,
				fmt.Sprintf("cairn is taking in as many requests as its memory bound allows (%d MiB); retry later", limit>>20))
		}
		if inflight.CompareAndSwap(used, used-r.n+int64(n)) {
			r.n = int64(n)
		}
	}
	return nil
}

func (r *reservation) release() {
	r.svc.inflight.Add(-r.n)
	r.n = 0
}

// export validates and stores one encoded request. received is when the
// request arrived, for the latency histogram.
func (svc *Service) export(ctx context.Context, proto string, req []byte, received time.Time) (*coltracepb.ExportTraceServiceResponse, error) {
	batch := svc.batches.Get().(*otlpwire.Batch)
	defer svc.batches.Put(batch)
	if err := otlpwire.Parse(req, batch, svc.w.Accepts()); err != nil {
		svc.metrics.refused.WithLabelValues(proto, causeMalformed).Inc()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := svc.w.Write(ctx, req, batch); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			svc.metrics.refused.WithLabelValues(proto, causeCanceled).Inc()
			return nil, status.FromContextError(err).Err()
		}
		// Nothing of the request was acknowledged, and a store that is
		// closing or out of disk may take it later: the client should retry.
		svc.metrics.refused.WithLabelValues(proto, causeUnavailable).Inc()
		return nil, svc.retryable(codes.Unavailable, err.Error())
	}
	svc.metrics.accepted.WithLabelValues(proto).Add(float64(len(batch.Spans)))
	svc.metrics.countRejected(proto, batch.Rejected)
	svc.metrics.duration.WithLabelValues(proto).Observe(time.Since(received).Seconds())
	resp := &coltracepb.ExportTraceServiceResponse{}
	if n := batch.Rejected.Total(); n > 0 {
		resp.PartialSuccess = &coltracepb.ExportTracePartialSuccess{
			RejectedSpans: int64(n),
			ErrorMessage:  batch.Rejected.Message(),
		}
	}
	return resp, nil
}

// retryable is a status that tells OTLP clients to retry after
// Options.RetryAfter: OTLP/gRPC clients retry ResourceExhausted only when
// it carries RetryInfo.
func (svc *Service) retryable(code codes.Code, msg string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(svc.opts.RetryAfter)})
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}
