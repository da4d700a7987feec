package storage

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"

	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// mergeGroupBlocks is how many consecutive blocks mergeFragments merges
// across at once, with an iterator, and so a decompressed sstable block of
// 128 or 256 KiB, on each. Traces that arrive spread over seconds land in a
// few consecutive cuts (at full rate, one every second or so); one that
// straddles two groups keeps a fragment in each.
const mergeGroupBlocks = 64

// mergeMaxBytes bounds the fragments of one trace that are merged: larger
// traces keep their fragments, so that no read must decode one huge value.
const mergeMaxBytes = 1 << 20

// mergeFragments gives each trace whose spans in partition p lie in more
// than one of blocks from..to a single fragment, under the newest of those
// blocks, and deletes the others. A trace that arrived over seconds, one
// service's export at a time, otherwise keeps a fragment per cut it
// reached: each stores the full IDs of parents another fragment holds, and
// its spans compress apart from their siblings'.
//
// The merged fragments and the deletions of a group of blocks are written
// into sstables, one per block, and ingested together: they go in
// atomically, through no log or memtable, and the recompression that
// follows rewrites them into the bottom level with the rest. Then the
// trace index keys naming the blocks whose fragment was merged away are
// deleted, so that a read of the trace seeks one block, not one per cut
// it reached: each seek that finds no fragment still loads and
// decompresses the block where the fragment would be. Until then reads
// skip a block without a fragment; a process that stops in between, or a
// deletion that fails, leaves the keys to the next pass over the blocks,
// which deletes the key of every block whose rows name a trace it holds no
// fragment of. A search finds the trace through the rows records of every
// block it had spans in, and verifies it against the fragment that took
// its spans (segmentSearch.laterFragment). It returns how many fragments
// it removed.
func (db *DB) mergeFragments(ctx context.Context, p uint32, from, to uint64) (int, error) {
	dir := filepath.Join(db.dir, "recompress")
	if err := db.opts.FS.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("create recompress dir: %w", err)
	}
	removed := 0
	for lo := from; lo <= to; lo += mergeGroupBlocks {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		var out mergeOutput
		if err := db.mergeGroup(dir, p, lo, min(to, lo+mergeGroupBlocks-1), &out); err != nil {
			return removed, err
		}
		if len(out.paths) > 0 {
			if err := db.spans.Ingest(ctx, out.paths); err != nil {
				return removed, fmt.Errorf("ingest: %w", err)
			}
			removed += out.removed
		}
		if err := commitDeletes(db.idx, nil, out.emptied); err != nil {
			return removed, fmt.Errorf("delete the trace index keys of merged fragments: %w", err)
		}
	}
	return removed, nil
}

// mergeOutput is what mergeGroup wrote: the sstables to ingest, how many
// fragments they delete, and the trace index keys of blocks left without
// a fragment of their trace.
type mergeOutput struct {
	paths   []string
	removed int
	emptied [][]byte
}

// mergeSpaceStep is how much merged span data mergeGroup writes between
// checks for free space: more than the largest trace it merges.
const mergeSpaceStep = 16 << 20

