package storage

import (
	"bytes"
	"fmt"
	"sync"

	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

type dictKey [17]byte

func newDictKey(kind byte, id dictID) dictKey {
	var k dictKey
	k[0] = kind
	copy(k[1:], id[:])
	return k
}

// dictCache remembers resources and scopes known to be persisted, so a cut
// writes each only once and reads resolve them without touching Pebble.
// Stores see few distinct resources and scopes; its bound only matters
// against clients that make every resource unique, and then costs
// re-reads, not correctness.
type dictCache struct {
	max int
	mu  sync.Mutex
	m   map[dictKey]codec.Dict // persisted, as cuts know
	// read holds entries that reads resolved through their views. A view
	// may predate an eviction, so they say nothing of what is stored now,
	// which is what a cut asks: mixed into m, an evicted resource that a
	// read brought back would never be stored again.
	read map[dictKey]codec.Dict
}

func newDictCache(max int) *dictCache {
	return &dictCache{max: max, m: make(map[dictKey]codec.Dict), read: make(map[dictKey]codec.Dict)}
}

func (c *dictCache) persisted(kind byte, id dictID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[newDictKey(kind, id)]
	return ok
}

// get returns a cached entry, persisted or read.
func (c *dictCache) get(k dictKey) (codec.Dict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.m[k]; ok {
		return d, true
	}
	d, ok := c.read[k]
	return d, ok
}

// put caches a copy of d in m, so that cached entries pin neither requests
// nor Pebble's buffers, and returns the copy.
func (c *dictCache) put(m map[dictKey]codec.Dict, k dictKey, d codec.Dict) codec.Dict {
	d = codec.Dict{Raw: bytes.Clone(d.Raw), SchemaURL: bytes.Clone(d.SchemaURL)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(m) >= c.max {
		clear(m)
	}
	m[k] = d
	return d
}

func (c *dictCache) markPersisted(g *group) {
	c.put(c.m, newDictKey(keys.KindResource, g.resID), g.res)
	c.put(c.m, newDictKey(keys.KindScope, g.scopeID), g.scope)
}

// lookup resolves a dictionary entry through the cache, then get: as of
// the reader's view, in which no entry it needs has been evicted.
func (c *dictCache) lookup(get viewGetter, kind byte, id dictID) (codec.Dict, error) {
	k := newDictKey(kind, id)
	if d, ok := c.get(k); ok {
		return d, nil
	}
	v, found, err := get(keys.Dict(kind, id))
	switch {
	case err != nil:
		return codec.Dict{}, fmt.Errorf("read dictionary entry %x: %w", id, err)
	case !found:
		return codec.Dict{}, fmt.Errorf("dictionary entry %x is not stored: %w", id, codec.ErrCorrupt)
	}
	d, err := codec.DecodeDict(v)
	if err != nil {
		return codec.Dict{}, fmt.Errorf("dictionary entry %x: %w", id, err)
	}
	return c.put(c.read, k, d), nil
}

// forget drops evicted resources, so that a cut that meets one again
// stores it again.
func (c *dictCache) forget(evicted map[dictID]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range evicted {
		delete(c.m, newDictKey(keys.KindResource, id))
	}
}
