package query

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"cairn/internal/rawcodec"
	"cairn/query/analysispb"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// Reader is what the query service needs of storage.
type Reader interface {
	// TracePieces reads a trace a piece of about pieceBytes at a time,
	// calling admit before it decodes each stored fragment, and reports
	// whether any of its spans is stored. A piece's spans are valid only
	// until fn returns.
	TracePieces(ctx context.Context, id storage.TraceID, tr storage.TimeRange, pieceBytes int, admit func(fragmentBytes int) error, fn func(*storage.Trace) error) (bool, error)
	// Services lists the services that sent spans, sorted.
	Services() ([]string, error)
	// Operations lists the span names and kinds of a service, sorted, and
	// says whether it sent more names than it lists.
	Operations(service string) (ops []storage.Operation, more bool, err error)
	// Find returns the traces that match a query, the most recent first.
	Find(ctx context.Context, q storage.Query) ([]storage.Found, error)
	// ServiceGraph returns the service graph's edges with the calls that
	// started in the minutes that [from, to) overlaps.
	ServiceGraph(ctx context.Context, from, to time.Time) ([]storage.Edge, error)
	// Dependencies returns the same edges without their latencies.
	Dependencies(ctx context.Context, from, to time.Time) ([]storage.Edge, error)
	// SpanMetrics merges the span metrics that q asks for, by series and
	// step.
	SpanMetrics(ctx context.Context, q storage.SpanMetricsQuery) ([]storage.SpanMetricsSeries, error)
}

// DefaultMaxSearchDepth is the most traces a search may ask for unless
// Options.MaxSearchDepth says otherwise: well above the limits Jaeger's UI
// is used with, while a search's matches, 32 bytes each, are held until it
// ends and its traces are streamed one at a time.
const DefaultMaxSearchDepth = 10000

