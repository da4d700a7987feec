package index

import "testing"

func TestTraceSummary(t *testing.T) {
	s := TraceSummary{Spans: 3, MinStart: 10, MaxEnd: 120}
	got, err := DecodeTraceSummary(s.Append(nil))
	if err != nil || got != s {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	enc := s.Append(nil)
	for i := range enc {
		if _, err := DecodeTraceSummary(enc[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
}

func FuzzTraceSummary(f *testing.F) {
	f.Add(TraceSummary{1, 2, 3}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeTraceSummary(b)
		if err != nil {
			return
		}
		if again, err := DecodeTraceSummary(s.Append(nil)); err != nil || again != s {
			t.Fatalf("summary %+v does not round-trip", s)
		}
	})
}

func TestDurationRange(t *testing.T) {
	for b := range 65 {
		lo, hi := DurationRange(uint8(b))
		if DurationBucket(lo) != uint8(b) || DurationBucket(hi) != uint8(b) {
			t.Fatalf("bucket %d: range [%d, %d] maps to buckets %d and %d", b, lo, hi, DurationBucket(lo), DurationBucket(hi))
		}
		if b > 0 {
			if _, prevHi := DurationRange(uint8(b - 1)); prevHi+1 != lo {
				t.Fatalf("bucket %d starts at %d, after %d", b, lo, prevHi)
			}
		}
	}
}
