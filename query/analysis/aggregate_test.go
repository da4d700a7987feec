package analysis

import "testing"

// TestAggregatePaths sums up three paths by hand.
func TestAggregatePaths(t *testing.T) {
	path := func(ms ...uint64) Path {
		p := Path{End: 0}
		for i, d := range ms {
			if d > 0 {
				p.Operations = append(p.Operations, OperationTime{Service: "s", Operation: string(rune('a' + i)), Self: d})
			}
			p.End += d
		}
		return p
	}
	// a: 10, 20, 30; b: 0, 0, 60.
	stats := AggregatePaths([]Path{path(10, 0), path(20, 0), path(30, 60)})
	want := []OperationStats{
		{Service: "s", Operation: "a", Traces: 3, Mean: 20, P50: 20, P95: 30, Share: 60.0 / 120},
		{Service: "s", Operation: "b", Traces: 1, Mean: 20, P50: 0, P95: 60, Share: 60.0 / 120},
	}
	if len(stats) != len(want) {
		t.Fatalf("stats %+v", stats)
	}
	for i := range want {
		if stats[i] != want[i] {
			t.Errorf("stats %d: %+v, want %+v", i, stats[i], want[i])
		}
	}
}

// TestCriticalPaths aggregates the paths from web's checkout in the
// checkout traces of the diagnosis tests: SELECT takes 10 ms in two of
// them, 110 in the third, and pay 20 in each.
func TestCriticalPaths(t *testing.T) {
	traces := []*Trace{checkout(1, 10, 5, 50, "2.8.0", "pod-0", 1), checkout(2, 10, 5, 50, "2.8.0", "pod-1", 2), checkout(3, 110, 5, 50, "2.9.0", "pod-2", 3)}
	other := newTrace(4) // no checkout
	other.span(1, 0, "web", "GET /", server, 0, 10, nil)
	paths := CriticalPaths(append(traces, other.t), "web", "POST /checkout", nil)
	if len(paths) != 3 {
		t.Fatalf("%d paths, want 3", len(paths))
	}
	stats := AggregatePaths(paths)
	if s := stats[0]; s.Operation != "SELECT stock" || s.Traces != 3 || s.Mean != 130e6/3 || s.P50 != 10e6 || s.P95 != 110e6 {
		t.Errorf("first %+v, want SELECT stock: mean 43.3 ms, p50 10, p95 110", s)
	}
}
