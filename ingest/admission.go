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
	wait  int   // requests waiting for budget
	// freed is closed, and replaced, whenever part of the budget is given
	// back, waking the requests that wait for it.
	freed chan struct{}
}

func newBudget(limit int64) *budget { return &budget{limit: limit, freed: make(chan struct{})} }

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
	return b.wait
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
	ctx := r.ctx
	b := r.svc.budget
	var expired <-chan time.Time
	for {
		b.mu.Lock()
		others := b.used - r.n
		if others == 0 || others+n <= b.limit {
			b.used += n - r.n
			if r.ahead {
				b.ahead += n - r.n
			}
			b.mu.Unlock()
			r.n = n
			return nil
		}
		freed := b.freed
		if expired == nil {
			b.wait++
			defer b.stopWaiting()
			t := time.NewTimer(r.svc.admitWait(ctx))
			defer t.Stop()
			expired = t.C
		}
		b.mu.Unlock()
		select {
		case <-freed:
		case <-expired:
			r.svc.metrics.refused.WithLabelValues(r.proto, causeOverloaded).Inc()
			return r.svc.retryable(codes.ResourceExhausted,
				fmt.Sprintf("cairn is taking in as many requests as its memory bound allows (%d MiB); retry later", b.limit>>20))
		case <-ctx.Done():
			r.svc.metrics.refused.WithLabelValues(r.proto, causeCanceled).Inc()
			return status.FromContextError(ctx.Err()).Err()
		}
	}
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
	b.used += n - r.n
	if r.ahead {
		b.ahead += n - r.n
	}
	b.mu.Unlock()
	r.n = n
}

// growAhead is grow for memory a message may take as it is read, which
// it may well not: it counts in the budget, but not in what requests hold,
// until shrink sets the reservation to what the message took.
func (r *reservation) growAhead(n int64) error {
	r.ahead = true
	return r.grow(n)
}

func (b *budget) stopWaiting() {
	b.mu.Lock()
	b.wait--
	b.mu.Unlock()
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
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
	r.n = n
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
