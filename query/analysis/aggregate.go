package analysis

import (
	"cmp"
	"slices"
)

// OperationStats sums up an operation's self time on the critical paths of
// many traces.
type OperationStats struct {
	Service, Operation string
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
// time first.
func AggregatePaths(paths []Path) []OperationStats {
	type op struct{ service, name string }
	selfs := map[op][]uint64{}
	var total uint64
	for _, p := range paths {
		total += p.End - p.Start
		for _, o := range p.Operations {
			k := op{o.Service, o.Operation}
			selfs[k] = append(selfs[k], o.Self)
		}
	}
	stats := make([]OperationStats, 0, len(selfs))
	for k, s := range selfs {
		var sum uint64
		for _, d := range s {
			sum += d
		}
		// The paths the operation is not on count as zeros.
		all := append(make([]uint64, len(paths)-len(s), len(paths)), s...)
		slices.Sort(all)
		st := OperationStats{Service: k.service, Operation: k.name, Traces: len(s),
			Mean: float64(sum) / float64(len(paths)), P50: float64(quantile(all, 0.5)), P95: float64(quantile(all, 0.95))}
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
