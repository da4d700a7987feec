package index

import (
	"encoding/binary"
	"math"
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
	tagResource  = 'R'
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

// Attribute is the term of spans of a service with an attribute (their own,
// their events' or their resource's) whose key and value bucket are these;
// the value is in otlpwire.AppendText's form, whatever its type, so that
// conditions match values of any type with the same text. The service is
// part of the term because searches ask for both on the same span: a
// trace-level term of the attribute alone would let through every trace
// that has the attribute on some other service's span, and only
// verification could reject them.
func (h *Hasher) Attribute(svc, key, text []byte) Term {
	bucket := xxhash.Sum64(text) % AttributeBuckets
	h.buf = append(h.buf[:0], tagAttribute)
	h.str(svc)
	h.str(key)
	// The bucket takes the low bits, so that a key's buckets sort together
	// in one postings shard, where they delta-code to a byte or two.
	return Term(xxhash.Sum64(h.buf)&^(AttributeBuckets-1) | bucket)
}

// longDuration is where duration buckets stop: every duration of 2^36 ns
// (about 69 s) or more shares one bucket. A search for spans longer than some
// bound looks up every bucket above it, so the buckets above realistic span
// durations would cost lookups and find nothing.
const longDuration = 36

// DurationBucket is the bucket of a span duration in nanoseconds. Buckets
// split each power of two in four, so that a bound falls in a bucket at most
// a quarter as wide as the durations above it: for n, the bit length of d,
// from 3 to 36, bucket 4n+m holds [(4+m)·2^(n-3), (5+m)·2^(n-3)); durations
// below 4 have buckets of their own, and those from 2^36 ns up share bucket
// 148.
func DurationBucket(d uint64) uint16 {
	n := bits.Len64(d)
	switch {
	case n <= 2:
		return uint16(d)
	case n > longDuration:
		return 4 * (longDuration + 1)
	}
	return uint16(4*n) + uint16(d>>(n-3)&3)
}

// DurationRange is the range of durations, in nanoseconds and inclusive, that
// a bucket holds. Buckets that hold none (4 to 11, and above 148) return
// lo > hi.
func DurationRange(bucket uint16) (lo, hi uint64) {
	n, m := uint(bucket/4), uint64(bucket%4)
	switch {
	case bucket < 4:
		return uint64(bucket), uint64(bucket)
	case n < 3 || n > longDuration+1 || n == longDuration+1 && m > 0:
		return 1, 0
	case n == longDuration+1:
		return 1 << longDuration, math.MaxUint64
	}
	lo = (4 + m) << (n - 3)
	return lo, lo + 1<<(n-3) - 1
}

// Duration is the term of spans of a service whose duration falls in a
// bucket. A duration search looks up many buckets of one service, so the
// term's top byte, which picks its postings shard, comes from the service
// alone: all of them are read from one shard.
func (h *Hasher) Duration(svc []byte, bucket uint16) Term {
	h.buf = append(h.buf[:0], tagDuration)
	h.str(svc)
	shard := xxhash.Sum64(h.buf) &^ (1<<56 - 1)
	h.buf = binary.BigEndian.AppendUint16(h.buf, bucket)
	return Term(shard | uint64(h.sum())&(1<<56-1))
}

// SpanTerms appends the terms of one span of a service, with the scalar
// attributes of the span and its events (otlpwire.Batch.SpanAttrs), except those
// of its resource (see Resource), to dst. raw is the encoded span.
func (h *Hasher) SpanTerms(dst []Term, svc, raw []byte, attrs []otlpwire.Attribute, f otlpwire.SpanFacts) []Term {
	dur := uint64(0)
	if f.End > f.Start {
		dur = f.End - f.Start
	}
	dst = append(dst, h.Operation(svc, f.Name), h.Duration(svc, DurationBucket(dur)))
	if f.Error {
		dst = append(dst, h.Error(svc), h.Error(nil))
	}
	for i := range attrs {
		a := &attrs[i]
		h.value = otlpwire.AppendText(h.value[:0], a.Type, a.B(raw), a.Num)
		dst = append(dst, h.Attribute(svc, a.Key(raw), h.value))
	}
	return dst
}

// Resource is the term of spans of a resource, by its content ID. Spans are
// indexed by their resource as a whole, not by each resource attribute: a
// trace touches a dozen resources of a dozen attributes each, the same ones
// in trace after trace, and posting every one of them would double the
// index. A search for a resource attribute looks up which resources have it
// (ResourceAttributeTerms) and then their Resource terms.
func (h *Hasher) Resource(id [16]byte) Term {
	h.buf = append(h.buf[:0], tagResource)
	h.buf = append(h.buf, id[:]...)
	return h.sum()
}

// ResourceAttributeTerms appends the Attribute terms of a resource's
// attributes, for the service the resource names, to dst.
func (h *Hasher) ResourceAttributeTerms(dst []Term, svc, resource []byte) []Term {
	otlpwire.Attributes(resource, otlpwire.ResourceAttributes, func(key []byte, t otlpwire.ValueType, b []byte, num uint64) {
		h.value = otlpwire.AppendText(h.value[:0], t, b, num)
		dst = append(dst, h.Attribute(svc, key, h.value))
	})
	return dst
}
