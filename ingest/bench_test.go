package ingest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"cairn/bench"
	"cairn/internal/grpctest"
	"cairn/internal/rawcodec"
	"cairn/storage"
)

// requests pre-encodes a workload so that generating it is not measured.
func requests(n, batch int) []bench.Request {
	g := bench.NewGenerator(bench.Config{BatchSpans: batch})
	out := make([]bench.Request, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

func openStore(b *testing.B) *storage.DB {
	db, err := storage.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// BenchmarkExport measures the in-process Export path (walk, WAL append with
// group-committed fsync, buffer insert, and the block cuts it causes) from
// concurrent callers.
func BenchmarkExport(b *testing.B) {
	reqs := requests(256, 1024)
	db := openStore(b)
	defer db.Close()
	svc := NewService(db)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetBytes(int64(len(reqs[0].Bytes)))
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := reqs[next.Add(1)%int64(len(reqs))]
			// Export keeps the request; give it its own copy.
			if _, err := svc.Export(context.Background(), append([]byte(nil), r.Bytes...)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(1024*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkExportGRPC measures ingest end to end: OTLP/gRPC clients on
// loopback, each with several requests in flight, into a real store.
func BenchmarkExportGRPC(b *testing.B) {
	for _, conns := range []int{1, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			reqs := requests(256, 1024)
			db := openStore(b)
			defer db.Close()
			addr := grpctest.Serve(b, NewServer(NewService(db)))
			clients := make([]*grpc.ClientConn, conns)
			for i := range clients {
				clients[i] = grpctest.Dial(b, addr)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.SetBytes(int64(len(reqs[0].Bytes)))
			b.SetParallelism(4 * conns)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					var resp collectorpb.ExportTraceServiceResponse
					err := clients[i%int64(conns)].Invoke(context.Background(), exportMethod,
						rawcodec.Message(reqs[i%int64(len(reqs))].Bytes), &resp, grpc.ForceCodecV2(rawcodec.Codec{}))
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(1024*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}
