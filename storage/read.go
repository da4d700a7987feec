package storage

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"cairn/internal/freelist"
	"cairn/internal/radix"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// Group is the spans of a trace that share one resource and one scope, in
// their encoded form.
type Group struct {
	ResourceID        [16]byte
	Resource          []byte // encoded opentelemetry.proto.resource.v1.Resource
	ResourceSchemaURL []byte
	ScopeID           [16]byte
	Scope             []byte // encoded opentelemetry.proto.common.v1.InstrumentationScope
	ScopeSchemaURL    []byte
	Spans             [][]byte // encoded spans, ordered by start time and span ID
}

// Trace is an assembled trace. Groups are ordered by resource, then scope.
// Its byte slices must not be modified.
type Trace struct {
	ID     TraceID
	Groups []Group
	Spans  int
}

// TimeRange narrows a lookup to the hour partitions that spans starting
// within it fall in, and their neighbours. A zero bound is open.
type TimeRange struct {
	Start, End time.Time
}

// bounds is the range of partitions a lookup reads: those the time range
// touches and one on each side, since hints (such as those search returns)
// may cover only part of a trace whose spans straddle an hour. Lookups in
// memory and on disk apply the same bounds, so an answer does not depend on
// whether spans have been cut into a block yet.
func (r TimeRange) bounds() (lo, hi uint32) {
	lo, hi = 0, ^uint32(0)
	if !r.Start.IsZero() {
		lo = max(partitionOf(unixNanos(r.Start)), 1) - 1
	}
	if !r.End.IsZero() {
		hi = partitionOf(unixNanos(r.End)) + 1
	}
	return lo, hi
}

// view is a consistent view across the live buffers and Pebble, for one
// read: blocks at or above minBlock are still in live buffers and are skipped
// on disk, so a cut in progress is read once.
type view struct {
	minBlock  uint64
	bufs      []*buffer // the live buffers, newest first
	parts     []uint32  // partitions with data on disk, within the read's bounds, ascending
	notBefore uint64    // spans that started earlier are outside the retention period
	index     *pebble.Iterator
	data      *pebble.Iterator
}

// layout is where reads find the store's spans: the buffers, and the
// partitions on disk. It is replaced whole, under mu, whenever one of them
// changes, and reads take it without mu, so that a read never waits for a
// writer's log append, nor for a cut or a partition drop updating the
// store's state (at full ingest, reads waited up to 7 ms for mu).
type layout struct {
	live, frozen *buffer
	parts        []uint32 // partitions holding persisted data, ascending
}

