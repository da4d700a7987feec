package ingest

import (
	"context"
	"testing"
	"time"
)

// TestBudgetFirstComeFirstServed checks the order in which waiting
// requests are admitted: a large new request is not passed over by smaller
// new ones that arrive after it, while a request already admitted, growing
// as its body arrives, goes ahead of both when it fits.
func TestBudgetFirstComeFirstServed(t *testing.T) {
	svc := NewService(nil, &Options{MaxInflightBytes: 100, AdmitWait: time.Minute})
	ctx := context.Background()
	hold := svc.reserve(ctx, protoGRPC)
	if err := hold.grow(60); err != nil {
		t.Fatal(err)
	}
	growing := svc.reserve(ctx, protoHTTPProtobuf)
	if err := growing.grow(10); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 3)
	// wait has r ask for n bytes, and returns once it is queued, the
	// queued'th waiting.
	wait := func(name string, r *reservation, n int64, queued int) {
		go func() {
			if err := r.grow(n); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			done <- name
		}()
		for svc.budget.waiters() < queued {
			time.Sleep(time.Millisecond)
		}
	}
	large, small := svc.reserve(ctx, protoGRPC), svc.reserve(ctx, protoGRPC)
	wait("large", large, 80, 1)
	wait("small", small, 30, 2)
	// Room for the small request, but not for the large one ahead of it.
	select {
	case name := <-done:
		t.Fatalf("%s admitted while the large request waits", name)
	case <-time.After(20 * time.Millisecond):
	}
	// The growing request fits (it holds 10 of the 100 already), and goes
	// ahead of the queue.
	if err := growing.grow(30); err != nil {
		t.Fatal(err)
	}
	growing.release()
	hold.release()
	if got := <-done; got != "large" {
		t.Fatalf("%s admitted first, want large", got)
	}
	large.release()
	if got := <-done; got != "small" {
		t.Fatalf("%s admitted, want small", got)
	}
	small.release()
	if n := svc.budget.inUse(); n != 0 {
		t.Fatalf("%d bytes still reserved", n)
	}
}
