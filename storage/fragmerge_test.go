package storage

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/internal/otlptest"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// splitRequest splits a request in two: the first half of each scope's
// spans, and the rest, as a service's exporter sends a trace's spans in
// batches seconds apart.
func splitRequest(t *testing.T, raw []byte) (first, second []byte) {
	t.Helper()
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	a, b := proto.Clone(&req).(*collectorpb.ExportTraceServiceRequest), proto.Clone(&req).(*collectorpb.ExportTraceServiceRequest)
	for i, rs := range req.ResourceSpans {
		for j, ss := range rs.ScopeSpans {
			half := len(ss.Spans) / 2
			a.ResourceSpans[i].ScopeSpans[j].Spans = append([]*tracepb.Span(nil), a.ResourceSpans[i].ScopeSpans[j].Spans[:half]...)
			b.ResourceSpans[i].ScopeSpans[j].Spans = append([]*tracepb.Span(nil), b.ResourceSpans[i].ScopeSpans[j].Spans[half:]...)
		}
	}
	var err error
	if first, err = proto.Marshal(a); err != nil {
		t.Fatal(err)
	}
	if second, err = proto.Marshal(b); err != nil {
		t.Fatal(err)
	}
	return first, second
}

// fragments lists the fragments of each (partition, trace) pair, a block's
// each, with the size of their values (of all its parts together).
func fragments(t *testing.T, db *DB) map[partTrace][]int {
	type fragment struct {
		partTrace
		block uint64
	}
	parts := byTrace(t, db.spans, keys.KindData, func(k, v []byte) (fragment, int, error) {
		p, b, id, err := keys.ParseData(k)
		return fragment{partTrace{p, id}, b}, len(v), err
	})
	out := map[partTrace][]int{}
	for f, sizes := range parts {
		out[f.partTrace] = append(out[f.partTrace], sum(sizes))
	}
	return out
}

// traceIndex lists the blocks the trace index names for each (partition,
// fingerprint) pair.
func traceIndex(t *testing.T, db *DB) map[partFP][]uint64 {
	return byTrace(t, db.idx, keys.KindTrace, func(k, _ []byte) (partFP, uint64, error) {
		p, fp, b, err := keys.ParseTrace(k)
		return partFP{p, fp}, b, err
	})
}

