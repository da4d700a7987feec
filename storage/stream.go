package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"

	"cairn/internal/freelist"
	"cairn/storage/internal/codec"
)

// TracePieces reads the trace with the given ID as Trace does, but hands it
// to fn a piece at a time, so that a huge trace is never held whole. Spans
// are collected from the live buffers, then fragment by fragment from disk,
// and once they reach pieceBytes they are ordered and passed to fn as a
// Trace of their own; a trace smaller than that comes as one piece, the
// Trace that Trace returns. A piece holds at most pieceBytes and one
// fragment's spans. Pieces of one trace may repeat its groups; a span stored
// twice (an Export retried after a lost acknowledgement) comes once over all
// of them. A piece's spans are valid only until fn returns: the next piece
// is decoded over them. fn's error is returned as it is. The read sees one
// consistent view of the store, held until it returns, so fn should not
// block long.
//
// admit, if not nil, is called with the size of each stored fragment before
// it is decoded, so that the caller can bound how many large fragments are
// decoded at once; an error from it ends the read and is returned as it is.
//
// It reports whether any span was found.
func (db *DB) TracePieces(ctx context.Context, id TraceID, tr TimeRange, pieceBytes int, admit func(fragmentBytes int) error, fn func(*Trace) error) (found bool, err error) {
	arena, _ := spanArenas.Get()
	defer func() { spanArenas.Put(arena[:0]) }()
	return db.tracePieces(ctx, id, tr, pieceBytes, admit, fn, &arena)
}

// tracePieces is TracePieces. Spans stored on disk are decoded into *arena,
// which each piece reuses once fn has returned, or, if arena is nil, into
// buffers of their own that fn may keep.
func (db *DB) tracePieces(ctx context.Context, id TraceID, tr TimeRange, pieceBytes int, admit func(fragmentBytes int) error, fn func(*Trace) error, arena *[]byte) (found bool, err error) {
	lo, hi := tr.bounds()
	snap, err := db.openView(lo, hi)
	if err != nil {
		return false, err
	}
	defer db.release(snap)
	var live []liveSpan
	for _, buf := range snap.bufs {
		for sp := range buf.trace(id).each {
			if p := partitionOf(sp.start); p >= lo && p <= hi && sp.start >= snap.notBefore {
				live = append(live, *sp)
			}
		}
	}

	pc := piecer{db: db, get: iterGetter(snap.index), id: id, notBefore: snap.notBefore, limit: pieceBytes, fn: fn, arena: arena}
	pc.asm.asmScratch = takeAsmScratch()
	defer pc.asm.release()
	pc.reset()
	for _, s := range live {
		g := pc.asm.group(s.group.resID, s.group.scopeID)
		if !g.resolved {
			g.Resource, g.ResourceSchemaURL = s.group.res.Raw, s.group.res.SchemaURL
			g.Scope, g.ScopeSchemaURL = s.group.scope.Raw, s.group.scope.SchemaURL
			g.resolved = true
		}
		g.spans = append(g.spans, orderedSpan{codec.SpanKey{Start: s.start, ID: binary.BigEndian.Uint64(s.id[:])}, s.raw})
		pc.bytes += len(s.raw)
	}
	if err := pc.emitIfFull(); err != nil {
		return pc.found, err
	}
	var frags []codec.Group
	for _, p := range snap.parts {
		if err := ctx.Err(); err != nil {
			return pc.found, err
		}
		for _, prefix := range db.tracePrefixes(p, id) {
			if b := db.damage.overlapping("index", prefix, append(prefix, 0xff)); b != nil {
				return pc.found, b.err(fmt.Sprintf("trace %x (its index in partition %s)", id, partitionName(p)))
			}
		}
		blocks, err := db.fragmentBlocks(snap.index, p, id, snap.minBlock)
		if err != nil {
			return pc.found, contain(err, fmt.Sprintf("trace %x (its index in partition %s)", id, partitionName(p)))
		}
		for _, b := range blocks {
			found, err := db.seekFragment(snap.data, p, b, id)
			if err != nil {
				return pc.found, err
			}
			if !found {
				// cairn repair drops span data that cannot be read, and
				// leaves the trace index naming it; the rest of the trace
				// is still served.
				continue
			}
			for more := true; more; {
				if admit != nil {
					if err := admit(len(snap.data.Value())); err != nil {
						return pc.found, err
					}
				}
				if frags, err = pc.add(frags, snap.data.Value(), b); err != nil {
					return pc.found, err
				}
				if err := pc.emitIfFull(); err != nil {
					return pc.found, err
				}
				if more, err = db.nextPart(snap.data, p, b, id); err != nil {
					return pc.found, err
				}
			}
			if err := ctx.Err(); err != nil {
				return pc.found, err
			}
		}
	}
	return pc.found, pc.emit(true)
}

