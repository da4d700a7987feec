package ingest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// budget is the memory that requests being taken in may hold between them,
// over every protocol: Options.MaxInflightBytes.
type budget struct {
	limit int64
	mu    sync.Mutex
	used  int64
	ahead int64 // the part of used reserved for messages not yet read
	// queue holds the requests waiting for budget, in arrival order. A
	// release wakes only those it admits: waking every waiter on every
	// release had a dozen goroutines run for nothing each time, and the
	// reads and exports queued behind them waited for processors.
	queue []*waiter
}

// waiter is a request waiting for its reservation r to grow to n bytes;
// ready is closed once it has.
type waiter struct {
	r     *reservation
	n     int64
	ready chan struct{}
}

func newBudget(limit int64) *budget { return &budget{limit: limit} }

// fits reports whether r may grow to n bytes now: it may if the budget has
// room, or if it is alone in flight. The caller holds mu.
func (b *budget) fits(r *reservation, n int64) bool {
	others := b.used - r.n
	return others == 0 || others+n <= b.limit
}

// grant grows r to n bytes. The caller holds mu.
func (b *budget) grant(r *reservation, n int64) {
	b.used += n - r.n
	if r.ahead {
		b.ahead += n - r.n
	}
	r.n = n
}

// admit grants what now fits to the waiting requests, first come first
// served among new requests, so that a large one is not passed over for
// ever; a request already holding part of the budget, growing as its body
// arrives, is granted whenever it fits, since finishing it frees memory
// soonest. The caller holds mu.
func (b *budget) admit() {
	blocked := false // a new request that does not fit: new ones after it wait
	kept := b.queue[:0]
	for _, w := range b.queue {
		if (w.r.n > 0 || !blocked) && b.fits(w.r, w.n) {
			b.grant(w.r, w.n)
			close(w.ready)
			continue
		}
		blocked = blocked || w.r.n == 0
		kept = append(kept, w)
	}
	clear(b.queue[len(kept):])
	b.queue = kept
}

// leave takes w out of the queue, unless it was granted meanwhile, and
// reports whether it was.
func (b *budget) leave(w *waiter) (granted bool) {
	select {
	case <-w.ready:
		return true
	default:
	}
	for i, q := range b.queue {
		if q == w {
			b.queue = append(b.queue[:i], b.queue[i+1:]...)
			break
		}
	}
	// A new request that blocked the ones behind it no longer does.
	b.admit()
	return false
}

// inUse is the memory reserved now.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// held is the memory reserved now for what requests hold, rather than for
// what messages not yet read might take.
func (b *budget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used - b.ahead
}

// waiters is the number of requests waiting for budget now.
func (b *budget) waiters() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// reservation is a request's share of the budget. It grows before the
// request takes memory, and shrinks to what the request still holds.
type reservation struct {
	svc   *Service
	ctx   context.Context // the request's
	proto string
	n     int64
	ahead bool // n is reserved for a message not yet read
}

func (svc *Service) reserve(ctx context.Context, proto string) *reservation {
	return &reservation{svc: svc, ctx: ctx, proto: proto}
}

// grow raises the reservation to n bytes. If that does not fit while other
// requests hold part of the budget, it waits for them to give enough back,
// for as long as admitWait allows, and then refuses the request as
// overload. A request alone in flight always fits, so the budget refuses
// nothing MaxRequestBytes allows. A request whose client has gone ends
// with its context's error.
func (r *reservation) grow(n int64) error {
	if n <= r.n {
		return nil
	}
	b := r.svc.budget
	b.mu.Lock()
	if (r.n > 0 || len(b.queue) == 0) && b.fits(r, n) {
		b.grant(r, n)
		b.mu.Unlock()
		return nil
	}
	w := &waiter{r: r, n: n, ready: make(chan struct{})}
	b.queue = append(b.queue, w)
	b.mu.Unlock()

	t := time.NewTimer(r.svc.admitWait(r.ctx))
	defer t.Stop()
	var err error
	select {
	case <-w.ready:
		return nil
	case <-t.C:
		err = r.svc.retryable(codes.ResourceExhausted,
			fmt.Sprintf("cairn is taking in as many requests as its memory bound allows (%d MiB); retry later", b.limit>>20))
	case <-r.ctx.Done():
		err = status.FromContextError(r.ctx.Err()).Err()
	}
	b.mu.Lock()
	granted := b.leave(w)
	b.mu.Unlock()
	if granted {
		return nil
	}
	cause := causeOverloaded
	if r.ctx.Err() != nil {
		cause = causeCanceled
	}
	r.svc.metrics.refused.WithLabelValues(r.proto, cause).Inc()
	return err
}

// force raises the reservation to n bytes at once, fit or not: it accounts
// for memory the request has taken already, so that later requests wait
// for it.
func (r *reservation) force(n int64) {
	if n <= r.n {
		return
	}
	b := r.svc.budget
	b.mu.Lock()
	b.grant(r, n)
	b.mu.Unlock()
}

// growAhead is grow for memory a message may take as it is read, which
// it may well not: it counts in the budget, but not in what requests hold,
// until shrink sets the reservation to what the message took.
func (r *reservation) growAhead(n int64) error {
	r.ahead = true
	return r.grow(n)
}

// shrink lowers the reservation to n bytes, if it is larger; either way
// the reservation no longer stands for a message not yet read.
func (r *reservation) shrink(n int64) {
	b := r.svc.budget
	b.mu.Lock()
	if r.ahead {
		b.ahead -= r.n
		r.ahead = false
	}
	if n >= r.n {
		b.mu.Unlock()
		return
	}
	b.used -= r.n - n
	r.n = n
	b.admit()
	b.mu.Unlock()
}

func (r *reservation) release() { r.shrink(0) }

// admitWait is how long a request that does not fit may wait for budget:
// Options.AdmitWait, but no more than half of what is left until ctx's
// deadline, so that a client still has time to retry, or to be answered.
func (svc *Service) admitWait(ctx context.Context) time.Duration {
	wait := svc.opts.AdmitWait
	if deadline, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(deadline)/2)
	}
	return max(wait, 0)
}
