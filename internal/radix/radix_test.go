package radix

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

type record struct {
	key uint64
	seq int32 // position before sorting, to check stability
}

// TestSortAgainstStableSort compares Sort with a stable comparison sort on
// keys that share high bytes, low bytes, or all of them, as a trace's span
// start times, search terms of one shard and pairing keys do.
func TestSortAgainstStableSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := []struct {
		name string
		next func() uint64
	}{
		{"random", rng.Uint64},
		{"one trace", func() uint64 { return 1_700_000_000_000_000_000 + rng.Uint64N(5e9) }},
		{"one shard", func() uint64 { return 7<<56 | rng.Uint64N(1<<20) }},
		{"few values", func() uint64 { return rng.Uint64N(4) << 40 }},
		{"all equal", func() uint64 { return 42 }},
	}
	for _, shape := range shapes {
		var scratch []record
		for _, n := range []int{0, 1, 2, 17, 1000, 20_000} {
			s := make([]record, n)
			for i := range s {
				s[i] = record{shape.next(), int32(i)}
			}
			want := slices.Clone(s)
			slices.SortStableFunc(want, func(a, b record) int { return cmp.Compare(a.key, b.key) })
			var got []record
			got, scratch = Sort(s, scratch)
			if !slices.Equal(got, want) {
				t.Fatalf("%s, %d records: not sorted stably", shape.name, n)
			}
			if len(scratch) != n {
				t.Fatalf("%s, %d records: spare of length %d", shape.name, n, len(scratch))
			}
		}
	}
}

// TestSortKeys checks that Sort takes the key from a nested first field and
// from a bare uint64.
func TestSortKeys(t *testing.T) {
	type outer struct {
		inner record
		name  string
	}
	got, _ := Sort([]outer{{record{3, 0}, "c"}, {record{1, 1}, "a"}, {record{2, 2}, "b"}}, nil)
	if got[0].name != "a" || got[1].name != "b" || got[2].name != "c" {
		t.Errorf("nested keys: got %v", got)
	}
	if got, _ := Sort([]uint64{3, 1, 2}, nil); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("bare keys: got %v", got)
	}
}

func TestSortRefusesUnkeyedTypes(t *testing.T) {
	type keyLast struct {
		seq int32
		key uint64
	}
	type nested struct {
		keyLast
		key uint64
	}
	for name, sort := range map[string]func(){
		"key not first":         func() { Sort([]keyLast{{}}, nil) },
		"key not first, nested": func() { Sort([]nested{{}}, nil) },
		"not a uint64":          func() { Sort([]int64{1}, nil) },
		"no fields":             func() { Sort([]struct{}{{}}, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Sort did not panic", name)
				}
			}()
			sort()
		}()
	}
}

func BenchmarkSort(b *testing.B) {
	// A trace's span starts share their high bytes; random keys share none.
	keys := map[string]func(*rand.Rand) uint64{
		"random": (*rand.Rand).Uint64,
		"trace":  func(rng *rand.Rand) uint64 { return 1_700_000_000_000_000_000 + rng.Uint64N(5e9) },
	}
	for _, shape := range []string{"random", "trace"} {
		for _, n := range []int{256, 10_000, 1_000_000} {
			b.Run(fmt.Sprintf("keys=%s/n=%d", shape, n), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				orig := make([]record, n)
				for i := range orig {
					orig[i] = record{keys[shape](rng), int32(i)}
				}
				s, scratch := make([]record, n), make([]record, n)
				b.ReportAllocs()
				for b.Loop() {
					copy(s, orig)
					s, scratch = Sort(s, scratch)
				}
			})
		}
	}
}
