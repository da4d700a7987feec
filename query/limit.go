package query

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
		return g.leave, nil
	default:
	}
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
		return g.leave, nil
	case <-timer.C:
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s: at most %d at once (%s), and none finished within %v; retry later", g.what, cap(g.slots), g.flag, g.wait)
	case <-ctx.Done():
		return nil, ctxStatus(ctx)
	}
}

func (g *gate) leave() { <-g.slots }

// errQueryTimeout is the cause of a query's context when the server-side
// timeout ends it.
var errQueryTimeout = errors.New("query timeout")

// admit waits for a slot of g and bounds the query's context by the
// server-side timeout. done releases both.
func (s *service) admit(ctx context.Context, g *gate) (_ context.Context, done func(), _ error) {
	leave, err := g.enter(ctx)
	if err != nil {
		return nil, nil, err
	}
	cause := fmt.Errorf("%w: the query ran past the server's limit of %v (--query-timeout)", errQueryTimeout, s.opts.Timeout)
	ctx, cancel := context.WithTimeoutCause(ctx, s.opts.Timeout, cause)
	return ctx, func() { cancel(); leave() }, nil
}

// ctxStatus is the status of a query whose context has ended: the client's
// cancellation or deadline, or the server's timeout.
func ctxStatus(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, errQueryTimeout) {
		return status.Error(codes.DeadlineExceeded, cause.Error())
	}
	return status.FromContextError(ctx.Err()).Err()
}
