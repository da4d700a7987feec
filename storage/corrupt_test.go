package storage

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"testing"

	"cairn/bench"
	"cairn/internal/otlptest"
	"cairn/storage/internal/keys"
	"cairn/storage/internal/wal"
)

// tables lists the sstables that a store of the closed store in dir uses,
// largest first: the directory may also hold some it no longer does.
func tables(t *testing.T, dir, store string) []string {
	t.Helper()
	var paths []string
	for _, tb := range storeTables(t, dir) {
		if tb.store == store && !slices.Contains(paths, tb.path) {
			paths = append(paths, tb.path)
		}
	}
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	slices.SortFunc(paths, func(a, b string) int { return int(size(b) - size(a)) })
	return paths
}

// storeTables lists the sstables of both stores of a closed store
// directory, as check reads them.
func storeTables(t *testing.T, dir string) []table {
	t.Helper()
	c, err := openChecker(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.tables()
	if err := errors.Join(err, c.close()); err != nil {
		t.Fatal(err)
	}
	return all
}

// tableLayout returns where the blocks of an sstable are.
func tableLayout(t *testing.T, path string) *sstable.Layout {
	t.Helper()
	r, err := openTable(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l, err := r.Layout()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// flipDataBlock flips one bit in the middle of data block i of an sstable.
func flipDataBlock(t *testing.T, path string, i int) {
	t.Helper()
	l := tableLayout(t, path)
	if i >= len(l.Data) {
		t.Fatalf("%s has %d data blocks, not %d", path, len(l.Data), i+1)
	}
	h := l.Data[i].Handle
	flipAt(t, path, int64(h.Offset+h.Length/2))
}

func flipAt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// damagedStore writes a store of a few blocks from n requests, closes it,
// and returns its directory and traces. The spans start at the top of the
// hour, so that the store's layout does not depend on the time of day.
func damagedStore(t *testing.T, n int) (string, otlptest.Traces) {
	t.Helper()
	dir := t.TempDir()
	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 500, Start: time.Now().Truncate(time.Hour)})
	want := writeBlocks(t, db, gen, n)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, want
}

var corruptOpts = &Options{RecompressAfter: -1, Logger: slog.New(slog.DiscardHandler)}

// readAll reads every trace of want, compares those that read, and returns
// those that fail, which must fail as damaged, naming the file.
func readAll(t *testing.T, db *DB, want otlptest.Traces, file string) map[TraceID]bool {
	t.Helper()
	failed := map[TraceID]bool{}
	for id, entries := range want {
		raw, _ := hex.DecodeString(id)
		tr, err := db.Trace(context.Background(), TraceID(raw), TimeRange{})
		if err != nil {
			var ce *CorruptionError
			if errors.As(err, &ce); ce == nil || ce.Path != file || !strings.Contains(err.Error(), id) {
				t.Fatalf("trace %s: %v, want a CorruptionError naming it and %s (got %q)", id, err, file, ce.Path)
			}
			failed[TraceID(raw)] = true
			continue
		}
		got := otlptest.Traces{}
		got.Add(decode(t, tr))
		if d := otlptest.DiffTrace(entries, got[id]); d != "" {
			t.Fatalf("trace %s: %s", id, d)
		}
	}
	return failed
}

func TestDamagedSpanData(t *testing.T) {
	dir, want := damagedStore(t, 6)
	file := tables(t, dir, "spans")[0]
	flipDataBlock(t, file, 1)

	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	failed := readAll(t, db, want, file)
	if len(failed) == 0 || len(failed) == len(want) {
		t.Fatalf("%d of %d traces failed; want those of one block", len(failed), len(want))
	}
	if f := db.Faults(); len(f) != 1 || f[0].Kind != FaultCorruption || !strings.Contains(f[0].Why, file) {
		t.Fatalf("faults %v, want corruption naming %s", f, file)
	}
	// Search passes over the traces it cannot read.
	for _, q := range recompressQueries {
		if _, err := db.Find(context.Background(), q); err != nil {
			t.Fatalf("find %+v: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	report, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Damage) != 1 || report.Damage[0].File != file {
		t.Fatalf("check found %v, want one damaged block of %s", report.Damage, file)
	}
	listed := map[TraceID]bool{}
	for _, id := range report.Damage[0].Traces {
		listed[id] = true
	}
	if !maps.Equal(listed, failed) {
		t.Fatalf("check names %d traces, reads failed for %d", len(listed), len(failed))
	}

	repairAndRead(t, dir, want, failed)
}

func TestRecompressionPassesOverDamage(t *testing.T) {
	dir, want := damagedStore(t, 6)
	file := tables(t, dir, "spans")[0]
	flipDataBlock(t, file, 1)

	opts := *corruptOpts
	opts.RecompressAfter = time.Nanosecond
	// Pairing reads no block again at open, which would meet the damage
	// before recompression does.
	opts.PairingMaxSpans = 1
	db, err := Open(dir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Twice: the second pass must not try the damaged partition again.
	for range 2 {
		if err := db.recompress(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(db.damaged) != 1 {
		t.Fatalf("damaged partitions %v, want the one recompression failed on", db.damaged)
	}
	if got := testutil.ToFloat64(db.metrics.corruptions.WithLabelValues("spans")); got != 1 {
		t.Fatalf("%v corruption errors, want the one of the first pass", got)
	}
	if f := db.Faults(); len(f) != 1 || f[0].Kind != FaultCorruption {
		t.Fatalf("faults %v, want corruption", f)
	}
	if failed := readAll(t, db, want, file); len(failed) == 0 || len(failed) == len(want) {
		t.Fatalf("%d of %d traces failed; want those of one block", len(failed), len(want))
	}
}

func TestDamagedFooterAtOpen(t *testing.T) {
	dir, want := damagedStore(t, 6)
	file := tables(t, dir, "spans")[0]
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	flipAt(t, file, fi.Size()-20)

	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	if f := db.Faults(); len(f) != 1 || !strings.Contains(f[0].Why, file) {
		t.Fatalf("faults at open %v, want corruption naming %s", f, file)
	}
	failed := readAll(t, db, want, file)
	if len(failed) == 0 || len(failed) == len(want) {
		t.Fatalf("%d of %d traces failed; want those of one sstable", len(failed), len(want))
	}
	// Pebble would retry loading the table's statistics without end, each
	// time a corruption error.
	if n := testutil.ToFloat64(db.metrics.corruptions.WithLabelValues("spans")); n > float64(2*len(failed)) {
		t.Fatalf("%v corruption errors for %d failed reads", n, len(failed))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	report, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Damage) != 1 || !report.Damage[0].Whole || len(report.Damage[0].Traces) != len(failed) {
		t.Fatalf("check found %v, want the whole of %s, with %d traces", report.Damage, file, len(failed))
	}
	repairAndRead(t, dir, want, failed)
}

// TestMissingTable deletes an sstable of span data from a closed store:
// the store does not open, and says to check it; check names the traces the
// file held, and repair drops it like an unreadable one, so that the rest
// serves.
func TestMissingTable(t *testing.T) {
	dir, want := damagedStore(t, 6)
	file := tables(t, dir, "spans")[0]
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, corruptOpts); err == nil || !strings.Contains(err.Error(), "cairn check "+dir) {
		t.Fatalf("open without %s: %v; want an error saying to check the store", file, err)
	}
	report, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Damage) != 1 || !report.Damage[0].Whole || report.Damage[0].File != file || len(report.Damage[0].Traces) == 0 {
		t.Fatalf("check found %v, want the whole of %s, with its traces", report.Damage, file)
	}
	failed := map[TraceID]bool{}
	for _, id := range report.Damage[0].Traces {
		failed[id] = true
	}
	if len(failed) == len(want) {
		t.Fatalf("all %d traces were in %s", len(want), file)
	}
	repairAndRead(t, dir, want, failed)
}

// TestDamagedManifest renames an sstable, as a MANIFEST that describes an
// older store would see its files: one it names is missing, and one it does
// not is there. Nothing can tell which files that store holds, so check
// reports the whole store, and repair deletes nothing: opened to write,
// Pebble would delete every file the MANIFEST leaves out.
func TestDamagedManifest(t *testing.T) {
	dir, _ := damagedStore(t, 6)
	file := tables(t, dir, "spans")[0]
	moved := filepath.Join(filepath.Dir(file), "999999.sst")
	if err := os.Rename(file, moved); err != nil {
		t.Fatal(err)
	}
	before, err := filepath.Glob(filepath.Join(dir, "*", "*.sst"))
	if err != nil {
		t.Fatal(err)
	}
	report, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Damage) != 1 || report.Damage[0].Store != "spans" || !strings.Contains(report.Damage[0].Err, "MANIFEST is damaged") ||
		!strings.Contains(report.Damage[0].Held, "backup") {
		t.Fatalf("check found %v, want the spans store's MANIFEST", report.Damage)
	}
	repaired, err := Repair(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(repaired.Dropped) != 0 || len(repaired.After.Damage) != 1 {
		t.Fatalf("repair dropped %v and left %v", repaired.Dropped, repaired.After.Damage)
	}
	for _, p := range before {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("after repair: %v", err)
		}
	}
}

// repairAndRead repairs the store in dir, and checks that everything but
// the failed traces reads back.
func repairAndRead(t *testing.T, dir string, want otlptest.Traces, failed map[TraceID]bool) {
	t.Helper()
	repaired, err := Repair(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(repaired.Dropped) == 0 || len(repaired.After.Damage) != 0 {
		t.Fatalf("repair dropped %v and left %v", repaired.Dropped, repaired.After.Damage)
	}
	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Compactions read what is left of a damaged table to its edges.
	stores := map[string]*pebble.DB{"index": db.idx, "spans": db.spans}
	for _, d := range repaired.Dropped {
		if err := stores[d.Store].Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
			t.Fatalf("compact after repair: %v", err)
		}
	}
	intact := otlptest.Traces{}
	for id, entries := range want {
		if raw, _ := hex.DecodeString(id); !failed[TraceID(raw)] {
			intact[id] = entries
		}
	}
	checkAll(t, db, intact)
	for _, q := range recompressQueries {
		if _, err := db.Find(context.Background(), q); err != nil {
			t.Fatalf("find %+v after repair: %v", q, err)
		}
	}
	if f := db.Faults(); len(f) != 0 {
		t.Fatalf("faults %v after repair", f)
	}
}

// blockOf returns an sstable of a store directory and one of its data
// blocks that holds keys of kind only, or from kind from to kind.
func blockOf(t *testing.T, dir, store string, from, kind byte) (string, int) {
	t.Helper()
	return findBlock(t, dir, store, fmt.Sprintf("holds only keys of kind %#x", kind), func(lo, hi []byte) bool {
		return bytes.Compare(lo, []byte{from}) >= 0 && bytes.Compare(hi, keys.KindEnd(kind)) < 0
	})
}

// findBlock returns an sstable of a store directory and the first of its
// data blocks whose bounds suit, or fails the test saying what no block
// does. Block i holds keys above separator i-1 up to separator i, which
// are the bounds passed.
func findBlock(t *testing.T, dir, store, what string, suits func(lo, hi []byte) bool) (string, int) {
	t.Helper()
	for _, path := range tables(t, dir, store) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		seps, err := separators(data, tableLayout(t, path))
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(seps); i++ {
			if suits(seps[i-1], seps[i]) {
				return path, i
			}
		}
	}
	t.Fatalf("no data block in the %s store %s", store, what)
	return "", 0
}

// TestDiskBoundSparesDamagedPartition damages the newest span data of a
// partition, which leaves its newest block unknown after Open, and drops
// its oldest block as the disk bound plans: the blocks after it must stay.
func TestDiskBoundSparesDamagedPartition(t *testing.T) {
	h0 := time.Now().Truncate(time.Hour).Add(-2 * time.Hour)
	clk := &clock{t: h0.Add(90 * time.Minute)}
	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: -1, Now: clk.now, Logger: slog.New(slog.DiscardHandler)}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, hour := range []time.Duration{0, 0, 0, time.Hour, time.Hour} { // blocks 1-3 in one partition, 4-5 in the next
		gen := bench.NewGenerator(bench.Config{Start: h0.Add(hour + time.Duration(i)*time.Minute), BatchSpans: 200, TracesPerSecond: 0.2, Seed: uint64(i + 1)})
		writeAt(t, db, gen.Next().Bytes)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	p := partitionOf(uint64(h0.UnixNano()))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Block 3's span data is an sstable of its own: damage its last block.
	all := storeTables(t, dir)
	i := slices.IndexFunc(all, func(tb table) bool {
		return tb.store == "spans" && bytes.HasPrefix(tb.smallest, keys.DataBlock(p, 3))
	})
	if i < 0 {
		t.Fatal("no sstable holds block 3's span data")
	}
	flipDataBlock(t, all[i].path, len(tableLayout(t, all[i].path).Data)-1)

	db, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fragments := func(block uint64) (n int) {
		it, err := db.spans.NewIter(&pebble.IterOptions{LowerBound: keys.DataBlock(p, block), UpperBound: keys.DataBlock(p, block+1)})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			n++
		}
		return n
	}
	before := fragments(2)
	if before == 0 {
		t.Fatal("block 2 holds no span data")
	}
	plan, _, err := db.planDrops(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0] != (dropTo{p, 1}) {
		t.Fatalf("the disk bound plans %v for a small excess, want the oldest block", plan)
	}
	if err := db.drop(p, 1, dropDiskBound); err != nil {
		t.Error(err)
	}
	if n := fragments(1); n != 0 {
		t.Errorf("block 1 keeps %d fragments after its drop", n)
	}
	if n := fragments(2); n != before {
		t.Fatalf("dropping block 1 left block 2 %d of its %d fragments", n, before)
	}
}

func TestDamagedTraceIndex(t *testing.T) {
	dir, want := damagedStore(t, 20)
	// Twenty cuts' keys gather in level 0, each cut's in one block with
	// its other keys, until a compaction merges them into blocks of the
	// trace index alone.
	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.idx.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	file, block := blockOf(t, dir, "index", keys.KindTrace, keys.KindTrace)
	flipDataBlock(t, file, block)

	db, err = Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	failed := readAll(t, db, want, file)
	if len(failed) == 0 || len(failed) == len(want) {
		t.Fatalf("%d of %d traces failed; want those the block indexes", len(failed), len(want))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	report, err := Check(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Damage) != 1 || !strings.Contains(report.Damage[0].Held, "trace index") {
		t.Fatalf("check found %v, want a block of the trace index", report.Damage)
	}
	// The trace index is rebuilt from span data: every trace reads back.
	repairAndRead(t, dir, want, nil)
}

func TestDamagedPostings(t *testing.T) {
	dir, want := damagedStore(t, 6)
	file, block := blockOf(t, dir, "index", keys.KindPostings, keys.KindPostings)
	flipDataBlock(t, file, block)

	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	// Search passes over the segment; every trace still reads by ID.
	for _, q := range recompressQueries {
		if _, err := db.Find(context.Background(), q); err != nil {
			t.Fatalf("find %+v: %v", q, err)
		}
	}
	checkAll(t, db, want)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	repairAndRead(t, dir, want, nil)
}

// TestCheckSegment checks that check reads the write-ahead log as replay
// does: a damaged record with intact ones after it is damage, named with
// where it is and how much replay skips; a partial record at the end is a
// write never acknowledged.
func TestCheckSegment(t *testing.T) {
	dir := t.TempDir()
	l, err := wal.Open(dir, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{bytes.Repeat([]byte("a"), 300), bytes.Repeat([]byte("bc"), 500), []byte("c")} {
		w, err := l.Append(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(paths) != 1 {
		t.Fatalf("segments %v, %v", paths, err)
	}
	seg, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := checkSegment(paths[0]); !ok {
		t.Fatal("an intact segment reported damaged")
	}
	write := func(b []byte) string {
		if err := os.WriteFile(paths[0], b, 0o600); err != nil {
			t.Fatal(err)
		}
		return paths[0]
	}
	if d, ok := checkSegment(write(seg[:len(seg)-1])); !ok {
		t.Fatalf("a partial last record reported as damage: %+v", d)
	}
	// A byte in the middle of the second record's payload.
	flipped := slices.Clone(seg)
	flipped[len(seg)/2] ^= 1
	d, ok := checkSegment(write(flipped))
	if ok {
		t.Fatal("a damaged record went unreported")
	}
	if d.Offset <= 0 || d.Offset > int64(len(seg)/2) || d.Lost <= 0 || d.Offset+d.Lost >= int64(len(seg)) {
		t.Fatalf("damage at %d, %d bytes, in a segment of %d with the flip at %d", d.Offset, d.Lost, len(seg), len(seg)/2)
	}
}

// TestDamagedGroups damages the block of the index store that holds the
// resource and scope groups, which reads look up as they need them: the
// store opens, and the traces whose groups the block holds fail as damaged
// while the rest read back; after repair, every trace either reads back
// exactly or fails, none with spans of another resource.
func TestDamagedGroups(t *testing.T) {
	dir, want := damagedStore(t, 6)
	file, block := findBlock(t, dir, "index", "holds groups", func(lo, hi []byte) bool {
		return bytes.Compare(hi, []byte{keys.KindGroup}) >= 0 && bytes.Compare(lo, keys.KindEnd(keys.KindGroup)) < 0
	})
	flipDataBlock(t, file, block)
	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for id, entries := range want {
		raw, _ := hex.DecodeString(id)
		tr, err := db.Trace(context.Background(), TraceID(raw), TimeRange{})
		if IsCorruption(err) {
			failed++
			continue
		}
		if err != nil || tr == nil {
			t.Fatalf("trace %s: %v, %v", id, tr, err)
		}
		got := otlptest.Traces{}
		got.Add(decode(t, tr))
		if d := otlptest.DiffTrace(entries, got[id]); d != "" {
			t.Fatalf("trace %s: %s", id, d)
		}
	}
	if failed == 0 {
		t.Fatal("no trace failed, though their groups are damaged")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	repaired, err := Repair(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(repaired.After.Damage) != 0 {
		t.Fatalf("repair left %v", repaired.After.Damage)
	}
	if db, err = Open(dir, corruptOpts); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	read := 0
	for id, entries := range want {
		raw, _ := hex.DecodeString(id)
		tr, err := db.Trace(context.Background(), TraceID(raw), TimeRange{})
		if err != nil || tr == nil {
			continue
		}
		got := otlptest.Traces{}
		got.Add(decode(t, tr))
		if d := otlptest.DiffTrace(entries, got[id]); d != "" {
			t.Fatalf("trace %s: %s", id, d)
		}
		read++
	}
	t.Logf("%d of %d traces read back; lost %v", read, len(want), repaired.Lost)
}

func TestDamagedRows(t *testing.T) {
	dir, want := damagedStore(t, 6)
	var file string
	for _, path := range tables(t, dir, "index") {
		r, err := openTable(path)
		if err != nil {
			t.Fatal(err)
		}
		it, err := r.NewPointIter(context.Background(), sstable.IterOptions{Lower: []byte{keys.KindRows}, Upper: keys.KindEnd(keys.KindRows)})
		if err != nil {
			t.Fatal(err)
		}
		kv := it.First()
		it.Close()
		r.Close()
		if kv != nil {
			file = path
			break
		}
	}
	flipDataBlock(t, file, 0)

	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	// Search passes over the segments whose rows it cannot read, twice:
	// the second time without reading the damaged block.
	for range 2 {
		for _, q := range recompressQueries {
			if _, err := db.Find(context.Background(), q); err != nil {
				t.Fatalf("find %+v: %v", q, err)
			}
		}
	}
	if f := db.Faults(); len(f) != 1 || !strings.Contains(f[0].Why, file) {
		t.Fatalf("faults %v, want corruption naming %s", f, file)
	}
	if n := testutil.ToFloat64(db.metrics.corruptions.WithLabelValues("index")); n != 1 {
		t.Fatalf("Pebble met the damaged block %v times, want once", n)
	}
	checkAll(t, db, want)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	repairAndRead(t, dir, want, nil)
}

// TestRepairRebuildsResourceUses damages the index block that holds
// resource uses, and repairs the store: every use must be back, or eviction
// would later take a resource whose spans are still retained, and so must
// the resource-attribute index of the table it shares.
func TestRepairRebuildsResourceUses(t *testing.T) {
	dir, _ := damagedStore(t, 6)
	stored := func(kind byte) []string {
		db, err := Open(dir, corruptOpts)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		it, err := db.idx.NewIter(keys.KindRange(kind))
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		var out []string
		for ok := it.First(); ok; ok = it.Next() {
			out = append(out, hex.EncodeToString(it.Key())+"="+hex.EncodeToString(it.Value()))
		}
		if err := it.Error(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	uses, attrs := stored(keys.KindResourceUse), stored(keys.KindResourceAttr)
	if len(uses) == 0 || len(attrs) == 0 {
		t.Fatalf("the store records %d resource uses and %d resource attributes", len(uses), len(attrs))
	}
	file, block := findBlock(t, dir, "index", "holds resource uses", func(lo, hi []byte) bool {
		return bytes.Compare(hi, []byte{keys.KindResourceUse}) >= 0 && bytes.Compare(lo, keys.KindEnd(keys.KindResourceUse)) < 0
	})
	flipDataBlock(t, file, block)
	repaired, err := Repair(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(repaired.After.Damage) != 0 {
		t.Fatalf("repair left %v", repaired.After.Damage)
	}
	if after := stored(keys.KindResourceUse); !slices.Equal(after, uses) {
		t.Errorf("after repair %d resource uses, before the damage %d (rebuilt: %v)", len(after), len(uses), repaired.Rebuilt)
	}
	if after := stored(keys.KindResourceAttr); !slices.Equal(after, attrs) {
		t.Errorf("after repair %d resource-attribute keys, before the damage %d (rebuilt: %v, lost: %v)", len(after), len(attrs), repaired.Rebuilt, repaired.Lost)
	}
}
