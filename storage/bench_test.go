package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/internal/otlpwire"
)

// BenchmarkPrepare measures what a writer does to a request before it takes
// the buffer lock: parse it, then compute its traces' search terms.
func BenchmarkPrepare(b *testing.B) {
	gen := bench.NewGenerator(bench.Config{BatchSpans: 1024})
	var reqs [][]byte
	for range 16 {
		reqs = append(reqs, gen.Next().Bytes)
	}
	resources := newResourceIndex()
	var batch otlpwire.Batch
	b.Run("batch=1024", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := otlpwire.Parse(reqs[i%len(reqs)], &batch, otlpwire.Window{}); err != nil {
				b.Fatal(err)
			}
			prepare(&batch, resources).release()
		}
		b.ReportMetric(float64(b.N)*1024/b.Elapsed().Seconds(), "spans/s")
	})
}

// BenchmarkInsert measures adding prepared requests to a live buffer, 64
// requests of 1,024 spans at a time: the bench workload, whose traces have
// dozens of spans, and traces of two spans, where inserts cost per trace.
func BenchmarkInsert(b *testing.B) {
	gen := bench.NewGenerator(bench.Config{BatchSpans: 1024})
	// The SDKs' exporters bring a trace's spans in many requests.
	exporters := bench.NewGenerator(bench.Config{BatchSpans: 512, Exporters: true})
	workloads := []struct {
		name string
		next func(i int) []byte
	}{
		{"shop", func(int) []byte { return gen.Next().Bytes }},
		{"exporters", func(int) []byte { return exporters.Next().Bytes }},
		{"two-span", func(i int) []byte { return twoSpanRequest(b, i, 512) }},
	}
	resources := newResourceIndex()
	for _, w := range workloads {
		type request struct {
			batch *otlpwire.Batch
			prep  *prepared
		}
		var reqs []request
		spans := 0
		for i := range 128 {
			var batch otlpwire.Batch
			if err := otlpwire.Parse(w.next(i), &batch, otlpwire.Window{}); err != nil {
				b.Fatal(err)
			}
			spans += len(batch.Spans)
			reqs = append(reqs, request{&batch, prepare(&batch, resources)})
		}
		b.Run("workload="+w.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf := newBuffer(1)
				for _, r := range reqs {
					buf.insert(r.batch, r.prep)
				}
			}
			b.ReportMetric(float64(b.N)*float64(spans)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

// twoSpanRequest encodes request seq: traces of a server span and its
// client child, of one service, with random IDs, as load generators make
// them.
func twoSpanRequest(b *testing.B, seq, traces int) []byte {
	rng := rand.New(rand.NewPCG(uint64(seq), 1))
	t0 := uint64(time.Now().Add(-time.Minute).UnixNano())
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	ss := &tracepb.ScopeSpans{}
	for i := range traces {
		tid := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, rng.Uint64()), rng.Uint64())
		parent := binary.BigEndian.AppendUint64(nil, rng.Uint64())
		start := t0 + uint64(seq*traces+i)*1000
		ss.Spans = append(ss.Spans,
			&tracepb.Span{TraceId: tid, SpanId: parent, Name: "lets-go", Kind: tracepb.Span_SPAN_KIND_SERVER,
				StartTimeUnixNano: start, EndTimeUnixNano: start + 123_000,
				Attributes: []*commonpb.KeyValue{str("net.peer.ip", "1.2.3.4"), str("peer.service", "telemetrygen-client")}},
			&tracepb.Span{TraceId: tid, SpanId: binary.BigEndian.AppendUint64(nil, rng.Uint64()), ParentSpanId: parent,
				Name: "okey-dokey", Kind: tracepb.Span_SPAN_KIND_CLIENT,
				StartTimeUnixNano: start + 1_000, EndTimeUnixNano: start + 120_000,
				Attributes: []*commonpb.KeyValue{str("net.peer.ip", "1.2.3.4"), str("peer.service", "telemetrygen-server")}})
	}
	req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "telemetrygen")}},
		ScopeSpans: []*tracepb.ScopeSpans{ss},
	}}}
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkTrace measures assembling a trace from disk, by trace size, in a
// store that also holds a realistic background workload.
func BenchmarkTrace(b *testing.B) {
	// Recompression is left out: it would run while reads are timed.
	db, err := Open(b.TempDir(), &Options{RecompressAfter: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{})
	var workload []TraceID
	for range 100 {
		req := gen.Next()
		write(b, db, req.Bytes)
		for _, id := range req.Traces {
			workload = append(workload, TraceID(id))
		}
	}
	sizes := []int{10, 200, 10000}
	for i, n := range sizes {
		writeTrace(b, db, byte(i+1), n)
	}
	if err := db.cut(); err != nil {
		b.Fatal(err)
	}
	for i, n := range sizes {
		b.Run(fmt.Sprintf("spans=%d", n), func(b *testing.B) {
			id := TraceID{0xbe, 15: byte(i + 1)}
			b.ReportAllocs()
			for b.Loop() {
				tr, err := db.Trace(context.Background(), id, TimeRange{})
				if err != nil || tr == nil || tr.Spans != n {
					b.Fatalf("trace: %v, %v", tr, err)
				}
			}
		})
	}
	// The workload's traces in turn, as a search reads them: many small
	// groups, whose span lists the read's scratch keeps for the next.
	b.Run("spans=workload", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tr, err := db.Trace(context.Background(), workload[i%len(workload)], TimeRange{})
			if err != nil || tr == nil {
				b.Fatalf("trace: %v, %v", tr, err)
			}
			i++
		}
	})
}

