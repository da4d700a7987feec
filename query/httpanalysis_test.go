package query

import (
	"math"
	"slices"
	"testing"

	traceanalysis "cairn/query/analysis"
)

// TestHistograms checks that the latency histograms count each span of
// the operation once, in the bucket its duration falls in, with bounds
// common to both samples.
func TestHistograms(t *testing.T) {
	trace := func(durations ...uint64) *traceanalysis.Trace {
		tr := &traceanalysis.Trace{}
		for _, d := range durations {
			tr.Spans = append(tr.Spans, traceanalysis.Span{Service: "shop", Name: "GET /", Start: 1e18, End: 1e18 + d},
				traceanalysis.Span{Service: "shop", Name: "other", Start: 1e18, End: 1e18 + 1e12})
		}
		return tr
	}
	window := []*traceanalysis.Trace{trace(2e6, 100e6), trace(100e6)}
	baseline := []*traceanalysis.Trace{trace(1e6), trace(0)} // under 1µs counts as 1µs
	h := histograms(window, baseline, "shop", "GET /")
	if len(h.BoundsMS) != histogramBuckets+1 || !slices.IsSorted(h.BoundsMS) || math.Abs(h.BoundsMS[0]-0.001) > 1e-9 || h.BoundsMS[histogramBuckets] < 100 {
		t.Fatalf("bounds %v", h.BoundsMS)
	}
	bucket := func(ms float64) int {
		for i := range histogramBuckets {
			if ms >= h.BoundsMS[i]*0.999999 && ms < h.BoundsMS[i+1] {
				return i
			}
		}
		return -1
	}
	want := func(durationsMS ...float64) []int {
		n := make([]int, histogramBuckets)
		for _, ms := range durationsMS {
			n[bucket(ms)]++
		}
		return n
	}
	if w := want(2, 100, 100); !slices.Equal(h.Window, w) {
		t.Errorf("window %v, want %v", h.Window, w)
	}
	if b := want(1, 0.001); !slices.Equal(h.Baseline, b) {
		t.Errorf("baseline %v, want %v", h.Baseline, b)
	}
	if e := histograms(nil, nil, "shop", "GET /"); len(e.BoundsMS)+len(e.Window)+len(e.Baseline) != 0 || e.Window == nil {
		t.Errorf("no spans: %+v", e)
	}
}
