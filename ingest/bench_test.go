package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/internal/grpctest"
	"cairn/internal/otlpjson"
	"cairn/internal/rawcodec"
	"cairn/storage"
)

// newPool pre-encodes a workload that replays as new traces in every round,
// so that generating it is not measured and traces do not pile up.
func newPool(b *testing.B) *bench.Pool {
	p, err := bench.NewPool(bench.Config{BatchSpans: 1024, LargeTraceEvery: 5000, TracesPerSecond: 10_000}, 200_000)
	if err != nil {
		b.Fatal(err)
	}
	return p
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
	pool := newPool(b)
	db := openStore(b)
	defer db.Close()
	svc := NewService(db, nil)
	var next atomic.Uint64
	b.ReportAllocs()
	b.SetBytes(int64(len(pool.Request(nil, 0))))
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// Export keeps the request, so each gets its own buffer.
			if _, err := svc.Export(context.Background(), pool.Request(nil, next.Add(1)-1)); err != nil {
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
			pool := newPool(b)
			db := openStore(b)
			defer db.Close()
			addr := grpctest.Serve(b, NewServer(NewService(db, nil)))
			clients := make([]*grpc.ClientConn, conns)
			for i := range clients {
				clients[i] = grpctest.Dial(b, addr)
			}
			var next atomic.Uint64
			b.ReportAllocs()
			b.SetBytes(int64(len(pool.Request(nil, 0))))
			b.SetParallelism(4 * conns)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var buf []byte
				for pb.Next() {
					i := next.Add(1) - 1
					buf = pool.Request(buf, i)
					var resp collectorpb.ExportTraceServiceResponse
					err := clients[i%uint64(conns)].Invoke(context.Background(), exportMethod,
						rawcodec.Message(buf), &resp, grpc.ForceCodecV2(rawcodec.Codec{}))
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

// BenchmarkExportHTTP measures OTLP/HTTP ingest end to end over loopback,
// comparable with BenchmarkExportGRPC: keep-alive connections, one request
// in flight on each, into a real store. JSON bodies are encoded before the
// clock starts, once per distinct request.
func BenchmarkExportHTTP(b *testing.B) {
	for _, content := range []string{contentProtobuf, contentJSON} {
		for _, conns := range []int{1, 4} {
			name := map[string]string{contentProtobuf: "protobuf", contentJSON: "json"}[content]
			b.Run(fmt.Sprintf("encoding=%s/conns=%d", name, conns), func(b *testing.B) {
				pool := newPool(b)
				db := openStore(b)
				defer db.Close()
				srv := httptest.NewServer(NewService(db, nil).HTTPHandler())
				defer srv.Close()
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4 * conns}}
				bodies := func(i uint64) []byte { return pool.Request(nil, i) }
				if content == contentJSON {
					docs := make([][]byte, pool.Requests())
					for i := range docs {
						var req collectorpb.ExportTraceServiceRequest
						if err := proto.Unmarshal(pool.Request(nil, uint64(i)), &req); err != nil {
							b.Fatal(err)
						}
						var err error
						if docs[i], err = otlpjson.Marshal(&req); err != nil {
							b.Fatal(err)
						}
					}
					// Rounds past the first would repeat IDs; JSON is
					// measured on the first round's requests only.
					bodies = func(i uint64) []byte { return docs[i%uint64(len(docs))] }
				}
				var next atomic.Uint64
				b.ReportAllocs()
				b.SetBytes(int64(len(bodies(0))))
				b.SetParallelism(4 * conns)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						body := bodies(next.Add(1) - 1)
						resp, err := client.Post(srv.URL+TracesPath, content, bytes.NewReader(body))
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							b.Errorf("status %d", resp.StatusCode)
							return
						}
					}
				})
				b.ReportMetric(1024*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
			})
		}
	}
}
