package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/btree"

	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/internal/radix"
	"cairn/storage/internal/codec"
)

// partitionNanos is the span of start time covered by one partition.
const partitionNanos = uint64(3600 * 1e9)

// partitionOf is the partition of a start time. Every uint64 of
// nanoseconds has one: the last is partition 5124095, in the year 2554.
func partitionOf(startNanos uint64) uint32 { return uint32(startNanos / partitionNanos) }

// partitionStart is the first start time of partition p, saturating for
// partitions past the last start time.
func partitionStart(p uint32) uint64 {
	if uint64(p) > math.MaxUint64/partitionNanos {
		return math.MaxUint64
	}
	return uint64(p) * partitionNanos
}

// partitionEnd is the first start time after partition p, saturating.
func partitionEnd(p uint32) uint64 {
	s := partitionStart(p)
	if s > math.MaxUint64-partitionNanos {
		return math.MaxUint64
	}
	return s + partitionNanos
}

// partitionTime is when partition p starts, for logs.
func partitionTime(p uint32) time.Time { return time.Unix(int64(p)*3600, 0).UTC() }

// dictID identifies a resource or scope by content: a truncated SHA-256 of
// its encoding and schema URL. 128 bits make collisions between distinct
// resources of one store practically impossible, and content addressing lets
// any number of requests share one stored copy.
type dictID = [16]byte

func hashDict(raw, schemaURL []byte) dictID {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	presence := uint64(0) // as in codec.AppendDict
	if raw != nil {
		presence = uint64(len(raw)) + 1
	}
	h.Write(n[:binary.PutUvarint(n[:], presence)])
	h.Write(raw)
	h.Write(schemaURL)
	var sum [sha256.Size]byte
	var id dictID
	copy(id[:], h.Sum(sum[:0]))
	return id
}

// group is a (resource, scope) pair that spans share.
type group struct {
	resID, scopeID dictID
	res, scope     codec.Dict
	service        []byte
	serviceTerm    index.Term // the Service term of the resource's service
}

type groupKey [32]byte

func (g *group) key() groupKey {
	var k groupKey
	copy(k[:16], g.resID[:])
	copy(k[16:], g.scopeID[:])
	return k
}

type liveSpan struct {
	group  *group
	raw    []byte         // aliases the request it arrived in
	name   otlpwire.Range // in raw
	start  uint64
	end    uint64
	err    bool  // status ERROR
	kind   uint8 // span kind; kinds OTLP does not define count as unspecified
	status uint8 // status code, as otlpwire.Span.Status
	// ordered is otlpwire.Span.Ordered, which spares a cut walking the
	// whole span to take its IDs and times out.
	ordered bool

	// For the service graph: the IDs of the span and of its parent, and
	// where in raw the peer that a client or producer span names is. A live
	// buffer holds a range per field it reads again rather than a slice.
	id, parent [8]byte
	peer       otlpwire.Range
}

// runs are what a live trace gathers from the requests that bring its
// spans, a run from each, in the order they came, never changed once
// published. Most traces come in one request, and their run is kept in
// place, which allocates nothing more.
type runs[T any] struct {
	first []T
	more  [][]T
}

// add appends a run, and returns the memory it took besides the run.
func (r *runs[T]) add(run []T) (heap int) {
	if r.first == nil {
		r.first = run
		return 0
	}
	c := cap(r.more)
	r.more = append(r.more, run)
	return (cap(r.more) - c) * runHeaderSize
}

// all yields each run, in the order they came; none if r is nil.
func (r *runs[T]) all(yield func([]T) bool) {
	if r == nil || r.first == nil || !yield(r.first) {
		return
	}
	for _, run := range r.more {
		if !yield(run) {
			return
		}
	}
}

// each yields every run's elements, in order; none if r is nil.
func (r *runs[T]) each(yield func(*T) bool) {
	for run := range r.all {
		for i := range run {
			if !yield(&run[i]) {
				return
			}
		}
	}
}