// Options configures the query service. The zero value is valid.
type Options struct {
	// MaxMessageBytes bounds every response message: each streamed
	// TracesData chunk, and the lists of services and operations, which are
	// cut short with a notice past it. A span too large for a message of its
	// own is sent with its largest attribute values truncated and a
	// cairn.truncated attribute.
	//
	// The default is 4 MiB, jaeger-query's default gRPC message limit.
	MaxMessageBytes int

	// MaxSearchDepth is the most traces a search may ask for; a larger
	// search_depth is refused with InvalidArgument, never cut silently.
	//
	// The default is DefaultMaxSearchDepth, 10,000.
	MaxSearchDepth int

	// MaxTraceIDs bounds the trace IDs one GetTraces request may name; a
	// request with more is refused with InvalidArgument. Repeated IDs are
	// read once.
	//
	// The default is 1000.
	MaxTraceIDs int

	// MaxReads bounds the GetTraces, GetServices and GetOperations calls
	// served at once.
	//
	// The default is 32.
	MaxReads int

	// MaxSearches bounds the searches (FindTraces, FindTraceIDs,
	// FindTraceSummaries) served at once. A GetTraces call that has streamed
	// more than MaxMessageBytes, a huge trace or many traces, or is about to
	// decode a stored fragment larger than that, takes one of these slots
	// too before it goes on: it costs what a search costs. Kept below the
	// number of CPUs, searches leave ingest room.
	//
	// The default is half of GOMAXPROCS, at least 1.
	MaxSearches int

	// MaxQueueWait is how long a call waits for a slot when MaxReads or
	// MaxSearches are taken; then it fails with ResourceExhausted.
	//
	// The default is 2s.
	MaxQueueWait time.Duration

	// Timeout bounds each call on the server, its wait for a slot included,
	// whatever deadline the client set; past it the call fails with
	// DeadlineExceeded, also when it is blocked sending to a client that
	// stopped reading.
	//
	// The default is 30s.
	Timeout time.Duration

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
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 4 << 20
	}
	if c.MaxSearchDepth <= 0 {
		c.MaxSearchDepth = DefaultMaxSearchDepth
	}
	if c.MaxTraceIDs <= 0 {
		c.MaxTraceIDs = 1000
	}
	if c.MaxReads <= 0 {
		c.MaxReads = 32
	}
	if c.MaxSearches <= 0 {
		c.MaxSearches = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if c.MaxQueueWait <= 0 {
		c.MaxQueueWait = 2 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	return c
}

// Service answers queries, over gRPC (Server) and over HTTP (HTTPHandler),
// both within one set of bounds: its slots for reads and searches are
// shared.
type Service struct{ svc *service }

// NewService returns a query service reading from r.
func NewService(r Reader, o *Options) *Service {
	c := o.EnsureDefaults()
	return &Service{svc: &service{
		r:            r,
		opts:         c,
		reads:        newGate(c.MaxReads, "reads", "--query-max-reads", c.MaxQueueWait),
		searches:     newGate(c.MaxSearches, "searches and large reads", "--query-max-searches", c.MaxQueueWait),
		timeoutCause: fmt.Errorf("%w: the query ran past the server's limit of %v (--query-timeout)", errQueryTimeout, c.Timeout),
	}}
}

// NewServer returns the gRPC server of a query service of its own; see
// Service.Server.
func NewServer(r Reader, o *Options, opts ...grpc.ServerOption) *grpc.Server {
	return NewService(r, o).Server(opts...)
}

// Server returns a gRPC server with the TraceReader, DependencyReader and
// Capabilities services of jaeger.storage.v2, cairn.analysis.v1's Analysis
// and RootCause, gRPC health and server reflection.
func (q *Service) Server(opts ...grpc.ServerOption) *grpc.Server {
	svc := q.svc
	c := svc.opts
	if c.Metrics != nil {
		opts = append(c.Metrics.serverOptions(), opts...)
	}
	opts = append(append(opts, rawcodec.ServerOptions()...),
		grpc.ChainUnaryInterceptor(svc.unaryTimeout), grpc.ChainStreamInterceptor(svc.streamTimeout))
	s := grpc.NewServer(opts...)
	jaegerpb.RegisterTraceReaderServer(s, svc)
	jaegerpb.RegisterDependencyReaderServer(s, dependencies{s: svc})
	jaegerpb.RegisterCapabilitiesServer(s, capabilities{})
	analysispb.RegisterAnalysisServer(s, analysis{service: svc})
	analysispb.RegisterRootCauseServer(s, rootCause{service: svc})
	hs := c.Health
	if hs == nil {
		hs = health.NewServer()
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(jaegerpb.TraceReader_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(jaegerpb.DependencyReader_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

type service struct {
	jaegerpb.UnimplementedTraceReaderServer
	r        Reader
	opts     Options
	reads    *gate
	searches *gate
	// timeoutCause is the cause of the contexts of calls that ran past
	// Options.Timeout.
	timeoutCause error
}

// GetTraces streams each requested trace as one or more TracesData chunks.
// Unknown trace IDs are skipped; a repeated ID is read once.
func (s *service) GetTraces(req *jaegerpb.GetTracesRequest, stream grpc.ServerStreamingServer[tracepb.TracesData]) error {
	wanted, err := s.wantedTraces(req.GetQuery())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	leave, err := s.reads.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	out := &sender{s: s, ctx: ctx, emit: rawSender(stream)}
	defer out.close()
	var damaged []string
	for _, w := range wanted {
		err := s.sendTrace(ctx, out, w.id, w.tr)
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
		// Each names its trace and file, with Pebble's error: a thousand
		// of them made a status of hundreds of kilobytes.
		if n := len(damaged); n > maxDamagedNamed {
			damaged = append(damaged[:maxDamagedNamed], fmt.Sprintf("and %d more damaged traces", n-maxDamagedNamed))
		}
		return status.Error(codes.DataLoss, strings.Join(damaged, "; "))
	}
	return nil
}

// maxDamagedNamed is how many damaged traces a GetTraces status names.
const maxDamagedNamed = 10

type wantedTrace struct {
	id storage.TraceID
	tr storage.TimeRange
}

// wantedTraces validates the trace IDs of a GetTraces request and merges
// repeated ones, widening their time hints to cover each: a request that
// names one trace many times must not cost many reads.
func (s *service) wantedTraces(params []*jaegerpb.GetTraceParams) ([]wantedTrace, error) {
	if len(params) > s.opts.MaxTraceIDs {
		return nil, status.Errorf(codes.InvalidArgument, "%d trace IDs in one request; at most %d are served (--query-max-trace-ids)", len(params), s.opts.MaxTraceIDs)
	}
	var wanted []wantedTrace
	at := make(map[storage.TraceID]int, len(params))
	for _, q := range params {
		if len(q.GetTraceId()) != 16 {
			return nil, status.Errorf(codes.InvalidArgument, "trace_id must be 16 bytes, got %d", len(q.GetTraceId()))
		}
		id := storage.TraceID(q.GetTraceId())
		tr, err := traceHint(q.GetStartTime(), q.GetEndTime())
		if err != nil {
			return nil, err
		}
		i, seen := at[id]
		if !seen {
			at[id] = len(wanted)
			wanted = append(wanted, wantedTrace{id, tr})
			continue
		}
		wanted[i].tr = widen(wanted[i].tr, tr)
	}
	return wanted, nil
}

// widen returns the smallest time range covering a and b; a zero bound is
// open.
func widen(a, b storage.TimeRange) storage.TimeRange {
	if a.Start.IsZero() || b.Start.IsZero() {
		a.Start = time.Time{}
	} else if b.Start.Before(a.Start) {
		a.Start = b.Start
	}
	if a.End.IsZero() || b.End.IsZero() {
		a.End = time.Time{}
	} else if b.End.After(a.End) {
		a.End = b.End
	}
	return a
}

// sender streams a call's chunks. A read that sends more than one message,
// or decodes a stored fragment larger than one, takes a search slot before
// it goes on: a huge trace, or many traces, cost what a search costs, and
// must not crowd out ingest or take memory any more than searches may.
type sender struct {
	s     *service
	ctx   context.Context
	emit  func(chunk []byte) error // an encoded TracesData
	sent  int
	heavy bool   // holds a search slot, or runs under one
	leave func() // gives back the slot this sender took
}

// rawSender sends encoded chunks on a gRPC stream as they are. gRPC gives
// each chunk's buffer back to chunkBuffers once it has written it.
func rawSender(stream grpc.ServerStream) func([]byte) error {
	return func(b []byte) error { return stream.SendMsg(mem.NewBuffer(&b, chunkBuffers)) }
}

func (o *sender) send(b []byte) error {
	if err := o.ctx.Err(); err != nil {
		return ctxStatus(o.ctx)
	}
	if err := o.weigh(o.sent + len(b)); err != nil {
		return err
	}
	o.sent += len(b)
	return o.emit(b)
}

// weigh takes a search slot if a read is about to handle more than a
// message's worth of bytes at once.
func (o *sender) weigh(bytes int) error {
	if o.heavy || bytes <= o.s.opts.MaxMessageBytes {
		return nil
	}
	leave, err := o.s.searches.enter(o.ctx)
	if err != nil {
		return err
	}
	o.heavy, o.leave = true, leave
	return nil
}

func (o *sender) close() {
	if o.leave != nil {
		o.leave()
	}
}

// sendTrace streams one trace as TracesData chunks; an unknown trace sends
// nothing. The trace is read a message's worth at a time, so that a huge
// one is never held whole.
func (s *service) sendTrace(ctx context.Context, out *sender, id storage.TraceID, tr storage.TimeRange) error {
	c := chunker{limit: s.opts.MaxMessageBytes, emit: out.send, buffers: chunkBuffers}
	var sendErr error
	admit := func(n int) error {
		sendErr = out.weigh(n)
		return sendErr
	}
	_, err := s.r.TracePieces(ctx, id, tr, s.opts.MaxMessageBytes, admit, func(t *storage.Trace) error {
		// The piece's spans are reused once fn returns, so what add
		// left for the next chunk is sent now.
		if sendErr = c.add(t); sendErr == nil {
			sendErr = c.flush()
		}
		return sendErr
	})
	switch {
	case sendErr != nil:
		return sendErr
	case err != nil && ctx.Err() != nil:
		return ctxStatus(ctx)
	case err != nil:
		return readError(id, err)
	}
	return nil
}

// readError is the status of a failed read of a trace: DataLoss if a
// damaged file held it, naming the file.
func readError(id storage.TraceID, err error) error {
	if storage.IsCorruption(err) {
		return status.Error(codes.DataLoss, err.Error())
	}
	return status.Errorf(codes.Internal, "read trace %x: %v", id, err)
}

// GetServices lists the services that sent spans.
func (s *service) GetServices(ctx context.Context, _ *jaegerpb.GetServicesRequest) (*jaegerpb.GetServicesResponse, error) {
	leave, err := s.reads.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	services, err := s.r.Services()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list services: %v", err)
	}
	return &jaegerpb.GetServicesResponse{Services: s.fitServices(services)}, nil
}

// fitServices cuts a list of services short, with a notice in its place, if
// its response would be larger than a message may be. Jaeger's API has no
// way to ask for part of the list.
func (s *service) fitServices(services []string) []string {
	room := s.opts.MaxMessageBytes - noticeMax
	for i, name := range services {
		if room -= embedded(len(name)); room < 0 {
			return append(services[:i:i], fmt.Sprintf("cairn: %d more services not listed, over the %d-byte response limit", len(services)-i, s.opts.MaxMessageBytes))
		}
	}
	return services
}

// noticeMax bounds the size of the entry that says a list was cut short.
const noticeMax = 128

// GetOperations lists a service's operations, all of them or those of one
// span kind.
func (s *service) GetOperations(ctx context.Context, req *jaegerpb.GetOperationsRequest) (*jaegerpb.GetOperationsResponse, error) {
	want, ok := kindByName[req.GetSpanKind()]
	if !ok && req.GetSpanKind() != "" {
		return nil, status.Errorf(codes.InvalidArgument, "unknown span_kind %q: want one of server, client, producer, consumer, internal, or empty for all", req.GetSpanKind())
	}
	leave, err := s.reads.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	ops, more, err := s.r.Operations(req.GetService())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list operations: %v", err)
	}
	var matching []*jaegerpb.Operation
	for _, op := range ops {
		if req.GetSpanKind() == "" || op.Kind == want {
			matching = append(matching, &jaegerpb.Operation{Name: op.Name, SpanKind: kindName(op.Kind)})
		}
	}
	matching = s.fitOperations(matching)
	if more {
		// As a list cut at the response limit says so in its last entry.
		matching = append(matching, &jaegerpb.Operation{Name: "cairn: more operations not listed, past the 10000 span names a service's list keeps; their spans are stored and can be searched by name"})
	}
	return &jaegerpb.GetOperationsResponse{Operations: matching}, nil
}

// fitOperations cuts a list of operations short, as fitServices does.
func (s *service) fitOperations(ops []*jaegerpb.Operation) []*jaegerpb.Operation {
	room := s.opts.MaxMessageBytes - noticeMax
	for i, op := range ops {
		if room -= embedded(embedded(len(op.Name)) + nonEmpty([]byte(op.SpanKind))); room < 0 {
			name := fmt.Sprintf("cairn: %d more operations not listed, over the %d-byte response limit", len(ops)-i, s.opts.MaxMessageBytes)
			return append(ops[:i:i], &jaegerpb.Operation{Name: name})
		}
	}
	return ops
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

type capabilities struct {
	jaegerpb.UnimplementedCapabilitiesServer
}

// GetCapabilities reports what searches answer: queries without a service
// name work, and all of a query's conditions must hold on the same span.
// Expression filters, pagination and span search are not offered. The
// message has no field for dependencies: GetDependencies is served, and a
// client finds that out by calling it.
func (capabilities) GetCapabilities(context.Context, *jaegerpb.GetCapabilitiesRequest) (*jaegerpb.GetCapabilitiesResponse, error) {
	return &jaegerpb.GetCapabilitiesResponse{Search: &jaegerpb.SearchCapabilities{
		WithoutServiceName:  true,
		SameSpanConjunction: true,
	}}, nil
}
