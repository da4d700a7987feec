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
	large := func(attrs int) *otlpwire.Batch {
		b := &otlpwire.Batch{Attrs: make([]otlpwire.Attribute, attrs)}
		b.Attrs[len(b.Attrs)-1].Key = req
		b.Attrs = b.Attrs[:1]
		return b
	}
	perAttr := batchBytes(&otlpwire.Batch{Attrs: make([]otlpwire.Attribute, 1)})
	n := int(smallBatch/perAttr) + 1 // just over a small batch
	var kept []*otlpwire.Batch
	for range maxLargeBatches + 2 {
		b := large(n)
		kept = append(kept, b)
		p.put(b)
	}
	p.put(large(int(maxPooledBatch/perAttr) + 1)) // too large to keep
	if got := len(p.large); got != maxLargeBatches {
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
		if all := b.Attrs[:cap(b.Attrs)]; all[len(all)-1].Key != nil {
			t.Fatal("a kept batch still points into its last request")
		}
	}
}