// piecer gathers a trace's spans into pieces of about limit bytes.
type piecer struct {
	db        *DB
	get       viewGetter // of the read's view of the index store
	id        TraceID
	notBefore uint64
	limit     int
	fn        func(*Trace) error
	arena     *[]byte // the spans decoded for the piece; nil if fn keeps them

	asm   assembler
	bytes int // of the spans gathered in asm
	found bool
	// seen holds the spans passed on, once a trace turns out to take more
	// than one piece, so that a span stored twice comes once.
	seen map[spanDigest]struct{}
}

// spanDigest identifies a span by its ID and a hash of its resource and
// scope group and its bytes. A read in one piece merges a span's copies
// only within a group, and a read in many must give the same answer.
type spanDigest struct{ id, sum uint64 }

func digestOf(g groupKey, s orderedSpan) spanDigest {
	var h maphash.Hash
	h.SetSeed(spanHashSeed)
	h.Write(g[:])
	h.Write(s.raw)
	return spanDigest{id: s.ID, sum: h.Sum64()}
}

var spanHashSeed = maphash.MakeSeed()

// add gathers the spans of a fragment (or a part of one) of block b.
// Spans are copied out of it, which is only valid until the iterator
// moves.
func (pc *piecer) add(frags []codec.Group, fragment []byte, b uint64) ([]codec.Group, error) {
	frags, err := pc.decode(frags[:0], fragment)
	if err != nil {
		return frags, fmt.Errorf("fragment of trace %x in block %d: %w", pc.id, b, err)
	}
	for _, f := range frags {
		res, scope, err := pc.db.groups.pair(pc.get, f.Num)
		if err != nil {
			return frags, contain(err, fmt.Sprintf("trace %x (its resource and scope group %d)", pc.id, f.Num))
		}
		g := pc.asm.group(res, scope)
		g.spans = pc.asm.grow(g.spans, len(f.Spans))
		for i, s := range f.Spans {
			g.spans = append(g.spans, orderedSpan{f.Keys[i], s})
			pc.bytes += len(s)
		}
	}
	return frags, nil
}

// decode decodes a fragment of the trace into the piece's arena, or into a
// buffer of its own if fn keeps the pieces.
func (pc *piecer) decode(dst []codec.Group, fragment []byte) ([]codec.Group, error) {
	if pc.arena == nil {
		dst, _, err := codec.DecodeFragment(dst, nil, fragment, pc.id)
		return dst, err
	}
	dst, buf, err := codec.DecodeFragment(dst, *pc.arena, fragment, pc.id)
	*pc.arena = buf
	return dst, err
}

func (pc *piecer) reset() {
	pc.asm.groups = map[groupKey]*asmGroup{}
	pc.bytes = 0
}

func (pc *piecer) emitIfFull() error {
	if pc.bytes < pc.limit {
		return nil
	}
	return pc.emit(false)
}

// emit orders and passes on the spans gathered; last says that no more
// follow.
func (pc *piecer) emit(last bool) error {
	if !last && pc.seen == nil {
		pc.seen = map[spanDigest]struct{}{}
	}
	t, err := pc.asm.finish(pc.db, pc.get, pc.id, pc.notBefore, pc.seen)
	pc.reset()
	if err != nil || t == nil {
		return err
	}
	pc.found = true
	err = pc.fn(t)
	if pc.arena != nil {
		*pc.arena = (*pc.arena)[:0]
	}
	return err
}

// spanArenas keeps the buffers that reads decode stored spans into, up to
// maxArenaBytes each. A sync.Pool would lose them at each collection, twice
// a second during ingest, and a large trace's read would then take a fresh
// buffer of megabytes, each of whose pages costs a page fault when first
// written: 14 µs a page on the 2-vCPU virtual machine of the README's
// figures, 10 ms for a 10,000-span trace. Reads of 10,000-span traces
// during ingest: median 35 → 20 ms.
var spanArenas = freelist.New(2, func(b []byte) bool { return cap(b) <= maxArenaBytes })

// maxArenaBytes bounds the arenas kept: a piece of 4 MiB and the fragment
// that took it past.
const maxArenaBytes = 8 << 20
