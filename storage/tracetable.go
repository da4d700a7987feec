package storage

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
)

// traceTable finds a buffer's traces by ID without a lock. One writer at a
// time, the holder of the buffer's lock, adds traces; any number of readers
// look them up meanwhile. A read of a trace therefore never waits for an
// insert: at full ingest, reads queued on the buffer's lock behind writers
// whose threads the kernel had preempted (they run at the bulk pool's lower
// priority) for up to 9 ms.
//
// It is an open-addressing hash table of atomic pointers, at most half
// full, that the writer replaces with one twice the size when it fills.
// Traces are never removed from a buffer, so a slot once set stays set.
type traceTable struct {
	slots atomic.Pointer[traceSlots]
	n     int // traces added; the writer's
}

type traceSlots struct {
	shift uint // 64 - log2(len(s))
	s     []atomic.Pointer[liveTrace]
}

// minTraceSlots is the size of a table's first slots.
const minTraceSlots = 64

// slot is where the search for id starts. Trace IDs are random, but some
// clients fill only their low half, so both halves are mixed, and
// multiplied so that the high bits taken depend on all of them.
func (ts *traceSlots) slot(id TraceID) uint64 {
	h := binary.LittleEndian.Uint64(id[:8]) ^ binary.LittleEndian.Uint64(id[8:])
	return (h * 0x9e3779b97f4a7c15) >> ts.shift
}

// get returns the trace with the given ID, nil if the table has none. It
// may miss a trace being added while it runs.
func (tt *traceTable) get(id TraceID) *liveTrace {
	ts := tt.slots.Load()
	if ts == nil {
		return nil
	}
	mask := uint64(len(ts.s) - 1)
	for i := ts.slot(id); ; i = (i + 1) & mask {
		t := ts.s[i].Load()
		if t == nil || t.id == id {
			return t
		}
	}
}

// add adds t, whose ID the table does not hold. Only the writer calls it.
func (tt *traceTable) add(t *liveTrace) {
	ts := tt.slots.Load()
	if ts == nil || 2*(tt.n+1) > len(ts.s) {
		size := minTraceSlots
		if ts != nil {
			size = 2 * len(ts.s)
		}
		grown := &traceSlots{shift: uint(64 - bits.TrailingZeros(uint(size))), s: make([]atomic.Pointer[liveTrace], size)}
		if ts != nil {
			for i := range ts.s {
				if old := ts.s[i].Load(); old != nil {
					grown.place(old)
				}
			}
		}
		// Readers that loaded the old slots still find every trace added
		// before this one.
		tt.slots.Store(grown)
		ts = grown
	}
	ts.place(t)
	tt.n++
}

func (ts *traceSlots) place(t *liveTrace) {
	mask := uint64(len(ts.s) - 1)
	i := ts.slot(t.id)
	for ts.s[i].Load() != nil {
		i = (i + 1) & mask
	}
	ts.s[i].Store(t)
}
