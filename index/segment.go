package index

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"

	"cairn/internal/binread"
	"cairn/internal/radix"
)

// A segment is the spans of one block that fall in one partition. Its search
// index is a rows record (one row per trace, newest first) and postings
// sharded by the top byte of the term, so that a search reads the rows and
// one small shard per term.

// rowsVersion is the version byte of rows records that Finish writes.
// Version 4 writes rows in runs, column by column (see appendRun): rows of
// one-span traces took 27.2 bytes a trace on disk in version 3, 21.3 in
// version 4. Version 3 has the layout of version 2; it marks segments
// whose attribute terms hash values as text and include events' attributes
// (Hasher.Attribute), which version 2 segments, of cairn before format
// version 5, do not. Readers take all three.
const rowsVersion = 4

// shardV2 is the version byte of postings shards.
const shardV2 = 2

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
	rows []Row
	// terms are the rows' terms in runs, kept, not copied: row i's are
	// the runs from firstRun[i] to the next row's first.
	terms    [][]Term
	firstRun []int32
	// maxDuration is, by Service term, the longest span of the service.
	maxDuration map[Term]uint64
}

// SpanDuration records a span of the service whose Service term is given,
// lasting d nanoseconds: the rows record keeps each service's longest, so
// that a search for spans at least as long as a bound skips a segment whose
// spans are all shorter without reading any of them.
func (b *SegmentBuilder) SpanDuration(service Term, d uint64) {
	if b.maxDuration == nil {
		b.maxDuration = map[Term]uint64{}
	}
	if cur, ok := b.maxDuration[service]; !ok || d > cur {
		b.maxDuration[service] = d
	}
}

// Grow makes room for n more rows, so that adding them does not copy the
// rows added before: for a cut of small traces, growing row by row was a
// twentieth of ingest's CPU.
func (b *SegmentBuilder) Grow(n int) {
	b.rows = slices.Grow(b.rows, n)
	b.firstRun = slices.Grow(b.firstRun, n)
	b.terms = slices.Grow(b.terms, n)
}

// Add adds a row with its terms, which may repeat. The builder keeps terms
// until Finish; the caller must not modify it before then.
func (b *SegmentBuilder) Add(r Row, terms []Term) {
	b.rows = append(b.rows, r)
	b.firstRun = append(b.firstRun, int32(len(b.terms)))
	b.AddTerms(terms)
}

// AddTerms adds more terms to the row added last, kept as Add keeps them.
func (b *SegmentBuilder) AddTerms(terms []Term) {
	if len(terms) > 0 {
		b.terms = append(b.terms, terms)
	}
}

// rowTerms are the runs of row i's terms.
func (b *SegmentBuilder) rowTerms(i uint32) [][]Term {
	end := len(b.terms)
	if int(i)+1 < len(b.firstRun) {
		end = int(b.firstRun[i+1])
	}
	return b.terms[b.firstRun[i]:end]
}

