// Package codec encodes the values of cairn's Pebble keys: trace fragments,
// block records and dictionary records (trace summaries are package index's). The formats are
// described in storage/FORMAT.md.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"

	"cairn/internal/binread"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/spanindex"
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt value")

// fragmentV2 is the version byte that starts every fragment whose spans
// were all cut in its own block, but for a part of one that another part
// follows, which fragmentV2Continued starts. A fragment that recompression
// merged from several blocks' (fragmentMerged, fragmentMergedContinued)
// also says of each group how many blocks before its own its spans were
// cut in: pairing the spans of the last cuts again after a restart must
// pair each with those of its own cut.
const (
	fragmentV2              = 2
	fragmentV2Continued     = 3
	fragmentMerged          = 4
	fragmentMergedContinued = 5
)

// MarkContinued marks an encoded fragment as a part of a fragment that
// another part follows, in the key after its own.
func MarkContinued(fragment []byte) {
	if len(fragment) > 0 && (fragment[0] == fragmentV2 || fragment[0] == fragmentMerged) {
		fragment[0]++
	}
}

// Continued reports whether another part of the fragment follows this one:
// a reader that finds none has lost it. A reader stops at a part that is not
// continued without stepping past it, into keys that another trace's read
// may find damaged.
func Continued(fragment []byte) bool {
	return len(fragment) > 0 && (fragment[0] == fragmentV2Continued || fragment[0] == fragmentMergedContinued)
}

// Group is the spans of one trace that share a resource and a scope, which
// the store numbers.
type Group struct {
	Num   uint32
	Spans [][]byte // encoded opentelemetry.proto.trace.v1.Span messages
	// Back is how many blocks before the fragment's own its spans were
	// cut in: 0 but in a fragment merged from several blocks', which
	// holds a group once for each block its spans came from.
	Back uint64
	// Keys holds each span's start and ID as DecodeFragment found them,
	// which reads order and deduplicate a trace's spans by; parsing every
	// span again for them was a fifth of reading a large trace.
	Keys []SpanKey
	// Ordered, for encoding, says of each span that its fields come in
	// non-decreasing number order (otlpwire.Span.Ordered): its split
	// fields are then all found before the first field numbered above
	// them, and the rest of it need not be walked. Nil says nothing.
	Ordered []bool
}

// SpanKey is what a trace's spans are ordered by.
type SpanKey struct {
	Start uint64 // first: storage orders spans with radix.Sort by it
	ID    uint64 // the span ID, big-endian
}

// Span field numbers that fragments store apart from the rest of the span.
const (
	fieldTraceID  = 1
	fieldSpanID   = 2
	fieldParentID = 4
	fieldStart    = 7
	fieldEnd      = 8
)

// Span references: how a span header says where its bytes and parent are.
const (
	refRaw       = 0 // the span is stored whole
	refNoParent  = 1 // split, without parent_span_id
	refOwnParent = 2 // split, parent_span_id follows
	refSpan      = 3 // split, parent_span_id is that of span (ref − refSpan)
)

// FragmentEncoder encodes fragments. It keeps scratch space between calls and
// is not safe for concurrent use.
type FragmentEncoder struct {
	split []splitSpan
	ids   spanindex.Index // positions in split by span ID
}

// splitSpan is a span taken apart: the fields stored on their own and the
// rest of its fields, in their original order.
type splitSpan struct {
	ok         bool
	spanID     [8]byte
	parent     []byte // nil if absent
	start, end uint64
	rest       []byte // the other fields, in order (decoding)

	// The rest as runs of the span's bytes (encoding): the split fields
	// cut it in at most six.
	runs  [6][2]int32
	nruns int
	nrest int
}

// Reset drops what e holds of the spans it last encoded, keeping its memory
// for the next fragment if it has room for no more than keep spans.
func (e *FragmentEncoder) Reset(keep int) {
	if cap(e.split) > keep {
		*e = FragmentEncoder{}
		return
	}
	clear(e.split[:cap(e.split)])
	e.split = e.split[:0]
}

