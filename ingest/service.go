package ingest

import (
	"context"
	"errors"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"cairn/internal/freelist"
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
	w       Writer
	opts    Options
	batches batchPool
	budget  *budget
	metrics *metrics
}

// NewService returns a Service that stores spans in w.
func NewService(w Writer, o *Options) *Service {
	svc := &Service{w: w, opts: o.EnsureDefaults(), batches: newBatchPool()}
	svc.budget = newBudget(svc.opts.MaxInflightBytes)
	svc.metrics = newMetrics(svc.budget)
	return svc
}

// Metrics returns the service's Prometheus metrics, to register.
func (svc *Service) Metrics() prometheus.Collector { return svc.metrics }

// InflightBytes is the memory reserved now by requests being taken in, by
// MaxInflightBytes's account.
func (svc *Service) InflightBytes() int64 { return svc.budget.inUse() }

// HeldBytes is the part of InflightBytes that requests hold: what is
// reserved for gRPC messages still being read, which may be far smaller
// than the worst case reserved for them, is left out.
func (svc *Service) HeldBytes() int64 { return svc.budget.held() }

// NewServer returns a gRPC server that serves svc's TraceService, with
// svc's request size limit. Options such as credentials are passed through.
func NewServer(svc *Service, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append(append(opts, rawcodec.ServerOptions()...), grpc.MaxRecvMsgSize(svc.opts.MaxRequestBytes),
		// A call buffers at most its stream's window before Export takes
		// its share of the in-flight bound; fixed windows turn off gRPC's
		// estimate of bandwidth-delay, which grows them to 16 MiB. Reading
		// a message asks for a window of its whole size anyway.
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		grpc.MaxConcurrentStreams(uint32(svc.opts.MaxStreamsPerConn)),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: svc.opts.IdleTimeout, Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)...)
	svc.register(s)
	return s
}

// register adds the TraceService to s, which must use rawcodec's server
// option.
//
// gRPC calls a unary handler as soon as a call's headers arrive, and reads
// the message only when the handler decodes it; until then a call has
// buffered at most its stream's flow-control window. So Export takes its
// share of the in-flight bound before it decodes: what it reads, and
// inflates, is then within the bound, at whatever speed it arrives.
// (TestStalledStream checks that gRPC still works this way.)
func (svc *Service) register(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Export",
			Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				res := svc.reserve(ctx, protoGRPC)
				defer res.release()
				if err := res.growAhead(grpcReadFactor * int64(svc.opts.MaxRequestBytes)); err != nil {
					return nil, err
				}
				req, err := svc.receive(dec, res)
				if err != nil {
					return nil, err
				}
				svc.metrics.bytes.WithLabelValues(protoGRPC).Add(float64(len(req)))
				received := time.Now()
				if interceptor == nil {
					return svc.export(ctx, protoGRPC, req, res, received)
				}
				info := &grpc.UnaryServerInfo{Server: svc, FullMethod: exportMethod}
				return interceptor(ctx, rawcodec.Message(req), info, func(ctx context.Context, req any) (any, error) {
					return svc.export(ctx, protoGRPC, req.(rawcodec.Message), res, received)
				})
			},
		}},
		Metadata: "opentelemetry/proto/collector/trace/v1/trace_service.proto",
	}, svc)
}

// Flow-control windows of the gRPC server: gRPC's least for a stream, and
// for the connection enough that its updates are rare.
const (
	streamWindow = 64 << 10
	connWindow   = 8 << 20
)

// grpcReadFactor is how many times MaxRequestBytes reading one gRPC message
// may take: gRPC holds what arrives, and then what it inflates to, in
// buffers of its own, which the codec copies into one slice; an inflating
// message frees its compressed buffers before that copy.
const grpcReadFactor = 2

// receive decodes the request's message with dec, which reads it; it must
// arrive within the body timeout. It shrinks res to what the message takes
// to decode and store. If the message does not arrive in time, the
// reservation is handed to the read, which keeps it until it returns.
func (svc *Service) receive(dec func(any) error, res *reservation) ([]byte, error) {
	type received struct {
		req rawcodec.Message
		err error
	}
	got := make(chan received, 1)
	// The read cannot be given a deadline: it runs apart, and a stream that
	// stalls is ended by returning, which makes gRPC close the stream and
	// the read return.
	go func() {
		var r received
		r.err = dec(&r.req)
		got <- r
	}()
	timeout := svc.bodyTimeout(-1) // the size is known only once the message is read
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-got:
		if r.err != nil {
			cause := causeMalformed
			switch status.Code(r.err) {
			case codes.ResourceExhausted:
				cause = causeTooLarge
			case codes.Canceled, codes.DeadlineExceeded:
				cause = causeCanceled
			}
			svc.metrics.refused.WithLabelValues(protoGRPC, cause).Inc()
			return nil, r.err
		}
		res.shrink(decodeFactor * int64(len(r.req)))
		return r.req, nil
	case <-t.C:
		reading := *res
		res.n = 0 // the caller's release leaves this share to the read
		go func() { <-got; reading.release() }()
		svc.metrics.refused.WithLabelValues(protoGRPC, causeTimeout).Inc()
		return nil, status.Errorf(codes.DeadlineExceeded, "request message did not arrive within %v", timeout.Round(time.Second))
	}
}