// Finish encodes the segment: the rows record, and each non-empty postings
// shard by shard number. Both are built in s, and valid until s is next
// used; with s nil they are the caller's.
func (b *SegmentBuilder) Finish(s *Scratch) (rows []byte, shards [Shards][]byte) {
	if s == nil {
		s = new(Scratch)
	}
	// Rows newest first; a row's position is what postings refer to.
	order := s.order[:0]
	for i := range b.rows {
		order = append(order, uint32(i))
	}
	s.order = order
	slices.SortFunc(order, func(x, y uint32) int {
		if c := cmp.Compare(b.rows[y].MinStart, b.rows[x].MinStart); c != 0 {
			return c
		}
		return slices.Compare(b.rows[x].TraceID[:], b.rows[y].TraceID[:])
	})

	var newest uint64
	if len(order) > 0 {
		newest = b.rows[order[0]].MinStart
	}
	// Postings are (term, row) pairs, generated in row order into their
	// shard's part of one array and then sorted stably by term within each
	// shard, which keeps rows ascending within a term; a term repeated
	// within a row gives equal neighbours. Radix-sorting them all at once
	// took scratch as large as the postings, a tenth of what ingest
	// allocated; a shard's sort takes only as much as that shard.
	var starts, next [Shards + 1]int
	for _, ts := range b.terms {
		for _, t := range ts {
			starts[int(Shard(t))+1]++
		}
	}
	largest := 0
	for sh := range Shards {
		largest = max(largest, starts[sh+1])
		starts[sh+1] += starts[sh]
	}
	next = starts
	postings := slices.Grow(s.postings[:0], starts[Shards])[:starts[Shards]]
	s.postings = postings
	// Most rows take under 32 bytes: growing it as they were encoded was
	// a fifth of the time Finish took for small traces.
	body := slices.Grow(s.body[:0], 32*len(order))
	checkpoints := s.checkpoints[:0]
	for pos, i := range order {
		if pos%rowCheckpoint == 0 {
			checkpoints = append(checkpoints, uint32(len(body)))
			run := order[pos:min(pos+rowCheckpoint, len(order))]
			body = appendRun(body, b.rows, run, newest)
		}
		for _, ts := range b.rowTerms(i) {
			for _, t := range ts {
				sh := Shard(t)
				postings[next[sh]] = posting{t, uint32(pos)}
				next[sh]++
			}
		}
	}
	s.body, s.checkpoints = body, checkpoints

	rows = append(s.rows[:0], rowsVersion)
	rows = binary.AppendUvarint(rows, uint64(len(order)))
	rows = binary.AppendUvarint(rows, newest)
	services := slices.Sorted(maps.Keys(b.maxDuration))
	rows = binary.AppendUvarint(rows, uint64(len(services)))
	for _, svc := range services {
		rows = binary.BigEndian.AppendUint64(rows, uint64(svc))
		rows = binary.AppendUvarint(rows, b.maxDuration[svc])
	}
	for _, c := range checkpoints {
		rows = binary.LittleEndian.AppendUint32(rows, c)
	}
	rows = append(rows, body...)
	s.rows = rows

	// By term, stably, so that rows stay ascending within a term.
	var sortScratch []posting
	if largest >= smallShard {
		sortScratch = slices.Grow(s.sorted[:0], largest)[:largest]
		s.sorted = sortScratch
	}
	// The shards are encoded one after another into one buffer, and sliced
	// once it has stopped growing.
	var ends [Shards]int
	all := s.shards[:0]
	for sh := range Shards {
		ends[sh] = len(all)
		if starts[sh] == starts[sh+1] {
			continue
		}
		part := postings[starts[sh]:starts[sh+1]:starts[sh+1]]
		if len(part) < smallShard {
			slices.SortStableFunc(part, func(x, y posting) int { return cmp.Compare(x.term, y.term) })
		} else {
			part, _ = radix.Sort(part, sortScratch)
		}
		all = s.appendShard(all, part)
		ends[sh] = len(all)
	}
	s.shards = all
	begin := 0
	for sh := range Shards {
		if ends[sh] > begin {
			shards[sh] = all[begin:ends[sh]:ends[sh]]
		}
		begin = ends[sh]
	}
	return rows, shards
}

// Scratch is the memory Finish works in. A cut finishes a segment of tens
// of thousands of traces: kept from one to the next, the megabytes of its
// postings and encodings do not come fresh from the kernel, at a page fault
// for every 4 KiB, at every cut.
type Scratch struct {
	order       []uint32
	postings    []posting
	sorted      []posting // the radix sort's
	rowsOf      []uint32  // a term's rows, by appendShard
	body        []byte
	checkpoints []uint32
	rows        []byte
	shards      []byte
	dir, lists  []byte
}

// Bytes is the memory the scratch holds.
func (s *Scratch) Bytes() int {
	const u32, posting = 4, 16
	return u32*(cap(s.order)+cap(s.rowsOf)+cap(s.checkpoints)) + posting*(cap(s.postings)+cap(s.sorted)) +
		cap(s.body) + cap(s.rows) + cap(s.shards) + cap(s.dir) + cap(s.lists)
}

