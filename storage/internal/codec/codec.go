// Package codec encodes the values of cairn's Pebble keys: trace fragments,
// block records and dictionary records (trace summaries are package index's). The formats are
// described in storage/FORMAT.md.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt value")

// fragmentV1 is the version byte that starts every fragment.
const fragmentV1 = 1

// Group is the spans of one trace that share a resource and a scope.
type Group struct {
	Resource [16]byte
	Scope    [16]byte
	Spans    [][]byte // encoded opentelemetry.proto.trace.v1.Span messages
}

// AppendFragment appends the encoding of a trace fragment to dst.
//
//	version=1 | uvarint ngroups | ngroups × ( resource(16) scope(16) uvarint nspans | nspans × ( uvarint len | span ) )
func AppendFragment(dst []byte, groups []Group) []byte {
	dst = append(dst, fragmentV1)
	dst = binary.AppendUvarint(dst, uint64(len(groups)))
	for _, g := range groups {
		dst = append(dst, g.Resource[:]...)
		dst = append(dst, g.Scope[:]...)
		dst = binary.AppendUvarint(dst, uint64(len(g.Spans)))
		for _, s := range g.Spans {
			dst = binary.AppendUvarint(dst, uint64(len(s)))
			dst = append(dst, s...)
		}
	}
	return dst
}

// DecodeFragment decodes a fragment and appends its groups to dst. The spans
// alias src.
func DecodeFragment(dst []Group, src []byte) ([]Group, error) {
	r := reader{b: src}
	if v := r.byte(); v != fragmentV1 {
		if r.err != nil {
			return dst, fmt.Errorf("%w: empty fragment", ErrCorrupt)
		}
		return dst, fmt.Errorf("%w: fragment version %d", ErrCorrupt, v)
	}
	n := r.count(33)
	for range n {
		var g Group
		copy(g.Resource[:], r.bytes(16))
		copy(g.Scope[:], r.bytes(16))
		ns := r.count(1)
		g.Spans = make([][]byte, 0, ns)
		for range ns {
			g.Spans = append(g.Spans, r.bytes(r.count(1)))
		}
		if r.err != nil {
			break
		}
		dst = append(dst, g)
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.b))
	}
	return dst, r.err
}

// BlockRecord describes one cut, the value of a block key. Recovery reads the
// newest one to learn which write-ahead-log segments are already persisted.
type BlockRecord struct {
	WALSegment uint64 // every record in this segment and below is persisted
	Spans      uint64
	Created    uint64 // unix nanoseconds
}

// AppendBlockRecord appends uvarint wal_segment | uvarint spans | uvarint created.
func AppendBlockRecord(dst []byte, b BlockRecord) []byte {
	dst = binary.AppendUvarint(dst, b.WALSegment)
	dst = binary.AppendUvarint(dst, b.Spans)
	return binary.AppendUvarint(dst, b.Created)
}

// DecodeBlockRecord decodes a block record.
func DecodeBlockRecord(src []byte) (BlockRecord, error) {
	r := reader{b: src}
	b := BlockRecord{WALSegment: r.uvarint(), Spans: r.uvarint(), Created: r.uvarint()}
	return b, r.done("block record")
}

// Dict is a resource or a scope with its schema URL, the value of a dictionary
// key.
type Dict struct {
	Raw       []byte // encoded Resource or InstrumentationScope; nil if absent
	SchemaURL []byte
}

// AppendDict appends uvarint presence | raw | schema_url, where presence is 0
// for an absent message and len(raw)+1 otherwise: a ResourceSpans without a
// resource and one with an empty resource decode differently, so both are
// kept.
func AppendDict(dst []byte, d Dict) []byte {
	if d.Raw == nil {
		dst = binary.AppendUvarint(dst, 0)
	} else {
		dst = binary.AppendUvarint(dst, uint64(len(d.Raw))+1)
	}
	dst = append(dst, d.Raw...)
	return append(dst, d.SchemaURL...)
}

// DecodeDict decodes a dictionary record. Its slices alias src.
func DecodeDict(src []byte) (Dict, error) {
	r := reader{b: src}
	var d Dict
	if n := r.uvarint(); n > 0 {
		if n-1 > uint64(len(r.b)) {
			r.fail("dictionary record")
		} else {
			d.Raw = r.bytes(int(n - 1))
		}
	}
	d.SchemaURL = r.b
	r.b = nil
	return d, r.done("dictionary record")
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("byte")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length or element count and checks it against the bytes
// left, each element taking at least min bytes, so that corrupt input cannot
// make a decoder allocate more than the input's size.
func (r *reader) count(min int) int {
	v := r.uvarint()
	if v > uint64(len(r.b)/min) {
		r.fail("count")
		return 0
	}
	return int(v)
}

func (r *reader) bytes(n int) []byte {
	if len(r.b) < n {
		r.fail("bytes")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) done(what string) error {
	if r.err == nil && len(r.b) > 0 {
		return fmt.Errorf("%w: %d trailing bytes in %s", ErrCorrupt, len(r.b), what)
	}
	if r.err != nil {
		return fmt.Errorf("%s: %w", what, r.err)
	}
	return nil
}
