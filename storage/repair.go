package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// RepairReport says what Repair did.
type RepairReport struct {
	// Dropped is the damage whose keys were removed from the stores.
	Dropped []Damage
	// Rebuilt and Lost say, for people, what of the dropped index was
	// rebuilt from span data, and what is gone for good.
	Rebuilt, Lost []string
	// After is what a check found once the repair was done: empty when it
	// succeeded.
	After *CheckReport
}

// Repair drops from the stopped store in dir what Check finds unreadable,
// so that the rest serves normally. Each damaged range of keys is excised
// from its store: the sstable, or the part of it around a damaged data
// block, leaves the store, and with it whatever other sstables held in that
// range. What the index store lost and span data can give back is then
// rebuilt: the trace index, the partition list, the newest block record
// and the numbering of resource and scope groups. Dictionary, catalog and
// search-index entries cannot be, and are reported as lost.
//
// A missing sstable is dropped as an unreadable one is. Damage in the
// write-ahead log is left to replay, which skips what it cannot read; a
// store that Pebble cannot open at all (a damaged MANIFEST) is not
// repaired. Repair refuses a directory that a running cairn holds.
func Repair(dir string, o *CheckOptions) (*RepairReport, error) {
	if o == nil {
		o = &CheckOptions{}
	}
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	c, err := openChecker(dir, false)
	if err != nil {
		return nil, err
	}
	defer c.close()
	found, err := c.check(o.Progress)
	if err != nil {
		return nil, err
	}
	r := &RepairReport{}
	var excised []pebble.KeyRange // in the index store
	for _, d := range found.Damage {
		db := c.stores[d.Store]
		if d.Store == "wal" || db == nil || d.dropLo == nil {
			continue
		}
		span, err := excise(dir, db, d)
		if err != nil {
			return r, fmt.Errorf("drop damaged keys of %s: %w", d.File, err)
		}
		r.Dropped = append(r.Dropped, d)
		if d.Store == "index" {
			excised = append(excised, span)
		}
	}
	if len(excised) > 0 {
		if err := c.rebuild(excised, r); err != nil {
			return r, err
		}
	}
	for _, d := range r.Dropped {
		if d.Store == "spans" && len(d.Traces) > 0 {
			r.Lost = append(r.Lost, fmt.Sprintf("span data of %d trace(s), %s; what they have in other blocks is still served",
				len(d.Traces), traceList(d.Traces, 10)))
		}
	}
	if err := c.close(); err != nil {
		return r, err
	}
	after, err := openChecker(dir, true)
	if err != nil {
		return r, err
	}
	defer after.close()
	r.After, err = after.check(nil)
	return r, err
}

// excise removes a damaged range of keys from a store, and returns the
// range removed. Around a damaged data block, it removes the block and its
// neighbours, and writes back, in the same atomic ingest, what of the
// neighbours' keys the damaged table held. Pebble excises only whole
// prefixes, so a trace-index key at either end widens it to its trace.
func excise(dir string, db *pebble.DB, d Damage) (pebble.KeyRange, error) {
	span := prefixSpan(d.dropLo, d.dropHi)
	if d.Whole {
		return span, db.Excise(context.Background(), span)
	}
	path := filepath.Join(dir, "salvage.sst")
	defer os.Remove(path)
	n, err := salvage(db, path, d, span)
	if err != nil {
		return span, err
	}
	if n == 0 {
		return span, db.Excise(context.Background(), span)
	}
	_, err = db.IngestAndExcise(context.Background(), []string{path}, nil, nil, span)
	return span, err
}

