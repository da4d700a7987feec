package index

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSegmentRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b SegmentBuilder
	want := map[Term][]Row{}
	byID := map[[16]byte]Row{}
	for i := range 500 {
		r := Row{MinStart: 1_700_000_000_000_000_000 + uint64(rng.IntN(1e9)), Spans: uint32(1 + i%7), Errors: uint32(i % 2)}
		r.MaxStart = r.MinStart + uint64(rng.IntN(1e5))
		r.MaxEnd = r.MaxStart + uint64(rng.IntN(1e6))
		r.Split = i%3 == 0
		if i%50 == 0 {
			r.MaxEnd = r.MinStart - 5 // spans may end before they start
		}
		r.TraceID[0], r.TraceID[1] = byte(i), byte(i>>8)
		byID[r.TraceID] = r
		var terms []Term
		for range 1 + rng.IntN(5) {
			tm := Term(rng.Uint64()%40) << 56 // few shards, shared terms
			terms = append(terms, tm, tm)     // duplicates are harmless
			want[tm] = append(want[tm], r)
		}
		// A row's terms may come in runs, empty ones among them.
		cut := rng.IntN(len(terms) + 1)
		b.Add(r, terms[:cut])
		for len(terms) > cut && rng.IntN(2) == 0 {
			b.AddTerms(nil)
			next := cut + rng.IntN(len(terms)-cut+1)
			b.AddTerms(terms[cut:next])
			cut = next
		}
		b.AddTerms(terms[cut:])
	}
	longest := map[Term]uint64{}
	for range 300 {
		svc, d := Term(rng.IntN(5))<<56|7, uint64(rng.IntN(1e9))
		b.SpanDuration(svc, d)
		longest[svc] = max(longest[svc], d)
	}
	rowsRec, shards := b.Finish(nil)
	rows, err := DecodeRows(rowsRec)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 500 {
		t.Fatalf("%d rows", len(rows))
	}
	for i, r := range rows {
		if byID[r.TraceID] != r {
			t.Fatalf("row %d = %+v, added as %+v", i, r, byID[r.TraceID])
		}
		if i > 0 && rows[i-1].MinStart < r.MinStart {
			t.Fatal("rows are not newest first")
		}
	}
	// Random access agrees with a full decode, whatever the order of reads.
	rr, err := NewRowReader(rowsRec)
	if err != nil {
		t.Fatal(err)
	}
	for svc, want := range longest {
		if got, ok := rr.MaxDuration(svc); !ok || got != want {
			t.Fatalf("MaxDuration(%x) = %d, %v; want %d", svc, got, ok, want)
		}
	}
	if _, ok := rr.MaxDuration(12345); ok {
		t.Fatal("MaxDuration of a service without spans")
	}
	for range 2000 {
		i := rng.IntN(len(rows))
		r, err := rr.Row(i)
		if err != nil || r != rows[i] {
			t.Fatalf("Row(%d) = %+v, %v; want %+v", i, r, err, rows[i])
		}
	}
	for term, rs := range want {
		got, err := Postings(shards[Shard(term)], term, len(rows))
		if err != nil {
			t.Fatal(err)
		}
		var ids, wantIDs []string
		for _, i := range got {
			ids = append(ids, fmt.Sprintf("%x", rows[i].TraceID[:2]))
		}
		for _, r := range rs {
			wantIDs = append(wantIDs, fmt.Sprintf("%x", r.TraceID[:2]))
		}
		slices.Sort(ids)
		wantIDs = slices.Compact(slices.Sorted(slices.Values(wantIDs)))
		if !slices.Equal(ids, wantIDs) {
			t.Fatalf("term %x: rows %v, want %v", term, ids, wantIDs)
		}
		if !slices.IsSorted(got) {
			t.Fatalf("postings not ascending: %v", got)
		}
	}
	if got, err := Postings(shards[0], Term(12345), len(rows)); err != nil || len(got) != 0 {
		t.Fatalf("absent term: %v, %v", got, err)
	}
}

