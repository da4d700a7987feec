package storage

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
)

// traceTable holds what reads see of a buffer's traces: for each, a copy of
// its state that the last insert adding to it published before its spans
// were acknowledged. One writer at a time, the holder of the buffer's lock,
// publishes; any number of readers look traces up and scan them meanwhile,
// with no lock. Reads therefore never wait for inserts: at full ingest,
// reads queued on the buffer's lock behind writers whose threads the kernel
// had preempted (they run at the bulk pool's lower priority) for up to 9 ms.
//
// It is an open-addressing hash table of atomic pointers, at most half
// full, that the writer replaces with one twice the size when it fills.
// Traces are never removed from a buffer, so a slot once set stays set,
// to newer states of the same trace.
type traceTable struct {
	slots atomic.Pointer[traceSlots]
	n     int // traces held; the writer's
}

type traceSlots struct {
	shift uint // 64 - log2(len(s))
	s     []atomic.Pointer[traceState]
}

// minTraceSlots is the size of a table's first slots.
const minTraceSlots = 64

// slot is where the search for id starts. Trace IDs are random, but some
// clients fill only their low half, so both halves are mixed.
func (ts *traceSlots) slot(id TraceID) uint64 {
	return spread(binary.LittleEndian.Uint64(id[:8])^binary.LittleEndian.Uint64(id[8:])) >> ts.shift
}

// spread multiplies h by 2^64 divided by the golden ratio, so that its high
// bits, which callers take, depend on all of h's.
func spread(h uint64) uint64 { return h * 0x9e3779b97f4a7c15 }

// get returns the trace with the given ID as last published, nil if the
// table has none.
func (tt *traceTable) get(id TraceID) *traceState {
	ts := tt.slots.Load()
	if ts == nil {
		return nil
	}
	if i, ok := ts.find(id); ok {
		return ts.s[i].Load()
	}
	return nil
}

// each calls fn with every trace of the table as last published, in no
// particular order. It may miss traces first published while it runs.
func (tt *traceTable) each(fn func(*traceState)) {
	ts := tt.slots.Load()
	if ts == nil {
		return
	}
	for i := range ts.s {
		if t := ts.s[i].Load(); t != nil {
			fn(t)
		}
	}
}

// put publishes t, replacing what the table held of its trace. Only the
// writer calls it, and t must not change afterwards.
func (tt *traceTable) put(t *traceState) {
	ts := tt.slots.Load()
	if ts != nil {
		if i, ok := ts.find(t.id); ok {
			ts.s[i].Store(t)
			return
		}
	}
	if ts == nil || 2*(tt.n+1) > len(ts.s) {
		size := minTraceSlots
		if ts != nil {
			size = 2 * len(ts.s)
		}
		grown := &traceSlots{shift: uint(64 - bits.TrailingZeros(uint(size))), s: make([]atomic.Pointer[traceState], size)}
		if ts != nil {
			for i := range ts.s {
				if old := ts.s[i].Load(); old != nil {
					j, _ := grown.find(old.id)
					grown.s[j].Store(old)
				}
			}
		}
		// Readers that loaded the old slots still find every trace
		// published before this one.
		tt.slots.Store(grown)
		ts = grown
	}
	i, _ := ts.find(t.id)
	ts.s[i].Store(t)
	tt.n++
}

// find returns the slot that holds the trace with the given ID and true,
// or the empty slot where it would go and false. Slots are never full.
func (ts *traceSlots) find(id TraceID) (uint64, bool) {
	mask := uint64(len(ts.s) - 1)
	for i := ts.slot(id); ; i = (i + 1) & mask {
		t := ts.s[i].Load()
		if t == nil {
			return i, false
		}
		if t.id == id {
			return i, true
		}
	}
}
