package analysis

import (
	"cmp"
	"slices"
)

// OperationStats sums up an operation's self time on the critical paths of
// many traces.
type OperationStats struct {
	Service, Operation string
	// Names is how many span names the operation stands for, if it is
	// many names of one shape, named by the shape with its literals as ?
	// (see AggregatePaths); 0 if it is one name.
	Names int
	// Traces is how many of the paths the operation is on.
	Traces int
	// Mean, P50 and P95 (nearest rank) are of its self time per trace, in
	// nanoseconds, over every path, those it is not on counting as 0: the mean of each
	// operation sums to the mean duration of the traces.
	Mean, P50, P95 float64
	// Share is its part of the time of all the paths together.
	Share float64
}

// AggregatePaths sums up the operations of many critical paths, the most
// time first. A service's span names that differ only in their literals,
// at least ShapeAt of one shape, are one operation named by the shape (see
// NameShape): SQL named with its values, or paths with IDs, would
// otherwise spread an operation's time over thousands of rows, each too
// small to notice.
func AggregatePaths(paths []Path) []OperationStats {
	type key struct{ service, name string }
	var shapes NameShapes
	for _, p := range paths {
		for _, o := range p.Operations {
			shapes.Add(o.Service, o.Operation)
		}
	}
	type times struct {
		selfs []uint64 // by path it is on
		last  int      // the path of the last of selfs
	}
	ops := map[key]*times{}
	var total uint64
	for i, p := range paths {
		total += p.End - p.Start
		for _, o := range p.Operations {
			k := key{o.Service, o.Operation}
			if s := shapes.Shape(o.Service, o.Operation); s != "" {
				k.name = s
			}
			t := ops[k]
			switch {
			case t == nil:
				ops[k] = &times{selfs: []uint64{o.Self}, last: i}
			case t.last == i: // another name of its shape on this path
				t.selfs[len(t.selfs)-1] += o.Self
			default:
				t.selfs, t.last = append(t.selfs, o.Self), i
			}
		}
	}
	stats := make([]OperationStats, 0, len(ops))
	for k, t := range ops {
		var sum uint64
		for _, d := range t.selfs {
			sum += d
		}
		// The paths the operation is not on count as zeros.
		all := append(make([]uint64, len(paths)-len(t.selfs), len(paths)), t.selfs...)
		slices.Sort(all)
		st := OperationStats{Service: k.service, Operation: k.name, Traces: len(t.selfs),
			Mean: float64(sum) / float64(len(paths)), P50: float64(quantile(all, 0.5)), P95: float64(quantile(all, 0.95))}
		st.Names = shapes.Names(k.service, k.name)
		if total > 0 {
			st.Share = float64(sum) / float64(total)
		}
		stats = append(stats, st)
	}
	slices.SortFunc(stats, func(a, b OperationStats) int {
		return cmp.Or(cmp.Compare(b.Mean, a.Mean), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Operation, b.Operation))
	})
	return stats
}