// Append appends the encoding of a fragment of trace to dst:
//
//	version | uvarint ngroups | uvarint min_start
//	| ngroups × ( uvarint group uvarint nspans [uvarint back] )
//	| nspans_total × head | nspans_total × body
//
// The version is 2, or 4 where a group's spans were cut in an earlier
// block (Group.Back), whose number back from the fragment's each group
// then gives.
// A span whose fields are in field-number order, as every protobuf encoder
// writes them, is split: its trace ID is implied by the key, its start is a
// delta, its end a duration and its parent, usually, the index of another
// span of the fragment; its other fields are kept byte for byte. A span is
// split only if rebuilding it gives back its exact bytes; otherwise it is
// stored whole.
//
//	head := uvarint ref                          ref = 0: whole span, body is the span
//	        ( span_id(8) [parent(8) if ref = 2]  ref ≥ 1: split span, body is the rest
//	          zigzag(start − previous start) uvarint(end − start) )
//	        uvarint len(body)
//
// The previous start is that of the previous split span of the fragment,
// min_start for the first.
func (e *FragmentEncoder) Append(dst []byte, trace [16]byte, groups []Group) []byte {
	e.split = e.split[:0]
	minStart := uint64(math.MaxUint64)
	for _, g := range groups {
		for j, raw := range g.Spans {
			sp := splitFields(trace, raw, g.Ordered != nil && g.Ordered[j])
			if sp.ok {
				minStart = min(minStart, sp.start)
			}
			e.split = append(e.split, sp)
		}
	}
	if minStart == math.MaxUint64 {
		minStart = 0
	}
	e.ids.Reset(len(e.split))
	for i := range e.split {
		if e.split[i].ok {
			e.ids.Add(e.split[i].spanID, i)
		}
	}
	merged := slices.ContainsFunc(groups, func(g Group) bool { return g.Back > 0 })
	if merged {
		dst = append(dst, fragmentMerged)
	} else {
		dst = append(dst, fragmentV2)
	}
	dst = binary.AppendUvarint(dst, uint64(len(groups)))
	dst = binary.AppendUvarint(dst, minStart)
	for _, g := range groups {
		dst = binary.AppendUvarint(dst, uint64(g.Num))
		dst = binary.AppendUvarint(dst, uint64(len(g.Spans)))
		if merged {
			dst = binary.AppendUvarint(dst, g.Back)
		}
	}
	prev := minStart
	i := 0
	for _, g := range groups {
		for _, raw := range g.Spans {
			sp := &e.split[i]
			i++
			if !sp.ok {
				dst = append(dst, refRaw)
				dst = binary.AppendUvarint(dst, uint64(len(raw)))
				continue
			}
			var k int
			ok := false
			if sp.parent != nil {
				k, ok = e.ids.Find([8]byte(sp.parent))
			}
			switch {
			case sp.parent == nil:
				dst = append(dst, refNoParent)
				dst = append(dst, sp.spanID[:]...)
			case ok:
				dst = binary.AppendUvarint(dst, uint64(k)+refSpan)
				dst = append(dst, sp.spanID[:]...)
			default:
				dst = append(dst, refOwnParent)
				dst = append(dst, sp.spanID[:]...)
				dst = append(dst, sp.parent...)
			}
			dst = binary.AppendVarint(dst, int64(sp.start-prev))
			dst = binary.AppendUvarint(dst, sp.end-sp.start)
			dst = binary.AppendUvarint(dst, uint64(sp.nrest))
			prev = sp.start
		}
	}
	i = 0
	for _, g := range groups {
		for _, raw := range g.Spans {
			sp := &e.split[i]
			i++
			if !sp.ok {
				dst = append(dst, raw...)
				continue
			}
			for _, r := range sp.runs[:sp.nruns] {
				dst = append(dst, raw[r[0]:r[1]]...)
			}
		}
	}
	return dst
}

