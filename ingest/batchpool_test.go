package ingest

import (
	"testing"

	"cairn/internal/otlpwire"
)

// TestBatchPoolBoundsLargeBatches checks that the pool keeps at most
// maxLargeBatches large batches, without the pointers into the requests
// they last held, hands them to large requests only, and keeps none too
// large to be worth it.
func TestBatchPoolBoundsLargeBatches(t *testing.T) {
	p := newBatchPool()
	req := []byte("a request whose bytes a parsed batch points into")
	large := func(spans int) *otlpwire.Batch {
		b := &otlpwire.Batch{Spans: make([]otlpwire.Span, spans)}
		b.Spans[len(b.Spans)-1].Raw = req
		b.Spans = b.Spans[:1]
		return b
	}
	perSpan := batchBytes(&otlpwire.Batch{Spans: make([]otlpwire.Span, 1)})
	n := int(smallBatch/perSpan) + 1 // just over a small batch
	var kept []*otlpwire.Batch
	for range maxLargeBatches + 2 {
		b := large(n)
		kept = append(kept, b)
		p.put(b)
	}
	p.put(large(int(maxPooledBatch/perSpan) + 1)) // too large to keep
	if got := p.large.Len(); got != maxLargeBatches {
		t.Fatalf("%d large batches kept, want %d", got, maxLargeBatches)
	}
	if b := p.get(100); b == kept[0] || b == kept[1] {
		t.Fatal("a small request got a large batch")
	}
	for range maxLargeBatches {
		b := p.get(smallBatch)
		if b != kept[0] && b != kept[1] {
			t.Fatal("a large request did not get a kept large batch")
		}
		if all := b.Spans[:cap(b.Spans)]; all[len(all)-1].Raw != nil {
			t.Fatal("a kept batch still points into its last request")
		}
	}
}