// appendRun appends the rows of one run, rows[run[0]], rows[run[1]], …,
// in the layout of rows version 4: column by column, and a column whose
// values are all the same (spans, flags, often the start spread) as one
// value, so that small traces' rows are little more than their IDs. Each
// min start is coded from the row's before it, the run's first from newest.
//
//	run := uniform:u8  n × trace_id[16]  n × uvarint(previous − min_start)
//	       spread  n × varint(max_end − min_start)  spans  flags
//
// where spread, spans and flags are columns of n uvarints of
// max_start − min_start, spans and errors·2 + split, or one uvarint if
// bit 0, 1 or 2 of uniform is set.
func appendRun(dst []byte, rows []Row, run []uint32, newest uint64) []byte {
	var spread, spans, flags [rowCheckpoint]uint64
	for k, i := range run {
		r := &rows[i]
		spread[k], spans[k] = r.MaxStart-r.MinStart, uint64(r.Spans)
		flags[k] = uint64(r.Errors) << 1
		if r.Split {
			flags[k] |= 1
		}
	}
	n := len(run)
	uniform := byte(0)
	for bit, col := range [...][]uint64{spread[:n], spans[:n], flags[:n]} {
		if !slices.ContainsFunc(col, func(v uint64) bool { return v != col[0] }) {
			uniform |= 1 << bit
		}
	}
	dst = append(dst, uniform)
	for _, i := range run {
		dst = append(dst, rows[i].TraceID[:]...)
	}
	prev := newest
	for _, i := range run {
		dst = binary.AppendUvarint(dst, prev-rows[i].MinStart)
		prev = rows[i].MinStart
	}
	dst = appendColumn(dst, spread[:n], uniform&1 != 0)
	for _, i := range run {
		dst = binary.AppendVarint(dst, int64(rows[i].MaxEnd-rows[i].MinStart))
	}
	dst = appendColumn(dst, spans[:n], uniform&2 != 0)
	return appendColumn(dst, flags[:n], uniform&4 != 0)
}

