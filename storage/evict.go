package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"

	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// evictBatch is how many resources one eviction batch deletes: a batch
// holds the lock that cuts take, so it must stay short.
const evictBatch = 4096

// evictResources deletes the resources that no retained partition has
// spans of and no live buffer holds: their dictionary entries, attribute
// index keys and groups. Scopes stay: stores see few distinct scopes. A
// read that opened its view before the partitions with spans of them were
// dropped resolves them as of that view.
func (db *DB) evictResources() error {
	oldest := db.oldestPartition()
	it, err := db.idx.NewIter(keys.KindRange(keys.KindResourceUse))
	if err != nil {
		return fmt.Errorf("evict resources: %w", err)
	}
	var unused, used []dictID // the latter with uses by dropped partitions
	for ok := it.First(); ok; ok = skipResource(it) {
		id, first, err := keys.ParseResourceUse(it.Key())
		if err != nil {
			it.Close()
			return fmt.Errorf("evict resources: %w", err)
		}
		if first >= oldest {
			continue
		}
		if it.SeekGE(keys.ResourceUse(id, oldest)) && bytes.HasPrefix(it.Key(), keys.Dict(keys.KindResourceUse, id)) {
			used = append(used, id)
		} else {
			unused = append(unused, id)
		}
		if !it.SeekLT(keys.ResourceUse(id, oldest)) { // back on the resource for skipResource
			break
		}
	}
	err = it.Error()
	it.Close()
	if err != nil {
		return fmt.Errorf("evict resources: %w", err)
	}
	evicted := 0
	for len(unused) > 0 {
		n := min(len(unused), evictBatch)
		k, err := db.evict(unused[:n])
		if err != nil {
			return fmt.Errorf("evict resources: %w", err)
		}
		evicted += k
		unused = unused[n:]
	}
	for len(used) > 0 {
		n := min(len(used), evictBatch)
		if err := db.forgetDroppedUses(used[:n]); err != nil {
			return fmt.Errorf("evict resources: %w", err)
		}
		used = used[n:]
	}
	if evicted > 0 {
		db.metrics.evictedResources.Add(float64(evicted))
		db.opts.Logger.Info("evicted resources no retained partition uses", "resources", evicted)
	}
	return nil
}

// skipResource moves it past the uses of the resource it is on.
func skipResource(it *pebble.Iterator) bool {
	last := bytes.Clone(it.Key())
	binary.BigEndian.PutUint32(last[1+16:], math.MaxUint32)
	if !it.SeekGE(last) {
		return false
	}
	if bytes.Equal(it.Key(), last) {
		return it.Next()
	}
	return true
}

// forgetDroppedUses deletes the uses of resources by partitions no longer
// retained, so that they are not read again. It holds partMu, so that a
// use by an old partition that a cut creates meanwhile is not taken for
// one of them.
func (db *DB) forgetDroppedUses(ids []dictID) error {
	db.partMu.Lock()
	defer db.partMu.Unlock()
	oldest := db.oldestPartition()
	ranges := make([][2][]byte, len(ids))
	for i, id := range ids {
		ranges[i] = [2][]byte{keys.ResourceUse(id, 0), keys.ResourceUse(id, oldest)}
	}
	return commitDeletes(db.idx, ranges, nil)
}

// oldestPartition is the oldest partition retained, the largest number if
// none is.
func (db *DB) oldestPartition() uint32 {
	db.mu.Lock()
	defer db.mu.Unlock()
	oldest := uint32(math.MaxUint32)
	for p := range db.partitions {
		oldest = min(oldest, p)
	}
	return oldest
}