// spanName is the span's name.
func (s *liveSpan) spanName() []byte { return s.name.Of(s.raw) }

// peerName is the peer the span names, nil if none.
func (s *liveSpan) peerName() []byte { return s.peer.Of(s.raw) }

// findPeer finds the attribute value of a client or producer span that
// names the peer it calls, if any, as peerOf does, among the attributes
// Parse recorded: walking the span's bytes again for them was a twentieth
// of ingest's CPU.
func findPeer(s *otlpwire.Span, attrs []otlpwire.Attribute) otlpwire.Range {
	if k := spanKind(s.Kind); k != kindClient && k != kindProducer {
		return otlpwire.Range{}
	}
	best, name := len(peerAttributes), otlpwire.Range{}
	for i := range attrs {
		a := &attrs[i]
		if a.Event || a.Type != otlpwire.StringValue || a.BRange() == (otlpwire.Range{}) {
			continue
		}
		if j := peerRank(a.Key(s.Raw), best); j < best {
			best, name = j, a.BRange()
		}
	}
	return name
}

// duration is the span's end minus its start, 0 if it ends first.
func (s liveSpan) duration() uint64 {
	if s.end > s.start {
		return s.end - s.start
	}
	return 0
}

// traceState is a live trace's spans, and what searches match and order it
// by, as an insert published it in the buffer's traceTable, where reads
// find it with no lock. A published state never changes: an insert that
// adds to a trace publishes a new state, copied from the last and added
// to, which the next insert then copies in turn.
type traceState struct {
	id TraceID
	// spans are the trace's spans, a run for each request that brought
	// some. An insert writes all its request's spans into one array, and
	// its traces' terms into another, and hands each trace its part of
	// them: a trace whose spans arrive in many requests, as the SDKs'
	// exporters send them, grew and copied arrays of its own at each,
	// which was a tenth of the server's CPU.
	spans runs[liveSpan]

	// The extent of the spans, kept at insert so that search can order
	// traces without reading their spans.
	minStart, maxStart, maxEnd uint64
	partition                  uint32 // of the first span
	arrival                    int32  // the trace's place in its table's arrival order, which put sets
	count                      int32  // spans in all runs
	multiPartition             bool   // spans fall in more than one partition

	// terms are the search terms of the trace's spans and resources, in
	// one sorted, unique run per request that brought spans of the trace.
	// Runs are sorted outside the lock, in prepare.
	terms runs[index.Term]
	// termBits has termBit of every term set: a search reading the
	// buffers rules most traces out on it, without reading their terms,
	// which were two more cache misses a trace.
	termBits [4]uint64
}

// termBit is the bit of termBits that term sets. Terms are hashes, but some
// kinds of term share their low bits (an attribute's buckets) or their high
// bits (a duration's shard), so all bits are spread and the top eight taken.
func termBit(term index.Term) (word int, bit uint64) {
	h := spread(uint64(term)) >> 56
	return int(h >> 6), 1 << (h & 63)
}

// addTerms adds a run of terms, which the trace keeps, and returns the
// memory it took besides the run.
func (t *traceState) addTerms(run []index.Term) (heap int) {
	for _, term := range run {
		w, b := termBit(term)
		t.termBits[w] |= b
	}
	return t.terms.add(run)
}

func (t *traceState) addExtent(start, end uint64) {
	p := partitionOf(start)
	if t.count == 0 {
		t.minStart, t.maxStart, t.maxEnd, t.partition = start, start, end, p
		return
	}
	t.minStart, t.maxStart, t.maxEnd = min(t.minStart, start), max(t.maxStart, start), max(t.maxEnd, end)
	t.multiPartition = t.multiPartition || p != t.partition
}

