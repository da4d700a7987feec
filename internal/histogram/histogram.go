// Package histogram is a latency histogram that merges exactly: durations
// in nanoseconds are counted in log-linear buckets, 64 to each power of two,
// so that adding the counts of two histograms gives the histogram of both
// sets of durations, whatever minutes, blocks or machines they came from.
//
// Durations below 128 ns have a bucket each. Above, a bucket spans 1/64 to
// 1/128 of its lower bound; a quantile is reported as the middle of the
// bucket that holds it, so it is within 1/128 (0.8%) of the exact quantile
// of the durations counted.
package histogram

import (
	"encoding/binary"
	"errors"
	"math"
	"math/bits"

	"cairn/internal/binread"
)

// subBits is log2 of the buckets per power of two.
const subBits = 6

// exactBelow is the first duration whose bucket holds more than one value.
const exactBelow = 2 << subBits

// numBuckets is the number of buckets: the index of the one of math.MaxUint64,
// plus one.
const numBuckets = (64-subBits-1)<<subBits + exactBelow

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt histogram")

// Histogram counts durations. The zero value is empty and ready to use.
type Histogram struct {
	first  int      // bucket index of counts[0]
	counts []uint64 // from first to the highest bucket used
	count  uint64
	sum    uint64 // saturates at math.MaxUint64
}

// bucketOf is the index of the bucket that counts ns.
func bucketOf(ns uint64) int {
	if ns < exactBelow {
		return int(ns)
	}
	shift := bits.Len64(ns) - subBits - 1
	return shift<<subBits + int(ns>>shift)
}

// lower is the least duration that bucket i counts.
func lower(i int) uint64 {
	if i < exactBelow {
		return uint64(i)
	}
	shift := i>>subBits - 1
	return uint64(i-shift<<subBits) << shift
}

// width is how many durations bucket i counts.
func width(i int) float64 {
	if i < exactBelow {
		return 1
	}
	return math.Ldexp(1, i>>subBits-1)
}

// Add counts one duration.
func (h *Histogram) Add(ns uint64) {
	h.addN(bucketOf(ns), 1)
	h.count++
	h.sum = addSat(h.sum, ns)
}

// addN adds n to the count of bucket i, leaving count and sum alone.
func (h *Histogram) addN(i int, n uint64) {
	h.cover(i, i+1)
	h.counts[i-h.first] += n
}

// cover grows counts to hold buckets [lo, hi), at least a power of two's
// buckets at a time.
func (h *Histogram) cover(lo, hi int) {
	switch {
	case len(h.counts) == 0:
		h.first = rowStart(lo)
		h.counts = append(h.counts[:0], make([]uint64, rowEnd(hi-1)-h.first)...)
		return
	case lo < h.first:
		// As many rows again below as are held, so that ever shorter
		// durations reallocate once per doubling, as longer ones do.
		first := rowStart(max(0, rowStart(lo)-len(h.counts)))
		grown := make([]uint64, h.first-first+len(h.counts), h.first-first+cap(h.counts))
		copy(grown[h.first-first:], h.counts)
		h.counts, h.first = grown, first
	}
	if hi > h.first+len(h.counts) {
		h.counts = append(h.counts, make([]uint64, rowEnd(hi-1)-h.first-len(h.counts))...)
	}
}

// rowStart and rowEnd bound the buckets of i's power of two (its row of
// 64; the first row holds the 128 exact buckets).
func rowStart(i int) int { return max(i>>subBits, 1)<<subBits - 1<<subBits }

func rowEnd(i int) int { return max(i>>subBits, 1)<<subBits + 1<<subBits }

// Merge adds the counts of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if len(o.counts) > 0 {
		h.cover(o.first, o.first+len(o.counts))
		dst := h.counts[o.first-h.first:]
		for j, n := range o.counts {
			dst[j] += n
		}
	}
	h.count += o.count
	h.sum = addSat(h.sum, o.sum)
}

// Reset empties h, keeping its memory.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.counts = h.counts[:0]
	h.first, h.count, h.sum = 0, 0, 0
}