// Export stores the spans of one encoded ExportTraceServiceRequest, as if
// received over gRPC. Errors are gRPC statuses.
func (svc *Service) Export(ctx context.Context, req []byte) (*coltracepb.ExportTraceServiceResponse, error) {
	res := svc.reserve(ctx, protoGRPC)
	defer res.release()
	if err := res.grow(int64(len(req))); err != nil {
		return nil, err
	}
	svc.metrics.bytes.WithLabelValues(protoGRPC).Add(float64(len(req)))
	return svc.export(ctx, protoGRPC, req, res, time.Now())
}

// decodeFactor is about how many times its size a request takes while it is
// decoded and stored: the request itself, its parsed batch, and the copy the
// store compresses into its log.
const decodeFactor = 2

// batchPool keeps parsed batches for reuse. Batches of large requests are
// worth keeping: an 8 MiB request of 27,000 spans parses into about 10 MiB,
// and allocating that afresh for each such request had the
// garbage collector, paced by the memory limit, take a third of the CPU.
// But a sync.Pool keeps as many as were ever in flight at once, and as many
// again in its victim cache, each with pointers into the request it last
// held, none of which the memory limit follows (it follows what requests
// in flight hold). So only small batches go to a sync.Pool, and at most
// maxLargeBatches large ones are kept, their pointers cleared.
type batchPool struct {
	small sync.Pool
	large *freelist.List[*otlpwire.Batch]
}

const (
	// smallBatch is the most memory a batch in the sync.Pool holds: a
	// 1,024-span request parses into well under 1 MiB.
	smallBatch = 4 << 20
	// maxLargeBatches is how many larger batches are kept.
	maxLargeBatches = 2
	// maxPooledBatch bounds the memory of a batch kept at all. A
	// pathological request of tiny spans parsing into more than this goes
	// with its request.
	maxPooledBatch = 64 << 20
)

func newBatchPool() batchPool {
	return batchPool{
		small: sync.Pool{New: func() any { return new(otlpwire.Batch) }},
		large: freelist.New[*otlpwire.Batch](maxLargeBatches, nil),
	}
}

// get returns a batch to parse a request of n bytes into.
func (p *batchPool) get(n int) *otlpwire.Batch {
	if n > smallBatch/4 { // about the size of request that fills a small batch
		if b, ok := p.large.Get(); ok {
			return b
		}
	}
	return p.small.Get().(*otlpwire.Batch)
}

// put takes b back once its request is stored, unless it is too large.
func (p *batchPool) put(b *otlpwire.Batch) {
	switch size := batchBytes(b); {
	case size <= smallBatch:
		p.small.Put(b)
	case size <= maxPooledBatch:
		clear(b.Resources[:cap(b.Resources)])
		clear(b.Scopes[:cap(b.Scopes)])
		clear(b.Spans[:cap(b.Spans)])
		p.large.Put(b)
	}
}

// export validates and stores one encoded request, holding res, which it
// grows to what decoding takes. received is when the request arrived, for
// the latency histogram. A request whose client has gone, or whose
// deadline has passed, is dropped before each costly step.
func (svc *Service) export(ctx context.Context, proto string, req []byte, res *reservation, received time.Time) (*coltracepb.ExportTraceServiceResponse, error) {
	if err := res.grow(decodeFactor * int64(len(req))); err != nil {
		return nil, err
	}
	if err := svc.gone(ctx, proto); err != nil {
		return nil, err
	}
	batch := svc.batches.get(len(req))
	defer svc.batches.put(batch)
	var err error
	svc.opts.Bulk.Do(func() { err = otlpwire.Parse(req, batch, svc.w.Accepts()) })
	if err != nil {
		svc.metrics.refused.WithLabelValues(proto, causeMalformed).Inc()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// A request of many small spans and attributes parses into a batch
	// larger than itself (27,000 spans of 300 bytes: 1.3 times their
	// size), and the store copies the request into its log: the
	// reservation holds all three from here, so that the next requests
	// wait for it and the memory limit follows it.
	res.force(2*int64(len(req)) + batchBytes(batch))
	if err := svc.gone(ctx, proto); err != nil {
		return nil, err
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

// gone refuses a request whose client no longer waits for the answer.
func (svc *Service) gone(ctx context.Context, proto string) error {
	if err := ctx.Err(); err != nil {
		svc.metrics.refused.WithLabelValues(proto, causeCanceled).Inc()
		return status.FromContextError(err).Err()
	}
	return nil
}

// batchBytes is about the memory a parsed batch holds.
func batchBytes(b *otlpwire.Batch) int64 {
	return int64(cap(b.Spans))*int64(unsafe.Sizeof(otlpwire.Span{})) +
		int64(cap(b.Attrs))*int64(unsafe.Sizeof(otlpwire.Attribute{})) +
		int64(cap(b.Resources))*int64(unsafe.Sizeof(otlpwire.Resource{})) +
		int64(cap(b.Scopes))*int64(unsafe.Sizeof(otlpwire.Scope{}))
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
