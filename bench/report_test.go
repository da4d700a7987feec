package bench

import (
	"math"
	"testing"
	"time"
)

// TestTimeline checks that a timeline keeps every acknowledged span, in
// 100 ms intervals for a short run and in at most timelinePoints round ones
// for a long run.
func TestTimeline(t *testing.T) {
	for _, c := range []struct {
		elapsed time.Duration
		step    time.Duration
		points  int
	}{
		{time.Second, 100 * time.Millisecond, 10},
		{1030 * time.Millisecond, 100 * time.Millisecond, 10}, // the last interval is 130 ms
		{1070 * time.Millisecond, 100 * time.Millisecond, 11}, // the last interval is 70 ms
		{40 * time.Millisecond, 100 * time.Millisecond, 1},
		{time.Hour, 15 * time.Second, 240},
	} {
		var acks []ack
		for at := time.Duration(0); at < c.elapsed; at += c.elapsed / 1000 {
			acks = append(acks, ack{at: at, latency: time.Duration(len(acks)%10+1) * time.Millisecond, spans: 100})
		}
		tl := newTimeline(acks, c.elapsed)
		if tl.IntervalSec != c.step.Seconds() || len(tl.SpansPerSec) != c.points || len(tl.ExportP99Ms) != c.points {
			t.Errorf("%s: %d intervals of %gs, want %d of %s", c.elapsed, len(tl.SpansPerSec), tl.IntervalSec, c.points, c.step)
			continue
		}
		total := 0.0
		for i, r := range tl.SpansPerSec {
			width := c.step.Seconds()
			if i == len(tl.SpansPerSec)-1 {
				width = c.elapsed.Seconds() - float64(i)*width
			}
			total += r * width
		}
		if math.Abs(total-float64(100*len(acks))) > 1e-6*total {
			t.Errorf("%s: the timeline holds %.0f spans, the run acknowledged %d", c.elapsed, total, 100*len(acks))
		}
		if tl.ExportP50Ms[0] <= 0 || tl.ExportP99Ms[0] < tl.ExportP50Ms[0] {
			t.Errorf("%s: export latency p50 %g, p99 %g", c.elapsed, tl.ExportP50Ms[0], tl.ExportP99Ms[0])
		}
	}
}
