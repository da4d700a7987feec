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

// reservation is a request's share of the budget. It grows before the
// request takes memory, and shrinks to what the request still holds.
type reservation struct {
	svc   *Service
	ctx   context.Context // the request's
	proto string
	n     int64
}

func (svc *Service) reserve(ctx context.Context, proto string) *reservation {
	return &reservation{svc: svc, ctx: ctx, proto: proto}
}

// grow raises the reservation to n bytes. If that does not fit while other
// requests hold part of the budget, it waits for them to give enough back,
// for Options.AdmitWait or until the request's deadline, whichever comes first, and
// then refuses the request as overload. A request alone in flight always
// fits, so the budget refuses nothing MaxRequestBytes allows. A request
// whose client has gone ends with its context's error.
func (r *reservation) grow(n int64) error {
	ctx := r.ctx
	if n <= r.n {
		return nil
	}
	b := r.svc.budget
	var expired <-chan time.Time
	for {
		b.mu.Lock()
		others := b.used - r.n
		if others == 0 || others+n <= b.limit {
			b.used += n - r.n
			b.mu.Unlock()
			r.n = n
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		if expired == nil {
			t := time.NewTimer(r.svc.admitWait(ctx))
			defer t.Stop()
			expired = t.C
		}
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

// shrink lowers the reservation to n bytes, if it is larger.
func (r *reservation) shrink(n int64) {
	if n >= r.n {
		return
	}
	b := r.svc.budget
	b.mu.Lock()
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