// BenchmarkCut measures turning a full live buffer into a block: grouping
// and encoding fragments, zstd-compressing data sstables, building the search
// index, and ingesting it all. Each block is 200k spans of the bench
// workload, as a 64 MiB buffer holds.
func BenchmarkCut(b *testing.B) {
	const spans, batch = 200_000, 1024
	pool, err := bench.NewPool(bench.Config{BatchSpans: batch, LargeTraceEvery: 5000, TracesPerSecond: 10_000}, spans)
	if err != nil {
		b.Fatal(err)
	}
	db, err := Open(b.TempDir(), &Options{FlushInterval: time.Hour, BufferBytes: 1 << 30, RecompressAfter: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for range pool.Requests() {
			write(b, db, pool.Request(nil, seq))
			seq++
		}
		b.StartTimer()
		if err := db.cut(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(pool.Requests()*batch)*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

// writeTrace stores one trace of n spans over 5 services, in requests of up
// to 1000 spans.
func writeTrace(b *testing.B, db *DB, tag byte, n int) {
	tid := []byte{0xbe, 15: tag}
	t0 := uint64(time.Now().Add(-time.Hour).UnixNano())
	for start := 0; start < n; start += 1000 {
		req := &collectorpb.ExportTraceServiceRequest{}
		for svc := range 5 {
			rs := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
				{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprintf("svc-%d", svc)}}},
			}}}
			ss := &tracepb.ScopeSpans{}
			for i := start + svc; i < min(n, start+1000); i += 5 {
				sid := make([]byte, 8)
				binary.BigEndian.PutUint64(sid, uint64(i+1))
				ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: tid, SpanId: sid, Name: "op", StartTimeUnixNano: t0 + uint64(i),
					EndTimeUnixNano: t0 + uint64(i) + 1000,
					Attributes:      []*commonpb.KeyValue{{Key: "k", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: strings.Repeat("v", 100)}}}}})
			}
			rs.ScopeSpans = []*tracepb.ScopeSpans{ss}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		raw, err := proto.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		write(b, db, raw)
	}
}

