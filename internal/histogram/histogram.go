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
	"slices"
	"sync"

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
//
// It holds only the buckets that count something, ascending: most
// histograms are of one series' or one edge's minute, with a few
// durations over orders of magnitude, and a query holds one for each
// series (or edge) and step of its answer. Held as every bucket between
// the lowest and the highest used, a workload of 300 services took a
// dependencies query 800 MB.
//
// A histogram that merges grow to denseFrom buckets or more, most of the
// range between its lowest and highest, holds every bucket of that range
// instead (dense): a query merges each record's minute of a series into
// the step that holds it, and merged into the buckets alone, each merge
// walked and shifted all the step's buckets, however few it added. A
// workload of 12 services and 3,500 series (200 buckets a step, 47 a
// record) spent half of an hour's span metrics query doing so.
type Histogram struct {
	buckets []uint16 // ascending, each with a count above 0; empty when dense
	counts  []uint64 // by bucket in buckets
	dense   []uint64 // when not nil, the count of every bucket from base on
	base    int
	used    int // how many of dense are above 0
	count   uint64
	sum     uint64 // saturates at math.MaxUint64
}

// denseFrom is the fewest buckets a histogram holds dense, and
// denseSpread how many times as wide as the buckets it uses its range may
// be: a dense histogram takes at most denseSpread·8 bytes a bucket used,
// against 10 (and the slack of appends) held sparse.
const (
	denseFrom   = 64
	denseSpread = 4
)

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
	i := uint16(bucketOf(ns))
	if h.dense != nil {
		one := [1]uint64{1}
		if h.addDense([]uint16{i}, one[:]) {
			h.count++
			h.sum = addSat(h.sum, ns)
			return
		}
		h.toSparse()
	}
	j, found := slices.BinarySearch(h.buckets, i)
	if found {
		h.counts[j]++
	} else {
		h.buckets = slices.Insert(h.buckets, j, i)
		h.counts = slices.Insert(h.counts, j, 1)
	}
	h.count++
	h.sum = addSat(h.sum, ns)
}

// Merge adds the counts of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if h.dense == nil && len(h.buckets) == 0 { // h is empty: a copy
		h.buckets, h.counts = append(h.buckets, o.buckets...), append(h.counts, o.counts...)
		if o.dense != nil {
			h.dense, h.base, h.used = slices.Clone(o.dense), o.base, o.used
		}
		h.count += o.count
		h.sum = addSat(h.sum, o.sum)
		return
	}
	if o.dense != nil {
		view := sparseOf(o)
		defer decodeScratch.Put(view)
		o = view
	}
	h.addBuckets(o.buckets, o.counts)
	h.count += o.count
	h.sum = addSat(h.sum, o.sum)
}

// sparseOf is a histogram from decodeScratch holding dense h's buckets
// sparse, for the caller to put back.
func sparseOf(h *Histogram) *Histogram {
	view := decodeScratch.Get().(*Histogram)
	view.Reset()
	view.buckets, view.counts = h.appendUsed(view.buckets, view.counts)
	view.count, view.sum = h.count, h.sum
	return view
}

// appendUsed appends the buckets of h, dense, that count anything to
// buckets, and their counts to counts.
func (h *Histogram) appendUsed(buckets []uint16, counts []uint64) ([]uint16, []uint64) {
	for i, c := range h.dense {
		if c > 0 {
			buckets = append(buckets, uint16(h.base+i))
			counts = append(counts, c)
		}
	}
	return buckets, counts
}

// toDense makes h, sparse, dense over the buckets lo to hi.
func (h *Histogram) toDense(lo, hi int) {
	h.dense, h.base, h.used = make([]uint64, hi-lo+1), lo, len(h.buckets)
	for j, b := range h.buckets {
		h.dense[int(b)-lo] = h.counts[j]
	}
	h.buckets, h.counts = nil, nil
}

// toSparse makes h, dense, sparse.
func (h *Histogram) toSparse() {
	h.buckets, h.counts = h.appendUsed(make([]uint16, 0, h.used), make([]uint64, 0, h.used))
	h.dense, h.base, h.used = nil, 0, 0
}

