package query

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/storage"
)

var update = flag.Bool("update", false, "rewrite golden files")

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bigTrace builds a trace of n spans over 4 resources with 2 scopes each (one
// scope absent), span sizes varying from ~100 bytes to ~2 KiB.
func bigTrace(t testing.TB, n int) *storage.Trace {
	tr := &storage.Trace{ID: storage.TraceID{0xab, 15: 1}, Spans: n}
	per := n / 8
	for g := range 8 {
		res := mustMarshal(t, &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprintf("svc-%d", g/2)}}},
		}})
		grp := storage.Group{
			ResourceID:        [16]byte{byte(g / 2)},
			Resource:          res,
			ResourceSchemaURL: []byte("https://opentelemetry.io/schemas/1.26.0"),
			ScopeID:           [16]byte{byte(g)},
		}
		if g%2 == 0 {
			grp.Scope = mustMarshal(t, &commonpb.InstrumentationScope{Name: "lib", Version: "1"})
			grp.ScopeSchemaURL = []byte("https://scope")
		}
		for i := range per {
			k := g*per + i
			sid := make([]byte, 8)
			binary.BigEndian.PutUint64(sid, uint64(k+1))
			grp.Spans = append(grp.Spans, mustMarshal(t, &tracepb.Span{
				TraceId: tr.ID[:], SpanId: sid, Name: "op",
				StartTimeUnixNano: uint64(k), EndTimeUnixNano: uint64(k + 10),
				Attributes: []*commonpb.KeyValue{{Key: "pad", Value: &commonpb.AnyValue{
					Value: &commonpb.AnyValue_StringValue{StringValue: strings.Repeat("x", 64+(k*7919)%1900)}}}},
			}))
		}
		tr.Groups = append(tr.Groups, grp)
	}
	return tr
}

// describe checks each chunk and returns a line about it for the golden
// file.
// exactBuffers allocates exactly the bytes asked for, so that a chunk's
// capacity tells what the chunker counted.
type exactBuffers struct{}

func (exactBuffers) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (exactBuffers) Put(*[]byte) {}

func describe(t *testing.T, limit int, chunks [][]byte) (string, []uint64) {
	var out strings.Builder
	var order []uint64
	for i, c := range chunks {
		var td tracepb.TracesData
		if err := proto.Unmarshal(c, &td); err != nil {
			t.Fatalf("chunk %d does not decode: %v", i, err)
		}
		if len(td.ResourceSpans) == 0 {
			t.Fatalf("chunk %d is empty", i)
		}
		if got := proto.Size(&td); got != len(c) {
			t.Fatalf("chunk %d: %d bytes, re-encoded %d: sizes are miscounted", i, len(c), got)
		}
		if len(c) != cap(c) { // the chunker allocates what it counted
			t.Fatalf("chunk %d: %d bytes, counted %d as it was filled", i, len(c), cap(c))
		}
		scopes, spans := 0, 0
		for _, rs := range td.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				scopes++
				for _, s := range ss.Spans {
					spans++
					order = append(order, binary.BigEndian.Uint64(s.SpanId))
				}
			}
		}
		fmt.Fprintf(&out, "chunk %d: %d bytes, %d resource spans, %d scope spans, %d spans\n", i, len(c), len(td.ResourceSpans), scopes, spans)
		if len(c) > limit && spans > 1 {
			t.Fatalf("chunk %d is %d bytes, over the %d-byte limit", i, len(c), limit)
		}
	}
	return out.String(), order
}

