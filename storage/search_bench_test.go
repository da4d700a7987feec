package storage

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"cairn/bench"
	"cairn/internal/otlpwire"
)

// benchStore fills a store with n spans of the bench workload, started over
// the last 50 minutes, and leaves the last requests in the live buffer as a
// running server would. Its blocks are recompressed before it is returned,
// as a server does once ingest pauses, and not while it is read. It returns
// a sample of the stored trace IDs.
func benchStore(b *testing.B, n int) (*DB, []TraceID) {
	b.Helper()
	db, err := Open(b.TempDir(), &Options{RecompressAfter: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	const batch = 1024
	rate := float64(n) / 29 / (50 * 60) // ~29 spans per trace over 50 minutes
	gen := bench.NewGenerator(bench.Config{BatchSpans: batch, Start: time.Now().Add(-50 * time.Minute), TracesPerSecond: rate, LargeTraceEvery: 5000})
	var sample []TraceID
	for written := 0; written < n; written += batch {
		r := gen.Next()
		if written/batch%10 == 0 {
			sample = append(sample, r.Traces[0])
		}
		var bt otlpwire.Batch
		if err := otlpwire.Parse(r.Bytes, &bt, db.Accepts()); err != nil {
			b.Fatal(err)
		}
		if err := db.Write(context.Background(), r.Bytes, &bt); err != nil {
			b.Fatal(err)
		}
	}
	db.maintMu.Lock()
	defer db.maintMu.Unlock()
	db.mu.Lock()
	parts := maps.Clone(db.partitions)
	db.mu.Unlock()
	for p, newest := range parts {
		if err := db.recompressBlocks(context.Background(), p, 1, newest); err != nil {
			b.Fatal(err)
		}
	}
	return db, sample
}

func intAttr(key string, v int64) Attribute {
	return Attribute{Key: key, Value: strconv.FormatInt(v, 10)}
}

func strAttr(key, v string) Attribute { return Attribute{Key: key, Value: v} }

// findShapes are the searches the benchmarks time.
var findShapes = []struct {
	name string
	q    Query
}{
	{"service", Query{Service: "checkout"}},
	{"service+operation", Query{Service: "frontend", Operation: "GET /api/cart/{id}"}},
	{"service+attribute", Query{Service: "frontend", Attributes: []Attribute{intAttr("http.response.status_code", 404)}}},
	{"service+min-duration", Query{Service: "payment", DurationMin: 20 * time.Millisecond}},
	{"attribute", Query{Attributes: []Attribute{strAttr("db.system", "postgresql")}}},
	{"errors", Query{Attributes: []Attribute{{Key: "error", Value: "true"}}}},
	{"rare-attribute", Query{Service: "frontend", Attributes: []Attribute{strAttr("enduser.id", "user-4242")}}},
	{"absent-operation", Query{Service: "frontend", Operation: "DELETE /nothing"}},
}

// BenchmarkFind runs each query shape, limit 20, over the last hour, and
// trace-by-ID reads without time hints, on stores of growing size, and
// reports the latency percentiles.
func BenchmarkFind(b *testing.B) {
	for _, n := range []int{1_000_000, 5_000_000} {
		b.Run(fmt.Sprintf("spans=%d", n), func(b *testing.B) {
			db, sample := benchStore(b, n)
			b.Run("shape=trace-by-id", func(b *testing.B) {
				var lat []time.Duration
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					t0 := time.Now()
					tr, err := db.Trace(context.Background(), sample[i%len(sample)], TimeRange{})
					if err != nil || tr == nil {
						b.Fatalf("trace: %v, %v", tr, err)
					}
					lat = append(lat, time.Since(t0))
					i++
				}
				reportPercentiles(b, lat)
			})
			for _, s := range findShapes {
				b.Run("shape="+s.name, func(b *testing.B) {
					q := s.q
					q.Limit = 20
					q.StartMin, q.StartMax = time.Now().Add(-time.Hour), time.Now()
					var lat []time.Duration
					b.ReportAllocs()
					for b.Loop() {
						t0 := time.Now()
						if _, err := db.Find(context.Background(), q); err != nil {
							b.Fatal(err)
						}
						lat = append(lat, time.Since(t0))
					}
					reportPercentiles(b, lat)
				})
			}
		})
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkFindLive runs the query shapes of BenchmarkFind over a live
// buffer holding what a server buffers between two cuts under full load,
// with nothing on disk: what a search adds while ingest runs.
func BenchmarkFindLive(b *testing.B) {
	db, err := Open(b.TempDir(), &Options{FlushInterval: time.Hour, RecompressAfter: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	gen := bench.NewGenerator(bench.Config{BatchSpans: 1024, Start: time.Now().Add(-time.Minute), LargeTraceEvery: 5000})
	for db.live.size() < db.opts.BufferBytes*9/10 {
		r := gen.Next()
		var bt otlpwire.Batch
		if err := otlpwire.Parse(r.Bytes, &bt, db.Accepts()); err != nil {
			b.Fatal(err)
		}
		if err := db.Write(context.Background(), r.Bytes, &bt); err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range findShapes {
		b.Run("shape="+s.name, func(b *testing.B) {
			q := s.q
			q.Limit = 20
			q.StartMin, q.StartMax = time.Now().Add(-time.Hour), time.Now().Add(time.Minute)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := db.Find(context.Background(), q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