// mergeGroup merges the fragments of blocks lo..hi of partition p into out.
// The blocks' rows records say which traces have spans in more than one of
// them; only those fragments are read, through one iterator per block that
// seeks forward in trace-ID order.
func (db *DB) mergeGroup(dir string, p uint32, lo, hi uint64, out *mergeOutput) (err error) {
	split, shared, err := db.splitTraces(p, lo, hi)
	if err != nil || len(split) == 0 {
		return err
	}
	empty := func(id TraceID, b uint64) {
		if shared[fingerprintBlock{keys.Fingerprint(id), b}] {
			return // the key also names another trace's fragment in b
		}
		out.emptied = db.appendTraceKeys(out.emptied, p, id, b)
	}
	type cursor struct {
		it    *pebble.Iterator
		block uint64
		out   *sstWriter // the block's merges, once it has one
	}
	curs := make([]*cursor, hi-lo+1)
	defer func() {
		for _, c := range curs {
			if c == nil {
				continue
			}
			c.it.Close()
			if c.out == nil {
				continue
			}
			if err != nil {
				c.out.abort()
			} else if err = c.out.close(); err == nil {
				out.paths = append(out.paths, c.out.path)
			}
		}
	}()
	cursorOf := func(b uint64) (*cursor, error) {
		if c := curs[b-lo]; c != nil {
			return c, nil
		}
		it, err := db.spans.NewIter(&pebble.IterOptions{LowerBound: keys.DataBlock(p, b), UpperBound: keys.DataBlock(p, b+1)})
		if err != nil {
			return nil, err
		}
		curs[b-lo] = &cursor{it: it, block: b}
		return curs[b-lo], nil
	}
	writer := func(c *cursor) (*sstable.Writer, error) {
		if c.out == nil {
			path := filepath.Join(dir, fmt.Sprintf("merge-%d-%d.sst", p, c.block))
			w, err := newSSTWriter(db.opts.FS, db.spans, path, dataBlockSize, false, cutCompression)
			if err != nil {
				return nil, err
			}
			c.out = w
		}
		return c.out.w, nil
	}
	// Group numbers are looked up in the index store for their keys, by
	// which a fragment orders its groups.
	idxIt, err := db.idx.NewIter(keys.KindRange(keys.KindGroup))
	if err != nil {
		return err
	}
	defer idxIt.Close()
	get := iterGetter(idxIt)
	m := fragmentMerger{keyOf: func(n uint32) (groupKey, error) {
		res, scope, err := db.groups.pair(get, n)
		return groupKey(append(res[:], scope[:]...)), err
	}}
	var at []*cursor // the blocks that hold a fragment of the trace, oldest first
	var written, room int
	for _, t := range split {
		at = at[:0]
		size := 0
		parted := false // a fragment is stored in parts: too large to merge
		for _, b := range t.blocks {
			c, err := cursorOf(b)
			if err != nil {
				return err
			}
			found, err := db.seekFragment(c.it, p, b, t.id)
			switch {
			case err != nil:
				return err
			case found:
				at = append(at, c)
				size += len(c.it.Value())
				parted = parted || codec.Continued(c.it.Value()) || len(c.it.Key()) != keys.DataLen
			default:
				// An earlier merge took the fragment and stopped, or
				// failed, before it deleted the key; or cairn repair
				// dropped it.
				empty(t.id, b)
			}
		}
		if len(at) < 2 || size > mergeMaxBytes || parted {
			continue
		}
		// Free space is checked as the rewrite that follows checks it for
		// each batch, but for what the merge writes: the fragments of
		// split traces, at most their size again.
		if written+size > room {
			if err := db.checkSpace(mergeSpaceStep, db.opts.DiskReserveBytes); err != nil {
				return err
			}
			room = written + mergeSpaceStep
		}
		written += size
		m.reset()
		for _, c := range at {
			if err := m.add(c.it.Value(), t.id, c.block); err != nil {
				return fmt.Errorf("fragment of trace %x in block %d: %w", t.id, c.block, err)
			}
		}
		for _, c := range at[:len(at)-1] {
			w, err := writer(c)
			if err == nil {
				err = w.Delete(keys.Data(p, c.block, t.id))
			}
			if err != nil {
				return err
			}
			empty(t.id, c.block)
			out.removed++
		}
		newest := at[len(at)-1]
		w, err := writer(newest)
		if err == nil {
			err = m.encode(t.id, newest.block, func(n uint32, frag []byte) error {
				return w.Set(keys.DataPart(p, newest.block, t.id, n), frag)
			})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// splitTrace is a trace with rows in more than one block of a group.
type splitTrace struct {
	id     TraceID
	blocks []uint64 // ascending
}

// fingerprintBlock is a trace-index key of a partition: a fingerprint and
// a block.
type fingerprintBlock struct{ fp, block uint64 }

// splitTraces lists, by ascending trace ID, the traces that the rows
// records of blocks lo..hi of partition p name more than once. It also
// returns the trace-index keys of those traces that name another trace's
// fragment too, which a merge must keep: two traces of a block that share
// a fingerprint share its key.
func (db *DB) splitTraces(p uint32, lo, hi uint64) ([]splitTrace, map[fingerprintBlock]bool, error) {
	type row struct {
		id    TraceID
		block uint64
	}
	var rows []row
	for b := lo; b <= hi; b++ {
		v, closer, err := db.idx.Get(keys.Rows(p, b))
		if errors.Is(err, pebble.ErrNotFound) {
			continue // the block has no spans in p
		}
		if err != nil {
			return nil, nil, fmt.Errorf("rows of block %d: %w", b, err)
		}
		rs, err := index.DecodeRows(v)
		closer.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("rows of block %d: %w", b, err)
		}
		for _, r := range rs {
			rows = append(rows, row{r.TraceID, b})
		}
	}
	slices.SortFunc(rows, func(a, b row) int {
		if c := bytes.Compare(a.id[:], b.id[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.block, b.block)
	})
	var out []splitTrace
	splitBy := map[uint64]TraceID{} // the split traces by fingerprint
	for i := 0; i < len(rows); {
		j := i + 1
		for j < len(rows) && rows[j].id == rows[i].id {
			j++
		}
		if j-i > 1 {
			t := splitTrace{id: rows[i].id}
			for _, r := range rows[i:j] {
				t.blocks = append(t.blocks, r.block)
			}
			out = append(out, t)
			splitBy[keys.Fingerprint(t.id)] = t.id
		}
		i = j
	}
	var shared map[fingerprintBlock]bool
	for _, r := range rows {
		fp := keys.Fingerprint(r.id)
		if id, ok := splitBy[fp]; ok && id != r.id {
			if shared == nil {
				shared = map[fingerprintBlock]bool{}
			}
			shared[fingerprintBlock{fp, r.block}] = true
		}
	}
	return out, shared, nil
}

// fragmentMerger gathers the spans of a trace's fragments and encodes them
// as one.
type fragmentMerger struct {
	keyOf  func(group uint32) (groupKey, error)
	groups []codec.Group
	spans  []mergedSpan
	buf    []byte // the decoded spans' bytes
	enc    codec.FragmentEncoder
	out    []codec.Group
	frag   []byte
}

type mergedSpan struct {
	key   groupKey
	group uint32
	cut   uint64 // the block the span was cut in
	name  []byte
	start uint64
	raw   []byte
}

func (m *fragmentMerger) reset() {
	m.spans, m.buf = m.spans[:0], m.buf[:0]
}

// add decodes a fragment of block b. Its spans are copied out of src, which
// the caller's iterator owns.
func (m *fragmentMerger) add(src []byte, id TraceID, b uint64) error {
	var err error
	if m.groups, m.buf, err = codec.DecodeFragment(m.groups[:0], m.buf, src, id); err != nil {
		return err
	}
	for _, g := range m.groups {
		if g.Back > b {
			return fmt.Errorf("%w: group %d was cut %d blocks before block %d", codec.ErrCorrupt, g.Num, g.Back, b)
		}
		key, err := m.keyOf(g.Num)
		if err != nil {
			return err
		}
		for _, raw := range g.Spans {
			f := otlpwire.Facts(raw)
			m.spans = append(m.spans, mergedSpan{key, g.Num, b - g.Back, f.Name, f.Start, raw})
		}
	}
	return nil
}

// encode encodes the merged fragment, to be stored in block b, its spans
// grouped and ordered as a cut orders them (groupSpans), groups by key,
// spans by name, then start, but for the spans of a group that came from
// different cuts: each cut's are a group of their own, which says how many
// blocks before b they were cut in, for the service graph's pairing to
// take them back to their cut after a restart (DB.replayPairing). A
// large fragment is encoded in parts, as a cut writes them (appendParts),
// each passed to set.
func (m *fragmentMerger) encode(id TraceID, b uint64, set func(n uint32, frag []byte) error) error {
	slices.SortStableFunc(m.spans, func(x, y mergedSpan) int {
		if c := bytes.Compare(x.key[:], y.key[:]); c != 0 {
			return c
		}
		if c := cmp.Compare(x.cut, y.cut); c != 0 {
			return c
		}
		if c := bytes.Compare(x.name, y.name); c != 0 {
			return c
		}
		return cmp.Compare(x.start, y.start)
	})
	m.out = m.out[:0]
	for i, s := range m.spans {
		if i == 0 || s.group != m.spans[i-1].group || s.cut != m.spans[i-1].cut {
			m.out = append(m.out, codec.Group{Num: s.group, Back: b - s.cut})
		}
		g := &m.out[len(m.out)-1]
		g.Spans = append(g.Spans, s.raw)
	}
	var err error
	m.frag, err = appendParts(&m.enc, m.frag[:0], id, m.out, set)
	m.enc.Reset(4096)
	return err
}