// TestPostingsOfSingleRowTerms covers the densest directory: terms one
// apart (an attribute key's value buckets) that each have one row, so an
// entry takes two bytes.
func TestPostingsOfSingleRowTerms(t *testing.T) {
	var b SegmentBuilder
	const base = Term(7) << 56
	for i := range 100 {
		b.Add(Row{MinStart: uint64(1000 - i)}, []Term{base + Term(i)})
	}
	_, shards := b.Finish(nil)
	for i := range 100 {
		got, err := Postings(shards[7], base+Term(i), 100)
		if err != nil || !slices.Equal(got, []uint32{uint32(i)}) {
			t.Fatalf("term %d: %v, %v", i, got, err)
		}
	}
}

func FuzzSegment(f *testing.F) {
	var b SegmentBuilder
	b.Add(Row{MinStart: 10, MaxStart: 15, MaxEnd: 20, Spans: 2}, []Term{1, 2 << 56})
	b.Add(Row{MinStart: 12, MaxStart: 12, MaxEnd: 11, Spans: 1, Errors: 1, Split: true}, []Term{1})
	b.SpanDuration(5<<56, 1e6)
	rows, shards := b.Finish(nil)
	f.Add(rows, shards[0], uint64(1))
	f.Add(rows, shards[2], uint64(2)<<56)
	f.Fuzz(func(t *testing.T, rowsRec, shard []byte, term uint64) {
		if rr, err := NewRowReader(rowsRec); err == nil {
			rr.MaxDuration(Term(term))
			for i := range min(rr.Len(), 100) {
				if _, err := rr.Row((i * 7) % rr.Len()); err != nil {
					break
				}
			}
		}
		rows, err := DecodeRows(rowsRec)
		if err == nil {
			var b SegmentBuilder
			for _, r := range rows {
				b.Add(r, nil)
			}
			again, _ := b.Finish(nil)
			back, err := DecodeRows(again)
			if err != nil || len(back) != len(rows) {
				t.Fatalf("rows do not round-trip: %v", err)
			}
		}
		got, err := Postings(shard, Term(term), len(rows))
		if err == nil {
			for i, r := range got {
				if int(r) >= len(rows) || (i > 0 && r < got[i-1]) {
					t.Fatalf("postings %v out of range or order for %d rows", got, len(rows))
				}
			}
		}
	})
}

// goldenRows reads a rows record and the rows it holds from testdata.
func goldenRows(t *testing.T, name string) ([]byte, []Row) {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var (
		rec  []byte
		rows []Row
	)
	for _, line := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if h, ok := strings.CutPrefix(line, "record "); ok {
			if rec, err = hex.DecodeString(h); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var (
			r  Row
			id []byte
		)
		if _, err := fmt.Sscanf(line, "%x %d %d %d %d %d %t", &id, &r.MinStart, &r.MaxStart, &r.MaxEnd, &r.Spans, &r.Errors, &r.Split); err != nil {
			t.Fatalf("%s: %q: %v", name, line, err)
		}
		copy(r.TraceID[:], id)
		rows = append(rows, r)
	}
	return rec, rows
}

// TestRowsVersions reads a version 3 record that an older cairn wrote, and
// checks that Finish writes version 4 as its golden file has it.
func TestRowsVersions(t *testing.T) {
	for _, name := range []string{"rows-v3.txt", "rows-v4.txt"} {
		rec, want := goldenRows(t, name)
		got, err := DecodeRows(rec)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: decoded %v, %v; want %v", name, got, err, want)
		}
		rr, err := NewRowReader(rec)
		if err != nil || !rr.TextAttributes() {
			t.Fatalf("%s: %v, text attributes %v", name, err, rr != nil && rr.TextAttributes())
		}
		for _, i := range []int{39, 0, 33, 32, 31, 5, 38} {
			if r, err := rr.Row(i); err != nil || r != want[i] {
				t.Fatalf("%s: Row(%d) = %+v, %v; want %+v", name, i, r, err, want[i])
			}
		}
		var b SegmentBuilder
		for _, r := range want {
			b.Add(r, nil)
		}
		b.SpanDuration(3<<56, 12345)
		again, _ := b.Finish(nil)
		if name == "rows-v4.txt" && !bytes.Equal(again, rec) {
			t.Fatalf("Finish wrote %x, want %x", again, rec)
		}
		if len(again) >= len(rec) && name == "rows-v3.txt" {
			t.Fatalf("version 4 takes %d bytes, version 3 %d", len(again), len(rec))
		}
	}
}

