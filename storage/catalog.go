package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"cairn/storage/internal/keys"
)

// maxOperationsPerService bounds the operations remembered per service. Span
// names are meant to be low-cardinality, but instrumentation that puts IDs in
// them would otherwise grow the catalog, which lives in memory, without
// limit. Spans are stored either way; past the bound new names are not
// listed.
const maxOperationsPerService = 10_000

// Operation is a span name a service uses with a span kind.
type Operation struct {
	Name string
	Kind int32 // opentelemetry.proto.trace.v1.Span.SpanKind
}

// catalog lists the services and operations in the store, each with the
// newest partition it was seen in. It lives in memory (its size depends on
// the number of services and operations, not of spans) and is guarded by
// DB.mu. Changes since the last cut are written with the next block.
type catalog struct {
	services map[string]*serviceEntry
	pending  map[catalogKey]bool
	scratch  []byte
}

type serviceEntry struct {
	last uint32
	ops  map[string]uint32 // opKey → newest partition
	// pruned is the retention horizon (a partition) that ops was last
	// cleared of older operations for: at the bound, once per horizon.
	pruned uint32
	// full says a name was turned away at the bound since the last
	// pruning (in memory only: after a restart, from the next one on).
	full bool
}

// catalogKey names a service (op == "") or one of its operations.
type catalogKey struct{ service, op string }

// opKey is kind byte | name; it is never empty.
func opKey(dst []byte, kind int32, name []byte) []byte {
	return append(append(dst[:0], byte(kind)), name...)
}

func newCatalog() *catalog {
	return &catalog{services: map[string]*serviceEntry{}, pending: map[catalogKey]bool{}}
}

// entry returns the entry of a service, creating it.
func (c *catalog) entry(name string) *serviceEntry {
	e := c.services[name]
	if e == nil {
		e = &serviceEntry{ops: map[string]uint32{}}
		c.services[name] = e
	}
	return e
}

// service returns the entry of a service that spans arrived for, creating
// it as a pending change.
func (c *catalog) service(name []byte) *serviceEntry {
	if e := c.services[string(name)]; e != nil {
		return e
	}
	c.pending[catalogKey{service: string(name)}] = true
	return c.entry(string(name))
}

// see records that service used an operation in partition p. Operations
// last seen before partition retained, which retention has dropped, give
// their room to new ones once the service has maxOperationsPerService.
func (c *catalog) see(svcName []byte, svc *serviceEntry, kind int32, name []byte, p, retained uint32) {
	if p > svc.last {
		svc.last = p
		c.pending[catalogKey{service: string(svcName)}] = true
	}
	c.scratch = opKey(c.scratch, kind, name)
	last, ok := svc.ops[string(c.scratch)]
	if !ok && len(svc.ops) >= maxOperationsPerService {
		if retained > svc.pruned {
			// Deleted on disk too, with the next block, or a restart
			// would load them all back.
			svc.pruned, svc.full = retained, false
			maps.DeleteFunc(svc.ops, func(op string, last uint32) bool {
				if last >= retained {
					return false
				}
				c.pending[catalogKey{string(svcName), op}] = true
				return true
			})
		}
		if len(svc.ops) >= maxOperationsPerService {
			svc.full = true
			return
		}
	}
	if ok && p <= last {
		return
	}
	svc.ops[string(c.scratch)] = p
	c.pending[catalogKey{string(svcName), string(c.scratch)}] = true
}

// catalogWrite is one catalog key and value to persist; a nil value
// deletes the key (values are never empty).
type catalogWrite struct{ key, value []byte }

// mergeCatalogWrites returns the writes of a and b, sorted by key; of a
// key in both, b's, the later.
func mergeCatalogWrites(a, b []catalogWrite) []catalogWrite {
	if len(b) == 0 {
		return a
	}
	out := slices.Concat(b, a)
	slices.SortStableFunc(out, func(x, y catalogWrite) int { return bytes.Compare(x.key, y.key) })
	return slices.CompactFunc(out, func(x, y catalogWrite) bool { return bytes.Equal(x.key, y.key) })
}

// takePending returns the changes since the last call, as sorted keys and
// values, and forgets them.
func (c *catalog) takePending() []catalogWrite {
	var out []catalogWrite
	for k := range c.pending {
		svc := c.services[k.service]
		if k.op == "" {
			out = append(out, catalogWrite{keys.Service(k.service), binary.AppendUvarint(nil, uint64(svc.last))})
		} else {
			w := catalogWrite{key: keys.Operation(k.service, k.op)}
			if p, ok := svc.ops[k.op]; ok {
				w.value = binary.AppendUvarint(nil, uint64(p))
			}
			out = append(out, w)
		}
	}
	clear(c.pending)
	slices.SortFunc(out, func(a, b catalogWrite) int { return bytes.Compare(a.key, b.key) })
	return out
}

// load reads the persisted catalog: one key per service and per operation.
func (c *catalog) load(r pebble.Reader) error {
	it, err := r.NewIter(&pebble.IterOptions{
		LowerBound: []byte{keys.KindService},
		UpperBound: keys.KindEnd(keys.KindOperation),
	})
	if err != nil {
		return fmt.Errorf("load catalog: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		p, n := binary.Uvarint(it.Value())
		if n <= 0 || p > uint64(^uint32(0)) {
			return fmt.Errorf("load catalog: bad value %x of key %x", it.Value(), it.Key())
		}
		if svc, ok := keys.ParseService(it.Key()); ok {
			e := c.entry(svc)
			e.last = max(e.last, uint32(p))
			continue
		}
		svc, op, err := keys.ParseOperation(it.Key())
		if err != nil {
			return fmt.Errorf("load catalog: %w", err)
		}
		c.entry(svc).ops[op] = uint32(p)
	}
	return it.Error()
}

// listServices lists the services seen in partition minPart or later.
func (c *catalog) listServices(minPart uint32) []string {
	var out []string
	for name, e := range c.services {
		if e.last >= minPart {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// listOperations lists a service's operations seen in partition minPart or later.
func (c *catalog) listOperations(service string, minPart uint32) (ops []Operation, more bool) {
	e := c.services[service]
	if e == nil {
		return nil, false
	}
	var out []Operation
	for k, p := range e.ops {
		if p >= minPart {
			out = append(out, Operation{Name: k[1:], Kind: int32(k[0])})
		}
	}
	slices.SortFunc(out, func(a, b Operation) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return int(a.Kind) - int(b.Kind)
	})
	return out, e.full
}
