package query

import (
	"context"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// Reader is what the query service needs of storage.
type Reader interface {
	// Trace assembles a trace, or returns nil if none of its spans is
	// stored.
	Trace(ctx context.Context, id storage.TraceID, tr storage.TimeRange) (*storage.Trace, error)
}

// Options configures the query service. The zero value is valid.
type Options struct {
	// MaxChunkBytes bounds each streamed TracesData message.
	//
	// The default is 4 MiB, jaeger-query's default gRPC message limit.
	MaxChunkBytes int
}

// EnsureDefaults returns a copy of o (which may be nil) with every zero field
// set to its default.
func (o *Options) EnsureDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.MaxChunkBytes <= 0 {
		c.MaxChunkBytes = 4 << 20
	}
	return c
}

// NewServer returns a gRPC server with the TraceReader and Capabilities
// services of jaeger.storage.v2, gRPC health and server reflection.
func NewServer(r Reader, o *Options, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append(opts, rawcodec.ServerOption())...)
	svc := &service{r: r, opts: o.EnsureDefaults()}
	jaegerpb.RegisterTraceReaderServer(s, svc)
	jaegerpb.RegisterCapabilitiesServer(s, capabilities{})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(jaegerpb.TraceReader_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

type service struct {
	jaegerpb.UnimplementedTraceReaderServer
	r    Reader
	opts Options
}

// GetTraces streams each requested trace as one or more TracesData chunks.
// Unknown trace IDs are skipped.
func (s *service) GetTraces(req *jaegerpb.GetTracesRequest, stream grpc.ServerStreamingServer[tracepb.TracesData]) error {
	for _, q := range req.GetQuery() {
		if len(q.GetTraceId()) != 16 {
			return status.Errorf(codes.InvalidArgument, "trace_id must be 16 bytes, got %d", len(q.GetTraceId()))
		}
	}
	ctx := stream.Context()
	for _, q := range req.GetQuery() {
		id := storage.TraceID(q.GetTraceId())
		t, err := s.r.Trace(ctx, id, storage.TimeRange{Start: timeOf(q.GetStartTime()), End: timeOf(q.GetEndTime())})
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Internal, "read trace %x: %v", id, err)
		}
		if t == nil {
			continue
		}
		c := chunker{limit: s.opts.MaxChunkBytes, emit: func(b []byte) error { return stream.SendMsg(rawcodec.Message(b)) }}
		if err := c.trace(t); err != nil {
			return err
		}
	}
	return nil
}

func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

type capabilities struct {
	jaegerpb.UnimplementedCapabilitiesServer
}

// GetCapabilities reports what this server answers: trace lookup by ID; no
// search yet.
func (capabilities) GetCapabilities(context.Context, *jaegerpb.GetCapabilitiesRequest) (*jaegerpb.GetCapabilitiesResponse, error) {
	return &jaegerpb.GetCapabilitiesResponse{Search: &jaegerpb.SearchCapabilities{}}, nil
}
