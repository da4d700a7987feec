package analysis

import (
	"fmt"
	"testing"
)

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

// TestAggregatePathsShapesNames sums a service's span names that differ
// only in their literals, ShapeAt or more of one shape, as one operation:
// 40 literal queries of 2 ms each, one a path, outweigh an operation of
// 20 ms, each alone does not. Fewer names of a shape, and names of
// another service, stay apart.
func TestAggregatePathsShapesNames(t *testing.T) {
	const ms = 1_000_000
	var paths []Path
	for i := range 40 {
		p := Path{End: 100 * ms, Operations: []OperationTime{
			{Service: "api", Operation: "GET /orders", Self: 20 * ms},
			{Service: "db", Operation: fmt.Sprintf("SELECT * FROM orders WHERE id = %d", 1000+i), Self: 2 * ms},
			{Service: "db", Operation: fmt.Sprintf("SELECT * FROM items WHERE order = %d", 5000+i), Self: 1 * ms},
			{Service: "api", Operation: fmt.Sprintf("step-%d", i%3), Self: 10 * ms},
			{Service: "cache", Operation: fmt.Sprintf("GET key-%d", i%9), Self: 1 * ms},
		}}
		if i%2 == 0 { // a second query of the shape on half the paths
			p.Operations = append(p.Operations, OperationTime{Service: "db", Operation: fmt.Sprintf("SELECT * FROM orders WHERE id = %d", 9000+i), Self: 2 * ms})
		}
		p.Operations = append(p.Operations, OperationTime{Service: "api", Operation: "rest", Self: p.End - 20*ms - 3*ms - 10*ms - 1*ms - 2*ms*uint64(1-i%2)})
		paths = append(paths, p)
	}
	stats := AggregatePaths(paths)
	byName := map[string]OperationStats{}
	var mean float64
	for _, s := range stats {
		byName[s.Service+": "+s.Operation] = s
		mean += s.Mean
	}
	if mean != 100*ms {
		t.Errorf("means sum to %v, want the paths' 100 ms", mean)
	}
	orders := byName["db: SELECT * FROM orders WHERE id = ?"]
	if orders.Names != 60 || orders.Traces != 40 || orders.Mean != 3*ms || orders.P50 != 2*ms || orders.P95 != 4*ms {
		t.Errorf("orders query %+v, want 60 names on 40 paths, mean 3 ms, p50 2, p95 4", orders)
	}
	if items := byName["db: SELECT * FROM items WHERE order = ?"]; items.Names != 40 || items.Mean != 1*ms {
		t.Errorf("items query %+v, want 40 names, mean 1 ms", items)
	}
	for _, name := range []string{"api: step-0", "cache: GET key-0"} {
		if s, ok := byName[name]; !ok || s.Names != 0 {
			t.Errorf("%s: %+v, %v; want it apart", name, s, ok)
		}
	}
	if len(stats) != 5+2+9 { // api's, db's two shapes, cache's
		t.Errorf("%d operations, want 16", len(stats))
	}
}
