package storage

import (
	"math/rand/v2"
	"slices"
	"testing"

	"cairn/index"
)

// TestHasAnyAgainstScan checks hasAny, with its filter of term bits, against
// a scan of every term of a trace, for traces of one to many runs and
// queries of one term and of many, half of them holding a term the trace
// has.
func TestHasAnyAgainstScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	// Terms that share low or high bits, as attribute buckets and duration
	// shards do, beside random ones.
	term := func() index.Term {
		switch rng.IntN(3) {
		case 0:
			return index.Term(rng.Uint64N(64) << 56)
		case 1:
			return index.Term(rng.Uint64N(64))
		}
		return index.Term(rng.Uint64())
	}
	for range 2000 {
		var tr liveTrace
		var all []index.Term
		for range 1 + rng.IntN(4) {
			run := make([]index.Term, 1+rng.IntN(40))
			for i := range run {
				run[i] = term()
			}
			slices.Sort(run)
			run = slices.Compact(run)
			tr.addTerms(run)
			all = append(all, run...)
		}
		q := make([]index.Term, 1+rng.IntN(30))
		for i := range q {
			q[i] = term()
		}
		if rng.IntN(2) == 0 {
			q[rng.IntN(len(q))] = all[rng.IntN(len(all))]
		}
		slices.Sort(q)
		q = slices.Compact(q)
		want := slices.ContainsFunc(q, func(x index.Term) bool { return slices.Contains(all, x) })
		if got := tr.hasAny(q); got != want {
			t.Fatalf("hasAny(%x) = %v for terms %x", q, got, all)
		}
	}
}