// splitFields takes a span apart, or reports !ok if rebuildSpan would not
// give back its exact bytes: the split fields must each appear once, in
// their shortest encoding, in field-number order, and each must come after
// every other field with a lower number and before any with a higher one
// that follows it. Spans are checked by walking them once; rebuilding them
// to compare would cost a third of a cut. A span whose fields are ordered
// is walked only as far as its first field numbered above the split ones,
// which with the rest of it is one run: nothing after it can be split.
func splitFields(trace [16]byte, raw []byte, ordered bool) splitSpan {
	var sp splitSpan
	var seen [fieldEnd + 1]bool
	lastSplit := protowire.Number(0) // the last split field
	maxRest := protowire.Number(0)   // the highest other field so far
	afterSplit := false              // the previous field was a split one
	for i := 0; i < len(raw); {
		var (
			num protowire.Number
			typ protowire.Type
			n   int
		)
		if b := raw[i]; b < 0x80 && b>>3 != 0 {
			num, typ, n = protowire.Number(b>>3), protowire.Type(b&7), 1
		} else if num, typ, n = protowire.ConsumeTag(raw[i:]); n < 0 {
			return splitSpan{}
		}
		if ordered && num > fieldEnd {
			sp.keep(i, len(raw))
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, raw[i+n:])
		if m < 0 {
			return splitSpan{}
		}
		v := raw[i+n : i+n+m]
		switch num {
		case fieldTraceID, fieldSpanID, fieldParentID, fieldStart, fieldEnd:
			if seen[num] || n != 1 || num < lastSplit || num < maxRest {
				return splitSpan{}
			}
			seen[num], lastSplit, afterSplit = true, num, true
			switch {
			case num == fieldTraceID && typ == protowire.BytesType && m == 17 && v[0] == 16 && [16]byte(v[1:]) == trace:
			case num == fieldSpanID && typ == protowire.BytesType && m == 9 && v[0] == 8:
				sp.spanID = [8]byte(v[1:])
			case num == fieldParentID && typ == protowire.BytesType && m == 9 && v[0] == 8:
				sp.parent = v[1:]
			case num == fieldStart && typ == protowire.Fixed64Type:
				sp.start = binary.LittleEndian.Uint64(v)
			case num == fieldEnd && typ == protowire.Fixed64Type:
				sp.end = binary.LittleEndian.Uint64(v)
			default:
				return splitSpan{}
			}
		default:
			if afterSplit && num < lastSplit {
				return splitSpan{} // the rebuild would put this field first
			}
			sp.keep(i, i+n+m)
			afterSplit = false
			maxRest = max(maxRest, num)
		}
		i += n + m
	}
	if !seen[fieldTraceID] || !seen[fieldSpanID] || !seen[fieldStart] || !seen[fieldEnd] || sp.end < sp.start {
		return splitSpan{}
	}
	sp.ok = true
	return sp
}

// keep adds raw[from:to], fields other than the split ones, to the rest:
// to its last run if that ends at from.
func (sp *splitSpan) keep(from, to int) {
	if n := sp.nruns; n > 0 && sp.runs[n-1][1] == int32(from) {
		sp.runs[n-1][1] = int32(to)
	} else {
		sp.runs[n] = [2]int32{int32(from), int32(to)}
		sp.nruns++
	}
	sp.nrest += to - from
}

// rebuildSpan appends the span whose parts sp holds: the split fields in
// field-number order, each before the first field of the rest with a higher
// number.
func rebuildSpan(dst []byte, trace [16]byte, sp *splitSpan) []byte {
	next := 0 // split fields written so far, in the order below
	flush := func(dst []byte, below protowire.Number) []byte {
		for ; next < 5; next++ {
			switch next {
			case 0:
				if below <= fieldTraceID {
					return dst
				}
				dst = protowire.AppendTag(dst, fieldTraceID, protowire.BytesType)
				dst = append(append(dst, 16), trace[:]...)
			case 1:
				if below <= fieldSpanID {
					return dst
				}
				dst = protowire.AppendTag(dst, fieldSpanID, protowire.BytesType)
				dst = append(append(dst, 8), sp.spanID[:]...)
			case 2:
				if below <= fieldParentID {
					return dst
				}
				if sp.parent != nil {
					dst = protowire.AppendTag(dst, fieldParentID, protowire.BytesType)
					dst = append(append(dst, 8), sp.parent...)
				}
			case 3:
				if below <= fieldStart {
					return dst
				}
				dst = protowire.AppendTag(dst, fieldStart, protowire.Fixed64Type)
				dst = binary.LittleEndian.AppendUint64(dst, sp.start)
			case 4:
				if below <= fieldEnd {
					return dst
				}
				dst = protowire.AppendTag(dst, fieldEnd, protowire.Fixed64Type)
				dst = binary.LittleEndian.AppendUint64(dst, sp.end)
			}
		}
		return dst
	}
	for rest := sp.rest; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		m := -1
		if n > 0 {
			m = protowire.ConsumeFieldValue(num, typ, rest[n:])
		}
		if m < 0 { // only a corrupt fragment has a rest that is not fields
			return append(flush(dst, protowire.MaxValidNumber), rest...)
		}
		if dst = flush(dst, num); next == 5 {
			// Every split field is back; the rest follows as it is.
			return append(dst, rest...)
		}
		dst = append(dst, rest[:n+m]...)
		rest = rest[n+m:]
	}
	return flush(dst, protowire.MaxValidNumber)
}