// hasAny reports whether the trace has any of terms, which are sorted.
// A term alone is looked up; more are merged with each run, which for the
// dozens of a duration range is several times cheaper than a lookup each.
func (t *traceState) hasAny(terms []index.Term) bool {
	if !t.mayHaveAny(terms) {
		return false
	}
	for run := range t.terms.all {
		if len(terms) == 1 {
			if _, ok := slices.BinarySearch(run, terms[0]); ok {
				return true
			}
			continue
		}
		for i, j := 0, 0; i < len(run) && j < len(terms); {
			switch {
			case run[i] < terms[j]:
				i++
			case run[i] > terms[j]:
				j++
			default:
				return true
			}
		}
	}
	return false
}

// mayHaveAny reports whether the trace may have any of terms: false only
// if it has none of them, true possibly when it has none.
func (t *traceState) mayHaveAny(terms []index.Term) bool {
	for _, term := range terms {
		if w, b := termBit(term); t.termBits[w]&b != 0 {
			return true
		}
	}
	return false
}

// traceKey is a live trace in the buffer's B-tree: its ID as two big-endian
// words, so that a descent compares the keys in the nodes it reads rather
// than the IDs of traces all over the heap. With pointers to the traces and
// bytes.Compare, descents were a tenth of ingest's CPU for two-span traces.
// The cut finds each trace's state in the trace table.
type traceKey struct{ hi, lo uint64 }

func keyOf(id TraceID) traceKey {
	return traceKey{hi: binary.BigEndian.Uint64(id[:8]), lo: binary.BigEndian.Uint64(id[8:])}
}

// id is the trace ID k holds.
func (k traceKey) id() TraceID {
	var id TraceID
	binary.BigEndian.PutUint64(id[:8], k.hi)
	binary.BigEndian.PutUint64(id[8:], k.lo)
	return id
}

func lessTrace(a, b traceKey) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

// buffer holds the spans acknowledged since the last cut, ordered by trace ID
// so that a cut writes them as trace-sorted runs.
//
// Its counts and identity are guarded by DB.mu. Its traces are written
// under its own lock and read without one, as each insert that added to a
// trace left it (see byID).
type buffer struct {
	block      uint64         // the block this buffer becomes when cut
	walSegment uint64         // set when frozen: the last segment whose records it holds
	catalog    []catalogWrite // set when frozen: catalog changes to persist with it
	bytes      int            // encoded request bytes held (see addSize)
	logged     int            // bytes of their records in the log, compressed (see DB.cut)
	spans      int
	// heap is what the spans and traces take in memory besides their
	// requests' bytes, which inserts add as they make it. For small traces
	// it is more than the requests (about 230 bytes a span of two-span
	// traces, against 140 of request): a buffer cut at 64 MiB of requests
	// alone held 545k such spans, whose collection took half the CPU
	// (65k-96k spans/s; 193k-287k once counted).
	heap atomic.Int64

	// writers counts the writers accounted for under DB.mu that are still
	// inserting their spans; a cut waits for them once it has frozen the
	// buffer, so that everything the sealed log segments hold is in it.
	writers sync.WaitGroup

	mu     sync.Mutex              // serializes inserts
	traces *btree.BTreeG[traceKey] // in ID order, for inserts and the cut
	byID   traceTable              // the traces as reads see them
	groups map[groupKey]*group

	// Set by the first attempt to cut it: when, and the service graph
	// edges its spans completed.
	created uint64
	edges   blockEdges
	paired  bool
}

// size is the memory the buffer holds: its requests and its spans' and
// traces' in-memory form, as inserts that have finished counted it.
// addSize adds a request of req bytes, whose log record is logged bytes,
// and of spans spans to the buffer's size; negative values take it back.
// The caller holds DB.mu.
func (buf *buffer) addSize(req, logged, spans int) {
	buf.bytes += req
	buf.logged += logged
	buf.spans += spans
}

func (buf *buffer) size() int { return buf.bytes + int(buf.heap.Load()) }

