package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// groupTable numbers the (resource, scope) pairs that fragments refer to, so
// that a fragment names each of its groups with a varint rather than two
// 16-byte content IDs, which zstd cannot shrink and which cost about 2.5
// bytes per span. Numbers and pairs are stored both ways in the index store
// (0x22 number → pair, 0x23 pair → number), and new numbers are persisted
// with the first block that uses them, in the same atomic ingest. The table
// caches up to a bound of them, and keeps the numbers assigned since the
// last cut until it persists them: startup loads nothing, and memory does
// not grow with the number of pairs a store has seen.
type groupTable struct {
	store    *pebble.DB
	maxCache int

	mu   sync.RWMutex
	nums map[groupKey]uint32 // cached persisted pairs
	keys map[uint32]groupKey // and the other way
	// Numbers from persisted on are pending, the next block persists them.
	next, persisted uint32
	pending         []groupKey // by number - persisted
	pendingNums     map[groupKey]uint32
}

func newGroupTable(store *pebble.DB, maxCache int) *groupTable {
	return &groupTable{store: store, maxCache: maxCache,
		nums: map[groupKey]uint32{}, keys: map[uint32]groupKey{}, pendingNums: map[groupKey]uint32{}}
}

// open finds the next number to assign: one past the last stored.
func (t *groupTable) open() error {
	it, err := t.store.NewIter(keys.KindRange(keys.KindGroup))
	if err != nil {
		return fmt.Errorf("read groups: %w", err)
	}
	defer it.Close()
	if it.Last() {
		n, err := keys.ParseGroup(it.Key())
		if err != nil {
			return err
		}
		t.next, t.persisted = n+1, n+1
	}
	return it.Error()
}

// number returns the number of a pair, assigning the next one if it has
// none. Only cuts, which run one at a time, assign numbers.
func (t *groupTable) number(k groupKey) (uint32, error) {
	t.mu.RLock()
	n, ok := t.nums[k]
	if !ok {
		n, ok = t.pendingNums[k]
	}
	t.mu.RUnlock()
	if ok {
		return n, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.pendingNums[k]; ok {
		return n, nil
	}
	v, closer, err := t.store.Get(keys.GroupNumber(k))
	switch {
	case err == nil:
		defer closer.Close()
		if len(v) != 4 {
			return 0, fmt.Errorf("number of group %x: %w: %d-byte value", k, codec.ErrCorrupt, len(v))
		}
		n = binary.BigEndian.Uint32(v)
		t.cache(k, n)
		return n, nil
	case !errors.Is(err, pebble.ErrNotFound):
		return 0, fmt.Errorf("read group number: %w", err)
	}
	n = t.next
	t.next++
	t.pending = append(t.pending, k)
	t.pendingNums[k] = n
	return n, nil
}

// cache remembers a persisted pair, making room by forgetting all the
// others: a cut's pairs are looked up again at most once each.
func (t *groupTable) cache(k groupKey, n uint32) {
	if len(t.nums) >= t.maxCache {
		clear(t.nums)
		clear(t.keys)
	}
	t.nums[k] = n
	t.keys[n] = k
}

// unpersisted returns the first number not yet in Pebble and the pairs from
// it on, which the next block must write.
func (t *groupTable) unpersisted() (uint32, []groupKey) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.persisted, t.pending[:len(t.pending):len(t.pending)]
}

// markPersisted records that numbers below n are in Pebble.
func (t *groupTable) markPersisted(n uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.persisted < n {
		k := t.pending[0]
		t.pending = t.pending[1:]
		delete(t.pendingNums, k)
		t.cache(k, t.persisted)
		t.persisted++
	}
}

// pair returns the resource and scope IDs of group n, read through get if
// not cached: as of the reader's view, in which no group it needs has been
// evicted.
func (t *groupTable) pair(get viewGetter, n uint32) (res, scope dictID, err error) {
	t.mu.RLock()
	k, ok := t.keys[n]
	if !ok && n >= t.persisted && n < t.next {
		k, ok = t.pending[n-t.persisted], true
	}
	t.mu.RUnlock()
	if !ok {
		v, found, err := get(keys.Group(n))
		switch {
		case err != nil:
			return res, scope, fmt.Errorf("read group %d: %w", n, err)
		case !found:
			return res, scope, fmt.Errorf("fragment names group %d, which is not stored: %w", n, codec.ErrCorrupt)
		case len(v) != len(k):
			return res, scope, fmt.Errorf("group %d: %w: %d-byte value", n, codec.ErrCorrupt, len(v))
		}
		// Only number → pair: the read's view may predate an eviction,
		// and a pair cached the other way is one a cut takes for stored.
		// Numbers are never given again while the process runs.
		k = groupKey(v)
		t.mu.Lock()
		if len(t.keys) >= t.maxCache {
			clear(t.keys)
		}
		t.keys[n] = k
		t.mu.Unlock()
	}
	return dictID(k[:16]), dictID(k[16:]), nil
}

// viewGetter reads a key of the index store as of a read's view; the value
// is valid until the next call.
type viewGetter func(key []byte) (value []byte, found bool, err error)

// iterGetter reads through an iterator, which it moves.
func iterGetter(it *pebble.Iterator) viewGetter {
	return func(k []byte) ([]byte, bool, error) {
		if it.SeekGE(k) && bytes.Equal(it.Key(), k) {
			return it.Value(), true, nil
		}
		return nil, false, it.Error()
	}
}

// forget drops the cached pairs of evicted resources.
func (t *groupTable) forget(evicted map[dictID]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, n := range t.nums {
		if evicted[dictID(k[:16])] {
			delete(t.nums, k)
			delete(t.keys, n)
		}
	}
}
