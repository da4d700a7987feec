package bench

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/encoding"
)

// The compressions Options.Compression names, as the Collector's
// exporters' compression setting does.
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionZstd   = "zstd"
	CompressionSnappy = "snappy"
)

// checkCompression reports whether the run can send compressed as o asks:
// over gRPC, through the compressor of that name the binary registers.
func checkCompression(o Options) error {
	switch o.Compression {
	case CompressionNone:
		return nil
	case CompressionGzip, CompressionZstd, CompressionSnappy:
		if o.Protocol == ProtocolGRPC && encoding.GetCompressor(o.Compression) == nil {
			return fmt.Errorf("bench: this binary has no gRPC compressor %q", o.Compression)
		}
		return nil
	}
	return fmt.Errorf("bench: unknown compression %q: want %s, %s, %s or %s",
		o.Compression, CompressionNone, CompressionGzip, CompressionZstd, CompressionSnappy)
}

// bodyCompressor compresses OTLP/HTTP bodies into pooled buffers; a body
// goes back with put once the transport is done with it.
type bodyCompressor struct {
	name     string
	compress func(dst *bytes.Buffer, src []byte) error
	bufs     sync.Pool // *bytes.Buffer
}

// newBodyCompressor returns the compressor of a compression, nil for none.
// Each compresses as the Collector's OTLP/HTTP exporter does: gzip at its
// default level, zstd at its default level, snappy in the block format.
func newBodyCompressor(compression string) (*bodyCompressor, error) {
	c := &bodyCompressor{name: compression}
	switch compression {
	case CompressionNone:
		return nil, nil
	case CompressionGzip:
		var writers sync.Pool
		c.compress = func(dst *bytes.Buffer, src []byte) error {
			zw, _ := writers.Get().(*gzip.Writer)
			if zw == nil {
				zw = gzip.NewWriter(dst)
			} else {
				zw.Reset(dst)
			}
			defer writers.Put(zw)
			if _, err := zw.Write(src); err != nil {
				return err
			}
			return zw.Close()
		}
	case CompressionZstd:
		// EncodeAll may be called concurrently; the encoder keeps one
		// context per caller at once, up to GOMAXPROCS.
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			return nil, err
		}
		c.compress = func(dst *bytes.Buffer, src []byte) error {
			dst.Write(enc.EncodeAll(src, dst.AvailableBuffer()))
			return nil
		}
	case CompressionSnappy:
		c.compress = func(dst *bytes.Buffer, src []byte) error {
			n := snappy.MaxEncodedLen(len(src))
			dst.Grow(n)
			dst.Write(snappy.Encode(dst.AvailableBuffer()[:n], src))
			return nil
		}
	default:
		return nil, fmt.Errorf("bench: unknown compression %q", compression)
	}
	return c, nil
}

// body returns src compressed, in a buffer to put back once sent.
func (c *bodyCompressor) body(src []byte) (*bytes.Buffer, error) {
	b, _ := c.bufs.Get().(*bytes.Buffer)
	if b == nil {
		b = new(bytes.Buffer)
	}
	b.Reset()
	if err := c.compress(b, src); err != nil {
		c.bufs.Put(b)
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return b, nil
}

func (c *bodyCompressor) put(b *bytes.Buffer) { c.bufs.Put(b) }