// Count is the number of durations counted.
func (h *Histogram) Count() uint64 { return h.count }

// Sum is the sum of the durations counted, in nanoseconds; math.MaxUint64
// if it overflowed.
func (h *Histogram) Sum() uint64 { return h.sum }

// Quantile estimates the q-quantile (0 ≤ q ≤ 1) of the durations counted in
// nanoseconds: the middle of the bucket holding the duration of rank
// ⌈q·count⌉ (the least for q = 0). It is 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) float64 {
	if h.count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(max(0, min(1, q)) * float64(h.count)))
	rank = max(rank, 1)
	var seen uint64
	for j, n := range h.counts {
		seen += n
		if seen >= rank {
			i := h.first + j
			return float64(lower(i)) + (width(i)-1)/2
		}
	}
	return 0 // counts disagree with count: not reached for histograms built here
}

func addSat(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// maxZeroRun is the longest run of empty buckets written inside a run of
// counts: an empty bucket costs a byte there, a new run two.
const maxZeroRun = 2

// Append appends the encoding of h to dst:
//
//	uvarint(sum) uvarint(nruns) nruns × ( uvarint(gap) uvarint(n) n × uvarint(count) )
//
// A run is n ≥ 1 consecutive buckets; gap is its first bucket's index, less the
// index after the previous run's last. The count is the sum of the bucket
// counts.
func (h *Histogram) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, h.sum)
	type run struct{ start, end int } // indexes into counts
	var runs []run
	for j := 0; j < len(h.counts); j++ {
		if h.counts[j] == 0 {
			continue
		}
		if n := len(runs); n > 0 && j-runs[n-1].end <= maxZeroRun {
			runs[n-1].end = j + 1
			continue
		}
		runs = append(runs, run{j, j + 1})
	}
	dst = binary.AppendUvarint(dst, uint64(len(runs)))
	next := 0
	for _, r := range runs {
		dst = binary.AppendUvarint(dst, uint64(h.first+r.start-next))
		dst = binary.AppendUvarint(dst, uint64(r.end-r.start))
		for _, n := range h.counts[r.start:r.end] {
			dst = binary.AppendUvarint(dst, n)
		}
		next = h.first + r.end
	}
	return dst
}

// Decode reads a histogram that Append wrote from r into h, which it
// resets first. Corrupt input fails r; it never makes h hold more than
// numBuckets counts.
func (h *Histogram) Decode(r *binread.Reader) {
	h.Reset()
	h.DecodeAdd(r)
}

// DecodeAdd reads a histogram that Append wrote from r, adds its counts to
// h and returns how many durations it held. Corrupt input fails r and may
// leave part of it added.
func (h *Histogram) DecodeAdd(r *binread.Reader) uint64 {
	h.sum = addSat(h.sum, r.Uvarint())
	runs := r.Count(3)
	next, added := uint64(0), uint64(0)
	for range runs {
		gap := r.Uvarint()
		n := uint64(r.Count(1))
		if r.Err != nil {
			return added
		}
		start := next + gap
		if gap >= numBuckets || start >= numBuckets || n > numBuckets-start || n == 0 {
			r.Fail("histogram bucket out of range")
			return added
		}
		h.cover(int(start), int(start+n))
		dst := h.counts[int(start)-h.first:][:n]
		// Counts are most of a histogram's bytes, and most take one:
		// they are read here rather than through r, a call each.
		b := r.B
		for i := range dst {
			c, k := uint64(0), 1
			if len(b) > 0 && b[0] < 0x80 {
				c = uint64(b[0])
			} else if c, k = binary.Uvarint(b); k <= 0 {
				r.Fail("truncated varint")
				return added
			}
			b = b[k:]
			var carry uint64
			if h.count, carry = bits.Add64(h.count, c, 0); carry != 0 {
				r.Fail("histogram count overflows")
				return added
			}
			added += c
			dst[i] += c
		}
		r.B = b
		next = start + n
	}
	return added
}