func TestChunkGolden(t *testing.T) {
	tr := bigTrace(t, 20000)
	var golden strings.Builder
	for _, limit := range []int{4 << 20, 256 << 10} {
		var chunks [][]byte
		c := chunker{limit: limit, buffers: exactBuffers{}, emit: func(b []byte) error { chunks = append(chunks, b); return nil }}
		if err := c.trace(tr); err != nil {
			t.Fatal(err)
		}
		desc, order := describe(t, limit, chunks)
		if len(order) != 20000 {
			t.Fatalf("limit %d: %d spans in chunks, want 20000", limit, len(order))
		}
		for i, id := range order {
			if id != uint64(i+1) {
				t.Fatalf("limit %d: span %d is %d: order not kept", limit, i, id)
			}
		}
		fmt.Fprintf(&golden, "limit %d bytes: %d chunks\n%s", limit, len(chunks), desc)
	}
	path := filepath.Join("testdata", "chunks-20000.golden")
	if *update {
		if err := os.WriteFile(path, []byte(golden.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, []byte(golden.String())) {
		t.Fatalf("chunks differ from %s (run with -update to accept):\n%s", path, golden.String())
	}
}

// TestChunkRandom chunks random traces, whose groups often share a
// resource, at small limits, where the lengths the chunker keeps count of
// cross their one- and two-byte varint bounds as spans are added.
func TestChunkRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		tr := &storage.Trace{ID: storage.TraceID{0xcd, 15: byte(round)}}
		k := 0
		for range 1 + rng.IntN(6) {
			res := byte(rng.IntN(3))
			grp := storage.Group{ResourceID: [16]byte{res}, ScopeID: [16]byte{byte(rng.IntN(4))},
				Resource: mustMarshal(t, &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "r", Value: &commonpb.AnyValue{
					Value: &commonpb.AnyValue_StringValue{StringValue: strings.Repeat("r", int(res)*40)}}}}})}
			if rng.IntN(2) == 0 {
				grp.Scope = mustMarshal(t, &commonpb.InstrumentationScope{Name: strings.Repeat("s", rng.IntN(60))})
			}
			for range 1 + rng.IntN(30) {
				k++
				sid := make([]byte, 8)
				binary.BigEndian.PutUint64(sid, uint64(k))
				grp.Spans = append(grp.Spans, mustMarshal(t, &tracepb.Span{TraceId: tr.ID[:], SpanId: sid, Name: strings.Repeat("n", rng.IntN(400))}))
			}
			tr.Groups = append(tr.Groups, grp)
		}
		tr.Spans = k
		limit := 150 + rng.IntN(5000)
		var chunks [][]byte
		c := chunker{limit: limit, buffers: exactBuffers{}, emit: func(b []byte) error { chunks = append(chunks, b); return nil }}
		if err := c.trace(tr); err != nil {
			t.Fatal(err)
		}
		_, order := describe(t, limit, chunks)
		if len(order) != k {
			t.Fatalf("round %d: %d spans in chunks, want %d", round, len(order), k)
		}
		for i, id := range order {
			if id != uint64(i+1) {
				t.Fatalf("round %d: span %d is %d: order not kept", round, i, id)
			}
		}
	}
}

func TestChunkSpanLargerThanLimit(t *testing.T) {
	tr := bigTrace(t, 16)
	var chunks [][]byte
	c := chunker{limit: 200, buffers: exactBuffers{}, emit: func(b []byte) error { chunks = append(chunks, b); return nil }}
	if err := c.trace(tr); err != nil {
		t.Fatal(err)
	}
	// At 200 bytes not even a span's IDs and name fit beside its resource
	// and scope: each span is sent whole, in a chunk of its own, none empty.
	if len(chunks) != 16 {
		t.Fatalf("%d chunks, want one per span", len(chunks))
	}
	_, order := describe(t, 200, chunks)
	if len(order) != 16 {
		t.Fatalf("%d spans", len(order))
	}
}

func TestChunkCutsSpansLargerThanLimit(t *testing.T) {
	tr := bigTrace(t, 64)
	var chunks [][]byte
	c := chunker{limit: 1000, buffers: exactBuffers{}, emit: func(b []byte) error { chunks = append(chunks, b); return nil }}
	if err := c.trace(tr); err != nil {
		t.Fatal(err)
	}
	for i, b := range chunks {
		if len(b) > 1000 {
			t.Fatalf("chunk %d: %d bytes, over the limit", i, len(b))
		}
	}
	if _, order := describe(t, 1000, chunks); len(order) != 64 {
		t.Fatalf("%d spans, want 64", len(order))
	}
}

// TestChunkPoolKeepsBuffersBySize checks that a chunk's buffer is sized
// to the chunk's power of two, not gRPC's next tier, and that one given
// back serves the next chunk of its size, not one of another size, and
// that the largest are not kept.
func TestChunkPoolKeepsBuffersBySize(t *testing.T) {
	p := newChunkPool(1)
	small := p.Get(1000) // gRPC's 4 KiB tier, which takes it back
	p.Put(small)
	if p.classes[0].Len() != 0 {
		t.Fatalf("a 1,000-byte chunk's buffer was kept apart from gRPC's pool")
	}
	if b := p.Get(60_000); len(*b) != 60_000 || cap(*b) != 64<<10 {
		t.Fatalf("Get(60,000) gave %d bytes of %d, want 60,000 of 64 KiB", len(*b), cap(*b))
	}
	b := p.Get(3 << 20)
	if len(*b) != 3<<20 {
		t.Fatalf("Get(3 MiB) gave %d bytes", len(*b))
	}
	first := &(*b)[0]
	p.Put(b)
	if c := p.Get(2<<20 + 1); &(*c)[0] != first || len(*c) != 2<<20+1 {
		t.Fatalf("a chunk of just over 2 MiB did not reuse the 3 MiB one's buffer")
	} else {
		p.Put(c)
	}
	if c := p.Get(1 << 20); &(*c)[0] == first || len(*c) != 1<<20 {
		t.Fatalf("a 1 MiB chunk was given the 4 MiB buffer")
	}
	huge := p.Get(maxKeptChunk + 1)
	p.Put(huge)
	if c := p.Get(maxKeptChunk + 1); &(*c)[0] == &(*huge)[0] {
		t.Fatalf("a buffer past maxKeptChunk was kept")
	}
}
