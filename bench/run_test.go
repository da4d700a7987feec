package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestSettleWaitsForQuiet checks that reads wait, after Settle, until the
// target's activity has stopped changing, and not at all with a zero Settle.
func TestSettleWaitsForQuiet(t *testing.T) {
	var calls atomic.Int64
	busyUntil := time.Now().Add(time.Second)
	o := Options{Settle: time.Millisecond, Activity: func() (int64, error) {
		n := calls.Add(1)
		if time.Now().Before(busyUntil) {
			return n, nil // still changing
		}
		return 0, nil
	}}
	if err := settle(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(busyUntil.Add(QuietFor)) {
		t.Fatal("settle returned while the target was busy or before it was quiet long enough")
	}

	calls.Store(0)
	o.Settle = 0
	if err := settle(context.Background(), o); err != nil || calls.Load() != 0 {
		t.Fatalf("a zero Settle: %v, %d activity calls", err, calls.Load())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.Settle = time.Hour
	if err := settle(ctx, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("settle with a cancelled context: %v", err)
	}
}