// Sizes of what an insert allocates, for buffer.heap.
const (
	liveSpanSize   = int(unsafe.Sizeof(liveSpan{}))
	runHeaderSize  = int(unsafe.Sizeof([]liveSpan(nil)))
	termSize       = int(unsafe.Sizeof(index.Term(0)))
	traceStateSize = int(unsafe.Sizeof(traceState{}))
	// newTraceSize is a new trace: its state, and its places in the tree
	// and the trace table.
	newTraceSize = traceStateSize + 48
)

func newBuffer(block uint64) *buffer {
	return &buffer{
		block:  block,
		traces: btree.NewG(32, lessTrace),
		groups: make(map[groupKey]*group),
	}
}

// prepared is what a request needs computed before it is inserted, outside
// any lock: content IDs of its resources and scopes, and the search terms of
// each trace it has spans of. Preparing a request allocated a fifth of what
// ingest did, so prepared values and their slices are pooled: get one from
// prepare, and release it once the request is inserted.
type prepared struct {
	resources  []resourceFacts  // by resource index
	groups     []group          // by scope index
	traceOf    []int32          // by span index: the span's trace in traceTerms
	traceTerms [][]index.Term   // sorted and unique: the terms of the trace's spans and their resources
	traceSpans []int32          // by trace in traceTerms: how many spans of it the request has
	runEnd     []int32          // by trace in traceTerms: insert's, where its run ends so far
	errs       []bool           // by span index
	peers      []otlpwire.Range // by span index
	names      []otlpwire.Range // by span index
	ops        []opSeen         // the operations the spans used, each once

	// Scratch that only prepare reads.
	resIDs      []dictID
	resTerms    [][2]index.Term // by resource: its Service and Resource terms
	resSeen     [][]int32       // by trace in traceTerms: resources whose terms it has
	termScratch []index.Term    // radix.Sort's
	traces      map[TraceID]int32
	opIndex     map[opOf]int32
}

// radixTerms is the fewest terms of a trace that prepare sorts with
// radix.Sort. Each span adds its terms, repeats included, so a trace's list
// runs to hundreds, and comparison-sorting them took a twentieth of the
// server's CPU at full ingest.
const radixTerms = 64

// opSeen is an operation that spans of a request used, with the newest
// partition they used it in: all the catalog needs to know of them.
type opSeen struct {
	resource  int32
	kind      int32
	name      []byte
	partition uint32
}

// opOf keys opSeen within one request by a hash of the name, so that
// finding an operation allocates nothing; a hit is checked against the name.
type opOf struct {
	resource, kind int32
	name           uint64
}

var (
	hashers   = sync.Pool{New: func() any { return new(index.Hasher) }}
	prepareds = sync.Pool{New: func() any {
		return &prepared{traces: make(map[TraceID]int32), opIndex: make(map[opOf]int32)}
	}}
	opSeed = maphash.MakeSeed()
)

// grow appends an empty slice to s, reusing the array that the element past
// its end held before s was truncated.
func grow[T any](s [][]T) [][]T {
	if len(s) < cap(s) {
		s = s[:len(s)+1]
		s[len(s)-1] = s[len(s)-1][:0]
		return s
	}
	return append(s, nil)
}

