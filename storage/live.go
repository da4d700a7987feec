package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"

	"github.com/google/btree"

	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
)

// PartitionSpan is the span of start time covered by one partition.
const partitionNanos = uint64(3600 * 1e9)

func partitionOf(startNanos uint64) uint32 { return uint32(startNanos / partitionNanos) }

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
}

type groupKey [32]byte

func (g *group) key() groupKey {
	var k groupKey
	copy(k[:16], g.resID[:])
	copy(k[16:], g.scopeID[:])
	return k
}

type liveSpan struct {
	group *group
	raw   []byte // aliases the request it arrived in
	start uint64
	end   uint64
}

type liveTrace struct {
	id    TraceID
	spans []liveSpan
}

func lessTrace(a, b *liveTrace) bool { return bytes.Compare(a.id[:], b.id[:]) < 0 }

// buffer holds the spans acknowledged since the last cut, ordered by trace ID
// so that a cut writes them as trace-sorted runs. It is guarded by DB.mu.
type buffer struct {
	block      uint64         // the block this buffer becomes when cut
	walSegment uint64         // set when frozen: the last segment whose records it holds
	catalog    []catalogWrite // set when frozen: catalog changes to persist with it
	traces     *btree.BTreeG[*liveTrace]
	groups     map[groupKey]*group
	bytes      int // encoded request bytes held
	spans      int
}

func newBuffer(block uint64) *buffer {
	return &buffer{
		block:  block,
		traces: btree.NewG(32, lessTrace),
		groups: make(map[groupKey]*group),
	}
}

// groupsOf interns the (resource, scope) pair of every scope in b. It hashes
// outside any lock; intern then dedupes under it.
func groupsOf(b *otlpwire.Batch) []group {
	resIDs := make([]dictID, len(b.Resources))
	for i, r := range b.Resources {
		resIDs[i] = hashDict(r.Raw, r.SchemaURL)
	}
	gs := make([]group, len(b.Scopes))
	for i, s := range b.Scopes {
		r := b.Resources[s.Resource]
		gs[i] = group{
			resID:   resIDs[s.Resource],
			scopeID: hashDict(s.Raw, s.SchemaURL),
			res:     codec.Dict{Raw: r.Raw, SchemaURL: r.SchemaURL},
			scope:   codec.Dict{Raw: s.Raw, SchemaURL: s.SchemaURL},
		}
	}
	return gs
}

// insert adds the spans of a parsed request, and their services and
// operations to cat. req is the request the batch aliases; it is counted
// against the buffer's size.
func (buf *buffer) insert(req []byte, b *otlpwire.Batch, gs []group, cat *catalog) {
	services := make([]*serviceEntry, len(b.Resources))
	for i, r := range b.Resources {
		services[i] = cat.service(r.Service)
	}
	interned := make([]*group, len(gs))
	for i := range gs {
		k := gs[i].key()
		g, ok := buf.groups[k]
		if !ok {
			g = &gs[i]
			buf.groups[k] = g
		}
		interned[i] = g
	}
	var (
		last  *liveTrace
		probe liveTrace
	)
	for i := range b.Spans {
		s := &b.Spans[i]
		// Spans of one trace usually arrive together; skip the lookup then.
		if last == nil || last.id != s.TraceID {
			probe.id = s.TraceID
			t, ok := buf.traces.Get(&probe)
			if !ok {
				t = &liveTrace{id: s.TraceID}
				buf.traces.ReplaceOrInsert(t)
			}
			last = t
		}
		last.spans = append(last.spans, liveSpan{group: interned[s.Scope], raw: s.Raw, start: s.Start, end: s.End})
		res := b.Scopes[s.Scope].Resource
		cat.see(b.Resources[res].Service, services[res], s.Kind, s.Name, partitionOf(s.Start))
	}
	buf.bytes += len(req)
	buf.spans += len(b.Spans)
}

func (buf *buffer) trace(id TraceID) []liveSpan {
	t, ok := buf.traces.Get(&liveTrace{id: id})
	if !ok {
		return nil
	}
	return t.spans
}
