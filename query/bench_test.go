package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	"cairn/bench"
	"cairn/internal/grpctest"
	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// BenchmarkGetTraces measures reading whole traces from disk over gRPC on
// loopback, by trace size, as jaeger-query or cairn bench would: the chunks
// are received encoded, so the client's decoding is not measured.
func BenchmarkGetTraces(b *testing.B) {
	pool, err := bench.NewPool(bench.Config{BatchSpans: 1024, LargeTraceEvery: 200, TracesPerSecond: 10_000}, 20_000)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	db, err := storage.Open(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	for seq := range uint64(pool.Requests()) {
		writeRequest(b, db, pool.Request(nil, seq))
	}
	if err := db.Close(); err != nil { // reads then come from blocks on disk
		b.Fatal(err)
	}
	// Recompression, which would start once the reopened store is idle,
	// would compete with the reads timed.
	if db, err = storage.Open(dir, &storage.Options{RecompressAfter: -1}); err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	conn := grpctest.Dial(b, grpctest.Serve(b, NewServer(db, nil)))

	bySize := map[string]bench.PoolTrace{}
	for _, t := range pool.Traces() {
		for _, c := range []struct {
			name   string
			lo, hi int
		}{{"spans=10", 5, 15}, {"spans=200", 150, 250}, {"spans=10000", 10000, 20000}} {
			if _, ok := bySize[c.name]; !ok && t.Spans >= c.lo && t.Spans <= c.hi && t.Last < pool.Requests()-1 {
				bySize[c.name] = t
			}
		}
	}
	for _, name := range []string{"spans=10", "spans=200", "spans=10000"} {
		t, ok := bySize[name]
		if !ok {
			b.Fatalf("no trace for %s", name)
		}
		b.Run(name, func(b *testing.B) {
			req := &jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: t.ID[:]}}}
			var lat []time.Duration
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if n, err := receive(conn, req, nil); err != nil || n == 0 {
					b.Fatalf("%d bytes, %v", n, err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.ReportMetric(float64(t.Spans), "spans")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// receive reads a GetTraces stream to its end, encoded, and returns its
// size; keep, if not nil, is given each message.
func receive(conn *grpc.ClientConn, req *jaegerpb.GetTracesRequest, keep func(rawcodec.Message)) (int, error) {
	st, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true},
		jaegerpb.TraceReader_GetTraces_FullMethodName, grpc.ForceCodecV2(rawcodec.Codec{}), grpc.MaxCallRecvMsgSize(64<<20))
	if err != nil {
		return 0, err
	}
	if err := st.SendMsg(req); err != nil {
		return 0, err
	}
	if err := st.CloseSend(); err != nil {
		return 0, err
	}
	n := 0
	for {
		var m rawcodec.Message
		err := st.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("receive: %w", err)
		}
		n += len(m)
		if keep != nil {
			keep(m)
		}
	}
}
