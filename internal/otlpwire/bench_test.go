package otlpwire

import (
	"fmt"
	"testing"

	"cairn/bench"
)

func BenchmarkParse(b *testing.B) {
	for _, batch := range []int{128, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			req := bench.NewGenerator(bench.Config{BatchSpans: batch}).Next()
			var bt Batch
			b.ReportAllocs()
			b.SetBytes(int64(len(req.Bytes)))
			for b.Loop() {
				if err := Parse(req.Bytes, &bt, Window{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch)*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}
