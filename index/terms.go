package index

import (
	"encoding/binary"
	"math/bits"

	"github.com/cespare/xxhash/v2"

	"cairn/internal/otlpwire"
)

// Term identifies a searchable fact about a span: its service, its service
// and operation, an attribute value, an error, a duration range. Terms are
// 64-bit hashes; the index only narrows a search to candidates, which are
// then checked against the spans themselves, so a collision costs time, never
// a wrong answer.
type Term uint64

// AttributeBuckets is how many terms one attribute key can produce per
// segment: values are hashed into this many buckets. Low-cardinality keys
// (http.request.method) lose nothing; high-cardinality ones (request IDs)
// cannot grow the index beyond this bound, at the price of candidates that
// fail verification.
const AttributeBuckets = 4096

// Term tags keep the kinds of term apart.
const (
	tagService   = 'S'
	tagOperation = 'O'
	tagError     = 'E'
	tagAttribute = 'A'
	tagDuration  = 'D'
)

// Hasher builds terms. Its scratch buffer makes it allocation-free and not
// safe for concurrent use.
type Hasher struct{ buf, value []byte }

func (h *Hasher) sum() Term { return Term(xxhash.Sum64(h.buf)) }

// str appends a length-prefixed string, so that concatenations are
// unambiguous.
func (h *Hasher) str(s []byte) {
	h.buf = binary.AppendUvarint(h.buf, uint64(len(s)))
	h.buf = append(h.buf, s...)
}

// Service is the term of spans of a service.
func (h *Hasher) Service(svc []byte) Term {
	h.buf = append(h.buf[:0], tagService)
	h.str(svc)
	return h.sum()
}

// Operation is the term of spans of a service with a span name, of any kind.
func (h *Hasher) Operation(svc, name []byte) Term {
	h.buf = append(h.buf[:0], tagOperation)
	h.str(svc)
	h.str(name)
	return h.sum()
}

// Error is the term of error spans of a service, or of any service if svc is
// nil.
func (h *Hasher) Error(svc []byte) Term {
	h.buf = append(h.buf[:0], tagError)
	if svc != nil {
		h.buf = append(h.buf, 1)
		h.str(svc)
	}
	return h.sum()
}

// Attribute is the term of spans with an attribute (their own or their
// resource's) whose key, type and value bucket are these; the value is in
// otlpwire.AppendCanonical's form.
func (h *Hasher) Attribute(key []byte, t otlpwire.ValueType, canonical []byte) Term {
	bucket := xxhash.Sum64(canonical) % AttributeBuckets
	h.buf = append(h.buf[:0], tagAttribute, byte(t))
	h.buf = binary.BigEndian.AppendUint16(h.buf, uint16(bucket))
	h.str(key)
	return h.sum()
}

// DurationBucket is the bucket of a span duration: its bit length, so bucket
// b holds durations in [2^(b-1), 2^b) nanoseconds.
func DurationBucket(d uint64) uint8 { return uint8(bits.Len64(d)) }

// DurationRange is the range of durations, in nanoseconds and inclusive, that
// a bucket holds.
func DurationRange(bucket uint8) (lo, hi uint64) {
	if bucket == 0 {
		return 0, 0
	}
	return 1 << (bucket - 1), 1<<(bucket-1) - 1 + 1<<(bucket-1)
}

// Duration is the term of spans of a service whose duration falls in a
// bucket.
func (h *Hasher) Duration(svc []byte, bucket uint8) Term {
	h.buf = append(h.buf[:0], tagDuration, bucket)
	h.str(svc)
	return h.sum()
}

// SpanTerms appends the terms of one span of a service, except those of its
// resource (see ResourceTerms), to dst.
func (h *Hasher) SpanTerms(dst []Term, svc, raw []byte, f otlpwire.SpanFacts) []Term {
	dur := uint64(0)
	if f.End > f.Start {
		dur = f.End - f.Start
	}
	dst = append(dst, h.Operation(svc, f.Name), h.Duration(svc, DurationBucket(dur)))
	if f.Error {
		dst = append(dst, h.Error(svc), h.Error(nil))
	}
	otlpwire.Attributes(raw, otlpwire.SpanAttributes, func(key []byte, t otlpwire.ValueType, b []byte, num uint64) {
		h.value = otlpwire.AppendCanonical(h.value[:0], t, b, num)
		dst = append(dst, h.Attribute(key, t, h.value))
	})
	return dst
}

// ResourceTerms appends the terms that every span of a resource has: its
// service and its attributes.
func (h *Hasher) ResourceTerms(dst []Term, svc, resource []byte) []Term {
	dst = append(dst, h.Service(svc))
	otlpwire.Attributes(resource, otlpwire.ResourceAttributes, func(key []byte, t otlpwire.ValueType, b []byte, num uint64) {
		h.value = otlpwire.AppendCanonical(h.value[:0], t, b, num)
		dst = append(dst, h.Attribute(key, t, h.value))
	})
	return dst
}