// evict deletes the resources of ids that are still unused, and returns
// how many it deleted. It holds partMu, so that no cut stores a block
// using one of them meanwhile, nor trusts the caches that say it is
// stored.
func (db *DB) evict(ids []dictID) (int, error) {
	db.partMu.Lock()
	defer db.partMu.Unlock()
	oldest := db.oldestPartition() // a cut may have added an older one
	it, err := db.idx.NewIter(nil)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	b := db.idx.NewBatch()
	defer b.Close()
	var h index.Hasher
	gone := map[dictID]bool{}
	for _, id := range ids {
		use := keys.Dict(keys.KindResourceUse, id)
		if db.resources.isPending(id) || it.SeekGE(keys.ResourceUse(id, oldest)) && bytes.HasPrefix(it.Key(), use) {
			continue
		}
		if err := it.Error(); err != nil {
			return 0, err
		}
		gone[id] = true
		if err := deleteResource(b, it, &h, id); err != nil {
			return 0, err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, err
	}
	db.dict.forget(gone)
	db.groups.forget(gone)
	return len(gone), nil
}

// deleteResource adds to b the deletion of a resource's dictionary entry,
// attribute index keys, uses and groups, found through it.
func deleteResource(b *pebble.Batch, it *pebble.Iterator, h *index.Hasher, id dictID) error {
	res := keys.Dict(keys.KindResource, id)
	if it.SeekGE(res) && bytes.Equal(it.Key(), res) {
		d, err := codec.DecodeDict(it.Value())
		if err != nil {
			return fmt.Errorf("resource %x: %w", id, err)
		}
		for _, t := range resourceTerms(h, d.Raw) {
			if err := b.Delete(keys.ResourceAttr(uint64(t), id), nil); err != nil {
				return err
			}
		}
		if err := b.Delete(res, nil); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := b.DeleteRange(keys.ResourceUse(id, 0), keys.ResourceUse(id, math.MaxUint32), nil); err != nil {
		return err
	}
	if err := b.Delete(keys.ResourceUse(id, math.MaxUint32), nil); err != nil {
		return err
	}
	pairs := keys.Dict(keys.KindGroupNumber, id)
	for ok := it.SeekGE(pairs); ok && bytes.HasPrefix(it.Key(), pairs); ok = it.Next() {
		if len(it.Value()) != 4 {
			return fmt.Errorf("group number key %x: %w", it.Key(), codec.ErrCorrupt)
		}
		if err := b.Delete(keys.Group(binary.BigEndian.Uint32(it.Value())), nil); err != nil {
			return err
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			return err
		}
	}
	return it.Error()
}

// upgradeFrom3 adds what format version 4 keeps and version 3 did not: the
// number of each group by its pair, the attribute index of each resource,
// and, for each resource, a use by the newest partition, so that it stays
// until every partition stored before the upgrade is dropped. Its attribute
// index has the terms of version 5, and version 6 adds nothing a store must
// have, so it then records the current version (see upgradeFrom4). A crash
// before that repeats the upgrade, whose keys are the same.
func (db *DB) upgradeFrom3() error {
	var newest uint32
	has := len(db.partitions) > 0
	for p := range db.partitions {
		newest = max(newest, p)
	}
	w := &batchWriter{store: db.idx}
	it, err := db.idx.NewIter(keys.KindRange(keys.KindGroup))
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		n, err := keys.ParseGroup(it.Key())
		if err == nil && len(it.Value()) != len(groupKey{}) {
			err = fmt.Errorf("group %d: %w", n, codec.ErrCorrupt)
		}
		if err == nil {
			err = w.set(keys.GroupNumber(groupKey(it.Value())), binary.BigEndian.AppendUint32(nil, n))
		}
		if err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	err = indexResources(db.idx, w, func(id dictID) error {
		if !has {
			return nil
		}
		return w.set(keys.ResourceUse(id, newest), nil)
	})
	if err != nil {
		return err
	}
	if err := w.set(keys.Meta("format"), []byte{FormatVersion}); err != nil {
		return err
	}
	return w.flush()
}

// upgradeFrom4 rewrites the attribute index of resources, whose terms
// format version 5 hashes from the value's text rather than its type and
// bytes, and records version 5. Segments keep the terms they were written
// with; search tells them apart by their rows version. A crash before the
// version is recorded repeats the upgrade from the start.
func (db *DB) upgradeFrom4() error {
	w := &batchWriter{store: db.idx, b: db.idx.NewBatch()}
	if err := w.b.DeleteRange([]byte{keys.KindResourceAttr}, keys.KindEnd(keys.KindResourceAttr), nil); err != nil {
		w.b.Close()
		return err
	}
	if err := indexResources(db.idx, w, func(dictID) error { return nil }); err != nil {
		return err
	}
	if err := w.set(keys.Meta("format"), []byte{FormatVersion}); err != nil {
		return err
	}
	return w.flush()
}

// indexResources writes the attribute index keys (0x24) of every resource
// in the dictionary of the index store idx through w, and calls also for
// each resource.
func indexResources(idx *pebble.DB, w *batchWriter, also func(dictID) error) error {
	it, err := idx.NewIter(keys.KindRange(keys.KindResource))
	if err != nil {
		return err
	}
	defer it.Close()
	var h index.Hasher
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) != keys.DictLen {
			return fmt.Errorf("resource key %x: %w", it.Key(), codec.ErrCorrupt)
		}
		id := dictID(it.Key()[1:])
		d, err := codec.DecodeDict(it.Value())
		if err != nil {
			return fmt.Errorf("resource %x: %w", id, err)
		}
		svc := binary.BigEndian.AppendUint64(nil, uint64(h.Service(otlpwire.ServiceName(d.Raw))))
		for _, t := range resourceTerms(&h, d.Raw) {
			if err := w.set(keys.ResourceAttr(uint64(t), id), svc); err != nil {
				return err
			}
		}
		if err := also(id); err != nil {
			return err
		}
	}
	return it.Error()
}

// batchWriter writes keys in batches of a bounded size.
type batchWriter struct {
	store *pebble.DB
	b     *pebble.Batch
}

func (w *batchWriter) set(k, v []byte) error {
	if w.b == nil {
		w.b = w.store.NewBatch()
	}
	if err := w.b.Set(k, v, nil); err != nil {
		return err
	}
	if w.b.Len() >= 16<<20 {
		return w.flush()
	}
	return nil
}

func (w *batchWriter) flush() error {
	if w.b == nil {
		return nil
	}
	defer func() { w.b = nil }()
	defer w.b.Close()
	return w.b.Commit(pebble.Sync)
}