// setLayout publishes the buffers and partitions as they are now. The
// caller holds mu.
func (db *DB) setLayout() {
	parts := make([]uint32, 0, len(db.partitions))
	for p := range db.partitions {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	db.layout.Store(&layout{live: db.live, frozen: db.frozen, parts: parts})
}

// partsWithin returns the partitions in [lo, hi], ascending. The caller
// must not modify them.
func (l *layout) partsWithin(lo, hi uint32) []uint32 {
	from, _ := slices.BinarySearch(l.parts, lo)
	to := from
	for to < len(l.parts) && l.parts[to] <= hi {
		to++
	}
	return l.parts[from:to]
}

// openView takes a view of the partitions in [lo, hi] (lo raised to the
// retention horizon). The view must be released.
func (db *DB) openView(lo, hi uint32) (*view, error) {
	if !db.reading.TryRLock() {
		return nil, ErrClosed
	}
	for {
		l := db.layout.Load()
		v := &view{minBlock: l.live.block, notBefore: db.NotBefore(), bufs: []*buffer{l.live}}
		lo := max(lo, partitionOf(v.notBefore))
		if l.frozen != nil {
			v.minBlock = l.frozen.block
			v.bufs = append(v.bufs, l.frozen)
		}
		v.parts = l.partsWithin(lo, hi)
		if viewHook != nil {
			viewHook()
		}
		// Pebble iterators are point-in-time views. Made after the layout
		// was taken, they hold at least the blocks it says are on disk, and
		// what a cut has stored since of a buffer it still lists is skipped
		// (minBlock). The buffers hold at least what they held when the
		// layout was taken; what writers add later belongs to blocks the
		// iterators skip too.
		var err error
		if v.index, err = db.idx.NewIter(nil); err != nil {
			db.reading.RUnlock()
			return nil, fmt.Errorf("open index iterator: %w", err)
		}
		if v.data, err = db.spans.NewIter(nil); err != nil {
			v.index.Close()
			db.reading.RUnlock()
			return nil, fmt.Errorf("open spans iterator: %w", err)
		}
		// Unless a cut stored a block the view skips before the iterators
		// were made: recompression may since have merged fragments of a
		// block the view reads into it (mergeFragments), which no view
		// then shows. Recompression learns of a block with the layout that
		// shows it on disk, so a view that saw no new layout is whole.
		if db.layout.Load() == l {
			return v, nil
		}
		v.index.Close()
		v.data.Close()
	}
}

// viewHook, if set, runs between a view's layout and its iterators. Tests
// set it to change the store in between.
var viewHook func()

func (db *DB) release(v *view) {
	v.index.Close()
	v.data.Close()
	db.reading.RUnlock()
}

// Trace assembles the trace with the given ID from everything acknowledged so
// far. It returns nil if no span of the trace is stored.
func (db *DB) Trace(ctx context.Context, id TraceID, tr TimeRange) (*Trace, error) {
	var t *Trace
	_, err := db.tracePieces(ctx, id, tr, math.MaxInt, nil, func(whole *Trace) error {
		t = whole
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// fragmentBlocks lists the blocks of partition p that may hold a fragment of
// the trace, skipping those that are still in live buffers. They include
// the blocks of traces that share its fingerprint, which hold no fragment
// of it: callers skip a block without one.
func (db *DB) fragmentBlocks(it *pebble.Iterator, p uint32, id TraceID, minBlock uint64) ([]uint64, error) {
	var blocks []uint64
	prefixes := db.tracePrefixes(p, id)
	for _, prefix := range prefixes {
		for ok := it.SeekPrefixGE(prefix); ok; ok = it.Next() {
			b, err := keys.TraceBlock(it.Key())
			if err != nil {
				return nil, err
			}
			if b < minBlock {
				blocks = append(blocks, b)
			}
		}
		if err := it.Error(); err != nil {
			return nil, fmt.Errorf("read trace index: %w", err)
		}
	}
	if len(prefixes) > 1 {
		slices.Sort(blocks)
		blocks = slices.Compact(blocks)
	}
	return blocks, nil
}

type assembler struct {
	groups map[groupKey]*asmGroup
	*asmScratch
}

// asmScratch holds the span lists of groups already finished, and the radix
// sort's second buffer, for the groups and reads that follow: for a
// 10,000-span trace they were 1.3 MB of the 8 MB a read allocated, which
// reads during ingest pay for in the collector's mark assists.
type asmScratch struct {
	// lists[c] holds kept lists of capacity 2^c up to 2^(c+1)-1, at most
	// listsPerClass of each, so that grow looks at a few lists. It looked
	// at every kept list for each fragment a read added, which right after
	// a burst of ingest, traces split over many cuts, was half of reads'
	// CPU.
	lists [listClasses][][]orderedSpan
	spare []orderedSpan
	spans int // the capacity of lists, in spans; spare is bounded apart
}

const (
	listClasses   = 15
	listsPerClass = 8
)

// A kept list holds at most maxScratchSpans, so its class must exist.
const _ = uint(1<<listClasses - 1 - maxScratchSpans)

// asmScratches keeps scratch across collections, which a sync.Pool would
// drop: its lists for a large trace are megabytes that each read would
// allocate again, zeroed, as the collector runs every few large reads.
var asmScratches = freelist.New[*asmScratch](4, nil)

// takeAsmScratch returns kept scratch, or new scratch if none is kept.
func takeAsmScratch() *asmScratch {
	if sc, ok := asmScratches.Get(); ok {
		return sc
	}
	return new(asmScratch)
}

// recycle takes back a list that a group no longer needs.
func (sc *asmScratch) recycle(list []orderedSpan) {
	if cap(list) == 0 || sc.spans+cap(list) > maxScratchSpans {
		return
	}
	c := bits.Len(uint(cap(list))) - 1
	if len(sc.lists[c]) == listsPerClass {
		return
	}
	// The spans point into decoded fragments and live buffers; a list
	// the radix sort filled may hold them past its length.
	clear(list[:cap(list)])
	sc.lists[c] = append(sc.lists[c], list[:0])
	sc.spans += cap(list)
}

// release puts the assembler's scratch back in the pool for later reads.
func (a *assembler) release() {
	if cap(a.spare) > maxScratchSpans {
		a.spare = nil
	}
	clear(a.spare[:cap(a.spare)])
	a.spare = a.spare[:0]
	asmScratches.Put(a.asmScratch)
	a.asmScratch = nil
}

// grow returns list with room for n more spans: the smallest kept list
// that has it, so that a trace's largest group ends up with the largest
// list. Handing out lists as groups came, a 10,000-span group grew to
// 13,000 spans by doubling at every read, 2 MB of fresh memory each time,
// while the list it had grown the read before went to a group of one span.
func (sc *asmScratch) grow(list []orderedSpan, n int) []orderedSpan {
	if cap(list)-len(list) >= n {
		return list
	}
	need := len(list) + n
	for c := bits.Len(uint(need)) - 1; c < listClasses; c++ {
		kept := sc.lists[c]
		best := -1
		for i, l := range kept {
			if cap(l) >= need && (best < 0 || cap(l) < cap(kept[best])) {
				best = i
			}
		}
		if best < 0 {
			continue
		}
		larger := append(kept[best], list...)
		sc.spans -= cap(larger)
		sc.lists[c] = slices.Delete(kept, best, best+1)
		sc.recycle(list)
		return larger
	}
	return slices.Grow(list, n)
}

type asmGroup struct {
	Group
	spans    []orderedSpan // gathered; finish orders them into Group.Spans
	resolved bool          // resource and scope are filled in
}

func (a *assembler) group(res, scope dictID) *asmGroup {
	var k groupKey
	copy(k[:16], res[:])
	copy(k[16:], scope[:])
	g := a.groups[k]
	if g == nil {
		g = &asmGroup{Group: Group{ResourceID: res, ScopeID: scope}}
		a.groups[k] = g
	}
	return g
}

// orderedSpan is a span with the start and ID it is ordered by, which the
// live buffers and fragments know without parsing the span. The start comes
// first: radix.Sort orders spans by it.
type orderedSpan struct {
	codec.SpanKey
	raw []byte
}

// orderSpans sorts spans by start, ID and bytes, and returns them. A large
// group is sorted by start with a radix sort first: for 10,000 spans a
// comparison sort took 2.1 ms, two fifths of the server's time to read the
// trace.
func orderSpans(spans, scratch []orderedSpan) (sorted, spare []orderedSpan) {
	// Not cmp.Or, which would compare the bytes of every pair: they begin
	// with the trace ID, the same for all, and are needed only for a span
	// stored twice.
	byKey := func(x, y orderedSpan) int {
		if c := cmp.Compare(x.Start, y.Start); c != 0 {
			return c
		}
		if c := cmp.Compare(x.ID, y.ID); c != 0 {
			return c
		}
		return bytes.Compare(x.raw, y.raw)
	}
	if len(spans) < 256 {
		slices.SortFunc(spans, byKey)
		return spans, scratch
	}
	// Spans that came in order, as a trace cut whole often has them, take
	// a comparison each.
	if slices.IsSortedFunc(spans, byKey) {
		return spans, scratch
	}
	spans, scratch = radix.Sort(spans, scratch)
	// Spans that start in the same nanosecond are few.
	for i := 0; i < len(spans); {
		j := i + 1
		for j < len(spans) && spans[j].Start == spans[i].Start {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(spans[i:j], byKey)
		}
		i = j
	}
	return spans, scratch
}

// finish orders, dedupes and resolves the spans collected, leaving out those
// that started before notBefore, and those that seen, if not nil, holds
// (which it then records); it returns nil if none is left.
func (a *assembler) finish(db *DB, get viewGetter, id TraceID, notBefore uint64, seen map[spanDigest]struct{}) (*Trace, error) {
	t := &Trace{ID: id, Groups: make([]Group, 0, len(a.groups))}
	// In the order of resource and scope, which is the answer's.
	order := slices.SortedFunc(maps.Keys(a.groups), func(x, y groupKey) int { return bytes.Compare(x[:], y[:]) })
	for _, k := range order {
		g := a.groups[k]
		// The boundary partition holds spans on both sides of the
		// retention horizon.
		ordered := slices.DeleteFunc(g.spans, func(s orderedSpan) bool { return s.Start < notBefore })
		if len(ordered) == 0 {
			continue
		}
		ordered, a.spare = orderSpans(ordered, a.spare)
		// A client that retries an Export after a lost acknowledgement sends
		// the same span twice; it is one span.
		g.Spans = make([][]byte, 0, len(ordered))
		for i, s := range ordered {
			if i > 0 && s.ID == ordered[i-1].ID && bytes.Equal(s.raw, ordered[i-1].raw) {
				continue
			}
			if seen != nil {
				d := digestOf(k, s)
				if _, dup := seen[d]; dup {
					continue
				}
				seen[d] = struct{}{}
			}
			g.Spans = append(g.Spans, s.raw)
		}
		a.recycle(ordered)
		g.spans = nil
		if len(g.Spans) == 0 {
			continue
		}
		if !g.resolved {
			res, err := db.dict.lookup(get, keys.KindResource, g.ResourceID)
			if err != nil {
				return nil, contain(err, fmt.Sprintf("trace %x (resource %x)", id, g.ResourceID))
			}
			scope, err := db.dict.lookup(get, keys.KindScope, g.ScopeID)
			if err != nil {
				return nil, contain(err, fmt.Sprintf("trace %x (scope %x)", id, g.ScopeID))
			}
			g.Resource, g.ResourceSchemaURL = res.Raw, res.SchemaURL
			g.Scope, g.ScopeSchemaURL = scope.Raw, scope.SchemaURL
		}
		t.Spans += len(g.Spans)
		t.Groups = append(t.Groups, g.Group)
	}
	if t.Spans == 0 {
		return nil, nil
	}
	return t, nil
}

// Services lists the services that sent spans within the retention period
// (to the hour), sorted by name.
func (db *DB) Services() ([]string, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil, ErrClosed
	}
	return db.catalog.listServices(partitionOf(db.NotBefore())), nil
}

// Operations lists the span names and kinds a service used, sorted by name
// then kind.
//
// more says the service sent more names than are listed: a service's
// operations are remembered up to 10,000, and a new name past that is
// stored and searchable but not listed.
func (db *DB) Operations(service string) (ops []Operation, more bool, err error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil, false, ErrClosed
	}
	ops, more = db.catalog.listOperations(service, partitionOf(db.NotBefore()))
	return ops, more, nil
}