func prepare(b *otlpwire.Batch, resources *resourceIndex) *prepared {
	h := hashers.Get().(*index.Hasher)
	defer hashers.Put(h)
	p := prepareds.Get().(*prepared)
	// Its slices are resized to this request, keeping their arrays.
	nres, nscopes, nspans := len(b.Resources), len(b.Scopes), len(b.Spans)
	p.resIDs = slices.Grow(p.resIDs[:0], nres)[:nres]
	p.resTerms = slices.Grow(p.resTerms[:0], nres)[:nres]
	p.resources = slices.Grow(p.resources[:0], nres)[:nres]
	for i, r := range b.Resources {
		p.resIDs[i] = hashDict(r.Raw, r.SchemaURL)
		p.resTerms[i] = [2]index.Term{h.Service(r.Service), h.Resource(p.resIDs[i])}
		p.resources[i] = resources.facts(h, p.resIDs[i], r.Service, r.Raw)
	}
	p.groups = slices.Grow(p.groups[:0], nscopes)[:nscopes]
	for i, s := range b.Scopes {
		r := b.Resources[s.Resource]
		p.groups[i] = group{
			resID:       p.resIDs[s.Resource],
			scopeID:     hashDict(s.Raw, s.SchemaURL),
			res:         codec.Dict{Raw: r.Raw, SchemaURL: r.SchemaURL},
			scope:       codec.Dict{Raw: s.Raw, SchemaURL: s.SchemaURL},
			service:     r.Service,
			serviceTerm: p.resTerms[s.Resource][0],
		}
	}
	p.traceOf = slices.Grow(p.traceOf[:0], nspans)[:nspans]
	p.errs = slices.Grow(p.errs[:0], nspans)[:nspans]
	p.peers = slices.Grow(p.peers[:0], nspans)[:nspans]
	p.names = slices.Grow(p.names[:0], nspans)[:nspans]
	for i := range b.Spans {
		s := &b.Spans[i]
		res := b.Scopes[s.Scope].Resource
		// A kind OTLP does not define is listed as unspecified, as span
		// metrics count it.
		p.seeOp(int32(res), int32(spanKind(s.Kind)), s.Name, partitionOf(s.Start))
		k, ok := p.traces[s.TraceID]
		if !ok {
			k = int32(len(p.traceTerms))
			p.traces[s.TraceID] = k
			p.traceTerms = grow(p.traceTerms)
			p.traceSpans = append(p.traceSpans, 0)
			p.resSeen = grow(p.resSeen)
		}
		p.traceOf[i] = k
		p.traceSpans[k]++
		f := otlpwire.SpanFacts{Name: s.Name, Kind: s.Kind, Start: s.Start, End: s.End, Error: s.Error}
		p.errs[i] = f.Error
		p.peers[i] = findPeer(s, b.SpanAttrs(s))
		p.names[i] = otlpwire.RangeIn(s.Raw, s.Name)
		g := &p.groups[s.Scope]
		p.traceTerms[k] = h.SpanTerms(p.traceTerms[k], g.service, s.Raw, b.SpanAttrs(s), f)
		if !slices.Contains(p.resSeen[k], int32(res)) {
			p.resSeen[k] = append(p.resSeen[k], int32(res))
			p.traceTerms[k] = append(p.traceTerms[k], p.resTerms[res][:]...)
		}
	}
	for k, ts := range p.traceTerms {
		if len(ts) >= radixTerms {
			ts, p.termScratch = radix.Sort(ts, p.termScratch)
		} else {
			slices.Sort(ts)
		}
		p.traceTerms[k] = slices.Compact(ts)
	}
	return p
}

// seeOp records that a span of the request used an operation.
func (p *prepared) seeOp(res, kind int32, name []byte, partition uint32) {
	key := opOf{res, kind, maphash.Bytes(opSeed, name)}
	if o, ok := p.opIndex[key]; ok {
		if op := &p.ops[o]; bytes.Equal(op.name, name) {
			op.partition = max(op.partition, partition)
			return
		}
		// Another name with the same hash: listing an operation twice
		// only tells the catalog twice.
	} else {
		p.opIndex[key] = int32(len(p.ops))
	}
	p.ops = append(p.ops, opSeen{resource: res, kind: kind, name: name, partition: partition})
}

// release returns p to the pool once its request is inserted. Nothing may
// use it afterwards. References into the request are dropped so that the
// pool does not keep requests alive.
func (p *prepared) release() {
	clear(p.resources)
	clear(p.groups)
	clear(p.ops)
	p.ops = p.ops[:0]
	p.traceTerms = p.traceTerms[:0]
	p.traceSpans = p.traceSpans[:0]
	p.resSeen = p.resSeen[:0]
	clear(p.traces)
	clear(p.opIndex)
	prepareds.Put(p)
}

