package query

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
)

// gate admits a bounded number of queries of one class at once. Reads of
// small traces and searches have gates of their own, so that searches, which
// take far longer, cannot occupy the slots reads need.
type gate struct {
	slots chan struct{}
	what  string        // the class, plural, for error messages
	flag  string        // the serve flag that sets the bound
	wait  time.Duration // longest a query queues for a slot
}

func newGate(n int, what, flag string, wait time.Duration) *gate {
	return &gate{slots: make(chan struct{}, n), what: what, flag: flag, wait: wait}
}

// enter waits for a slot until ctx ends or the gate's queue wait passes, and
// returns the function that gives the slot back.
func (g *gate) enter(ctx context.Context) (leave func(), err error) {
	select {
	case g.slots <- struct{}{}:
		return g.leaveFor(ctx), nil
	default:
	}
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
		return g.leaveFor(ctx), nil
	case <-timer.C:
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s: at most %d at once (%s), and none finished within %v; retry later", g.what, cap(g.slots), g.flag, g.wait)
	case <-ctx.Done():
		return nil, ctxStatus(ctx)
	}
}

func (g *gate) leave() { <-g.slots }

// leaveFor is the function that gives back a slot taken under ctx. A slot a
// streaming call takes is given back only once its stream has finished (see
// timedStream.finish): until then its sender may still hold messages the
// slot answers for.
func (g *gate) leaveFor(ctx context.Context) func() {
	if t, ok := ctx.Value(streamKey{}).(*timedStream); ok {
		return func() { t.leaves = append(t.leaves, g.leave) }
	}
	return g.leave
}

// errQueryTimeout is the cause of a query's context when the server-side
// timeout ends it.
var errQueryTimeout = errors.New("query timeout")

// withTimeout bounds a call's context by the server-side timeout.
func (s *service) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.opts.Timeout, s.timeoutCause)
}

// isTraceReader reports whether a method is one of TraceReader's, which the
// timeout bounds; health watches and reflection streams run for as long as
// their clients want.
func isTraceReader(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+jaegerpb.TraceReader_ServiceDesc.ServiceName+"/")
}

// unaryTimeout runs a unary TraceReader call under the server-side timeout,
// its wait for a slot included.
func (s *service) unaryTimeout(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !isTraceReader(info.FullMethod) {
		return handler(ctx, req)
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return handler(ctx, req)
}

// streamTimeout runs a streaming TraceReader call under the server-side
// timeout, its wait for a slot included, on the call's own goroutine: a
// second goroutine would cost every read another wakeup, which on a busy
// machine is where the tail of a small read's latency lies. What the
// timeout must still end is a send blocked on a client that stopped
// reading; see timedStream.
func (s *service) streamTimeout(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !isTraceReader(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, cancel := s.withTimeout(ss.Context())
	defer cancel()
	ts := &timedStream{ServerStream: ss}
	ts.ctx = context.WithValue(ctx, streamKey{}, ts)
	defer ts.release()
	return ts.finish(handler(srv, ts))
}

// streamKey is the context key of the timedStream a call runs on.
type streamKey struct{}

// inlineSendBytes is how much of a stream is sent from the handler's own
// goroutine. gRPC lets a server stream have 64 KiB queued that the client
// has not taken, and a send blocks only once that is spent; until then a
// send cannot wait on the client, whatever the client does.
const inlineSendBytes = 32 << 10

// timedStream is a server stream whose context carries the server-side
// timeout. Its first 32 KiB are sent from the handler's goroutine, which is
// all a small read sends; the rest go to a sender goroutine the stream then
// starts, so that the timeout ends the call even while a send waits on a
// client that stopped reading: ending the call closes the stream, which
// ends the send. The handler goes on building the next message while the
// sender sends, and waits only when the sender is two messages behind: a
// wakeup per message in its path would cost a search of many traces as
// much as a small read's goroutine cost each read. A stream past 32 KiB so
// holds at most two messages more than gRPC has queued and the handler
// builds, each within the message limit.
type timedStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent int // bytes sent from the handler's goroutine

	out  chan any      // messages to the sender; nil until it starts
	done chan struct{} // closed when the sender ends
	err  error         // why the sender ended early; read once done is closed

	leaves []func() // give back the slots the handler took and left
}

// release gives back the slots the handler left, once the stream is
// finished.
func (t *timedStream) release() {
	for _, leave := range t.leaves {
		leave()
	}
}

func (t *timedStream) Context() context.Context { return t.ctx }

func (t *timedStream) SendMsg(m any) error {
	if t.out == nil {
		before := t.sent
		t.sent += messageSize(m)
		if before < inlineSendBytes {
			return t.ServerStream.SendMsg(m)
		}
		t.out, t.done = make(chan any, 1), make(chan struct{})
		go t.send()
	}
	select {
	case t.out <- m:
		return nil
	case <-t.done:
		return t.err
	case <-t.ctx.Done():
		return ctxStatus(t.ctx)
	}
}

// send sends what the handler hands over until the handler ends or a send
// fails.
func (t *timedStream) send() {
	defer close(t.done)
	for m := range t.out {
		if err := t.ServerStream.SendMsg(m); err != nil {
			t.err = err
			return
		}
	}
}

// finish waits, within the timeout, for the sender to send what it was
// handed, so that the call's status follows its last message; err is what
// the handler returned.
func (t *timedStream) finish(err error) error {
	if t.out == nil {
		return err
	}
	close(t.out)
	select {
	case <-t.done:
		if err == nil {
			err = t.err
		}
		return err
	case <-t.ctx.Done():
		return ctxStatus(t.ctx)
	}
}

// messageSize is the encoded size of a message sent on a stream.
func messageSize(m any) int {
	if n, ok := rawcodec.Size(m); ok {
		return n
	}
	return inlineSendBytes // unknown: never sent inline past the first
}

// ctxStatus is the status of a query whose context has ended: the client's
// cancellation or deadline, or the server's timeout.
func ctxStatus(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, errQueryTimeout) {
		return status.Error(codes.DeadlineExceeded, cause.Error())
	}
	return status.FromContextError(ctx.Err()).Err()
}
