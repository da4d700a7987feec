package storage

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
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
			st := &traceState{id: id, maxStart: rng.Uint64N(1 << 40)}
			tt.put(st)
			model[id] = st
			// A newer state of a trace replaces the old one, keeping its
			// place in arrival order.
			if i%3 == 0 {
				st = &traceState{id: id, maxStart: rng.Uint64N(1 << 40)}
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
		// The arrival chunks list every trace once, in the order first
		// published, each chunk bounding its traces' latest maxStart.
		var order []TraceID
		for _, ch := range tt.appendArrivals(nil) {
			for i := range ch.states {
				s := ch.states[i].Load()
				if s != model[s.id] {
					t.Fatalf("n=%d: arrivals hold a state of %x that is not its latest", n, s.id)
				}
				if s.maxStart > ch.bound {
					t.Fatalf("n=%d: %x has maxStart %d past its chunk's bound %d", n, s.id, s.maxStart, ch.bound)
				}
				order = append(order, s.id)
			}
		}
		if !slices.Equal(order, held) {
			t.Fatalf("n=%d: arrival order lists %d traces, not the %d in the order put", n, len(order), len(held))
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
				// Every trace the arrival chunks list has a state, which get finds.
				if r == 0 {
					for _, ch := range tt.appendArrivals(nil) {
						for i := range ch.states {
							if s := ch.states[i].Load(); s == nil || tt.get(s.id) == nil {
								t.Errorf("arrivals list a trace that get does not find: %v", s)
								return
							}
						}
					}
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