// byTrace gathers, in key order, what entry makes of each key of a kind in
// store, by the (partition, trace) pair it names.
func byTrace[K comparable, T any](t *testing.T, store *pebble.DB, kind byte, entry func(k, v []byte) (K, T, error)) map[K][]T {
	t.Helper()
	it, err := store.NewIter(keys.KindRange(kind))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[K][]T{}
	for it.First(); it.Valid(); it.Next() {
		pt, v, err := entry(it.Key(), it.Value())
		if err != nil {
			t.Fatal(err)
		}
		out[pt] = append(out[pt], v)
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

type partTrace struct {
	p  uint32
	id TraceID
}

type partFP struct {
	p  uint32
	fp uint64
}

// TestRecompressMergesSplitTraces writes every trace's spans in two cuts and
// checks that recompression leaves one fragment per trace and partition,
// and that reads and searches, including those whose matching spans were in
// a fragment merged away, return what they did before.
func TestRecompressMergesSplitTraces(t *testing.T) {
	dir, clk, opts, db := openRecompressing(t)
	want := writeSplit(t, db, 8)
	checkAll(t, db, want)
	before := findAll(t, db)
	if split := splitCount(t, db); split < 50 {
		t.Fatalf("%d traces in more than one fragment before recompression, want most of 100", split)
	}

	indexBefore := traceIndex(t, db)
	clk.add(2 * time.Minute)
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Traces too large to merge keep their fragments.
	for pt, sizes := range fragments(t, db) {
		if total := sum(sizes); len(sizes) > 1 && total <= mergeMaxBytes {
			t.Errorf("trace %x: %d fragments after recompression, %d bytes in all", pt.id, len(sizes), total)
		}
	}
	// The trace index names only blocks that hold a fragment.
	frags := fragments(t, db)
	after := traceIndex(t, db)
	for pt, sizes := range frags {
		if blocks := after[partFP{pt.p, keys.Fingerprint(pt.id)}]; len(blocks) != len(sizes) {
			t.Errorf("trace %x: the trace index names %d blocks, %d hold a fragment", pt.id, len(blocks), len(sizes))
		}
	}
	if len(after) != len(frags) {
		t.Errorf("the trace index names %d traces, %d have fragments", len(after), len(frags))
	}
	checkGroupOrder(t, db)
	checkAll(t, db, want)
	if after := findAll(t, db); !reflect.DeepEqual(after, before) {
		t.Fatalf("searches changed with the merge:\n%v\n%v", before, after)
	}
	// A process that stops between the merge and the deletion of the keys
	// leaves them naming emptied blocks: reads and searches are the same.
	b := db.idx.NewBatch()
	for pt, blocks := range indexBefore {
		for _, blk := range blocks {
			if !slices.Contains(after[pt], blk) {
				if err := b.Set(keys.TraceKey(pt.p, pt.fp, blk), nil, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if b.Empty() {
		t.Fatal("the merge deleted no trace index key")
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	checkAll(t, db, want)
	if after := findAll(t, db); !reflect.DeepEqual(after, before) {
		t.Fatalf("searches changed with stale trace index keys:\n%v\n%v", before, after)
	}
	// The next pass over the blocks deletes them.
	var newest uint64
	parts := map[uint32]bool{}
	for pt, blocks := range indexBefore {
		parts[pt.p] = true
		newest = max(newest, slices.Max(blocks))
	}
	db.maintMu.Lock()
	for p := range parts {
		if _, err := db.mergeFragments(context.Background(), p, 1, newest); err != nil {
			t.Fatal(err)
		}
	}
	db.maintMu.Unlock()
	if got := traceIndex(t, db); !reflect.DeepEqual(got, after) {
		t.Fatal("a second pass left trace index keys of emptied blocks")
	}
	// A store of format version 9, whose merged fragments name no cuts
	// (they read as these), is upgraded at open.
	if err := db.idx.Set(keys.Meta("format"), []byte{9}, nil); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir, opts)
	if v, closer, err := db.idx.Get(keys.Meta("format")); err != nil || v[0] != FormatVersion {
		t.Fatalf("format after upgrade: %v, %v", v, err)
	} else {
		closer.Close()
	}
	checkAll(t, db, want)
	if after := findAll(t, db); !reflect.DeepEqual(after, before) {
		t.Fatalf("searches changed after reopen:\n%v\n%v", before, after)
	}
}

// openRecompressing opens a store in a new directory, on a clock the test
// moves, that recompresses what has been left a minute.
func openRecompressing(t *testing.T) (string, *clock, *Options, *DB) {
	t.Helper()
	dir := t.TempDir()
	clk := &clock{t: time.Now()}
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: time.Minute, Now: clk.now}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dir, clk, opts, db
}

// writeSplit writes rounds of four requests, each in two cuts, and returns
// what it wrote.
func writeSplit(t *testing.T, db *DB, rounds int) otlptest.Traces {
	t.Helper()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 300, LargeTraceEvery: 100})
	want := otlptest.Traces{}
	for range rounds {
		var seconds [][]byte
		for range 4 {
			req := gen.Next()
			if err := want.AddRequest(req.Bytes); err != nil {
				t.Fatal(err)
			}
			first, second := splitRequest(t, req.Bytes)
			writeAt(t, db, first)
			seconds = append(seconds, second)
		}
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
		for _, second := range seconds {
			writeAt(t, db, second)
		}
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

// splitCount is how many traces have more than one fragment in a partition.
func splitCount(t *testing.T, db *DB) int {
	t.Helper()
	n := 0
	for _, sizes := range fragments(t, db) {
		if len(sizes) > 1 {
			n++
		}
	}
	return n
}

// TestMergeChecksSpace has recompression find the disk at its reserve: the
// merge writes nothing and fails as a full disk would, and merges once
// there is room for what it writes, however little more that is.
func TestMergeChecksSpace(t *testing.T) {
	disk := &smallDisk{FS: vfs.Default}
	disk.avail.Store(1 << 40)
	clk := &clock{t: time.Now()}
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, RecompressAfter: time.Minute, Now: clk.now, FS: disk})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := writeSplit(t, db, 2)
	split := splitCount(t, db)
	clk.add(2 * time.Minute)
	disk.avail.Store(db.opts.DiskReserveBytes)
	if err := db.recompress(context.Background()); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("recompression with the disk at its reserve: %v", err)
	}
	if n := splitCount(t, db); n != split {
		t.Fatalf("%d split traces after a merge refused, want %d", n, split)
	}
	disk.avail.Store(db.opts.DiskReserveBytes + mergeSpaceStep)
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := splitCount(t, db); n >= split {
		t.Fatalf("%d split traces after the merge, %d before", n, split)
	}
	checkAll(t, db, want)
}

func sum(s []int) int {
	n := 0
	for _, v := range s {
		n += v
	}
	return n
}

// checkGroupOrder checks that every fragment lists its groups in key order,
// as the format has it, merged ones included.
func checkGroupOrder(t *testing.T, db *DB) {
	t.Helper()
	it, err := db.spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	idx, err := db.idx.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	get := iterGetter(idx)
	var groups []codec.Group
	for it.First(); it.Valid(); it.Next() {
		_, b, id, err := keys.ParseData(it.Key())
		if err != nil {
			t.Fatal(err)
		}
		if groups, _, err = codec.DecodeFragment(groups[:0], nil, it.Value(), id); err != nil {
			t.Fatal(err)
		}
		var (
			prev     []byte
			prevBack uint64
		)
		for _, g := range groups {
			res, scope, err := db.groups.pair(get, g.Num)
			if err != nil {
				t.Fatal(err)
			}
			key := append(res[:], scope[:]...)
			// A group comes once for each cut its spans came with, the
			// earliest first.
			if c := bytes.Compare(prev, key); prev != nil && (c > 0 || c == 0 && prevBack <= g.Back) {
				t.Fatalf("trace %x, block %d: group %d, %d blocks back, is out of order", id, b, g.Num, g.Back)
			}
			prev, prevBack = key, g.Back
		}
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
}

// TestViewSeesMergeIntoBlockItSkips cuts a block and merges into it the
// fragments of an older block while a read is between its layout, which
// still holds the block as the live buffer, and its iterators: the read
// must still return every span.
func TestViewSeesMergeIntoBlockItSkips(t *testing.T) {
	clk := &clock{t: time.Now()}
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, RecompressAfter: time.Minute, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 300})
	req := gen.Next()
	want := otlptest.Traces{}
	if err := want.AddRequest(req.Bytes); err != nil {
		t.Fatal(err)
	}
	first, second := splitRequest(t, req.Bytes)
	writeAt(t, db, first)
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	writeAt(t, db, second) // in the live buffer, the next block
	var once sync.Once
	viewHook = func() {
		once.Do(func() {
			if err := db.cut(); err != nil {
				t.Error(err)
			}
			db.maintMu.Lock()
			defer db.maintMu.Unlock()
			for _, p := range db.layout.Load().parts {
				if n, err := db.mergeFragments(context.Background(), p, 1, 2); err != nil || n == 0 {
					t.Errorf("merge: %d fragments, %v", n, err)
				}
			}
		})
	}
	t.Cleanup(func() { viewHook = nil })
	checkAll(t, db, want)
}
