package index

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"cairn/internal/binread"
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
	r      *binread.Reader
	n      int
	newest uint64
	rows   []Row
}

// NewRowReader reads a rows record's header.
func NewRowReader(b []byte) (*RowReader, error) {
	rr := &RowReader{r: binread.New(b, ErrCorrupt)}
	if v := rr.r.Byte(); v != segmentV1 {
		return nil, rr.r.Fail(fmt.Sprintf("rows record version %d", v))
	}
	rr.n = rr.r.Count(21)
	rr.newest = rr.r.Uvarint()
	return rr, rr.r.Err
}

// Len is the number of rows.
func (rr *RowReader) Len() int { return rr.n }

// Row decodes rows up to i and returns row i.
func (rr *RowReader) Row(i int) (Row, error) {
	if i >= rr.n {
		return Row{}, fmt.Errorf("%w: row %d of %d", ErrCorrupt, i, rr.n)
	}
	for len(rr.rows) <= i && rr.r.Err == nil {
		var row Row
		copy(row.TraceID[:], rr.r.Bytes(16))
		row.MinStart = rr.newest - rr.r.Uvarint()
		row.MaxStart = row.MinStart + rr.r.Uvarint()
		row.MaxEnd = row.MinStart + uint64(rr.r.Varint())
		row.Spans = uint32(rr.r.Uvarint())
		row.Errors = uint32(rr.r.Uvarint())
		switch rr.r.Byte() {
		case 0:
		case 1:
			row.Split = true
		default:
			rr.r.Fail("row flags")
		}
		rr.rows = append(rr.rows, row)
	}
	if rr.r.Err != nil {
		return Row{}, rr.r.Err
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
	return rr.rows, rr.r.Done("rows record")
}

// Postings returns the rows of a term, ascending (newest first), from the
// shard that holds it. A term that is absent has no rows.
func Postings(shard []byte, t Term, nrows int) ([]uint32, error) {
	r := binread.New(shard, ErrCorrupt)
	if v := r.Byte(); v != segmentV1 {
		return nil, r.Fail(fmt.Sprintf("postings version %d", v))
	}
	nterms := r.Count(10) // a term, a count and a length
	var (
		offset    uint64
		found     bool
		count, nb uint64
	)
	for range nterms {
		term := Term(binary.LittleEndian.Uint64(r.Bytes(8)))
		c, n := r.Uvarint(), r.Uvarint()
		if term == t && !found {
			found, count, nb = true, c, n
		}
		if !found {
			offset += n
		}
	}
	if r.Err != nil || !found {
		return nil, r.Err
	}
	if offset+nb > uint64(len(r.B)) || count > nb {
		return nil, r.Fail("postings past the end of the shard")
	}
	r.B = r.B[offset : offset+nb]
	rows := make([]uint32, 0, count)
	row := uint64(0)
	for range count {
		row += r.Uvarint()
		if row >= uint64(nrows) {
			return nil, r.Fail("posting past the last row")
		}
		rows = append(rows, uint32(row))
	}
	if r.Err == nil && len(r.B) > 0 {
		return nil, r.Fail("postings longer than their count")
	}
	return rows, r.Err
}
