package spanindex

import (
	"encoding/binary"
	"math/bits"
	"slices"
)

// Index maps span IDs to the positions of a trace's spans. The zero value
// is empty; Reset sizes it for a trace.
type Index struct {
	slots []slot // more than twice as many as the trace's spans
	mask  uint64
	shift uint8 // 64 less log2(len(slots)), for hash
}

// slot is an ID and its position plus one; 0 marks an empty slot.
type slot struct {
	id  [8]byte
	pos int32
}

// Reset empties x and sizes it for up to n spans.
func (x *Index) Reset(n int) {
	size := 1 << bits.Len(uint(2*n))
	x.slots = slices.Grow(x.slots[:0], size)[:size]
	clear(x.slots)
	x.mask = uint64(size - 1)
	x.shift = uint8(64 - bits.Len(uint(size-1)))
}

// Add records that the span at pos has ID id, unless a span added before
// has that ID: Find gives the first. At most n spans (see Reset) may be
// added.
func (x *Index) Add(id [8]byte, pos int) {
	for h := x.hash(id); ; h = (h + 1) & x.mask {
		s := &x.slots[h]
		if s.pos == 0 {
			*s = slot{id, int32(pos + 1)}
			return
		}
		if s.id == id {
			return
		}
	}
}

// Find returns the position of the first span added with ID id.
func (x *Index) Find(id [8]byte) (int, bool) {
	if len(x.slots) == 0 {
		return 0, false
	}
	for h := x.hash(id); ; h = (h + 1) & x.mask {
		s := x.slots[h]
		if s.pos == 0 {
			return 0, false
		}
		if s.id == id {
			return int(s.pos - 1), true
		}
	}
}

// hash is where id's probe starts: the top bits of the ID times the
// golden ratio (Fibonacci hashing), which all of its bits move. IDs need
// not be random, and IDs that differ only in their high bytes would
// otherwise all probe from one slot.
func (x *Index) hash(id [8]byte) uint64 {
	return (binary.LittleEndian.Uint64(id[:]) * 0x9e3779b97f4a7c15) >> x.shift & x.mask
}
