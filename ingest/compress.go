package ingest

import (
	"bufio"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/encoding"
)

// cairn's gRPC server takes the encodings the OpenTelemetry Collector's
// exporters offer: gzip (their default), zstd and snappy. gRPC itself
// registers only gzip, and only where its encoding/gzip package is
// imported, which cairn's is not: gRPC's gzip is the standard library's,
// reading the message a byte at a time through an interface (gRPC hands
// it over as a mem.Reader). cairn's is klauspost's through a bufio.Reader,
// which it reads directly: BenchmarkDecompress inflates a bench request at
// 380 MB/s with the first and 900 MB/s with the second, and gzipped ingest
// had spent a quarter of the server's CPU inflating.
//
// Registering at init applies to every gRPC server and client in the
// binary, the query server's included: gRPC answers a call in the encoding
// it came in.
func init() {
	encoding.RegisterCompressor(grpcGzip{})
	encoding.RegisterCompressor(grpcZstd{})
	encoding.RegisterCompressor(grpcSnappy{})
}

// Decompressors are pooled, shared by both protocols; each Close gives one
// back, and gRPC closes what Decompress returns once it has read the
// message. Compressors, pooled too, write the server's responses and, in
// cairn bench, its compressed requests.
var (
	gzipReaders   sync.Pool // *gzipReader
	gzipWriters   sync.Pool // *gzipWriter
	zstdReaders   sync.Pool // *zstdReader
	zstdWriters   sync.Pool // *zstdWriter
	snappyReaders sync.Pool // *snappyReader
	snappyWriters sync.Pool // *snappyWriter
)

// gzipReader inflates through a buffered reader, which klauspost's
// inflater reads without an interface call per byte.
type gzipReader struct {
	*gzip.Reader
	in *bufio.Reader
}

// newGzipReader returns a pooled reader of r's gzip stream.
func newGzipReader(r io.Reader) (*gzipReader, error) {
	z, _ := gzipReaders.Get().(*gzipReader)
	if z == nil {
		z = &gzipReader{Reader: new(gzip.Reader), in: bufio.NewReaderSize(r, 32<<10)}
	} else {
		z.in.Reset(r)
	}
	if err := z.Reader.Reset(z.in); err != nil {
		z.Close()
		return nil, err
	}
	return z, nil
}

func (z *gzipReader) Close() error {
	z.in.Reset(nil)
	gzipReaders.Put(z)
	return nil
}

type gzipWriter struct{ *gzip.Writer }

func newGzipWriter(w io.Writer) *gzipWriter {
	z, _ := gzipWriters.Get().(*gzipWriter)
	if z == nil {
		return &gzipWriter{gzip.NewWriter(w)}
	}
	z.Reset(w)
	return z
}

func (z *gzipWriter) Close() error {
	err := z.Writer.Close()
	gzipWriters.Put(z)
	return err
}

// zstdMaxWindow bounds the history a zstd stream may ask the decoder to
// keep; encoders use 8 MiB or less unless told otherwise.
const zstdMaxWindow = 8 << 20

// zstdReader's Close returns it to the pool; zstd.Decoder's own Close would
// end it for good.
type zstdReader struct{ d *zstd.Decoder }

// newZstdReader returns a pooled reader of r's zstd stream.
func newZstdReader(r io.Reader) (*zstdReader, error) {
	z, _ := zstdReaders.Get().(*zstdReader)
	if z == nil {
		// One goroutine: a pooled decoder starts none of its own.
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, err
		}
		return &zstdReader{d}, nil
	}
	if err := z.d.Reset(r); err != nil {
		z.Close()
		return nil, err
	}
	return z, nil
}

func (z *zstdReader) Read(p []byte) (int, error) { return z.d.Read(p) }

func (z *zstdReader) Close() error {
	z.d.Reset(nil) // a pooled decoder keeps no body, nor its window
	zstdReaders.Put(z)
	return nil
}

// zstdWriter encodes on the caller's goroutine, at zstd's fastest level
// and with a 1 MiB window, which keeps a pooled encoder small.
type zstdWriter struct{ e *zstd.Encoder }

func newZstdWriter(w io.Writer) (*zstdWriter, error) {
	z, _ := zstdWriters.Get().(*zstdWriter)
	if z == nil {
		e, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, err
		}
		return &zstdWriter{e}, nil
	}
	z.e.Reset(w)
	return z, nil
}

func (z *zstdWriter) Write(p []byte) (int, error) { return z.e.Write(p) }

func (z *zstdWriter) Close() error {
	err := z.e.Close()
	z.e.Reset(nil)
	zstdWriters.Put(z)
	return err
}

// snappyReader reads snappy's framed stream format, the one gRPC clients
// send; Close returns it to the pool.
type snappyReader struct{ *snappy.Reader }

func newSnappyReader(r io.Reader) *snappyReader {
	z, _ := snappyReaders.Get().(*snappyReader)
	if z == nil {
		return &snappyReader{snappy.NewReader(r)}
	}
	z.Reset(r)
	return z
}

func (z *snappyReader) Close() error {
	z.Reset(nil)
	snappyReaders.Put(z)
	return nil
}

// snappyWriter writes snappy's framed stream on the caller's goroutine:
// s2's writer otherwise starts one per stream.
type snappyWriter struct{ *snappy.Writer }

func newSnappyWriter(w io.Writer) *snappyWriter {
	z, _ := snappyWriters.Get().(*snappyWriter)
	if z == nil {
		return &snappyWriter{s2.NewWriter(w, s2.WriterSnappyCompat(), s2.WriterConcurrency(1))}
	}
	z.Reset(w)
	return z
}

func (z *snappyWriter) Close() error {
	err := z.Writer.Close()
	z.Reset(nil)
	snappyWriters.Put(z)
	return err
}

type (
	grpcGzip   struct{}
	grpcZstd   struct{}
	grpcSnappy struct{}
)

func (grpcGzip) Name() string   { return "gzip" }
func (grpcZstd) Name() string   { return "zstd" }
func (grpcSnappy) Name() string { return "snappy" }

func (grpcGzip) Decompress(r io.Reader) (io.Reader, error)   { return newGzipReader(r) }
func (grpcZstd) Decompress(r io.Reader) (io.Reader, error)   { return newZstdReader(r) }
func (grpcSnappy) Decompress(r io.Reader) (io.Reader, error) { return newSnappyReader(r), nil }

func (grpcGzip) Compress(w io.Writer) (io.WriteCloser, error)   { return newGzipWriter(w), nil }
func (grpcZstd) Compress(w io.Writer) (io.WriteCloser, error)   { return newZstdWriter(w) }
func (grpcSnappy) Compress(w io.Writer) (io.WriteCloser, error) { return newSnappyWriter(w), nil }
