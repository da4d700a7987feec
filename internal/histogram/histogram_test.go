package histogram

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"cairn/internal/binread"
)

// maxRelErr is the bound the package promises on any quantile.
const maxRelErr = 1.0 / 128

func TestBucketBounds(t *testing.T) {
	for i := range numBuckets {
		lo := lower(i)
		if bucketOf(lo) != i {
			t.Fatalf("bucketOf(lower(%d) = %d) = %d", i, lo, bucketOf(lo))
		}
		if i > 0 && bucketOf(lo-1) != i-1 {
			t.Fatalf("bucketOf(%d) = %d, want %d", lo-1, bucketOf(lo-1), i-1)
		}
	}
	if bucketOf(math.MaxUint64) != numBuckets-1 {
		t.Fatalf("bucketOf(MaxUint64) = %d, want %d", bucketOf(math.MaxUint64), numBuckets-1)
	}
}

// randomDurations draws n durations from one of several shapes: latencies
// over many orders of magnitude, tight clusters, tiny and extreme values.
func randomDurations(r *rand.Rand, n int) []uint64 {
	shape := r.IntN(4)
	out := make([]uint64, n)
	for i := range out {
		switch shape {
		case 0: // log-uniform from 1 ns to 100 s
			out[i] = uint64(math.Exp(r.Float64() * math.Log(1e11)))
		case 1: // clustered around 5 ms
			out[i] = uint64(5e6 + r.NormFloat64()*2e5)
		case 2: // tiny
			out[i] = r.Uint64N(300)
		default: // anything
			out[i] = r.Uint64() >> r.UintN(64)
		}
	}
	return out
}

// exactQuantile is the duration of rank ⌈q·n⌉ (at least 1) of sorted.
func exactQuantile(sorted []uint64, q float64) uint64 {
	rank := max(1, int(math.Ceil(q*float64(len(sorted)))))
	return sorted[rank-1]
}

func checkQuantiles(t *testing.T, h *Histogram, values []uint64) {
	t.Helper()
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	if h.Count() != uint64(len(values)) {
		t.Fatalf("count %d, want %d", h.Count(), len(values))
	}
	var sum uint64
	for _, v := range values {
		sum = addSat(sum, v)
	}
	if h.Sum() != sum {
		t.Fatalf("sum %d, want %d", h.Sum(), sum)
	}
	for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
		want := float64(exactQuantile(sorted, q))
		got := h.Quantile(q)
		if math.Abs(got-want) > maxRelErr*want {
			t.Fatalf("q%v = %v, exact %v: relative error %v over %v", q, got, want, math.Abs(got-want)/want, maxRelErr)
		}
	}
}

func TestQuantilesAgainstExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		values := randomDurations(r, 1+r.IntN(3000))
		var h Histogram
		for _, v := range values {
			h.Add(v)
		}
		checkQuantiles(t, &h, values)
	}
}

// TestMergeIsExact splits random durations among histograms, merges them
// in a random order, round-trips through the encoding on the way, and
// compares with one histogram of them all, bucket for bucket.
func TestMergeIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		values := randomDurations(r, 1+r.IntN(2000))
		var whole Histogram
		parts := make([]Histogram, 1+r.IntN(8))
		for _, v := range values {
			whole.Add(v)
			parts[r.IntN(len(parts))].Add(v)
		}
		var merged Histogram
		for _, i := range r.Perm(len(parts)) {
			var back Histogram
			rd := binread.New(parts[i].Append(nil), ErrCorrupt)
			back.Decode(rd)
			if err := rd.Done("histogram"); err != nil {
				t.Fatal(err)
			}
			merged.Merge(&back)
		}
		if !equal(&merged, &whole) {
			t.Fatalf("merged %+v, want %+v", merged, whole)
		}
		checkQuantiles(t, &merged, values)

		// Decoding each part straight into one histogram adds up alike,
		// and into none counts it.
		var added Histogram
		for i := range parts {
			rd := binread.New(parts[i].Append(nil), ErrCorrupt)
			if n := added.DecodeAdd(rd); n != parts[i].Count() || rd.Done("histogram") != nil {
				t.Fatalf("DecodeAdd of %d durations added %d: %v", parts[i].Count(), n, rd.Err)
			}
			rd = binread.New(parts[i].Append(nil), ErrCorrupt)
			if n := (*Histogram)(nil).DecodeAdd(rd); n != parts[i].Count() || rd.Done("histogram") != nil {
				t.Fatalf("DecodeAdd of %d durations into none counted %d: %v", parts[i].Count(), n, rd.Err)
			}
		}
		if !equal(&added, &whole) {
			t.Fatalf("decoded into one %+v, want %+v", added, whole)
		}
	}
}

