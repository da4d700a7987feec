package storage

import (
	"context"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"cairn/bench"
	"cairn/storage/internal/keys"
)

// TestSharedFingerprints has every trace share its trace-index keys with a
// quarter of the others: reads and searches return what they would with
// keys of their own, before and after recompression merges split traces
// (which must keep a key that still names another trace's fragment), after
// a reopen, and after the disk bound drops the oldest block.
func TestSharedFingerprints(t *testing.T) {
	orig := keys.Fingerprint
	keys.Fingerprint = func(id TraceID) uint64 { return uint64(id[15] % 4) }
	t.Cleanup(func() { keys.Fingerprint = orig })

	dir, clk, opts, db := openRecompressing(t)
	want := writeSplit(t, db, 6)
	checkAll(t, db, want)
	before := findAll(t, db)
	split := splitCount(t, db)

	clk.add(2 * time.Minute)
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := splitCount(t, db); n >= split {
		t.Fatalf("%d traces split after recompression, %d before", n, split)
	}
	checkIndexed(t, db)
	checkAll(t, db, want)
	if after := findAll(t, db); !reflect.DeepEqual(after, before) {
		t.Fatalf("searches changed with the merge:\n%v\n%v", before, after)
	}
	db = reopen(t, db, dir, opts)
	checkAll(t, db, want)

	p := onlyPartition(t, db)
	if err := db.drop(p, 1, dropDiskBound); err != nil {
		t.Fatal(err)
	}
	checkIndexed(t, db)
	for pt := range fragments(t, db) {
		if _, err := db.Trace(context.Background(), pt.id, TimeRange{}); err != nil {
			t.Fatalf("trace %x after the drop: %v", pt.id, err)
		}
	}
}

// TestUpgradeFromFormat6 opens a store whose trace index holds whole trace
// IDs, as format version 6 wrote it: its partitions are read through those
// keys and new blocks through fingerprints; merges and drops delete the
// old keys as they do the new.
func TestUpgradeFromFormat6(t *testing.T) {
	dir, clk, opts, db := openRecompressing(t)
	want := writeSplit(t, db, 4)
	before := findAll(t, db)
	b := db.idx.NewBatch()
	for pt, blocks := range fragmentBlocksOf(t, db) {
		for _, blk := range blocks {
			if err := b.Set(keys.TraceV6(pt.p, pt.id, blk), nil, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, err := range []error{
		b.DeleteRange([]byte{keys.KindTrace}, keys.KindEnd(keys.KindTrace), nil),
		b.Delete(keys.Meta(v6TraceMeta), nil),
		b.Set(keys.Meta("format"), []byte{6}, nil),
		b.Commit(nil),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	b.Close()

	db = reopen(t, db, dir, opts)
	if v, closer, err := db.idx.Get(keys.Meta("format")); err != nil || v[0] != FormatVersion {
		t.Fatalf("format after upgrade: %v, %v", v, err)
	} else {
		closer.Close()
	}
	// The partitions recorded at the upgrade are read back at the next open.
	db = reopen(t, db, dir, opts)
	p := onlyPartition(t, db)
	if !db.v6TraceIndex(p) || db.v6TraceIndex(p+1) {
		t.Fatalf("format 6 trace index through %d, want partition %d", db.v6Traces, p)
	}
	checkAll(t, db, want)
	if after := findAll(t, db); !reflect.DeepEqual(after, before) {
		t.Fatalf("searches changed with the upgrade:\n%v\n%v", before, after)
	}
	// Traces cut after the upgrade.
	for id, entries := range writeBlocks(t, db, bench.NewGenerator(bench.Config{Seed: 2, BatchSpans: 300}), 4) {
		want[id] = entries
	}
	checkAll(t, db, want)
	if len(traceIndex(t, db)) == 0 {
		t.Fatal("the cut after the upgrade wrote no trace index key of this version")
	}

	clk.add(2 * time.Minute)
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkAll(t, db, want)
	frags := fragmentBlocksOf(t, db)
	old := byTrace(t, db.idx, keys.KindTraceV6, func(k, _ []byte) (partTrace, uint64, error) {
		p, id, b, err := keys.ParseTraceV6(k)
		return partTrace{p, id}, b, err
	})
	for pt, blocks := range old {
		for _, blk := range blocks {
			if !slices.Contains(frags[pt], blk) {
				t.Errorf("trace %x: a format 6 key names block %d, which the merge emptied", pt.id, blk)
			}
		}
	}
	if err := db.drop(p, math.MaxUint64, dropRetention); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []byte{keys.KindTraceV6, keys.KindTrace} {
		if n := len(byTrace(t, db.idx, kind, func(k, _ []byte) (string, int, error) { return string(k), 0, nil })); n != 0 {
			t.Errorf("trace index keys of kind %#x left after the partition's drop", kind)
		}
	}
}

// checkIndexed fails unless the trace index names the block of every
// fragment.
func checkIndexed(t *testing.T, db *DB) {
	t.Helper()
	index := traceIndex(t, db)
	for pt, blocks := range fragmentBlocksOf(t, db) {
		for _, blk := range blocks {
			if !slices.Contains(index[partFP{pt.p, keys.Fingerprint(pt.id)}], blk) {
				t.Fatalf("trace %x: no trace index key names its fragment in block %d", pt.id, blk)
			}
		}
	}
}

// fragmentBlocksOf lists the blocks of each (partition, trace) pair's
// fragments.
func fragmentBlocksOf(t *testing.T, db *DB) map[partTrace][]uint64 {
	return byTrace(t, db.spans, keys.KindData, func(k, _ []byte) (partTrace, uint64, error) {
		p, b, id, err := keys.ParseData(k)
		return partTrace{p, id}, b, err
	})
}

func onlyPartition(t *testing.T, db *DB) uint32 {
	t.Helper()
	if len(db.partitions) != 1 {
		t.Fatalf("%d partitions, want 1", len(db.partitions))
	}
	for p := range db.partitions {
		return p
	}
	panic("unreachable")
}
