package index

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// A segment is the spans of one block that fall in one partition. Its search
// index is a rows record (one row per trace, newest first) and postings
// sharded by the top byte of the term, so that a search reads the rows and
// one small shard per term.

const segmentV1 = 1

// Shards is the number of postings shards of a segment.
const Shards = 256

// Shard is the postings shard that holds a term.
func Shard(t Term) uint8 { return uint8(t >> 56) }

// Row describes the fragment of one trace in a segment.
type Row struct {
	TraceID  [16]byte
	MinStart uint64 // unix nanoseconds
	MaxStart uint64 // unix nanoseconds
	MaxEnd   uint64 // unix nanoseconds
	Spans    uint32
	Errors   uint32 // spans with status ERROR
	// Split is set when the trace's spans in this block fall in more than
	// one partition: its terms then also describe spans outside this
	// segment, so a match must be verified.
	Split bool
}

// SegmentBuilder collects the rows of a segment and their terms.
type SegmentBuilder struct {
	rows  []Row
	terms [][]Term // by row as added; kept, not copied
}

// Add adds a row with its terms, which may repeat. The builder keeps terms
// until Finish; the caller must not modify it before then.
func (b *SegmentBuilder) Add(r Row, terms []Term) {
	b.rows = append(b.rows, r)
	b.terms = append(b.terms, terms)
}

// Finish encodes the segment: the rows record, and each non-empty postings
// shard by shard number.
func (b *SegmentBuilder) Finish() (rows []byte, shards [Shards][]byte) {
	// Rows newest first; a row's position is what postings refer to.
	order := make([]uint32, len(b.rows))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(x, y uint32) int {
		if c := cmp.Compare(b.rows[y].MinStart, b.rows[x].MinStart); c != 0 {
			return c
		}
		return slices.Compare(b.rows[x].TraceID[:], b.rows[y].TraceID[:])
	})

	rows = append(rows, segmentV1)
	rows = binary.AppendUvarint(rows, uint64(len(order)))
	var newest uint64
	if len(order) > 0 {
		newest = b.rows[order[0]].MinStart
	}
	rows = binary.AppendUvarint(rows, newest)
	// Visiting rows in position order appends each term's positions in
	// ascending order, so postings need no sort, and a term repeated within
	// a row is the list's last element.
	postings := map[Term][]uint32{}
	for pos, i := range order {
		r := b.rows[i]
		rows = append(rows, r.TraceID[:]...)
		rows = binary.AppendUvarint(rows, newest-r.MinStart)
		rows = binary.AppendUvarint(rows, r.MaxStart-r.MinStart)
		rows = binary.AppendVarint(rows, int64(r.MaxEnd-r.MinStart))
		rows = binary.AppendUvarint(rows, uint64(r.Spans))
		rows = binary.AppendUvarint(rows, uint64(r.Errors))
		split := byte(0)
		if r.Split {
			split = 1
		}
		rows = append(rows, split)
		for _, t := range b.terms[i] {
			l := postings[t]
			if n := len(l); n == 0 || l[n-1] != uint32(pos) {
				postings[t] = append(l, uint32(pos))
			}
		}
	}

	terms := make([]Term, 0, len(postings))
	for t := range postings {
		terms = append(terms, t)
	}
	slices.Sort(terms)
	for len(terms) > 0 {
		shard := Shard(terms[0])
		n := 0
		for n < len(terms) && Shard(terms[n]) == shard {
			n++
		}
		shards[shard] = appendShard(nil, terms[:n], postings)
		terms = terms[n:]
	}
	return rows, shards
}

// appendShard encodes the postings of sorted terms: a directory, so that a
// lookup skips other terms without decoding them, then the row lists.
//
//	version=1 | uvarint nterms | nterms × ( term:u64le | uvarint count | uvarint nbytes )
//	          | nterms × ( count × uvarint row delta )   (nbytes bytes each)
func appendShard(dst []byte, terms []Term, postings map[Term][]uint32) []byte {
	var lists []byte
	dst = append(dst, segmentV1)
	dst = binary.AppendUvarint(dst, uint64(len(terms)))
	for _, t := range terms {
		rows := postings[t]
		n := len(lists)
		prev := uint32(0)
		for _, r := range rows {
			lists = binary.AppendUvarint(lists, uint64(r-prev))
			prev = r
		}
		dst = binary.LittleEndian.AppendUint64(dst, uint64(t))
		dst = binary.AppendUvarint(dst, uint64(len(rows)))
		dst = binary.AppendUvarint(dst, uint64(len(lists)-n))
	}
	return append(dst, lists...)
}