// addDense adds counts to buckets (ascending, not empty) of h, dense,
// widening its range as far as they need unless that would spread it
// more than denseSpread times as wide as the buckets it would use; then it
// adds nothing and returns false.
func (h *Histogram) addDense(buckets []uint16, counts []uint64) bool {
	lo, hi := int(buckets[0]), int(buckets[len(buckets)-1])
	if end := h.base + len(h.dense) - 1; lo < h.base || hi > end {
		lo, hi = min(lo, h.base), max(hi, end)
		widest := denseSpread * (h.used + len(buckets))
		if hi-lo+1 > widest {
			return false
		}
		// Widened a little more than asked, a range that the next
		// records push bucket by bucket is not copied for each.
		slack := min((hi-lo+1)/4, widest-(hi-lo+1))
		if lo < h.base {
			lo = max(0, lo-slack)
		}
		if hi > end {
			hi = min(numBuckets-1, hi+slack)
		}
		wider := make([]uint64, hi-lo+1)
		copy(wider[h.base-lo:], h.dense)
		h.dense, h.base = wider, lo
	}
	for k, b := range buckets {
		c := &h.dense[int(b)-h.base]
		if *c == 0 {
			h.used++
		}
		*c += counts[k]
	}
	return true
}

// addBuckets adds counts to buckets, both ascending, leaving count and sum
// alone: in place where h has them all, as the minutes of one series
// mostly do; otherwise h grows by the buckets it lacks and the two merge
// from the back, where the union's last bucket goes.
func (h *Histogram) addBuckets(buckets []uint16, counts []uint64) {
	if len(buckets) == 0 {
		return
	}
	if h.dense != nil {
		if h.addDense(buckets, counts) {
			return
		}
		h.toSparse()
	}
	missing, j := 0, 0
	for _, b := range buckets {
		for j < len(h.buckets) && h.buckets[j] < b {
			j++
		}
		if j == len(h.buckets) || h.buckets[j] != b {
			missing++
		}
	}
	if missing == 0 {
		j = 0
		for k, b := range buckets {
			for h.buckets[j] < b {
				j++
			}
			h.counts[j] += counts[k]
		}
		return
	}
	if used := len(h.buckets) + missing; used >= denseFrom {
		lo, hi := int(buckets[0]), int(buckets[len(buckets)-1])
		if old := len(h.buckets); old > 0 {
			lo, hi = min(lo, int(h.buckets[0])), max(hi, int(h.buckets[old-1]))
		}
		if hi-lo+1 <= denseSpread*used {
			h.toDense(lo, hi)
			h.addDense(buckets, counts)
			return
		}
	}
	old := len(h.buckets)
	h.buckets = append(h.buckets, make([]uint16, missing)...)
	h.counts = append(h.counts, make([]uint64, missing)...)
	i, k := old-1, len(buckets)-1
	for w := len(h.buckets) - 1; k >= 0; w-- {
		switch {
		case i >= 0 && h.buckets[i] > buckets[k]:
			h.buckets[w], h.counts[w] = h.buckets[i], h.counts[i]
			i--
		case i >= 0 && h.buckets[i] == buckets[k]:
			h.buckets[w], h.counts[w] = buckets[k], h.counts[i]+counts[k]
			i, k = i-1, k-1
		default:
			h.buckets[w], h.counts[w] = buckets[k], counts[k]
			k--
		}
	}
}

// Reset empties h, keeping the memory of its buckets held sparse.
func (h *Histogram) Reset() {
	h.buckets, h.counts = h.buckets[:0], h.counts[:0]
	h.dense, h.base, h.used = nil, 0, 0
	h.count, h.sum = 0, 0
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
	if h.dense != nil {
		for j, n := range h.dense {
			if seen += n; n > 0 && seen >= rank {
				return middle(h.base + j)
			}
		}
		return 0
	}
	for j, n := range h.counts {
		seen += n
		if seen >= rank {
			return middle(int(h.buckets[j]))
		}
	}
	return 0 // counts disagree with count: not reached for histograms built here
}