// appendColumn appends the uvarints of col, only its first if uniform.
func appendColumn(dst []byte, col []uint64, uniform bool) []byte {
	if uniform {
		col = col[:1]
	}
	for _, v := range col {
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

// smallShard is the fewest postings a shard's sort gives to radix.Sort,
// whose eight counting passes cost more than a comparison sort of fewer.
const smallShard = 256

// posting says that a term holds for a row.
type posting struct {
	term Term // first: radix.Sort orders postings by it
	row  uint32
}

// appendShard encodes a shard's postings, sorted by term: a directory, so that a
// lookup skips other terms without decoding their rows, then the row lists.
// Terms are delta-coded, which makes the buckets of one attribute key, which
// share their top bits, cost a byte or two each. Terms of a shard share their
// top byte, so deltas, the first one counted from the shard's base
// (shard << 56), leave room for a flag bit: set for a term with a single row,
// which the directory then holds (the common case for high-cardinality
// values). A list is written as row deltas or, if smaller, as a bitmap from
// its first row to its last (the common case for services, operations and
// resources, which most rows have).
//
//	version=2 | uvarint nterms | uvarint len(directory) | directory | lists
//	directory := nterms × ( uvarint((term − previous term)·2 + single)
//	                        ( single: uvarint row | uvarint(count·2 + bitmap) uvarint nbytes ) )
//	lists     := for each term with count > 1, nbytes bytes of
//	             bitmap=0: count × uvarint row delta
//	             bitmap=1: uvarint first row, bits from it on, least significant first
func (s *Scratch) appendShard(dst []byte, postings []posting) []byte {
	dir, lists, scratch := s.dir[:0], s.lists[:0], s.rowsOf
	var prevTerm Term
	nterms := 0
	if len(postings) > 0 {
		prevTerm = shardBase(postings[0].term)
	}
	for len(postings) > 0 {
		t := postings[0].term
		rows := scratch[:0]
		for len(postings) > 0 && postings[0].term == t {
			if r := postings[0].row; len(rows) == 0 || rows[len(rows)-1] != r {
				rows = append(rows, r)
			}
			postings = postings[1:]
		}
		scratch = rows
		nterms++
		single := uint64(0)
		if len(rows) == 1 {
			single = 1
		}
		dir = binary.AppendUvarint(dir, uint64(t-prevTerm)<<1|single)
		prevTerm = t
		if len(rows) == 1 {
			dir = binary.AppendUvarint(dir, uint64(rows[0]))
			continue
		}
		n := len(lists)
		prev := uint32(0)
		for _, r := range rows {
			lists = binary.AppendUvarint(lists, uint64(r-prev))
			prev = r
		}
		first, last := rows[0], rows[len(rows)-1]
		bitmap := uint64(0)
		if bm := uvarintLen(uint64(first)) + int(last-first)/8 + 1; bm < len(lists)-n {
			bitmap = 1
			lists = binary.AppendUvarint(lists[:n], uint64(first))
			bits := n + uvarintLen(uint64(first))
			lists = append(lists, make([]byte, bm-(bits-n))...)
			for _, r := range rows {
				lists[bits+int(r-first)/8] |= 1 << ((r - first) % 8)
			}
		}
		dir = binary.AppendUvarint(dir, uint64(len(rows))<<1|bitmap)
		dir = binary.AppendUvarint(dir, uint64(len(lists)-n))
	}
	s.dir, s.lists, s.rowsOf = dir, lists, scratch
	dst = append(dst, shardV2)
	dst = binary.AppendUvarint(dst, uint64(nterms))
	dst = binary.AppendUvarint(dst, uint64(len(dir)))
	return append(append(dst, dir...), lists...)
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// rowCheckpoint is how many rows lie between the offsets a rows record
// keeps, so that reaching any row decodes at most rowCheckpoint-1 others.
const rowCheckpoint = 32

// RowReader decodes the rows of a rows record that a search asks for.
type RowReader struct {
	version     byte
	n           int
	newest      uint64
	durations   []byte // the longest span of each service
	checkpoints []byte // n/rowCheckpoint rounded up, u32le offsets into body
	body        []byte
	// Versions 2 and 3: rows are decoded one by one.
	next   int             // row the cursor decodes next
	cursor *binread.Reader // over body, at row next
	// Version 4: rows are decoded a run at a time.
	run    [rowCheckpoint]Row
	runAt  int // the run that run holds, -1 for none
	runEnd int // where in body that run ends
}

// NewRowReader reads a rows record's header:
//
//	version=4 (or 3, 2) | uvarint nrows | uvarint newest
//	| uvarint nservices | nservices × ( service:u64 uvarint(longest span) )
//	| ceil(nrows/32) × u32le offset | runs (version 4) or rows
func NewRowReader(b []byte) (*RowReader, error) {
	r := binread.New(b, ErrCorrupt)
	v := r.Byte()
	if v < 2 || v > rowsVersion {
		return nil, r.Fail(fmt.Sprintf("rows record version %d", v))
	}
	// The fewest bytes a row and its share of the offsets take.
	least := 22
	if v >= 4 {
		least = 18
	}
	rr := &RowReader{version: v, n: r.Count(least), runAt: -1}
	rr.newest = r.Uvarint()
	nsvc := r.Count(9)
	table := r.B
	for range nsvc {
		r.Bytes(8)
		r.Uvarint()
	}
	rr.durations = table[:len(table)-len(r.B)]
	rr.checkpoints = r.Bytes(4 * ((rr.n + rowCheckpoint - 1) / rowCheckpoint))
	rr.body = r.B
	rr.cursor = binread.New(rr.body, ErrCorrupt)
	return rr, r.Err
}

// Len is the number of rows.
func (rr *RowReader) Len() int { return rr.n }

// TextAttributes reports whether the segment's attribute terms are those
// Hasher.Attribute makes. A segment written before them (rows version 2)
// has terms of typed values and none of events' attributes, which searches
// cannot look up: its rows must be checked against their spans instead.
func (rr *RowReader) TextAttributes() bool { return rr.version >= 3 }

// MaxDuration is the duration of the longest span in the segment of the
// service whose Service term is given, and whether it has any span.
func (rr *RowReader) MaxDuration(service Term) (uint64, bool) {
	r := binread.New(rr.durations, ErrCorrupt)
	for len(r.B) > 0 {
		svc := Term(binary.BigEndian.Uint64(r.Bytes(8)))
		d := r.Uvarint()
		if svc == service {
			return d, true
		}
	}
	return 0, false
}

// Row returns row i: from its run, decoded whole, or in older records
// decoding forward from the cursor or the nearest checkpoint before i.
func (rr *RowReader) Row(i int) (Row, error) {
	if i < 0 || i >= rr.n {
		return Row{}, fmt.Errorf("%w: row %d of %d", ErrCorrupt, i, rr.n)
	}
	if rr.version >= 4 {
		if c := i / rowCheckpoint; c != rr.runAt {
			if _, err := rr.decodeRun(c); err != nil {
				return Row{}, err
			}
		}
		return rr.run[i%rowCheckpoint], nil
	}
	if i < rr.next || i-rr.next >= rowCheckpoint {
		c := i / rowCheckpoint
		cursor, err := rr.checkpoint(c)
		if err != nil {
			return Row{}, err
		}
		rr.cursor, rr.next = cursor, c*rowCheckpoint
	}
	var row Row
	for ; rr.next <= i; rr.next++ {
		row = rr.decode()
	}
	return row, rr.cursor.Err
}

// checkpoint reads body from where offset c points: run c of a version 4
// record, row 32·c of an older one.
func (rr *RowReader) checkpoint(c int) (*binread.Reader, error) {
	off := binary.LittleEndian.Uint32(rr.checkpoints[4*c:])
	if int(off) > len(rr.body) {
		return nil, fmt.Errorf("%w: row offset %d past the record", ErrCorrupt, off)
	}
	return binread.New(rr.body[off:], ErrCorrupt), nil
}

// decodeRun decodes run c of a version 4 record into rr.run, and returns
// its rows there.
func (rr *RowReader) decodeRun(c int) ([]Row, error) {
	rr.runAt = -1
	r, err := rr.checkpoint(c)
	if err != nil {
		return nil, err
	}
	run := rr.run[:min(rowCheckpoint, rr.n-c*rowCheckpoint)]
	uniform := r.Byte()
	if uniform > 7 {
		r.Fail("run columns")
	}
	for k := range run {
		copy(run[k].TraceID[:], r.Bytes(16))
	}
	prev := rr.newest
	for k := range run {
		run[k].MinStart = prev - r.Uvarint()
		prev = run[k].MinStart
	}
	var v uint64
	for k := range run {
		if k == 0 || uniform&1 == 0 {
			v = r.Uvarint()
		}
		run[k].MaxStart = run[k].MinStart + v
	}
	for k := range run {
		run[k].MaxEnd = run[k].MinStart + uint64(r.Varint())
	}
	for k := range run {
		if k == 0 || uniform&2 == 0 {
			v = r.Uvarint()
		}
		run[k].Spans = uint32(v)
	}
	for k := range run {
		if k == 0 || uniform&4 == 0 {
			v = r.Uvarint()
		}
		if v>>1 > math.MaxUint32 {
			r.Fail("row flags")
		}
		run[k].Errors, run[k].Split = uint32(v>>1), v&1 == 1
	}
	if r.Err != nil {
		return nil, r.Err
	}
	rr.runAt, rr.runEnd = c, len(rr.body)-len(r.B)
	return run, nil
}

// decode decodes the row at the cursor of a version 2 or 3 record.
func (rr *RowReader) decode() Row {
	r := rr.cursor
	var row Row
	copy(row.TraceID[:], r.Bytes(16))
	row.MinStart = rr.newest - r.Uvarint()
	row.MaxStart = row.MinStart + r.Uvarint()
	row.MaxEnd = row.MinStart + uint64(r.Varint())
	row.Spans = uint32(r.Uvarint())
	row.Errors = uint32(r.Uvarint())
	switch r.Byte() {
	case 0:
	case 1:
		row.Split = true
	default:
		r.Fail("row flags")
	}
	return row
}

// DecodeRows decodes a whole rows record, checking that its offsets agree
// with its rows.
func DecodeRows(b []byte) ([]Row, error) {
	rr, err := NewRowReader(b)
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, rr.n)
	if rr.version >= 4 {
		end := 0
		for c := 0; c*rowCheckpoint < rr.n; c++ {
			if got := binary.LittleEndian.Uint32(rr.checkpoints[4*c:]); int(got) != end {
				return nil, fmt.Errorf("%w: row %d at offset %d, recorded %d", ErrCorrupt, c*rowCheckpoint, end, got)
			}
			run, err := rr.decodeRun(c)
			if err != nil {
				return nil, err
			}
			rows = append(rows, run...)
			end = rr.runEnd
		}
		if end != len(rr.body) {
			return nil, fmt.Errorf("%w: %d bytes after the last row", ErrCorrupt, len(rr.body)-end)
		}
		return rows, nil
	}
	for i := range rr.n {
		if i%rowCheckpoint == 0 {
			want := len(rr.body) - len(rr.cursor.B)
			if got := binary.LittleEndian.Uint32(rr.checkpoints[4*(i/rowCheckpoint):]); int(got) != want {
				return nil, fmt.Errorf("%w: row %d at offset %d, recorded %d", ErrCorrupt, i, want, got)
			}
		}
		rows = append(rows, rr.decode())
		rr.next++
	}
	return rows, rr.cursor.Done("rows record")
}

// Postings returns the rows of a term, ascending (newest first), from the
// shard that holds it. A term that is absent has no rows.
func Postings(shard []byte, t Term, nrows int) ([]uint32, error) {
	r := binread.New(shard, ErrCorrupt)
	if v := r.Byte(); v != shardV2 {
		return nil, r.Fail(fmt.Sprintf("postings version %d", v))
	}
	nterms := r.Count(2) // a delta and a row, for a term with one row
	dir := binread.New(r.Bytes(r.Count(1)), ErrCorrupt)
	lists := r.B
	if r.Err != nil {
		return nil, r.Err
	}
	term := shardBase(t)
	var offset uint64
	for i := range nterms {
		delta := dir.Uvarint()
		single := delta&1 == 1
		delta >>= 1
		var count, n uint64
		bitmap := false
		if single {
			count, n = 1, dir.Uvarint()
		} else {
			count, n = dir.Uvarint(), dir.Uvarint()
			count, bitmap = count>>1, count&1 == 1
		}
		term += Term(delta)
		switch {
		case dir.Err != nil:
			return nil, dir.Err
		case count < 2 && !single || i > 0 && delta == 0 || Shard(term) != Shard(t):
			return nil, dir.Fail("postings directory")
		case term > t:
			return nil, nil // terms ascend: t is absent
		case term == t && single:
			if n >= uint64(nrows) {
				return nil, dir.Fail("posting past the last row")
			}
			return []uint32{uint32(n)}, nil
		case term == t && bitmap:
			return decodeBitmap(lists, offset, n, count, nrows)
		case term == t:
			return decodeList(lists, offset, n, count, nrows)
		case !single:
			offset += n
		}
	}
	return nil, nil
}

// decodeBitmap decodes a bitmap list of count rows from lists[offset:offset+n].
func decodeBitmap(lists []byte, offset, n, count uint64, nrows int) ([]uint32, error) {
	if offset+n > uint64(len(lists)) || count > 8*n {
		return nil, fmt.Errorf("%w: postings past the end of the shard", ErrCorrupt)
	}
	r := binread.New(lists[offset:offset+n], ErrCorrupt)
	first := r.Uvarint()
	if r.Err != nil {
		return nil, r.Err
	}
	rows := make([]uint32, 0, count)
	for i, b := range r.B {
		for ; b != 0; b &= b - 1 {
			row := first + uint64(8*i+bits.TrailingZeros8(b))
			if row >= uint64(nrows) {
				return nil, r.Fail("posting past the last row")
			}
			rows = append(rows, uint32(row))
		}
	}
	if uint64(len(rows)) != count {
		return nil, r.Fail("bitmap count")
	}
	return rows, nil
}

// shardBase is the smallest term of t's shard.
func shardBase(t Term) Term { return t &^ (1<<56 - 1) }

// decodeList decodes count row deltas from lists[offset:offset+n].
func decodeList(lists []byte, offset, n, count uint64, nrows int) ([]uint32, error) {
	if offset+n > uint64(len(lists)) || count > n {
		return nil, fmt.Errorf("%w: postings past the end of the shard", ErrCorrupt)
	}
	r := binread.New(lists[offset:offset+n], ErrCorrupt)
	rows := make([]uint32, 0, count)
	row := uint64(0)
	for range count {
		row += r.Uvarint()
		if row >= uint64(nrows) {
			return nil, r.Fail("posting past the last row")
		}
		rows = append(rows, uint32(row))
	}
	return rows, r.Done("postings")
}