// insert adds the spans of a parsed request and publishes the traces it
// added to. The caller has accounted for them (DB.account).
func (buf *buffer) insert(b *otlpwire.Batch, prep *prepared) {
	buf.mu.Lock()
	defer buf.mu.Unlock()
	interned := make([]*group, len(prep.groups))
	for i := range prep.groups {
		k := prep.groups[i].key()
		g, ok := buf.groups[k]
		if !ok {
			// A copy, as prep goes back to its pool.
			g = new(group)
			*g = prep.groups[i]
			buf.groups[k] = g
		}
		interned[i] = g
	}
	// The request's traces, by their index in prep, once their spans are
	// being added.
	touched := make([]*traceState, len(prep.traceTerms))
	// Each trace's run of the request's spans, in the order of their
	// traces' first spans.
	spans := make([]liveSpan, len(b.Spans))
	end := slices.Grow(prep.runEnd[:0], len(prep.traceSpans))[:len(prep.traceSpans)]
	prep.runEnd = end
	at := int32(0)
	for k, n := range prep.traceSpans {
		end[k] = at
		at += n
	}
	nterms := 0
	for _, ts := range prep.traceTerms {
		nterms += len(ts)
	}
	terms := make([]index.Term, 0, nterms)
	heap := len(spans)*liveSpanSize + nterms*termSize
	for i := range b.Spans {
		s := &b.Spans[i]
		k := prep.traceOf[i]
		t := touched[k]
		if t == nil {
			// A trace of an earlier request is found by hash; only a new
			// one descends the tree, once, to be inserted.
			t = new(traceState)
			if st := buf.byID.get(s.TraceID); st != nil {
				*t = *st
			} else {
				t.id = s.TraceID
				buf.traces.ReplaceOrInsert(keyOf(s.TraceID))
				heap += newTraceSize
			}
			touched[k] = t
			from := len(terms)
			terms = append(terms, prep.traceTerms[k]...)
			heap += t.addTerms(terms[from:len(terms):len(terms)])
		}
		t.addExtent(s.Start, s.End)
		t.count++
		spans[end[k]] = liveSpan{group: interned[s.Scope], raw: s.Raw, start: s.Start, end: s.End, err: prep.errs[i],
			kind: spanKind(s.Kind), status: s.Status, ordered: s.Ordered, id: s.SpanID, parent: s.Parent, peer: prep.peers[i], name: prep.names[i]}
		end[k]++
	}
	// Once per trace rather than whenever the spans move on to another:
	// spans come grouped by resource and scope, so a request's traces
	// interleave.
	for k, t := range touched {
		if t != nil {
			heap += t.spans.add(spans[end[k]-prep.traceSpans[k] : end[k] : end[k]])
			buf.byID.put(t)
		}
	}
	buf.heap.Add(int64(heap))
}

// spanKind narrows an OTLP span kind to a byte, unspecified if OTLP does
// not define it.
func spanKind(k int32) uint8 {
	if k < 0 || k > maxSpanKind {
		return 0
	}
	return uint8(k)
}

// maxSpanKind is SPAN_KIND_CONSUMER, the last kind OTLP defines.
const maxSpanKind = 5

// inOrder returns the buffer's traces in ID order, as last published.
func (buf *buffer) inOrder() []*traceState {
	traces := make([]*traceState, 0, buf.traces.Len())
	buf.traces.Ascend(func(k traceKey) bool {
		traces = append(traces, buf.byID.get(k.id()))
		return true
	})
	return traces
}

// trace returns the spans of a trace in the buffer that inserts have
// finished adding, without waiting for an insert in progress.
func (buf *buffer) trace(id TraceID) *runs[liveSpan] {
	if t := buf.byID.get(id); t != nil {
		return &t.spans
	}
	return nil
}
