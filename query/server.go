package query

import (
	"context"
	"fmt"
	"strings"
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
	// Services lists the services that sent spans, sorted.
	Services() ([]string, error)
	// Operations lists the span names and kinds of a service, sorted.
	Operations(service string) ([]storage.Operation, error)
	// Find returns the traces that match a query, the most recent first.
	Find(ctx context.Context, q storage.Query) ([]storage.Found, error)
}

// DefaultMaxSearchDepth is the most traces a search returns unless
// Options.MaxSearchDepth says otherwise.
const DefaultMaxSearchDepth = 1000

// Options configures the query service. The zero value is valid.
type Options struct {
	// MaxChunkBytes bounds each streamed TracesData message.
	//
	// The default is 4 MiB, jaeger-query's default gRPC message limit.
	MaxChunkBytes int

	// MaxSearchDepth caps the number of traces a search returns, whatever
	// search_depth asks for.
	//
	// The default is 1000.
	MaxSearchDepth int

	// Metrics, if set, records the latency of every call.
	Metrics *Metrics

	// Health, if set, is the gRPC health service to serve, so that its
	// owner can report NOT_SERVING while shutting down.
	//
	// The default is a health service that reports SERVING.
	Health *health.Server
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
	if c.MaxSearchDepth <= 0 {
		c.MaxSearchDepth = DefaultMaxSearchDepth
	}
	return c
}

// NewServer returns a gRPC server with the TraceReader and Capabilities
// services of jaeger.storage.v2, gRPC health and server reflection.
func NewServer(r Reader, o *Options, opts ...grpc.ServerOption) *grpc.Server {
	c := o.EnsureDefaults()
	if c.Metrics != nil {
		opts = append(c.Metrics.serverOptions(), opts...)
	}
	s := grpc.NewServer(append(opts, rawcodec.ServerOption())...)
	svc := &service{r: r, opts: c}
	jaegerpb.RegisterTraceReaderServer(s, svc)
	jaegerpb.RegisterCapabilitiesServer(s, capabilities{})
	hs := c.Health
	if hs == nil {
		hs = health.NewServer()
	}
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
	var damaged []string
	for _, q := range req.GetQuery() {
		tr := storage.TimeRange{Start: timeOf(q.GetStartTime()), End: timeOf(q.GetEndTime())}
		err := s.sendTrace(ctx, stream, storage.TraceID(q.GetTraceId()), tr)
		if status.Code(err) == codes.DataLoss {
			// The other traces are still sent.
			damaged = append(damaged, status.Convert(err).Message())
			continue
		}
		if err != nil {
			return err
		}
	}
	if len(damaged) > 0 {
		return status.Error(codes.DataLoss, strings.Join(damaged, "; "))
	}
	return nil
}

// sendTrace streams one trace as TracesData chunks; an unknown trace sends
// nothing.
func (s *service) sendTrace(ctx context.Context, stream grpc.ServerStream, id storage.TraceID, tr storage.TimeRange) error {
	t, err := s.r.Trace(ctx, id, tr)
	if err != nil {
		return readError(ctx, id, err)
	}
	if t == nil {
		return nil
	}
	c := chunker{limit: s.opts.MaxChunkBytes, emit: func(b []byte) error { return stream.SendMsg(rawcodec.Message(b)) }}
	return c.trace(t)
}

// readError is the status of a failed read of a trace: DataLoss if a
// damaged file held it, naming the file.
func readError(ctx context.Context, id storage.TraceID, err error) error {
	switch {
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case storage.IsCorruption(err):
		return status.Error(codes.DataLoss, err.Error())
	}
	return status.Errorf(codes.Internal, "read trace %x: %v", id, err)
}

// GetServices lists the services that sent spans.
func (s *service) GetServices(context.Context, *jaegerpb.GetServicesRequest) (*jaegerpb.GetServicesResponse, error) {
	services, err := s.r.Services()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list services: %v", err)
	}
	return &jaegerpb.GetServicesResponse{Services: services}, nil
}

// GetOperations lists a service's operations, all of them or those of one
// span kind.
func (s *service) GetOperations(_ context.Context, req *jaegerpb.GetOperationsRequest) (*jaegerpb.GetOperationsResponse, error) {
	want, ok := kindByName[req.GetSpanKind()]
	if !ok && req.GetSpanKind() != "" {
		return nil, status.Errorf(codes.InvalidArgument, "unknown span_kind %q: want one of server, client, producer, consumer, internal, or empty for all", req.GetSpanKind())
	}
	ops, err := s.r.Operations(req.GetService())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list operations: %v", err)
	}
	resp := &jaegerpb.GetOperationsResponse{}
	for _, op := range ops {
		if req.GetSpanKind() == "" || op.Kind == want {
			resp.Operations = append(resp.Operations, &jaegerpb.Operation{Name: op.Name, SpanKind: kindName(op.Kind)})
		}
	}
	return resp, nil
}

// Span kinds are named as Jaeger names them; a span without a kind has the
// empty name.
var kindNames = [...]string{
	tracepb.Span_SPAN_KIND_UNSPECIFIED: "",
	tracepb.Span_SPAN_KIND_INTERNAL:    "internal",
	tracepb.Span_SPAN_KIND_SERVER:      "server",
	tracepb.Span_SPAN_KIND_CLIENT:      "client",
	tracepb.Span_SPAN_KIND_PRODUCER:    "producer",
	tracepb.Span_SPAN_KIND_CONSUMER:    "consumer",
}

var kindByName = func() map[string]int32 {
	m := map[string]int32{}
	for k, name := range kindNames {
		if name != "" {
			m[name] = int32(k)
		}
	}
	return m
}()

// kindName is the Jaeger name of an OTLP span kind.
func kindName(kind int32) string {
	if kind >= 0 && int(kind) < len(kindNames) {
		return kindNames[kind]
	}
	return fmt.Sprintf("kind-%d", kind)
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

// GetCapabilities reports what searches answer: queries without a service
// name work, and all of a query's conditions must hold on the same span.
// Expression filters, pagination and span search are not offered.
func (capabilities) GetCapabilities(context.Context, *jaegerpb.GetCapabilitiesRequest) (*jaegerpb.GetCapabilitiesResponse, error) {
	return &jaegerpb.GetCapabilitiesResponse{Search: &jaegerpb.SearchCapabilities{
		WithoutServiceName:  true,
		SameSpanConjunction: true,
	}}, nil
}