// BenchmarkPairing measures pairing the spans of a full buffer, 200k spans
// of the bench workload, into service graph edges, as each cut does beside
// its data writers.
func BenchmarkPairing(b *testing.B) {
	const spans, batch = 200_000, 1024
	pool, err := bench.NewPool(bench.Config{BatchSpans: batch, LargeTraceEvery: 5000, TracesPerSecond: 10_000}, spans)
	if err != nil {
		b.Fatal(err)
	}
	db, err := Open(b.TempDir(), &Options{FlushInterval: time.Hour, BufferBytes: 1 << 30, RecompressAfter: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for i := range pool.Requests() {
		write(b, db, pool.Request(nil, uint64(i)))
	}
	traces := db.live.inOrder()
	now := uint64(time.Now().UnixNano())
	b.ReportAllocs()
	for b.Loop() {
		// A window apart, each cut lets the last go, as in steady ingest.
		now += uint64(db.opts.PairingWindow)
		db.graph.cut(now, db.live.spans, traces)
	}
	b.ReportMetric(float64(db.live.spans)*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkServiceGraph measures reading the service graph of a window:
// of a day of 240 blocks of 1024 bench spans, one every six minutes (it
// reads every block's aggregate record of the window: the time grows with
// the blocks cut in it), and of half an hour of a fleet of 300 services
// each calling any other, 20 blocks of 30,000 calls, about 26,000 edges
// each and 90,000 in the answer.
func BenchmarkServiceGraph(b *testing.B) {
	read := func(b *testing.B, db *DB, start, end time.Time) {
		b.ReportAllocs()
		for b.Loop() {
			edges, err := db.ServiceGraph(context.Background(), start, end)
			if err != nil || len(edges) == 0 {
				b.Fatalf("%d edges, %v", len(edges), err)
			}
		}
	}
	b.Run("workload=bench", func(b *testing.B) {
		const blocks = 240
		db := openBenchStore(b)
		end := time.Now().Truncate(time.Minute)
		start := end.Add(-24 * time.Hour)
		for i := range blocks {
			gen := bench.NewGenerator(bench.Config{BatchSpans: 1024, Start: start.Add(time.Duration(i) * 24 * time.Hour / blocks), TracesPerSecond: 0.1})
			write(b, db, gen.Next().Bytes)
			if err := db.cut(); err != nil {
				b.Fatal(err)
			}
		}
		read(b, db, start, end)
	})
	b.Run("workload=300-services", func(b *testing.B) {
		const services, blocks, calls = 300, 20, 30_000
		db := openBenchStore(b)
		r := rand.New(rand.NewPCG(3, 4))
		end := time.Now().Truncate(time.Minute)
		start := end.Add(-30 * time.Minute)
		for block := range blocks {
			spans := make([]metricSpan, 0, 2*calls)
			for i := range calls {
				id := TraceID{0: byte(block + 1), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}
				ns := uint64(start.Add(time.Duration(block)*90*time.Second).UnixNano()) + r.Uint64N(uint64(90*time.Second))
				d := r.Uint64N(1e8)
				spans = append(spans,
					metricSpan{trace: id, service: fmt.Sprintf("service-%d", r.IntN(services)), span: &tracepb.Span{
						TraceId: id[:], SpanId: []byte{7: 1}, Name: "call", Kind: tracepb.Span_SPAN_KIND_CLIENT,
						StartTimeUnixNano: ns, EndTimeUnixNano: ns + d}},
					metricSpan{trace: id, service: fmt.Sprintf("service-%d", r.IntN(services)), span: &tracepb.Span{
						TraceId: id[:], SpanId: []byte{7: 2}, ParentSpanId: []byte{7: 1}, Name: "serve", Kind: tracepb.Span_SPAN_KIND_SERVER,
						StartTimeUnixNano: ns + 1000, EndTimeUnixNano: ns + d - 1000}})
			}
			write(b, db, encodeSpans(b, spans))
			if err := db.cut(); err != nil {
				b.Fatal(err)
			}
		}
		read(b, db, start, end)
	})
}

// BenchmarkSpanMetrics measures span metrics of one service, and of every service merged by service, over the hour,
// at minute resolution, as the analysis API asks for them: of a store of
// 1M bench spans in five blocks (a few services, each with few series of
// many spans), and of a fleet of 300 services with 30 operations each,
// 20 blocks of 15,000 spans, each block with about 9,000 series.
func BenchmarkSpanMetrics(b *testing.B) {
	b.Run("workload=bench", func(b *testing.B) {
		const spans, batch, blocks = 200_000, 1024, 5
		pool, err := bench.NewPool(bench.Config{BatchSpans: batch, LargeTraceEvery: 5000, TracesPerSecond: 10_000}, spans)
		if err != nil {
			b.Fatal(err)
		}
		db := openBenchStore(b)
		seq := uint64(0)
		for range blocks {
			for range pool.Requests() {
				write(b, db, pool.Request(nil, seq))
				seq++
			}
			if err := db.cut(); err != nil {
				b.Fatal(err)
			}
		}
		_, to := pool.Window(seq)
		benchSpanMetrics(b, db, to)
	})
	b.Run("workload=300-services", func(b *testing.B) {
		const services, operations, blocks, perBlock = 300, 30, 20, 15_000
		db := openBenchStore(b)
		r := rand.New(rand.NewPCG(1, 2))
		end := time.Now().Truncate(time.Minute)
		start := end.Add(-30 * time.Minute)
		for block := range blocks {
			spans := make([]metricSpan, perBlock)
			for i := range spans {
				id := TraceID{0: byte(block + 1), 14: byte(i >> 8), 15: byte(i)}
				ns := uint64(start.Add(time.Duration(block)*90*time.Second).UnixNano()) + r.Uint64N(uint64(90*time.Second))
				spans[i] = metricSpan{trace: id, service: fmt.Sprintf("service-%d", r.IntN(services)), span: &tracepb.Span{
					TraceId: id[:], SpanId: []byte{7: 1}, Name: fmt.Sprintf("operation-%d", r.IntN(operations)),
					Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: ns, EndTimeUnixNano: ns + r.Uint64N(1e9)}}
			}
			write(b, db, encodeSpans(b, spans))
			if err := db.cut(); err != nil {
				b.Fatal(err)
			}
		}
		benchSpanMetrics(b, db, end)
	})
}

func openBenchStore(b *testing.B) *DB {
	db, err := Open(b.TempDir(), &Options{FlushInterval: time.Hour, BufferBytes: 1 << 30, RecompressAfter: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// benchSpanMetrics reads, over the hour before to, the span metrics of
// each service in turn, and every service's merged by service (the web
// UI's services page).
func benchSpanMetrics(b *testing.B, db *DB, to time.Time) {
	services, err := db.Services()
	if err != nil {
		b.Fatal(err)
	}
	from := to.Add(-time.Hour)
	b.Run("query=service", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			service := services[i%len(services)]
			if got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: from, To: to, Step: time.Minute, Service: service}); err != nil || len(got) == 0 {
				b.Fatalf("%d series of %s, %v", len(got), service, err)
			}
		}
	})
	b.Run("query=by-service", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: from, To: to, Step: time.Minute, ByService: true}); err != nil || len(got) < len(services) {
				b.Fatalf("%d series of %d services, %v", len(got), len(services), err)
			}
		}
	})
}
