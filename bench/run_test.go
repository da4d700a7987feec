package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"cairn/internal/rawcodec"
)

// TestSettleWaitsForQuiet checks that reads wait, after Settle, until the
// target's activity has stopped changing, and not at all with a zero Settle,
// and that settle says when the target was last seen busy.
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
	changed, err := settle(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(busyUntil.Add(QuietFor)) {
		t.Fatal("settle returned while the target was busy or before it was quiet long enough")
	}
	// Activity is polled every 250 ms: the last change seen is the last poll
	// before busyUntil or the first after.
	if changed.Before(busyUntil.Add(-time.Second)) || time.Since(changed) < QuietFor {
		t.Errorf("last seen busy %s before busyUntil, %s ago", busyUntil.Sub(changed), time.Since(changed))
	}

	calls.Store(0)
	o.Settle = 0
	if _, err := settle(context.Background(), o); err != nil || calls.Load() != 0 {
		t.Fatalf("a zero Settle: %v, %d activity calls", err, calls.Load())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.Settle = time.Hour
	if _, err := settle(ctx, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("settle with a cancelled context: %v", err)
	}
}

var protocols = []string{ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestUnreachable checks that a target or reader that nothing listens on
// fails the run at once, saying so in one line.
func TestUnreachable(t *testing.T) {
	addr := closedPort(t)
	for _, protocol := range protocols {
		_, err := Run(context.Background(), Options{Target: addr, Protocol: protocol})
		want := fmt.Sprintf("cannot reach OTLP endpoint %s over %s: connection refused", addr, protocol)
		if err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	}
	target := serveOTLPGRPC(t, func(context.Context, []byte) (rawcodec.Message, error) { return nil, nil })
	// Taken after the target listens, which may have been given addr's
	// port once it was free.
	reader := closedPort(t)
	_, err := Run(context.Background(), Options{Target: target, Reader: reader})
	if want := fmt.Sprintf("cannot reach reader %s: connection refused", reader); err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestUnresponsive checks that a target that accepts connections but never
// answers fails the run after the probe's timeout.
func TestUnresponsive(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	})
	defer held.Wait()
	defer lis.Close()
	var runs sync.WaitGroup
	for _, protocol := range protocols {
		runs.Go(func() {
			_, err := Run(context.Background(), Options{Target: lis.Addr().String(), Protocol: protocol})
			want := fmt.Sprintf("cannot reach OTLP endpoint %s over %s: no answer to an empty export within 5s", lis.Addr(), protocol)
			if err == nil || err.Error() != want {
				t.Errorf("got %v, want %s", err, want)
			}
		})
	}
	runs.Wait()
}

// stallAfter serves OTLP/gRPC, acknowledging empty exports and the first n
// others, and leaves every later one unanswered until the client gives up.
func stallAfter(t *testing.T, n int64) string {
	var exports atomic.Int64
	return serveOTLPGRPC(t, func(ctx context.Context, req []byte) (rawcodec.Message, error) {
		if len(req) > 0 && exports.Add(1) > n {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, nil
	})
}

// TestDurationStalled checks that a run stops at its Duration even while
// requests hang, reporting only what was acknowledged.
func TestDurationStalled(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run("protocol="+protocol, func(t *testing.T) {
			target := stallAfter(t, 3)
			if protocol != ProtocolGRPC {
				var exports atomic.Int64
				_, target = serveOTLPHTTP(t, func(e *httpExport) {
					if exports.Add(1) > 3 {
						<-e.r.Context().Done()
						return
					}
					e.respond(&collectorpb.ExportTraceServiceResponse{})
				})
			}
			rep, err := Run(context.Background(), Options{Target: target, Protocol: protocol, Duration: time.Second,
				Batch: 100, PoolSpans: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Requests != 3 || rep.Spans != 300 || rep.FailedSpans != 0 {
				t.Errorf("%d requests, %d spans acknowledged, %d failed; want 3, 300, 0", rep.Requests, rep.Spans, rep.FailedSpans)
			}
			if d := time.Duration(rep.Seconds * float64(time.Second)); d < time.Second || d > time.Second+deadlineGrace+time.Second {
				t.Errorf("sent for %s with a duration of 1s", d)
			}
		})
	}
}

// TestDurationHealthy checks that a run against a target that keeps up
// sends for its Duration.
func TestDurationHealthy(t *testing.T) {
	target := serveOTLPGRPC(t, func(context.Context, []byte) (rawcodec.Message, error) { return nil, nil })
	rep, err := Run(context.Background(), Options{Target: target, Duration: time.Second, Batch: 100, PoolSpans: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Spans == 0 || rep.FailedSpans != 0 || rep.Seconds < 1 || rep.Seconds > 1+deadlineGrace.Seconds() {
		t.Errorf("%d spans acknowledged, %d failed in %.2fs", rep.Spans, rep.FailedSpans, rep.Seconds)
	}
}

// TestRetriesStopAtDuration checks that a retry the target asks for later
// than the run's end is not waited for.
func TestRetriesStopAtDuration(t *testing.T) {
	_, target := serveOTLPHTTP(t, func(e *httpExport) {
		e.w.Header().Set("Retry-After", "3600")
		e.fail(http.StatusTooManyRequests, "slow down")
	})
	start := time.Now()
	_, err := Run(context.Background(), Options{Target: target, Protocol: ProtocolHTTPProtobuf, Duration: time.Second,
		Batch: 100, PoolSpans: 1000})
	if err == nil || !strings.Contains(err.Error(), "no span was acknowledged") || !strings.Contains(err.Error(), "429") {
		t.Errorf("got %v", err)
	}
	if d := time.Since(start); d > time.Second+deadlineGrace {
		t.Errorf("a 1s run took %s", d)
	}
}

// TestStallGivesUp checks that a run gives up once every export has failed
// for StallTimeout, with the last error.
func TestStallGivesUp(t *testing.T) {
	_, target := serveOTLPHTTP(t, func(e *httpExport) {
		e.fail(http.StatusServiceUnavailable, "store closing")
	})
	_, err := Run(context.Background(), Options{Target: target, Protocol: ProtocolHTTPJSON, StallTimeout: time.Second,
		Batch: 100, PoolSpans: 1000})
	// On a machine too busy to get the answer within an attempt's timeout
	// (the stall timeout), the last failure is that timeout.
	const gaveUp = "gave up: no export acknowledged for 1s, each failing; the last: "
	if err == nil || !strings.HasPrefix(err.Error(), gaveUp) ||
		!strings.HasSuffix(err.Error(), "HTTP 503 Service Unavailable: store closing") && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want %sHTTP 503 Service Unavailable: store closing", err, gaveUp)
	}
}
