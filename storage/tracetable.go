package storage

import (
	"encoding/binary"
	"math/bits"
	"slices"
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
//
// It also lists its traces in the order they were first published, in
// chunks that each bound the start times of their traces' spans, so that a
// search wanting the newest few matches reads the chunks that may hold them
// rather than every trace (see compiled.searchLive): scanning all of a buffer's
// traces took a search 3-4 ms of CPU at full ingest.
type traceTable struct {
	slots atomic.Pointer[traceSlots]
	n     int // traces held; the writer's

	chunks  atomic.Pointer[[]*arrivalChunk] // replaced whole when one is added
	arrived atomic.Int64                    // entries the chunks hold, in order
}

// arrivalChunkLen is how many traces one arrival chunk lists: a search reads
// at least one chunk, and compares a bound per chunk.
const arrivalChunkLen = 256

// arrivalChunk lists traces in the order they were first published.
type arrivalChunk struct {
	// bound is at least the start of every span its traces' published states
	// hold. The writer raises it before it publishes a state, so a reader
	// that reads the bound after a state has been published finds it holds.
	bound  atomic.Uint64
	states [arrivalChunkLen]atomic.Pointer[traceState] // as the table's slots hold them
}

// arrivals is a chunk of a table's arrival order as a reader took it.
type arrivals struct {
	states []atomic.Pointer[traceState] // filled entries only
	bound  uint64
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

// appendArrivals appends the table's arrival chunks as published now, each
// with its bound as of now. Their states are never nil. It misses traces
// first published while it runs.
func (tt *traceTable) appendArrivals(out []arrivals) []arrivals {
	n := int(tt.arrived.Load())
	if n == 0 {
		return out
	}
	chunks := *tt.chunks.Load()
	for i, c := range chunks[:(n+arrivalChunkLen-1)/arrivalChunkLen] {
		filled := min(arrivalChunkLen, n-i*arrivalChunkLen)
		out = append(out, arrivals{states: c.states[:filled], bound: c.bound.Load()})
	}
	return out
}

// put publishes t, replacing what the table held of its trace. Only the
// writer calls it, and t must not change afterwards; put sets t.arrival.
func (tt *traceTable) put(t *traceState) {
	ts := tt.slots.Load()
	if ts != nil {
		if i, ok := ts.find(t.id); ok {
			t.arrival = ts.s[i].Load().arrival
			tt.list(t)
			ts.s[i].Store(t)
			return
		}
	}
	t.arrival = int32(tt.n)
	tt.chunkFor(tt.n)
	tt.list(t)
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
	tt.arrived.Store(int64(tt.n)) // after the state, which readers then find
}

// list puts t in its place in the arrival chunks, raising the chunk's bound
// to t's latest start first.
func (tt *traceTable) list(t *traceState) {
	c := (*tt.chunks.Load())[t.arrival/arrivalChunkLen]
	if c.bound.Load() < t.maxStart {
		c.bound.Store(t.maxStart)
	}
	c.states[t.arrival%arrivalChunkLen].Store(t)
}

// chunkFor adds the arrival chunk of the i-th trace if i is the first it
// lists.
func (tt *traceTable) chunkFor(i int) {
	var chunks []*arrivalChunk
	if p := tt.chunks.Load(); p != nil {
		chunks = *p
	}
	if i/arrivalChunkLen < len(chunks) {
		return
	}
	// A new slice: readers may hold the old one.
	grown := append(slices.Clip(chunks), new(arrivalChunk))
	tt.chunks.Store(&grown)
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
