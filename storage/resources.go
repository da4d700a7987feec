package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"cairn/index"
	"cairn/storage/internal/keys"
)

// resourceIndex finds the resources that have a resource attribute. Spans
// are indexed by their resource as a whole (index.Resource), so a search for
// a resource attribute first asks which resources have it. Those of blocks
// are found in the index store, under keys (0x24) that a cut writes with
// the resource's dictionary entry; those of the live buffers here, in
// memory, until the cut that persists them. Memory thus holds the
// resources of the live buffers, not every resource the store has seen.
//
// Attributes are looked up by their service-less attribute term, with the
// resource's service kept beside it, so that a search without a service
// makes one lookup, not one per service.
type resourceIndex struct {
	mu      sync.RWMutex
	pending map[dictID]*pendingResource
	byTerm  map[index.Term][]dictID // pending resources by attribute term
}

// pendingResource is a resource of the live buffers.
type pendingResource struct {
	service index.Term   // its Service term
	terms   []index.Term // its service-less attribute terms
	// block is the newest buffer's block with spans of it: the cut of
	// that block persists it.
	block uint64
}

// resourceFacts is what indexing a resource needs, computed outside locks.
type resourceFacts struct {
	id      dictID
	service index.Term
	terms   []index.Term // nil if the resource was pending when computed
}

func newResourceIndex() *resourceIndex {
	return &resourceIndex{pending: map[dictID]*pendingResource{}, byTerm: map[index.Term][]dictID{}}
}

// resourceTerms is the service-less attribute terms of an encoded resource.
func resourceTerms(h *index.Hasher, raw []byte) []index.Term {
	return h.ResourceAttributeTerms(nil, nil, raw)
}

// facts computes what indexing a resource needs, skipping its attribute
// terms if it is pending already.
func (x *resourceIndex) facts(h *index.Hasher, id dictID, svc, raw []byte) resourceFacts {
	f := resourceFacts{id: id, service: h.Service(svc)}
	x.mu.RLock()
	_, known := x.pending[id]
	x.mu.RUnlock()
	if !known {
		f.terms = resourceTerms(h, raw)
	}
	return f
}

// use records that the buffer of block has spans of the resources of a
// request. raw gives a resource's encoding by position, for the rare
// resource that a cut persisted between facts and use.
func (x *resourceIndex) use(block uint64, facts []resourceFacts, raw func(int) []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var h *index.Hasher
	for i, f := range facts {
		if p := x.pending[f.id]; p != nil {
			p.block = max(p.block, block)
			continue
		}
		terms := f.terms
		if terms == nil {
			if h == nil {
				h = new(index.Hasher)
			}
			terms = resourceTerms(h, raw(i))
		}
		x.pending[f.id] = &pendingResource{service: f.service, terms: terms, block: block}
		for _, t := range terms {
			if ids := x.byTerm[t]; len(ids) == 0 || ids[len(ids)-1] != f.id {
				x.byTerm[t] = append(ids, f.id)
			}
		}
	}
}

// persisted forgets the resources that no buffer newer than block uses:
// the cut of block has stored them.
func (x *resourceIndex) persisted(block uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, p := range x.pending {
		if p.block > block {
			continue
		}
		delete(x.pending, id)
		for _, t := range p.terms {
			ids := x.byTerm[t]
			for i, other := range ids {
				if other == id {
					ids = append(ids[:i], ids[i+1:]...)
					break
				}
			}
			if len(ids) == 0 {
				delete(x.byTerm, t)
			} else {
				x.byTerm[t] = ids
			}
		}
	}
}

// isPending reports whether a live buffer may hold spans of a resource.
func (x *resourceIndex) isPending(id dictID) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.pending[id]
	return ok
}

// pendingWith appends the Resource terms of the pending resources that may
// have an attribute, given as its service-less term, to dst; with service
// non-zero, only those of that service.
func (x *resourceIndex) pendingWith(dst []index.Term, h *index.Hasher, attr, service index.Term) []index.Term {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, id := range x.byTerm[attr] {
		if service == 0 || x.pending[id].service == service {
			dst = append(dst, h.Resource(id))
		}
	}
	return dst
}

// storedWith appends the Resource terms of the stored resources that may
// have an attribute, given as its service-less term, to dst; with service
// non-zero, only those of that service. it reads the index store.
func storedWith(dst []index.Term, it *pebble.Iterator, h *index.Hasher, attr, service index.Term) ([]index.Term, error) {
	prefix := keys.ResourceAttrPrefix(uint64(attr))
	for ok := it.SeekGE(prefix); ok && bytes.HasPrefix(it.Key(), prefix); ok = it.Next() {
		_, id, err := keys.ParseResourceAttr(it.Key())
		if err != nil {
			return dst, err
		}
		if v := it.Value(); len(v) != 8 {
			return dst, fmt.Errorf("resource attribute key %x: %d-byte value", it.Key(), len(v))
		} else if service != 0 && index.Term(binary.BigEndian.Uint64(v)) != service {
			continue
		}
		dst = append(dst, h.Resource(id))
	}
	return dst, it.Error()
}
