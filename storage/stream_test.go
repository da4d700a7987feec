package storage

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/storage/internal/codec"
)

// TestTracePiecesAgainstTrace reads traces split over the live buffer and
// many blocks, some of whose requests were written twice (retries), and
// some again under other resources (copies of spans that are not retries),
// piece by piece with random piece sizes, and checks that the pieces hold exactly the
// spans of Trace, each once, and that a piece size larger than the trace gives
// Trace's answer itself. The traces Trace returns are kept to the end, and
// must not change as the reads after them reuse the read path's scratch and
// TracePieces' arenas.
func TestTracePiecesAgainstTrace(t *testing.T) {
	db, err := Open(t.TempDir(), &Options{BufferBytes: 256 << 10, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 100, LargeTraceEvery: 40})
	ids := map[TraceID]bool{}
	var retries [][]byte
	for i := range 30 {
		req := gen.Next()
		write(t, db, req.Bytes)
		if i%5 == 0 {
			retries = append(retries, slices.Clone(req.Bytes))
		}
		if i%5 == 2 {
			retries = append(retries, underOtherResources(t, req.Bytes))
		}
		for _, id := range traceIDs(t, req.Bytes) {
			ids[id] = true
		}
	}
	for _, req := range retries {
		write(t, db, req)
	}
	db.mu.Lock()
	cut := db.live.block - 1 // the flusher cuts as the test reads
	db.mu.Unlock()
	if cut < 4 {
		t.Fatalf("only %d blocks were cut; the test needs traces split over several", cut)
	}

	r := rand.New(rand.NewPCG(5, 6))
	ctx := context.Background()
	multi, admitted := 0, 0
	kept := map[*Trace]*Trace{} // each trace read, and a copy of it then
	for id := range ids {
		whole, err := db.Trace(ctx, id, TimeRange{})
		if err != nil || whole == nil {
			t.Fatalf("trace %x: %v, %v", id, whole, err)
		}
		kept[whole] = deepCopy(whole)
		want := map[string]int{}
		for _, g := range whole.Groups {
			for _, s := range g.Spans {
				want[string(s)]++
			}
		}
		var pieces []*Trace
		pieceBytes := 1 + r.IntN(20_000)
		admit := func(n int) error {
			if n <= 0 {
				t.Fatalf("fragment of %d bytes admitted", n)
			}
			admitted++
			return nil
		}
		found, err := db.TracePieces(ctx, id, TimeRange{}, pieceBytes, admit, func(p *Trace) error {
			pieces = append(pieces, deepCopy(p)) // p's spans are reused once fn returns
			return nil
		})
		if err != nil || !found {
			t.Fatalf("trace %x in pieces: found %v, %v", id, found, err)
		}
		got := map[string]int{}
		n := 0
		for _, p := range pieces {
			n += p.Spans
			for _, g := range p.Groups {
				for _, s := range g.Spans {
					got[string(s)]++
				}
			}
		}
		if n != whole.Spans || !reflect.DeepEqual(got, want) {
			t.Fatalf("trace %x in pieces of %d bytes: %d spans in %d pieces, want %d each once", id, pieceBytes, n, len(pieces), whole.Spans)
		}
		if len(pieces) > 1 {
			multi++
		}

		pieces = pieces[:0]
		if _, err := db.TracePieces(ctx, id, TimeRange{}, 1<<30, nil, func(p *Trace) error { pieces = append(pieces, deepCopy(p)); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(pieces) != 1 || !reflect.DeepEqual(pieces[0], whole) {
			t.Fatalf("trace %x in one piece differs from Trace", id)
		}
	}
	if multi == 0 || admitted == 0 {
		t.Fatalf("%d traces came in more than one piece, %d fragments were admitted; want some of each", multi, admitted)
	}
	for tr, was := range kept {
		if !reflect.DeepEqual(tr, was) {
			t.Fatalf("trace %x changed after it was read", tr.ID)
		}
	}

	stop := errors.New("stop")
	var unknown TraceID
	found, err := db.TracePieces(ctx, unknown, TimeRange{}, 1, nil, func(*Trace) error { return stop })
	if found || err != nil {
		t.Fatalf("unknown trace: found %v, %v", found, err)
	}
	for id := range ids {
		if _, err := db.TracePieces(ctx, id, TimeRange{}, 1, nil, func(*Trace) error { return stop }); err != stop {
			t.Fatalf("fn's error came back as %v", err)
		}
		if _, err := db.TracePieces(ctx, id, TimeRange{}, 1, func(int) error { return stop }, func(*Trace) error { return nil }); err != stop {
			t.Fatalf("admit's error came back as %v", err)
		}
		break
	}
}

// deepCopy copies a trace and every byte it holds.
func deepCopy(t *Trace) *Trace {
	c := *t
	c.Groups = slices.Clone(t.Groups)
	for i := range c.Groups {
		g := &c.Groups[i]
		g.Resource, g.ResourceSchemaURL = bytes.Clone(g.Resource), bytes.Clone(g.ResourceSchemaURL)
		g.Scope, g.ScopeSchemaURL = bytes.Clone(g.Scope), bytes.Clone(g.ScopeSchemaURL)
		g.Spans = slices.Clone(g.Spans)
		for j, s := range g.Spans {
			g.Spans[j] = bytes.Clone(s)
		}
	}
	return &c
}

// underOtherResources encodes req again with an attribute added to each of
// its resources.
func underOtherResources(t *testing.T, req []byte) []byte {
	t.Helper()
	var r collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(req, &r); err != nil {
		t.Fatal(err)
	}
	for _, rs := range r.ResourceSpans {
		rs.Resource.Attributes = append(rs.Resource.Attributes, &commonpb.KeyValue{
			Key: "copy", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "2"}}})
	}
	b, err := proto.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// traceIDs lists the traces of an encoded request's spans.
func traceIDs(t *testing.T, req []byte) []TraceID {
	t.Helper()
	var r collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(req, &r); err != nil {
		t.Fatal(err)
	}
	var ids []TraceID
	for _, rs := range r.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				ids = append(ids, TraceID(s.TraceId))
			}
		}
	}
	return ids
}

