// Package codec encodes the values of cairn's Pebble keys: trace fragments,
// block records and dictionary records (trace summaries are package index's). The formats are
// described in storage/FORMAT.md.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"

	"cairn/internal/binread"
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
	r := binread.New(src, ErrCorrupt)
	if v := r.Byte(); v != fragmentV1 {
		if r.Err != nil {
			return dst, fmt.Errorf("%w: empty fragment", ErrCorrupt)
		}
		return dst, fmt.Errorf("%w: fragment version %d", ErrCorrupt, v)
	}
	n := r.Count(33)
	for range n {
		var g Group
		copy(g.Resource[:], r.Bytes(16))
		copy(g.Scope[:], r.Bytes(16))
		ns := r.Count(1)
		g.Spans = make([][]byte, 0, ns)
		for range ns {
			g.Spans = append(g.Spans, r.Bytes(r.Count(1)))
		}
		if r.Err != nil {
			break
		}
		dst = append(dst, g)
	}
	if r.Err == nil && len(r.B) > 0 {
		r.Err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.B))
	}
	return dst, r.Err
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
	r := binread.New(src, ErrCorrupt)
	b := BlockRecord{WALSegment: r.Uvarint(), Spans: r.Uvarint(), Created: r.Uvarint()}
	return b, r.Done("block record")
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
	r := binread.New(src, ErrCorrupt)
	var d Dict
	if n := r.Uvarint(); n > 0 {
		if n-1 > uint64(len(r.B)) {
			r.Fail("dictionary record")
		} else {
			d.Raw = r.Bytes(int(n - 1))
		}
	}
	d.SchemaURL = r.B
	r.B = nil
	return d, r.Done("dictionary record")
}
