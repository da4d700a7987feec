package storage

import (
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// groupTable numbers the (resource, scope) pairs that fragments refer to, so
// that a fragment names each of its groups with a varint rather than two
// 16-byte content IDs, which zstd cannot shrink and which cost about 2.5
// bytes per span. A store sees few distinct pairs; the table lives in
// memory, loaded at open, and new numbers are persisted with the first block
// that uses them, in the same atomic ingest.
type groupTable struct {
	mu        sync.RWMutex
	keys      []groupKey // by number
	nums      map[groupKey]uint32
	persisted int // numbers below this are in Pebble
}

func newGroupTable() *groupTable { return &groupTable{nums: map[groupKey]uint32{}} }

func (t *groupTable) load(r pebble.Reader) error {
	it, err := r.NewIter(keys.KindRange(keys.KindGroup))
	if err != nil {
		return fmt.Errorf("read groups: %w", err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		n, err := keys.ParseGroup(it.Key())
		if err != nil {
			return err
		}
		if int(n) != len(t.keys) || len(it.Value()) != len(groupKey{}) {
			return fmt.Errorf("group %d: %w: %d groups before it, %d-byte value", n, codec.ErrCorrupt, len(t.keys), len(it.Value()))
		}
		k := groupKey(it.Value())
		t.nums[k] = n
		t.keys = append(t.keys, k)
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("read groups: %w", err)
	}
	t.persisted = len(t.keys)
	return nil
}

// number returns the number of a pair, assigning the next one if it has
// none. Only cuts, which run one at a time, assign numbers.
func (t *groupTable) number(k groupKey) uint32 {
	t.mu.RLock()
	n, ok := t.nums[k]
	t.mu.RUnlock()
	if ok {
		return n
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n = uint32(len(t.keys))
	t.nums[k] = n
	t.keys = append(t.keys, k)
	return n
}

// unpersisted returns the first number not yet in Pebble and the pairs from
// it on, which the next block must write.
func (t *groupTable) unpersisted() (uint32, []groupKey) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return uint32(t.persisted), t.keys[t.persisted:len(t.keys):len(t.keys)]
}

// markPersisted records that numbers below n are in Pebble.
func (t *groupTable) markPersisted(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.persisted = max(t.persisted, n)
}

// pair returns the resource and scope IDs of group n.
func (t *groupTable) pair(n uint32) (res, scope dictID, err error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if int(n) >= len(t.keys) {
		return res, scope, fmt.Errorf("fragment names group %d of %d: %w", n, len(t.keys), codec.ErrCorrupt)
	}
	k := t.keys[n]
	return dictID(k[:16]), dictID(k[16:]), nil
}
