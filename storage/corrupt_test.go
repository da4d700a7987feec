package storage

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"cairn/bench"
	"cairn/internal/otlptest"
)

// tables lists the sstables of a store directory, largest first.
func tables(t *testing.T, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		t.Fatal(err)
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

// flipDataBlock flips one bit in the middle of data block i of an sstable.
func flipDataBlock(t *testing.T, path string, i int) {
	t.Helper()
	r, err := openTable(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Layout()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
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

// damagedStore writes a store of a few blocks, closes it, and returns its
// directory and traces.
func damagedStore(t *testing.T) (string, otlptest.Traces) {
	t.Helper()
	dir := t.TempDir()
	db, err := Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	want := writeBlocks(t, db, bench.NewGenerator(bench.Config{BatchSpans: 500}), 6)
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
			if !errors.As(err, &ce) || ce.Path != file || !strings.Contains(err.Error(), id) {
				t.Fatalf("trace %s: %v, want a CorruptionError naming it and %s", id, err, file)
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
	dir, want := damagedStore(t)
	file := tables(t, filepath.Join(dir, "spans"))[0]
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

	repaired, err := Repair(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(repaired.Dropped) != 1 || len(repaired.After.Damage) != 0 {
		t.Fatalf("repair dropped %v and left %v", repaired.Dropped, repaired.After.Damage)
	}
	db, err = Open(dir, corruptOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	intact := otlptest.Traces{}
	for id, entries := range want {
		if raw, _ := hex.DecodeString(id); !failed[TraceID(raw)] {
			intact[id] = entries
		}
	}
	checkAll(t, db, intact)
	if f := db.Faults(); len(f) != 0 {
		t.Fatalf("faults %v after repair", f)
	}
}
