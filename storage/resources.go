package storage

import (
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// resourceIndex maps the Attribute terms of resource attributes to the
// resources that have them. Spans are indexed by their resource as a whole
// (index.Resource), so a search for a resource attribute first asks this
// index which resources may have it. It holds every resource the store has
// seen, loaded at open from the dictionary; its size grows with the number
// of distinct resources, not of spans.
type resourceIndex struct {
	mu     sync.RWMutex
	known  map[dictID]bool
	byTerm map[index.Term][]dictID
}

func newResourceIndex() *resourceIndex {
	return &resourceIndex{known: map[dictID]bool{}, byTerm: map[index.Term][]dictID{}}
}

// add indexes a resource, if it is new.
func (x *resourceIndex) add(h *index.Hasher, id dictID, svc, raw []byte) {
	x.mu.RLock()
	known := x.known[id]
	x.mu.RUnlock()
	if known {
		return
	}
	terms := h.ResourceAttributeTerms(nil, svc, raw)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.known[id] {
		return
	}
	x.known[id] = true
	for _, t := range terms {
		if ids := x.byTerm[t]; len(ids) == 0 || ids[len(ids)-1] != id {
			x.byTerm[t] = append(ids, id)
		}
	}
}

// resources appends the Resource terms of the resources that may have an
// attribute, given as its Attribute term, to dst.
func (x *resourceIndex) resources(dst []index.Term, h *index.Hasher, attr index.Term) []index.Term {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, id := range x.byTerm[attr] {
		dst = append(dst, h.Resource(id))
	}
	return dst
}

// load indexes the resources of the dictionary.
func (x *resourceIndex) load(r pebble.Reader) error {
	it, err := r.NewIter(keys.KindRange(keys.KindResource))
	if err != nil {
		return fmt.Errorf("read resources: %w", err)
	}
	defer it.Close()
	var h index.Hasher
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) != keys.DictLen {
			return fmt.Errorf("resource key %x: %w", it.Key(), codec.ErrCorrupt)
		}
		d, err := codec.DecodeDict(it.Value())
		if err != nil {
			return fmt.Errorf("resource %x: %w", it.Key()[1:], err)
		}
		x.add(&h, dictID(it.Key()[1:]), otlpwire.ServiceName(d.Raw), d.Raw)
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("read resources: %w", err)
	}
	return nil
}
