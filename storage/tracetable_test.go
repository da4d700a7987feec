package storage

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// randomTraceIDs returns n distinct trace IDs: random ones, and some of the
// shapes clients send that a poor hash would cluster (only the low half
// set, or only a counter).
func randomTraceIDs(rng *rand.Rand, n int) []TraceID {
	seen := map[TraceID]bool{}
	var ids []TraceID
	for len(ids) < n {
		var id TraceID
		switch rng.IntN(3) {
		case 0:
			binary.LittleEndian.PutUint64(id[:8], rng.Uint64())
			binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
		case 1:
			binary.BigEndian.PutUint64(id[8:], rng.Uint64())
		case 2:
			binary.BigEndian.PutUint64(id[8:], uint64(len(ids)))
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

func TestTraceTableAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 20000} {
		ids := randomTraceIDs(rng, 2*n)
		held, absent := ids[:n], ids[n:]
		var tt traceTable
		model := map[TraceID]*traceState{}
		for i, id := range held {
			st := &traceState{id: id}
			tt.put(st)
			model[id] = st
			// A newer state of a trace replaces the old one.
			if i%3 == 0 {
				st = &traceState{id: id}
				tt.put(st)
				model[id] = st
			}
			// Everything added so far stays findable as the table grows.
			if i%997 == 0 {
				for id, want := range model {
					if got := tt.get(id); got != want {
						t.Fatalf("n=%d: after %d adds, get(%x) = %p, want %p", n, i+1, id, got, want)
					}
				}
			}
		}
		for id, want := range model {
			if got := tt.get(id); got != want {
				t.Fatalf("n=%d: get(%x) = %p, want %p", n, id, got, want)
			}
		}
		for _, id := range absent {
			if got := tt.get(id); got != nil {
				t.Fatalf("n=%d: get(%x) of an absent ID = %p", n, id, got)
			}
		}
	}
}

// Readers find every trace published before they look, while the writer
// publishes new traces and newer states of old ones and the table grows
// under them; run with -race.
func TestTraceTableReadsWhileWriterAdds(t *testing.T) {
	ids := randomTraceIDs(rand.New(rand.NewPCG(3, 4)), 50000)
	var (
		tt    traceTable
		added atomic.Int64
		wg    sync.WaitGroup
	)
	for r := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 5))
			for added.Load() < int64(len(ids)) {
				n := added.Load()
				if n == 0 {
					continue
				}
				id := ids[rng.Int64N(n)]
				if got := tt.get(id); got == nil || got.id != id {
					t.Errorf("get(%x) = %v after it was added", id, got)
					return
				}
			}
		})
	}
	for i, id := range ids {
		tt.put(&traceState{id: id})
		added.Store(int64(i + 1))
		// Republish an earlier trace, as a later insert would.
		tt.put(&traceState{id: ids[i/2]})
	}
	wg.Wait()
}

func BenchmarkTraceTable(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		ids := randomTraceIDs(rand.New(rand.NewPCG(6, 7)), n)
		var tt traceTable
		for _, id := range ids {
			tt.put(&traceState{id: id})
		}
		b.Run("op=get/traces="+itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				if tt.get(ids[i%n]) == nil {
					b.Fatal("missing")
				}
			}
		})
	}
}
