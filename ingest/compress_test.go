package ingest

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"io"
	"testing"

	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"cairn/storage"
)

// reference is another implementation of a gRPC encoding: what clients
// that are not cairn send and read.
type reference struct {
	compress   func(w io.Writer) io.WriteCloser
	decompress func(r io.Reader) (io.Reader, error)
}

var references = map[string]reference{
	"gzip": {
		func(w io.Writer) io.WriteCloser { return stdgzip.NewWriter(w) },
		func(r io.Reader) (io.Reader, error) { return stdgzip.NewReader(r) },
	},
	"zstd": {
		func(w io.Writer) io.WriteCloser { e, _ := zstd.NewWriter(w); return e },
		func(r io.Reader) (io.Reader, error) {
			d, err := zstd.NewReader(r)
			if err != nil {
				return nil, err
			}
			return d.IOReadCloser(), nil
		},
	},
	"snappy": {
		func(w io.Writer) io.WriteCloser { return snappy.NewBufferedWriter(w) },
		func(r io.Reader) (io.Reader, error) { return snappy.NewReader(r), nil },
	},
}

// TestGRPCCompressors checks that gRPC's gzip, zstd and snappy are cairn's,
// that each decompresses what another implementation compresses and the
// other way round, again with pooled readers and writers, and that a
// damaged stream is an error.
func TestGRPCCompressors(t *testing.T) {
	msg := bytes.Repeat([]byte("resource_spans "), 10_000)
	for name, ref := range references {
		t.Run("encoding="+name, func(t *testing.T) {
			c := encoding.GetCompressor(name)
			switch c.(type) {
			case grpcGzip, grpcZstd, grpcSnappy:
			default:
				t.Fatalf("gRPC's %q compressor is %T, not cairn's", name, c)
			}
			for round := range 3 {
				var theirs bytes.Buffer
				w := ref.compress(&theirs)
				w.Write(msg)
				w.Close()
				r, err := c.Decompress(bytes.NewReader(theirs.Bytes()))
				if err != nil {
					t.Fatalf("round %d: Decompress: %v", round, err)
				}
				got, err := io.ReadAll(r)
				r.(io.Closer).Close()
				if err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("round %d: decompressed %d bytes, %v; want %d", round, len(got), err, len(msg))
				}

				var ours bytes.Buffer
				cw, err := c.Compress(&ours)
				if err != nil {
					t.Fatal(err)
				}
				cw.Write(msg)
				if err := cw.Close(); err != nil {
					t.Fatal(err)
				}
				rr, err := ref.decompress(&ours)
				if err != nil {
					t.Fatalf("round %d: the other implementation reading ours: %v", round, err)
				}
				got, err = io.ReadAll(rr)
				if rc, ok := rr.(io.Closer); ok {
					rc.Close()
				}
				if err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("round %d: the other implementation decompressed %d bytes, %v; want %d", round, len(got), err, len(msg))
				}
			}

			if r, err := c.Decompress(bytes.NewReader(msg[:100])); err == nil {
				_, err = io.ReadAll(r)
				r.(io.Closer).Close()
				if err == nil {
					t.Fatalf("a stream that is not %s decompressed without error", name)
				}
			}
		})
	}
}

// TestGRPCExportCompressed exports over a real server in each encoding the
// Collector's exporters offer and checks what was stored and the reply.
func TestGRPCExportCompressed(t *testing.T) {
	db := openDB(t)
	client := collectorpb.NewTraceServiceClient(serve(t, db))
	trace := byte(40)
	for name := range references {
		trace++
		resp, err := client.Export(context.Background(), request(trace), grpc.UseCompressor(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := resp.GetPartialSuccess().GetRejectedSpans(); n != 2 {
			t.Fatalf("%s: %d spans rejected, want 2", name, n)
		}
		if tr, err := db.Trace(context.Background(), storage.TraceID{15: trace}, storage.TimeRange{}); err != nil || tr == nil || tr.Spans != 1 {
			t.Fatalf("%s: stored %v, %v; want the one valid span", name, tr, err)
		}
	}
}

// FuzzDecompress feeds every Content-Encoding's reader arbitrary bodies:
// none may panic, return more than the limit, or hold more memory than its
// reservation accounts for.
func FuzzDecompress(f *testing.F) {
	msg := []byte("resource_spans resource_spans resource_spans")
	for _, enc := range []string{"gzip", "zstd", "deflate", "snappy", "x-snappy-framed"} {
		f.Add(enc, compress(f, enc, msg))
	}
	f.Add("snappy", compress(f, "x-snappy-framed", msg))
	const limit = 64 << 10
	f.Fuzz(func(t *testing.T, enc string, body []byte) {
		read, err := decompressor(enc)
		if err != nil {
			return
		}
		res := (&Service{budget: newBudget(1 << 40)}).reserve(context.Background(), protoHTTPUnknown)
		b, err := read(bytes.NewReader(body), len(body), limit, res)
		if err != nil {
			return
		}
		if len(b) > limit {
			t.Fatalf("%s: %d bytes decompressed past the limit of %d", enc, len(b), limit)
		}
		if int64(len(b)) > res.n {
			t.Fatalf("%s: %d bytes held under a %d-byte reservation", enc, len(b), res.n)
		}
	})
}

// BenchmarkDecompress measures decompressing a 1,024-span request of the
// bench workload as gRPC hands it over, from a mem.Reader; impl=stdlib is
// the standard library's gzip, which gRPC's own compressor uses.
func BenchmarkDecompress(b *testing.B) {
	msg := newPool(b).Request(nil, 0)
	for _, c := range []struct {
		encoding, impl string
		decompress     func(io.Reader) (io.Reader, error)
	}{
		{"gzip", "cairn", grpcGzip{}.Decompress},
		{"gzip", "stdlib", references["gzip"].decompress},
		{"zstd", "cairn", grpcZstd{}.Decompress},
		{"snappy", "cairn", grpcSnappy{}.Decompress},
	} {
		var buf bytes.Buffer
		w := references[c.encoding].compress(&buf)
		w.Write(msg)
		w.Close()
		b.Run("encoding="+c.encoding+"/impl="+c.impl, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				r, err := c.decompress(mem.BufferSlice{mem.SliceBuffer(buf.Bytes())}.Reader())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				if rc, ok := r.(io.Closer); ok {
					rc.Close()
				}
			}
		})
	}
}