// TestDenseAndBack merges parts into histograms that turn dense and back
// to sparse: clustered durations spread over enough buckets, then
// outliers that would spread the range too wide, through every way a
// histogram takes counts (Add, Merge of sparse and of dense parts, into
// empty histograms too, DecodeAdd), against one histogram of every
// duration added one by one.
func TestDenseAndBack(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	// clustered is a histogram of n durations a few hundred buckets
	// around ms milliseconds, merged from parts so that it may be dense.
	clustered := func(ms float64, n int) (Histogram, []uint64) {
		var h Histogram
		var values []uint64
		for range 4 {
			var part Histogram
			for range n / 4 {
				v := uint64((ms + r.NormFloat64()*ms/5) * 1e6)
				part.Add(v)
				values = append(values, v)
			}
			h.Merge(&part)
		}
		return h, values
	}
	seen := map[string]int{}
	for range 200 {
		var values []uint64
		var merged Histogram
		wasDense := false
		for range 2 + r.IntN(30) {
			var part Histogram
			var vs []uint64
			switch r.IntN(4) {
			case 0:
				part, vs = clustered(5, r.IntN(400))
			case 1: // an outlier or two, orders of magnitude away
				vs = append(vs, r.Uint64N(1000), uint64(1e11)+r.Uint64N(1e9))
				for _, v := range vs {
					part.Add(v)
				}
			case 2:
				vs = randomDurations(r, r.IntN(50))
				for _, v := range vs {
					part.Add(v)
				}
			default: // into a copy of merged, which goes on from it
				var copied Histogram
				copied.Merge(&merged)
				merged = copied
				seen["copied"]++
				continue
			}
			if part.dense != nil {
				seen["dense part"]++
			}
			values = append(values, vs...)
			switch r.IntN(3) {
			case 0:
				merged.Merge(&part)
			case 1:
				rd := binread.New(part.Append(nil), ErrCorrupt)
				merged.DecodeAdd(rd)
				if err := rd.Done("histogram"); err != nil {
					t.Fatal(err)
				}
			default:
				if merged.dense != nil {
					seen["added to dense"]++
				}
				for _, v := range vs {
					merged.Add(v)
				}
			}
			if merged.dense != nil {
				wasDense = true
				seen["dense"]++
			} else if wasDense {
				wasDense = false
				seen["back to sparse"]++
			}
		}
		if len(values) == 0 {
			continue
		}
		var whole Histogram
		for _, v := range values {
			whole.Add(v)
		}
		if !equal(&merged, &whole) {
			t.Fatalf("merged %+v, want %+v", merged, whole)
		}
		checkQuantiles(t, &merged, values)
		merged.Reset()
		if merged.Count() != 0 || merged.Quantile(0.5) != 0 || len(merged.Append(nil)) != 2 {
			t.Fatalf("reset histogram: count %d, q50 %v", merged.Count(), merged.Quantile(0.5))
		}
	}
	for _, c := range []string{"dense", "back to sparse", "dense part", "added to dense", "copied"} {
		if seen[c] == 0 {
			t.Errorf("no case of %s: %v", c, seen)
		}
	}
}

// equal compares what histograms count, not how their memory is laid out.
func equal(a, b *Histogram) bool {
	return a.count == b.count && a.sum == b.sum && slices.Equal(a.Append(nil), b.Append(nil))
}

func TestEmpty(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatalf("empty histogram: q50 %v, count %d", h.Quantile(0.5), h.Count())
	}
	var back Histogram
	rd := binread.New(h.Append(nil), ErrCorrupt)
	back.Decode(rd)
	if err := rd.Done("histogram"); err != nil || !equal(&h, &back) {
		t.Fatalf("empty histogram does not round-trip: %v", err)
	}
}