// middle is the duration a quantile in bucket i is reported as.
func middle(i int) float64 { return float64(lower(i)) + (width(i)-1)/2 }

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
	if h.dense != nil {
		view := sparseOf(h)
		defer decodeScratch.Put(view)
		h = view
	}
	dst = binary.AppendUvarint(dst, h.sum)
	// A run ends before a bucket more than maxZeroRun empty buckets after
	// the one before it.
	runEnds := func(j int) bool {
		return j+1 == len(h.buckets) || int(h.buckets[j+1])-int(h.buckets[j])-1 > maxZeroRun
	}
	runs := 0
	for j := range h.buckets {
		if runEnds(j) {
			runs++
		}
	}
	dst = binary.AppendUvarint(dst, uint64(runs))
	next, start := 0, 0
	for j := range h.buckets {
		if !runEnds(j) {
			continue
		}
		first, last := int(h.buckets[start]), int(h.buckets[j])
		dst = binary.AppendUvarint(dst, uint64(first-next))
		dst = binary.AppendUvarint(dst, uint64(last-first+1))
		for k := start; k <= j; k++ {
			if k > start {
				for range int(h.buckets[k]) - int(h.buckets[k-1]) - 1 {
					dst = append(dst, 0)
				}
			}
			dst = binary.AppendUvarint(dst, h.counts[k])
		}
		next, start = last+1, j+1
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

// decodeScratch holds the buckets a DecodeAdd into a histogram that has
// some reads before it adds them.
var decodeScratch = sync.Pool{New: func() any { return new(Histogram) }}

// DecodeAdd reads a histogram that Append wrote from r, adds its counts to
// h and returns how many durations it held; a nil h only counts them,
// which costs a small part of adding them. Corrupt input fails r and may
// leave part of it added.
func (h *Histogram) DecodeAdd(r *binread.Reader) uint64 {
	into, base := h, uint64(0)
	if h != nil {
		base = h.count
		if len(h.buckets) > 0 || h.dense != nil {
			into = decodeScratch.Get().(*Histogram)
			into.Reset()
			defer func() {
				h.addBuckets(into.buckets, into.counts)
				decodeScratch.Put(into)
			}()
		}
		h.sum = addSat(h.sum, r.Uvarint())
	} else {
		r.Uvarint()
	}
	added := into.decodeRuns(r, base)
	if h != nil {
		h.count = base + added
	}
	return added
}

// decodeRuns reads the runs of a histogram's encoding from r into h's
// buckets, ascending, or into none if h is nil, and returns the sum of
// their counts, which base plus it never overflows.
func (h *Histogram) decodeRuns(r *binread.Reader, base uint64) uint64 {
	runs := r.Count(3)
	next, added := uint64(0), uint64(0)
	for range runs {
		// Most runs' gap and length take a byte each: read here, rather
		// than through r a call each, they took a third of the decoding.
		var gap, n uint64
		if b := r.B; len(b) >= 2 && b[0] < 0x80 && b[1] < 0x80 {
			gap, n = uint64(b[0]), uint64(b[1])
			r.B = b[2:]
		} else {
			gap, n = r.Uvarint(), r.Uvarint()
		}
		if r.Err != nil {
			return added
		}
		start := next + gap
		if gap >= numBuckets || start >= numBuckets || n > numBuckets-start || n == 0 || n > uint64(len(r.B)) {
			r.Fail("histogram bucket out of range")
			return added
		}
		// Counts are most of a histogram's bytes, and most take one:
		// they are read here rather than through r, a call each.
		b := r.B
		for i := range n {
			c, k := uint64(0), 1
			if len(b) > 0 && b[0] < 0x80 {
				c = uint64(b[0])
			} else if c, k = binary.Uvarint(b); k <= 0 {
				r.Fail("truncated varint")
				return added
			}
			b = b[k:]
			if c == 0 {
				continue
			}
			if c > math.MaxUint64-base-added {
				r.Fail("histogram count overflows")
				return added
			}
			added += c
			if h != nil {
				h.buckets = append(h.buckets, uint16(start+i))
				h.counts = append(h.counts, c)
			}
		}
		r.B = b
		next = start + n
	}
	return added
}