// TestOrderSpansAgainstSort checks orderSpans against a comparison sort,
// for groups below and above the size where it sorts by start with a radix
// sort, with starts that share their high bytes as a trace's do, and ties
// on start, and on start and ID, that the bytes decide. The sort's second
// buffer is carried from one group to the next, as reads keep it.
func TestOrderSpansAgainstSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	var spare []orderedSpan
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
			var got []orderedSpan
			got, spare = orderSpans(spans, spare)
			for i := range got {
				if got[i].SpanKey != want[i].SpanKey || !bytes.Equal(got[i].raw, want[i].raw) {
					t.Fatalf("%d spans over %d ns: span %d is %+v %x, want %+v %x", n, spread, i, got[i].SpanKey, got[i].raw, want[i].SpanKey, want[i].raw)
				}
			}
		}
	}
}

// TestAssemblerScratchKeepsNoSpans assembles groups that the radix sort
// orders, the larger first, and wants the scratch it keeps for later reads
// to point at no span, to its capacity: a smaller group sorted in a larger
// group's buffers leaves the larger's spans past its length.
func TestAssemblerScratchKeepsNoSpans(t *testing.T) {
	sc := &asmScratch{}
	a := assembler{groups: map[groupKey]*asmGroup{}, asmScratch: sc}
	rng := rand.New(rand.NewPCG(1, 2))
	for gi, n := range []int{3000, 1000, 300} {
		g := a.group(dictID{byte(gi)}, dictID{})
		g.resolved = true
		for range n {
			g.spans = append(g.spans, orderedSpan{codec.SpanKey{Start: rng.Uint64N(1e9), ID: rng.Uint64()}, []byte{1}})
		}
	}
	tr, err := a.finish(nil, nil, TraceID{}, 0, nil)
	if err != nil || tr.Spans != 4300 {
		t.Fatalf("finish: %v spans, %v", tr, err)
	}
	a.release()
	for i, l := range append(keptLists(sc), sc.spare) {
		for j, s := range l[:cap(l)] {
			if s.raw != nil {
				t.Fatalf("kept list %d holds a span at %d of %d (length %d)", i, j, cap(l), len(l))
			}
		}
	}
	if len(keptLists(sc)) == 0 || cap(sc.spare) == 0 {
		t.Fatalf("%d lists and a spare of %d kept, want both", len(keptLists(sc)), cap(sc.spare))
	}
}

func keptLists(sc *asmScratch) [][]orderedSpan {
	var kept [][]orderedSpan
	for _, class := range sc.lists {
		kept = append(kept, class...)
	}
	return kept
}