func TestSumSaturates(t *testing.T) {
	var h Histogram
	h.Add(math.MaxUint64)
	h.Add(1)
	if h.Sum() != math.MaxUint64 {
		t.Fatalf("sum %d, want it saturated", h.Sum())
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"truncated":       {0, 1, 5},
		"past last":       {0, 1, 0xc0, 0x1d, 1, 1}, // bucket 3776
		"count overflows": {0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 1},
	} {
		var h Histogram
		rd := binread.New(b, ErrCorrupt)
		h.Decode(rd)
		if err := rd.Done("histogram"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	var h Histogram
	for _, v := range []uint64{0, 1, 127, 128, 5e6, 5e6 + 1, 7e9, math.MaxUint64} {
		h.Add(v)
	}
	f.Add(h.Append(nil))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Histogram
		rd := binread.New(b, ErrCorrupt)
		h.Decode(rd)
		// Counted alone, it fails or counts alike.
		counted := binread.New(b, ErrCorrupt)
		if n := (*Histogram)(nil).DecodeAdd(counted); (counted.Err == nil) != (rd.Err == nil) || rd.Err == nil && (n != h.Count() || len(counted.B) != len(rd.B)) {
			t.Fatalf("counted alone: %d durations, %v; decoded: %d, %v", n, counted.Err, h.Count(), rd.Err)
		}
		if rd.Err != nil {
			return
		}
		h.Quantile(0.5)
		var back Histogram
		rd = binread.New(h.Append(nil), ErrCorrupt)
		back.Decode(rd)
		if err := rd.Done("histogram"); err != nil || !equal(&h, &back) {
			t.Fatalf("decoded histogram does not round-trip: %v", err)
		}
		// Added to a dense histogram, it counts as added to the same
		// counts held sparse.
		dense, sparse := denseAndSparse(t)
		dense.DecodeAdd(binread.New(b, ErrCorrupt))
		sparse.DecodeAdd(binread.New(b, ErrCorrupt))
		if !equal(&dense, &sparse) {
			t.Fatalf("added to a dense histogram %+v, to a sparse one %+v", dense, sparse)
		}
	})
}

// denseAndSparse are two histograms of the same durations, a few hundred
// around 5 ms, one of them dense.
func denseAndSparse(t *testing.T) (dense, sparse Histogram) {
	t.Helper()
	r := rand.New(rand.NewPCG(9, 10))
	for range 4 {
		var part Histogram
		for range 100 {
			v := uint64(5e6 + r.NormFloat64()*1e6)
			part.Add(v)
			sparse.Add(v)
		}
		dense.Merge(&part)
	}
	if dense.dense == nil || sparse.dense != nil {
		t.Fatal("not one dense and one sparse histogram")
	}
	return dense, sparse
}

// BenchmarkDecodeAdd measures what a span metrics query spends on each
// minute of each series: decoding a stored histogram of latencies that
// span a few orders of magnitude into an empty one, as the first of a
// query's records does, by how many durations it counts.
func BenchmarkDecodeAdd(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("durations=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			var h Histogram
			for range n {
				h.Add(uint64(math.Exp(r.NormFloat64()*1.5 + math.Log(20e6))))
			}
			enc := h.Append(nil)
			b.ReportAllocs()
			for b.Loop() {
				var into Histogram
				into.DecodeAdd(binread.New(enc, ErrCorrupt))
			}
		})
	}
}

// BenchmarkDecodeAddStep measures what a span metrics query spends on one
// step of one series: decoding the step's minute from each of the records
// of its window (16, of 200 durations each) into one histogram, for
// latencies clustered around 5 ms and spread over orders of magnitude.
func BenchmarkDecodeAddStep(b *testing.B) {
	for _, shape := range []string{"clustered", "wide"} {
		b.Run("latencies="+shape, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			records := make([][]byte, 16)
			for i := range records {
				var h Histogram
				for range 200 {
					if shape == "clustered" {
						h.Add(uint64(5e6 + r.NormFloat64()*1e6))
					} else {
						h.Add(uint64(math.Exp(r.NormFloat64()*1.5 + math.Log(20e6))))
					}
				}
				records[i] = h.Append(nil)
			}
			b.ReportAllocs()
			for b.Loop() {
				var step Histogram
				for _, rec := range records {
					step.DecodeAdd(binread.New(rec, ErrCorrupt))
				}
			}
		})
	}
}
