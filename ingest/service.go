package ingest

import (
	"context"
	"errors"
	"sync"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed requests
	"google.golang.org/grpc/status"

	"cairn/internal/otlpwire"
	"cairn/internal/rawcodec"
)

// Writer is what ingest needs of storage.
type Writer interface {
	// Write makes a parsed request's spans durable. req is the encoded
	// request that batch aliases; the writer may keep it.
	Write(ctx context.Context, req []byte, batch *otlpwire.Batch) error
	// NotBefore is the start of the retention period in unix nanoseconds:
	// spans that started earlier are rejected.
	NotBefore() uint64
}

const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// Service implements TraceService/Export over a Writer.
type Service struct {
	w       Writer
	batches sync.Pool
}

// NewService returns a Service that stores spans in w.
func NewService(w Writer) *Service {
	return &Service{w: w, batches: sync.Pool{New: func() any { return new(otlpwire.Batch) }}}
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

// Export stores the spans of one encoded ExportTraceServiceRequest.
func (svc *Service) Export(ctx context.Context, req []byte) (*coltracepb.ExportTraceServiceResponse, error) {
	batch := svc.batches.Get().(*otlpwire.Batch)
	defer svc.batches.Put(batch)
	if err := otlpwire.Parse(req, batch, svc.w.NotBefore()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := svc.w.Write(ctx, req, batch); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, status.FromContextError(err).Err()
		}
		// Nothing of the request was acknowledged, and a store that is
		// closing or out of disk may take it later: the client should retry.
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	resp := &coltracepb.ExportTraceServiceResponse{}
	if n := batch.Rejected.Total(); n > 0 {
		resp.PartialSuccess = &coltracepb.ExportTracePartialSuccess{
			RejectedSpans: int64(n),
			ErrorMessage:  batch.Rejected.Message(),
		}
	}
	return resp, nil
}

// NewServer returns a gRPC server that serves svc's TraceService. Options such
// as grpc.MaxRecvMsgSize are passed through.
func NewServer(svc *Service, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append(opts, rawcodec.ServerOption())...)
	svc.register(s)
	return s
}