// TestUniformColumns round-trips runs whose spread, spans and flags are
// each the same throughout, or all but one row's, which version 4 writes
// as one value or as a column.
func TestUniformColumns(t *testing.T) {
	var b SegmentBuilder
	var want []Row
	for i := range 200 {
		r := Row{MinStart: uint64(1e9 - i*1000), Spans: 1}
		r.MaxStart, r.MaxEnd = r.MinStart, r.MinStart+uint64(i%7)*100
		if i/rowCheckpoint == 2 && i%rowCheckpoint == 31 { // a run's last row differs
			r.MaxStart, r.Spans, r.Errors = r.MinStart+5, 3, 1
		}
		if i/rowCheckpoint == 4 {
			r.Split, r.Errors = true, 2
		}
		r.TraceID[0], r.TraceID[1] = byte(i), byte(i>>8)
		want = append(want, r)
		b.Add(r, nil)
	}
	rec, _ := b.Finish(nil)
	got, err := DecodeRows(rec)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("decoded %v, %v; want %v", got, err, want)
	}
	rr, err := NewRowReader(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{95, 64, 199, 0, 130, 95} {
		if r, err := rr.Row(i); err != nil || r != want[i] {
			t.Fatalf("Row(%d) = %+v, %v; want %+v", i, r, err, want[i])
		}
	}
	if per := float64(len(rec)) / 200; per > 21 {
		t.Fatalf("%.1f bytes a row, want uniform columns to take almost nothing", per)
	}
}

// TestScratchReuse finishes segments of random sizes, large and small in
// turn, with one kept scratch and with none: the records must be the same
// bytes, so nothing of a larger segment before leaks into a smaller one.
func TestScratchReuse(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var s Scratch
	for round, n := range []int{3000, 10, 0, 2500, 1, 400, 3000} {
		var b SegmentBuilder
		for i := range n {
			var terms []Term
			for range rng.IntN(40) {
				// Few shards and dense terms give shards past the radix
				// sort's threshold; the rest spread over all of them.
				if rng.IntN(2) == 0 {
					terms = append(terms, Term(rng.Uint64N(4))<<56|Term(rng.Uint64N(50)))
				} else {
					terms = append(terms, Term(rng.Uint64()))
				}
			}
			r := Row{MinStart: rng.Uint64N(1e6), Spans: uint32(1 + rng.IntN(5))}
			r.MaxStart, r.MaxEnd = r.MinStart+rng.Uint64N(10), r.MinStart+rng.Uint64N(1000)
			r.TraceID[0], r.TraceID[1], r.TraceID[2] = byte(i), byte(i>>8), byte(round)
			b.Add(r, terms)
			b.SpanDuration(Term(rng.Uint64N(3))<<56, rng.Uint64N(1e6))
		}
		wantRows, wantShards := b.Finish(nil)
		gotRows, gotShards := b.Finish(&s)
		if !bytes.Equal(gotRows, wantRows) {
			t.Fatalf("round %d (%d rows): rows record differs with a kept scratch", round, n)
		}
		for sh := range Shards {
			if !bytes.Equal(gotShards[sh], wantShards[sh]) || (gotShards[sh] == nil) != (wantShards[sh] == nil) {
				t.Fatalf("round %d (%d rows): shard %d differs with a kept scratch", round, n, sh)
			}
		}
	}
}