// TestAssemblerGrowTakesTheFittingList checks that a group growing past its
// list takes the smallest kept list that holds it, its spans copied over,
// and that a read's largest group ends up with the largest list whatever
// order groups ask in.
func TestAssemblerGrowTakesTheFittingList(t *testing.T) {
	sc := &asmScratch{}
	for _, n := range []int{1000, 2, 50} {
		sc.recycle(make([]orderedSpan, 0, n))
	}
	small := sc.grow(nil, 1)
	if cap(small) != 2 {
		t.Fatalf("a one-span group took a list of %d, want the kept 2", cap(small))
	}
	large := sc.grow(nil, 30)
	for i := range 30 {
		large = append(large, orderedSpan{codec.SpanKey{Start: uint64(i)}, []byte{1}})
	}
	large = sc.grow(large, 100)
	if cap(large) != 1000 || len(large) != 30 || large[29].Start != 29 {
		t.Fatalf("grown to a list of length %d, capacity %d, want the kept 1000 with the 30 spans", len(large), cap(large))
	}
	kept := keptLists(sc)
	if len(kept) != 1 || cap(kept[0]) != 50 || sc.spans != 50 {
		t.Fatalf("kept %d lists, %d spans, want the list of 50 given back", len(kept), sc.spans)
	}
	for _, s := range kept[0][:cap(kept[0])] {
		if s.raw != nil {
			t.Fatal("a list given back still holds spans")
		}
	}
	if huge := sc.grow(large, 5000); cap(huge) < 5030 || huge[29].Start != 29 {
		t.Fatalf("grown past every kept list to %d, want room for 5,030", cap(huge))
	}
}

// TestAssemblerKeepsFewListsOfASize checks that a search's many small
// groups do not pile up lists that every later grow would look through,
// and that a list from a class above the need is taken when its own class
// has none that fits.
func TestAssemblerKeepsFewListsOfASize(t *testing.T) {
	sc := &asmScratch{}
	for range 1000 {
		sc.recycle(make([]orderedSpan, 0, 3))
	}
	if n := len(sc.lists[1]); n != listsPerClass || sc.spans != 3*listsPerClass {
		t.Fatalf("kept %d lists of 3 spans (%d spans), want %d", n, sc.spans, listsPerClass)
	}
	sc.recycle(make([]orderedSpan, 0, 40))
	sc.recycle(make([]orderedSpan, 0, 33))
	if l := sc.grow(nil, 35); cap(l) != 40 {
		t.Fatalf("a 35-span group took a list of %d, want the kept 40", cap(l))
	}
	if l := sc.grow(nil, 20); cap(l) != 33 {
		t.Fatalf("a 20-span group took a list of %d, want the kept 33 from the class above", cap(l))
	}
	if l := sc.grow(nil, 2); cap(l) != 3 {
		t.Fatalf("a 2-span group took a list of %d, want a kept 3", cap(l))
	}
}

// TestAssemblerGrowRandomized grows, fills and gives back lists in random
// order against a model of what each group holds, and checks the bounds on
// what the scratch keeps after every step.
func TestAssemblerGrowRandomized(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sc := &asmScratch{}
	groups := make([][]orderedSpan, 8)
	model := make([][]uint64, len(groups))
	next := uint64(1)
	for step := range 20000 {
		g := rng.IntN(len(groups))
		switch {
		case rng.IntN(8) == 0: // the group finishes and gives its list back
			sc.recycle(groups[g])
			groups[g], model[g] = nil, nil
		case rng.IntN(4) == 0: // a list from elsewhere, as a sort's spare
			sc.recycle(make([]orderedSpan, 0, 1+rng.IntN(64)))
		default:
			n := 1 + rng.IntN(1<<rng.IntN(12))
			groups[g] = sc.grow(groups[g], n)
			if cap(groups[g])-len(groups[g]) < n {
				t.Fatalf("step %d: grow(%d) left room for %d", step, n, cap(groups[g])-len(groups[g]))
			}
			for range n {
				groups[g] = append(groups[g], orderedSpan{codec.SpanKey{Start: next}, []byte{1}})
				model[g] = append(model[g], next)
				next++
			}
		}
		for i, l := range groups {
			if len(l) != len(model[i]) {
				t.Fatalf("step %d: group %d holds %d spans, want %d", step, i, len(l), len(model[i]))
			}
			for j, s := range l {
				if s.Start != model[i][j] {
					t.Fatalf("step %d: group %d span %d is %d, want %d", step, i, j, s.Start, model[i][j])
				}
			}
		}
		kept := 0
		for c, class := range sc.lists {
			if len(class) > listsPerClass {
				t.Fatalf("step %d: %d lists kept in class %d", step, len(class), c)
			}
			for _, l := range class {
				if bits.Len(uint(cap(l)))-1 != c || len(l) != 0 {
					t.Fatalf("step %d: a list of length %d, capacity %d kept in class %d", step, len(l), cap(l), c)
				}
				kept += cap(l)
			}
		}
		if kept != sc.spans || kept > maxScratchSpans {
			t.Fatalf("step %d: kept lists hold %d spans, counted %d, bound %d", step, kept, sc.spans, maxScratchSpans)
		}
	}
}