// RowReader decodes a rows record row by row, as far as a search needs.
type RowReader struct {
	r      reader
	n      int
	newest uint64
	rows   []Row
}

// NewRowReader reads a rows record's header.
func NewRowReader(b []byte) (*RowReader, error) {
	rr := &RowReader{r: reader{b: b}}
	if v := rr.r.byte(); v != segmentV1 {
		return nil, rr.r.fail(fmt.Sprintf("rows record version %d", v))
	}
	rr.n = rr.r.count(21)
	rr.newest = rr.r.uvarint()
	return rr, rr.r.err
}

// Len is the number of rows.
func (rr *RowReader) Len() int { return rr.n }

// Row decodes rows up to i and returns row i.
func (rr *RowReader) Row(i int) (Row, error) {
	if i >= rr.n {
		return Row{}, fmt.Errorf("%w: row %d of %d", ErrCorrupt, i, rr.n)
	}
	for len(rr.rows) <= i && rr.r.err == nil {
		var row Row
		copy(row.TraceID[:], rr.r.bytes(16))
		row.MinStart = rr.newest - rr.r.uvarint()
		row.MaxStart = row.MinStart + rr.r.uvarint()
		row.MaxEnd = row.MinStart + uint64(rr.r.varint())
		row.Spans = uint32(rr.r.uvarint())
		row.Errors = uint32(rr.r.uvarint())
		switch rr.r.byte() {
		case 0:
		case 1:
			row.Split = true
		default:
			rr.r.fail("row flags")
		}
		rr.rows = append(rr.rows, row)
	}
	if rr.r.err != nil {
		return Row{}, rr.r.err
	}
	return rr.rows[i], nil
}

// DecodeRows decodes a whole rows record.
func DecodeRows(b []byte) ([]Row, error) {
	rr, err := NewRowReader(b)
	if err != nil {
		return nil, err
	}
	if rr.n > 0 {
		if _, err := rr.Row(rr.n - 1); err != nil {
			return nil, err
		}
	}
	return rr.rows, rr.r.done("rows record")
}

// Postings returns the rows of a term, ascending (newest first), from the
// shard that holds it. A term that is absent has no rows.
func Postings(shard []byte, t Term, nrows int) ([]uint32, error) {
	r := reader{b: shard}
	if v := r.byte(); v != segmentV1 {
		return nil, r.fail(fmt.Sprintf("postings version %d", v))
	}
	nterms := r.count(10) // a term, a count and a length
	var (
		offset    uint64
		found     bool
		count, nb uint64
	)
	for range nterms {
		term := Term(binary.LittleEndian.Uint64(r.bytes(8)))
		c, n := r.uvarint(), r.uvarint()
		if term == t && !found {
			found, count, nb = true, c, n
		}
		if !found {
			offset += n
		}
	}
	if r.err != nil || !found {
		return nil, r.err
	}
	if offset+nb > uint64(len(r.b)) || count > nb {
		return nil, r.fail("postings past the end of the shard")
	}
	r.b = r.b[offset : offset+nb]
	rows := make([]uint32, 0, count)
	row := uint64(0)
	for range count {
		row += r.uvarint()
		if row >= uint64(nrows) {
			return nil, r.fail("posting past the last row")
		}
		rows = append(rows, uint32(row))
	}
	if r.err == nil && len(r.b) > 0 {
		return nil, r.fail("postings longer than their count")
	}
	return rows, r.err
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) error {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
	r.b = nil
	return r.err
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if len(r.b) < n {
		r.fail("truncated")
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// count reads a count of elements of at least min bytes each, bounded by the
// bytes left so that corrupt input cannot make a decoder allocate more than
// its size.
func (r *reader) count(min int) int {
	v := r.uvarint()
	if v > uint64(len(r.b)/min) {
		r.fail("count larger than the record")
		return 0
	}
	return int(v)
}

func (r *reader) done(what string) error {
	if r.err == nil && len(r.b) > 0 {
		return fmt.Errorf("%w: %d trailing bytes in %s", ErrCorrupt, len(r.b), what)
	}
	return r.err
}
