package codec

import (
	"bytes"
	"reflect"
	"testing"
)

func sampleSpanMetrics() []SpanMetricsSeries {
	s := []SpanMetricsSeries{
		{SpanSeries: SpanSeries{Service: "web", Name: "GET /", Kind: 2, Status: 2}, Minutes: []SpanMinute{{Minute: 29e6}, {Minute: 29e6 + 1}}},
		{SpanSeries: SpanSeries{Status: 1, Overflow: true}, Minutes: []SpanMinute{{Minute: 29e6}}},
	}
	s[0].Minutes[0].Latency.Add(5e6)
	s[0].Minutes[0].Latency.Add(7e9)
	s[0].Minutes[0].Slowest = []Exemplar{{TraceID: [16]byte{1}, Duration: 7e9}, {TraceID: [16]byte{2}, Duration: 5e6}}
	s[0].Minutes[1].Latency.Add(1)
	s[0].Minutes[1].Slowest = []Exemplar{{TraceID: [16]byte{3}, Duration: 1}}
	s[1].Minutes[0].Latency.Add(300)
	s[1].Minutes[0].Slowest = []Exemplar{{TraceID: [16]byte{4}, Duration: 300}}
	return s
}

// decodeAll decodes a span metrics section whole.
func decodeAll(payload []byte) ([]SpanMetricsSeries, error) {
	var out []SpanMetricsSeries
	err := DecodeSpanMetrics(payload, func(*SpanSeries) bool { return true }, func(s *SpanSeries, minute uint64) *SpanMinute {
		if len(out) == 0 || out[len(out)-1].SpanSeries != *s {
			out = append(out, SpanMetricsSeries{SpanSeries: *s})
		}
		last := &out[len(out)-1]
		last.Minutes = append(last.Minutes, SpanMinute{Minute: minute})
		return &last.Minutes[len(last.Minutes)-1]
	})
	return out, err
}

func TestAggregateRoundTrip(t *testing.T) {
	want := sampleSpanMetrics()
	rec := AppendAggregate(nil, Section{Type: SectionSpanMetrics, Payload: AppendSpanMetrics(nil, want)}, Section{Type: 9, Payload: []byte("later")})
	payload, err := AggregateSection(rec, SectionSpanMetrics)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeAll(payload)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(AppendSpanMetrics(nil, got), AppendSpanMetrics(nil, want)) || len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if other, err := AggregateSection(rec, 9); err != nil || string(other) != "later" {
		t.Fatalf("unknown section: %q, %v", other, err)
	}
	if none, err := AggregateSection(rec, 5); err != nil || none != nil {
		t.Fatalf("absent section: %q, %v", none, err)
	}
	var kept []string
	err = DecodeSpanMetrics(payload, func(s *SpanSeries) bool { return s.Overflow }, func(s *SpanSeries, _ uint64) *SpanMinute {
		kept = append(kept, s.Service+"/"+s.Name)
		return nil
	})
	if err != nil || !reflect.DeepEqual(kept, []string{"/"}) {
		t.Fatalf("filtered: %v, %v", kept, err)
	}

	// The filter sees names in the payload's bytes; what it keeps owns
	// them, as a Pebble iterator's buffer is reused.
	owned := bytes.Clone(payload)
	got, err = decodeAll(owned)
	clear(owned)
	if err != nil || got[0].Name != "GET /" || got[0].Service != "web" {
		t.Fatalf("names of kept series after the payload was overwritten: %+v, %v", got[0].SpanSeries, err)
	}
}

func FuzzAggregate(f *testing.F) {
	f.Add(AppendAggregate(nil, Section{Type: SectionSpanMetrics, Payload: AppendSpanMetrics(nil, sampleSpanMetrics())}))
	f.Add([]byte{1, 1, 0})
	f.Fuzz(func(t *testing.T, rec []byte) {
		payload, err := AggregateSection(rec, SectionSpanMetrics)
		if err != nil || payload == nil {
			return
		}
		series, err := decodeAll(payload)
		if err != nil {
			return
		}
		again, err := decodeAll(AppendSpanMetrics(nil, series))
		if err != nil || !bytes.Equal(AppendSpanMetrics(nil, again), AppendSpanMetrics(nil, series)) {
			t.Fatalf("decoded span metrics do not round-trip: %v", err)
		}
	})
}
