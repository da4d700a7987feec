package storage

import (
	"slices"
	"strings"
	"sync"
)

// Fault kinds: conditions the store is in, not events it saw. Each is set
// while it lasts and cleared when the store has recovered from it, so that
// readiness and the faults metric say what is wrong now.
const (
	// FaultWAL: the write-ahead log cannot be written; exports fail with
	// a retryable error until a write succeeds again.
	FaultWAL = "wal"
	// FaultCut: the live buffer cannot be cut into a block; cuts are
	// retried, and writers wait once the next buffer fills.
	FaultCut = "cut"
	// FaultCorruption: data on disk failed its checksums; what it held
	// cannot be read, everything else is served.
	FaultCorruption = "corruption"
)

// faults is the set of faults the store is in, each with a message saying
// why, for people.
type faults struct {
	mu sync.Mutex
	m  map[string]string
}

// set records that fault kind holds, and reports whether it is new, so that
// its cause is logged once, not on every failure.
func (f *faults) set(kind, why string) (fresh bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = make(map[string]string)
	}
	_, had := f.m[kind]
	f.m[kind] = why
	return !had
}

// clear records that fault kind no longer holds, and reports whether it did.
func (f *faults) clear(kind string) (was bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, was = f.m[kind]
	delete(f.m, kind)
	return was
}

// Fault is a condition the store is in.
type Fault struct {
	Kind string // one of the Fault* constants
	Why  string
}

// Faults lists the faults the store is in now, by kind; none means healthy.
// A store with faults still serves what it can: readiness probes should
// report them, not restart the process.
func (db *DB) Faults() []Fault {
	f := &db.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Fault, 0, len(f.m))
	for k, why := range f.m {
		out = append(out, Fault{Kind: k, Why: why})
	}
	slices.SortFunc(out, func(a, b Fault) int { return strings.Compare(a.Kind, b.Kind) })
	return out
}