// DecodeFragment decodes a fragment of trace and appends its groups to dst.
// Every span is written into buf, which is returned, grown, for reuse: the
// spans never alias src, which may be a Pebble iterator's buffer.
func DecodeFragment(dst []Group, buf, src []byte, trace [16]byte) ([]Group, []byte, error) {
	r := binread.New(src, ErrCorrupt)
	v := r.Byte()
	if r.Err != nil {
		return dst, buf, fmt.Errorf("%w: empty fragment", ErrCorrupt)
	}
	if v < fragmentV2 || v > fragmentMergedContinued {
		return dst, buf, fmt.Errorf("%w: fragment version %d", ErrCorrupt, v)
	}
	merged := v >= fragmentMerged
	ngroups := r.Count(2)
	prev := r.Uvarint()
	first := len(dst)
	total := 0
	for range ngroups {
		num := r.Uvarint()
		if num > math.MaxUint32 {
			r.Fail("group number")
		}
		g := Group{Num: uint32(num)}
		n := r.Count(2) // a head and a body length at least
		if merged {
			g.Back = r.Uvarint()
		}
		if r.Err != nil {
			return dst[:first], buf, r.Err
		}
		total += n
		if total > len(r.B) {
			return dst[:first], buf, r.Fail("more spans than bytes")
		}
		g.Spans = make([][]byte, n)
		dst = append(dst, g)
	}
	keys := make([]SpanKey, total)
	for gi := first; gi < len(dst); gi++ {
		n := len(dst[gi].Spans)
		dst[gi].Keys, keys = keys[:n:n], keys[n:]
	}
	sc := decodeScratches.Get().(*decodeScratch)
	heads, refs, lens := slices.Grow(sc.heads[:0], total), slices.Grow(sc.refs[:0], total), slices.Grow(sc.lens[:0], total)
	defer func() { sc.keep(heads, refs, lens) }()
	size := 0
	for range total {
		ref := r.Uvarint()
		var sp splitSpan
		if ref != refRaw {
			sp.ok = true
			sp.spanID = [8]byte(r.Bytes(8))
			if ref == refOwnParent {
				sp.parent = r.Bytes(8)
			}
			sp.start = prev + uint64(r.Varint())
			sp.end = sp.start + r.Uvarint()
			prev = sp.start
		}
		n := r.Uvarint()
		if r.Err != nil {
			return dst[:first], buf, r.Err
		}
		if n > uint64(len(r.B)) {
			return dst[:first], buf, r.Fail("span body past the end")
		}
		heads, refs, lens = append(heads, sp), append(refs, ref), append(lens, int(n))
		size += int(n)
		if sp.ok {
			size += 2*(9+2) + 2*9 + 17 + 2 // the split fields, rebuilt
		}
	}
	if size > 0 && cap(buf)-len(buf) < size {
		buf = slices.Grow(buf, size)
	}
	k := 0
	for gi := first; gi < len(dst); gi++ {
		for si := range dst[gi].Spans {
			sp, ref := &heads[k], refs[k]
			body := r.Bytes(lens[k])
			k++
			if r.Err != nil {
				return dst[:first], buf, r.Err
			}
			if !sp.ok {
				start := len(buf)
				buf = append(buf, body...)
				dst[gi].Spans[si] = buf[start:len(buf):len(buf)]
				f := otlpwire.Facts(body)
				dst[gi].Keys[si] = SpanKey{f.Start, binary.BigEndian.Uint64(f.ID[:])}
				continue
			}
			if ref >= refSpan {
				p := ref - refSpan
				if p >= uint64(len(heads)) || !heads[p].ok {
					return dst[:first], buf, r.Fail("parent reference")
				}
				sp.parent = heads[p].spanID[:]
			}
			sp.rest = body
			start := len(buf)
			buf = rebuildSpan(buf, trace, sp)
			dst[gi].Spans[si] = buf[start:len(buf):len(buf)]
			dst[gi].Keys[si] = SpanKey{sp.start, binary.BigEndian.Uint64(sp.spanID[:])}
		}
	}
	if r.Err == nil && len(r.B) > 0 {
		r.Err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.B))
	}
	if r.Err != nil {
		return dst[:first], buf, r.Err
	}
	return dst, buf, nil
}

// decodeScratch is DecodeFragment's working space, kept for later calls: a
// split span is 136 bytes, and for a 10,000-span trace the heads alone were
// 1.4 MB of the 8 MB a read allocated, which reads during ingest pay for in
// the collector's mark assists.
type decodeScratch struct {
	heads []splitSpan
	refs  []uint64
	lens  []int
}

var decodeScratches = sync.Pool{New: func() any { return new(decodeScratch) }}

// maxScratchSpans bounds the scratch kept for later calls, 2.4 MiB, so that
// one huge trace's read does not leave its heads in the pool.
const maxScratchSpans = 1 << 14

// keep puts the scratch back in the pool with the slices a call grew.
func (sc *decodeScratch) keep(heads []splitSpan, refs []uint64, lens []int) {
	if cap(heads) > maxScratchSpans {
		return
	}
	// The heads point into the fragment, which may be a Pebble block.
	clear(heads)
	sc.heads, sc.refs, sc.lens = heads, refs, lens
	decodeScratches.Put(sc)
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
