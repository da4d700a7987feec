package storage

import (
	"bytes"
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"

	"cairn/storage/internal/codec"
)

// TestOrderSpansAgainstSort checks orderSpans against a comparison sort,
// for groups below and above the size where it sorts by start with a radix
// sort, with starts that share their high bytes as a trace's do, and ties
// on start, and on start and ID, that the bytes decide.
func TestOrderSpansAgainstSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	for _, n := range []int{0, 1, 2, 255, 256, 257, 3000, 20_000} {
		for _, spread := range []uint64{1, 4, 1e9} {
			spans := make([]orderedSpan, n)
			for i := range spans {
				raw := []byte{byte(rng.IntN(3)), byte(rng.IntN(256))}
				spans[i] = orderedSpan{codec.SpanKey{Start: 1_700_000_000_000_000_000 + rng.Uint64N(spread), ID: rng.Uint64N(4)}, raw}
			}
			want := slices.Clone(spans)
			slices.SortFunc(want, func(x, y orderedSpan) int {
				return cmp.Or(cmp.Compare(x.Start, y.Start), cmp.Compare(x.ID, y.ID), bytes.Compare(x.raw, y.raw))
			})
			got := orderSpans(spans)
			for i := range got {
				if got[i].SpanKey != want[i].SpanKey || !bytes.Equal(got[i].raw, want[i].raw) {
					t.Fatalf("%d spans over %d ns: span %d is %+v %x, want %+v %x", n, spread, i, got[i].SpanKey, got[i].raw, want[i].SpanKey, want[i].raw)
				}
			}
		}
	}
}