// salvage writes to path the keys of span that the damaged table holds
// outside its damaged block, and returns how many there are. Reading
// forward from the span's start stops with an error at the damaged block;
// reading resumes after it.
func salvage(db *pebble.DB, path string, d Damage, span pebble.KeyRange) (int, error) {
	r, err := openTable(d.table.path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	it, err := r.NewPointIter(context.Background(), sstable.IterOptions{Lower: span.Start, Upper: span.End})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	blockSize, filter := dataBlockSize, false
	if d.Store == "index" {
		blockSize, filter = 0, true
	}
	err = writeTable(vfs.Default, db, path, blockSize, filter, sstable.ZstdCompression, func(w *sstable.Writer) error {
		add := func(k, v []byte) error {
			n++
			return w.Set(k, v)
		}
		copyFrom := func(from []byte, until []byte) error {
			for kv := it.SeekGE(from, 0); kv != nil; kv = it.Next() {
				if until != nil && bytes.Compare(kv.K.UserKey, until) > 0 {
					return nil
				}
				if kv.Kind() != pebble.InternalKeyKindSet && kv.Kind() != pebble.InternalKeyKindSetWithDelete {
					continue
				}
				v, _, err := kv.Value(nil)
				if err != nil {
					return err
				}
				if err := add(kv.K.UserKey, v); err != nil {
					return err
				}
			}
			return nil
		}
		if d.Start != nil {
			// Up to the damaged block, whose error ends this pass.
			if err := copyFrom(span.Start, d.Start); err != nil {
				return err
			}
		}
		return copyFrom(d.hi, nil)
	})
	return n, err
}

// prefixSpan is the smallest range of whole prefixes that holds [lo, hi).
func prefixSpan(lo, hi []byte) pebble.KeyRange {
	split := keys.Comparer.Split
	start := lo[:split(lo)]
	end := hi
	if n := split(hi); n != len(hi) {
		// Past every key with hi's prefix.
		end = append(slices.Clone(hi[:n]), 0xff)
	}
	return pebble.KeyRange{Start: slices.Clone(start), End: slices.Clone(end)}
}

// overlaps reports whether span holds keys of kind.
func overlaps(span pebble.KeyRange, kind byte) bool {
	return bytes.Compare(span.Start, keys.KindEnd(kind)) < 0 && bytes.Compare(span.End, []byte{kind}) > 0
}

// rebuild restores what the index store lost in the excised ranges and
// span data can give back.
func (c *checker) rebuild(excised []pebble.KeyRange, r *RepairReport) error {
	idx, spans := c.stores["index"], c.stores["spans"]
	if spans == nil {
		return errors.New("rebuild the index: the spans store does not open")
	}
	b := idx.NewBatch()
	defer b.Close()
	lost := map[byte]bool{}
	for _, span := range excised {
		for kind := range kindNames {
			if overlaps(span, kind) {
				lost[kind] = true
			}
		}
		for _, kind := range []byte{keys.KindTrace, keys.KindTraceV6} {
			if !overlaps(span, kind) {
				continue
			}
			n, err := rebuildTraceIndex(spans, b, span, kind)
			if err != nil {
				return err
			}
			r.Rebuilt = append(r.Rebuilt, fmt.Sprintf("%d trace-index entries from span data", n))
		}
	}
	if lost[keys.KindPartition] || lost[keys.KindBlock] {
		if err := restorePartitions(idx, spans, b, r); err != nil {
			return err
		}
	}
	if lost[keys.KindGroup] {
		if err := restoreGroups(idx, spans, b, r); err != nil {
			return err
		}
	}
	if lost[keys.KindResourceUse] {
		n, err := rebuildResourceUses(idx, spans, b)
		if err != nil {
			return err
		}
		r.Rebuilt = append(r.Rebuilt, fmt.Sprintf("%d resource uses from span data", n))
	}
	if lost[keys.KindResourceAttr] {
		// From the dictionary, as an upgrade from format version 4 does;
		// a resource the dictionary lost is reported lost below.
		w := &batchWriter{store: idx}
		n := 0
		if err := indexResources(idx, w, func(dictID) error { n++; return nil }); err != nil {
			return fmt.Errorf("rebuild the resource-attribute index: %w", err)
		}
		if err := w.flush(); err != nil {
			return fmt.Errorf("rebuild the resource-attribute index: %w", err)
		}
		r.Rebuilt = append(r.Rebuilt, fmt.Sprintf("the resource-attribute index of %d resources from the dictionary", n))
	}
	for _, kind := range []byte{keys.KindResource, keys.KindScope, keys.KindService, keys.KindOperation, keys.KindRows, keys.KindPostings, keys.KindAggregate, keys.KindGraph} {
		if lost[kind] {
			r.Lost = append(r.Lost, lostMessages[kind])
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("rebuild the index: %w", err)
	}
	return nil
}

var lostMessages = map[byte]string{
	keys.KindResource:  "resources of the dictionary: traces whose spans name one fail to read",
	keys.KindScope:     "scopes of the dictionary: traces whose spans name one fail to read",
	keys.KindService:   "services of the catalog: listed again once they send spans",
	keys.KindOperation: "operations of the catalog: listed again once they are used",
	keys.KindRows:      "search-index rows: search passes over the segments they described; their traces still read by ID",
	keys.KindPostings:  "search-index postings: search passes over the segments they described; their traces still read by ID",
	keys.KindAggregate: "aggregates: span metrics leave out the spans of the blocks they described",
	keys.KindGraph:     "aggregates: the service graph leaves out the calls of the blocks they described",
}

// rebuildTraceIndex writes the trace-index keys that span data names and
// that the trace index of kind (this version's, or version 6's, whose
// partitions reads also look up in this version's) had in span.
func rebuildTraceIndex(spans *pebble.DB, b *pebble.Batch, span pebble.KeyRange, kind byte) (int, error) {
	lo, hi := uint32(0), ^uint32(0)
	if span.Start[0] == kind {
		lo = partitionIn(span.Start, 0)
	}
	if span.End[0] == kind {
		hi = partitionIn(span.End, hi)
	}
	it, err := spans.NewIter(&pebble.IterOptions{
		LowerBound: keys.PartitionPrefix(keys.KindData, lo),
		UpperBound: keys.KindEnd(keys.KindData),
	})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	var last []byte // data key without its part number, of the key before
	for ok := it.First(); ok; ok = it.Next() {
		p, block, id, err := keys.ParseData(it.Key())
		if err != nil {
			return n, err
		}
		if p > hi {
			break
		}
		if bytes.Equal(it.Key()[:keys.DataLen], last) {
			continue // a later part of the fragment before
		}
		last = append(last[:0], it.Key()[:keys.DataLen]...)
		had := keys.Trace(p, id, block)
		if kind == keys.KindTraceV6 {
			had = keys.TraceV6(p, id, block)
		}
		if bytes.Compare(had, span.Start) >= 0 && bytes.Compare(had, span.End) < 0 {
			if err := b.Set(keys.Trace(p, id, block), nil, nil); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, it.Error()
}

// restorePartitions lists again every partition that has span data, and
// writes a block record for the newest block span data holds if the index
// lost it: a store opens at its newest record and deletes span data of
// later blocks.
func restorePartitions(idx, spans *pebble.DB, b *pebble.Batch, r *RepairReport) error {
	it, err := spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		return err
	}
	defer it.Close()
	var newest uint64
	parts := 0
	for ok := it.First(); ok; {
		p, _, _, err := keys.ParseData(it.Key())
		if err != nil {
			return err
		}
		if err := b.Set(keys.Partition(p), nil, nil); err != nil {
			return err
		}
		parts++
		next := keys.PartitionPrefix(keys.KindData, p+1)
		if it.SeekLT(next) {
			_, block, _, _ := keys.ParseData(it.Key())
			newest = max(newest, block)
		}
		ok = it.SeekGE(next)
	}
	if err := it.Error(); err != nil {
		return err
	}
	r.Rebuilt = append(r.Rebuilt, fmt.Sprintf("the partition list (%d partitions)", parts))
	last, err := newestBlock(idx)
	if err != nil || last >= newest {
		return err
	}
	// Segment 0: replay whatever write-ahead log is left.
	rec := codec.AppendBlockRecord(nil, codec.BlockRecord{Created: uint64(time.Now().UnixNano())})
	r.Rebuilt = append(r.Rebuilt, fmt.Sprintf("the record of block %d", newest))
	return b.Set(keys.Block(newest), rec, nil)
}

func newestBlock(idx *pebble.DB) (uint64, error) {
	it, err := idx.NewIter(keys.KindRange(keys.KindBlock))
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if !it.Last() {
		return 0, it.Error()
	}
	return keys.ParseBlock(it.Key())
}

// rebuildResourceUses writes again the resource use (0x25) of every
// resource and partition that span data has spans of. Eviction keeps a
// resource while a retained partition uses it: a use lost with a damaged
// table would let it evict a resource whose spans are still retained, and
// they would no longer read. Writing uses that were not lost only rewrites
// them.
func rebuildResourceUses(idx, spans *pebble.DB, b *pebble.Batch) (int, error) {
	it, err := spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		return 0, err
	}
	defer it.Close()
	resourceOf := map[uint32]dictID{} // by group number; absent: the group is lost
	uses := map[resourceUse]bool{}
	var (
		frags []codec.Group
		buf   []byte
	)
	for ok := it.First(); ok; ok = it.Next() {
		p, _, id, err := keys.ParseData(it.Key())
		if err != nil {
			return 0, err
		}
		if frags, buf, err = codec.DecodeFragment(frags[:0], buf[:0], it.Value(), id); err != nil {
			return 0, err
		}
		for _, g := range frags {
			res, ok := resourceOf[g.Num]
			if !ok {
				v, closer, err := idx.Get(keys.Group(g.Num))
				switch {
				case errors.Is(err, pebble.ErrNotFound):
					continue // its spans do not read either
				case err != nil:
					return 0, fmt.Errorf("group %d: %w", g.Num, err)
				}
				copy(res[:], v)
				closer.Close()
				resourceOf[g.Num] = res
			}
			if res != (dictID{}) { // a lost group's placeholder names none
				uses[resourceUse{res, p}] = true
			}
		}
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	for u := range uses {
		if err := b.Set(keys.ResourceUse(u.id, u.p), nil, nil); err != nil {
			return 0, err
		}
	}
	return len(uses), nil
}

// restoreGroups fills the numbers of lost resource and scope groups, up to
// the highest span data uses, with a pair that names no resource or scope:
// spans of a lost group fail to read, and the numbers are not given to new
// pairs, which would misattribute the old spans.
func restoreGroups(idx, spans *pebble.DB, b *pebble.Batch, r *RepairReport) error {
	have := map[uint32]bool{}
	git, err := idx.NewIter(keys.KindRange(keys.KindGroup))
	if err != nil {
		return err
	}
	for ok := git.First(); ok; ok = git.Next() {
		n, err := keys.ParseGroup(git.Key())
		if err != nil {
			git.Close()
			return err
		}
		have[n] = true
	}
	if err := errors.Join(git.Error(), git.Close()); err != nil {
		return err
	}
	it, err := spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		return err
	}
	defer it.Close()
	var (
		frags []codec.Group
		buf   []byte
		top   = -1
	)
	for ok := it.First(); ok; ok = it.Next() {
		_, _, id, err := keys.ParseData(it.Key())
		if err != nil {
			return err
		}
		if frags, buf, err = codec.DecodeFragment(frags[:0], buf[:0], it.Value(), id); err != nil {
			return err
		}
		for _, g := range frags {
			top = max(top, int(g.Num))
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	filled := 0
	for n := range uint32(top + 1) {
		if !have[n] {
			if err := b.Set(keys.Group(n), make([]byte, 32), nil); err != nil {
				return err
			}
			filled++
		}
	}
	if filled > 0 {
		r.Lost = append(r.Lost, fmt.Sprintf("%d resource and scope groups: spans of theirs fail to read", filled))
	}
	return nil
}
