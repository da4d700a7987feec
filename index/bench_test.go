package index

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkSegment measures building a segment's search index as a cut does,
// and looking terms up in it as searches do: rows of ~29-span traces whose
// terms mix dense ones (services, operations), mid-density ones
// (low-cardinality attribute values) and near-unique ones (request IDs).
func BenchmarkSegment(b *testing.B) {
	for _, rows := range []int{1000, 7000} {
		rng := rand.New(rand.NewPCG(1, 2))
		var sb SegmentBuilder
		var dense, rare Term
		for i := range rows {
			var terms []Term
			for k := range 40 {
				terms = append(terms, Term(rng.Uint64N(64)+uint64(k)<<56)) // dense
			}
			for k := range 60 {
				terms = append(terms, Term(rng.Uint64N(2000)+uint64(k+40)<<56)) // mid
			}
			for range 20 {
				terms = append(terms, Term(rng.Uint64())) // near-unique
			}
			dense, rare = terms[0], terms[len(terms)-1]
			sb.Add(Row{TraceID: [16]byte{byte(i), byte(i >> 8)}, MinStart: uint64(i), MaxStart: uint64(i), MaxEnd: uint64(i + 1), Spans: 29}, terms)
		}
		b.Run(fmt.Sprintf("rows=%d/op=build", rows), func(b *testing.B) {
			b.ReportAllocs()
			var s Scratch
			for b.Loop() {
				sb.Finish(&s)
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
		_, shards := sb.Finish(nil)
		for _, c := range []struct {
			name string
			t    Term
		}{{"dense", dense}, {"rare", rare}} {
			b.Run(fmt.Sprintf("rows=%d/op=lookup-%s", rows, c.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if got, err := Postings(shards[Shard(c.t)], c.t, rows); err != nil || len(got) == 0 {
						b.Fatalf("postings: %d rows, %v", len(got), err)
					}
				}
			})
		}
	}
}
