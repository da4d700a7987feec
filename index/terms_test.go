package index

import (
	"math"
	"testing"
)

func TestDurationRange(t *testing.T) {
	prevHi := uint64(0)
	for b := uint16(1); b <= DurationBucket(math.MaxUint64); b++ {
		lo, hi := DurationRange(b)
		if lo > hi {
			continue // an unused bucket
		}
		if DurationBucket(lo) != b || DurationBucket(hi) != b {
			t.Fatalf("bucket %d: range [%d, %d] maps to buckets %d and %d", b, lo, hi, DurationBucket(lo), DurationBucket(hi))
		}
		if prevHi+1 != lo {
			t.Fatalf("bucket %d starts at %d, after %d", b, lo, prevHi)
		}
		if lo >= 16 && hi != math.MaxUint64 && hi-lo+1 > lo/4 {
			t.Fatalf("bucket %d: [%d, %d] is wider than a quarter of its start", b, lo, hi)
		}
		prevHi = hi
	}
	if prevHi != math.MaxUint64 {
		t.Fatalf("buckets end at %d", prevHi)
	}
}
