package codec

import (
	"testing"

	"cairn/bench"
	"cairn/internal/otlpwire"
)

// benchFragments groups the spans of a bench workload request by trace, one
// group per trace, as fragments of typical size.
func benchFragments(b *testing.B) (ids [][16]byte, frags [][]Group, spans int) {
	req := bench.NewGenerator(bench.Config{BatchSpans: 4096}).Next()
	var bt otlpwire.Batch
	if err := otlpwire.Parse(req.Bytes, &bt, otlpwire.Window{}); err != nil {
		b.Fatal(err)
	}
	byTrace := map[[16]byte]int{}
	for _, s := range bt.Spans {
		i, ok := byTrace[s.TraceID]
		if !ok {
			i = len(ids)
			byTrace[s.TraceID] = i
			ids = append(ids, s.TraceID)
			frags = append(frags, []Group{{}})
		}
		frags[i][0].Spans = append(frags[i][0].Spans, s.Raw)
	}
	return ids, frags, len(bt.Spans)
}

// BenchmarkFragment measures encoding fragments as a cut does and decoding
// them as trace reads do, over the fragments of 4096 workload spans.
func BenchmarkFragment(b *testing.B) {
	ids, frags, spans := benchFragments(b)
	var e FragmentEncoder
	var enc [][]byte
	total := 0
	for i := range frags {
		enc = append(enc, e.Append(nil, ids[i], frags[i]))
		total += len(enc[i])
	}
	b.Run("op=encode", func(b *testing.B) {
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			for i := range frags {
				buf = e.Append(buf[:0], ids[i], frags[i])
			}
		}
		b.ReportMetric(float64(spans)*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
	})
	b.Run("op=decode", func(b *testing.B) {
		var groups []Group
		var buf []byte
		var err error
		b.ReportAllocs()
		for b.Loop() {
			for i := range enc {
				if groups, buf, err = DecodeFragment(groups[:0], buf[:0], enc[i], ids[i]); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(spans)*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
	})
	b.Logf("%d spans in %d fragments, %d bytes before compression", spans, len(frags), total)
}
