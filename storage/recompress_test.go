package storage

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"cairn/bench"
	"cairn/internal/otlptest"
	"cairn/storage/internal/keys"
)

// writeBlocks writes n requests of gen, cutting a block after every few,
// and returns what was written.
func writeBlocks(t *testing.T, db *DB, gen *bench.Generator, n int) otlptest.Traces {
	t.Helper()
	want := otlptest.Traces{}
	addBlocks(t, db, gen, n, want)
	return want
}

// addBlocks is writeBlocks adding what it writes to want, whose traces may
// have spans in them.
func addBlocks(t *testing.T, db *DB, gen *bench.Generator, n int, want otlptest.Traces) {
	t.Helper()
	for i := range n {
		req := gen.Next()
		if err := want.AddRequest(req.Bytes); err != nil {
			t.Fatal(err)
		}
		writeAt(t, db, req.Bytes)
		if i%5 == 4 {
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
}

var recompressQueries = []Query{
	{Service: "checkout", Limit: 20},
	{Service: "frontend", Attributes: []Attribute{intAttr("http.response.status_code", 404)}, Limit: 20},
	{Service: "payment", DurationMin: 20 * time.Millisecond, Limit: 20},
}

func findAll(t *testing.T, db *DB) [][]Found {
	t.Helper()
	var out [][]Found
	for _, q := range recompressQueries {
		found, err := db.Find(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, found)
	}
	return out
}

// TestRecompressKeepsEverything recompresses span data while traces are
// read, and checks that reads during and after it, and after a reopen,
// return what was written, and that progress is kept.
func TestRecompressKeepsEverything(t *testing.T) {
	dir, clk, opts, db := openRecompressing(t)
	want := writeBlocks(t, db, bench.NewGenerator(bench.Config{BatchSpans: 300, LargeTraceEvery: 100}), 40)
	before := findAll(t, db)

	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		defer close(readErr)
		for {
			for id, spans := range want {
				select {
				case <-stop:
					return
				default:
				}
				raw, _ := hex.DecodeString(id)
				tr, err := db.Trace(context.Background(), TraceID(raw), TimeRange{})
				if err != nil || tr == nil || tr.Spans != len(spans) {
					readErr <- fmt.Errorf("trace %s during recompression: %v, %v", id, tr, err)
					return
				}
			}
		}
	}()
	// Ingest has not paused long enough yet.
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := db.spans.Metrics().Compact.Count; n != 0 {
		t.Fatalf("%d compactions before ingest paused", n)
	}
	indexTables := db.idx.Metrics().Total().TablesCount
	if m := db.spans.Metrics().Table; m.CompressedCountMinLZ == 0 {
		t.Fatalf("no sstable of cuts' compression before recompression (zstd %d)", m.CompressedCountZstd)
	}
	clk.add(2 * time.Minute)
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	if n := db.spans.Metrics().Compact.Count; n == 0 {
		t.Fatal("no compaction rewrote the span data")
	}
	if m := db.spans.Metrics().Table; m.CompressedCountMinLZ != 0 {
		t.Fatalf("%d sstables left in cuts' compression after recompression", m.CompressedCountMinLZ)
	}
	t.Logf("index sstables: %d before recompression, %d after", indexTables, db.idx.Metrics().Total().TablesCount)
	// Cuts wrote two search-index sstables per block; they are merged.
	if after := db.idx.Metrics().Total().TablesCount; after > indexTables/2 {
		t.Fatalf("index store: %d sstables before recompression, %d after", indexTables, after)
	}
	db.mu.Lock()
	newest := maps.Clone(db.partitions)
	db.mu.Unlock()
	if !reflect.DeepEqual(db.recompressed, newest) {
		t.Fatalf("recompressed %v, partitions hold blocks up to %v", db.recompressed, newest)
	}
	checkAll(t, db, want)
	if after := findAll(t, db); !reflect.DeepEqual(after, before) {
		t.Fatalf("searches changed with recompression:\n%v\n%v", before, after)
	}
	db = reopen(t, db, dir, opts)
	if !reflect.DeepEqual(db.recompressed, newest) {
		t.Fatalf("after reopen: recompressed %v, want %v", db.recompressed, newest)
	}
	checkAll(t, db, want)
}

// TestRecompressSealedPartition recompresses a partition whose hour has
// passed although ingest never pauses.
func TestRecompressSealedPartition(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour).Add(50 * time.Minute)}
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, RecompressAfter: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 200, Start: clk.now(), TracesPerSecond: 1})
	writeBlocks(t, db, gen, 5)
	p := partitionOf(uint64(clk.now().UnixNano()))
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	if db.recompressed[p] != 0 {
		t.Fatal("an open partition was recompressed under load")
	}
	clk.add(10*time.Minute + sealDelay) // the hour has passed; the last write was 15 minutes ago
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	if db.recompressed[p] == 0 {
		t.Fatal("a sealed partition was not recompressed")
	}
}

// TestRecompressBacklogUnderLoad recompresses blocks that have waited
// backlogAge under ingest that never pauses, once the CPUs have room, and
// only then.
func TestRecompressBacklogUnderLoad(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour).Add(10 * time.Minute)}
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, RecompressAfter: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 200, Start: clk.now(), TracesPerSecond: 1})
	want := writeBlocks(t, db, gen, 5)
	p := partitionOf(uint64(clk.now().UnixNano()))
	pass := func(wantDone uint64, why string) {
		t.Helper()
		db.lastWrite.Store(clk.now().UnixNano()) // ingest goes on
		if err := db.recompress(context.Background()); err != nil {
			t.Fatal(err)
		}
		if db.recompressed[p] != wantDone {
			t.Fatalf("%s: recompressed up to block %d, want %d", why, db.recompressed[p], wantDone)
		}
	}
	pass(0, "blocks just cut")
	clk.add(backlogAge)
	pass(0, "CPUs busy")
	db.cpuRoom.room.Store(true)
	clk.add(time.Second)
	pass(db.partitions[p], "waited with room")

	addBlocks(t, db, gen, 5, want)
	done := db.recompressed[p]
	pass(done, "blocks cut after the pass")
	clk.add(backlogAge - time.Second)
	pass(done, "not waited long enough")
	clk.add(time.Second)
	pass(db.partitions[p], "waited again")
	checkAll(t, db, want)
}

// TestCPURoom has room while the process used at most half the CPUs over
// the last window.
func TestCPURoom(t *testing.T) {
	var c cpuRoom
	t0 := time.Now()
	for _, s := range []struct {
		at, used time.Duration
		room     bool
	}{
		{0, time.Minute, false},                      // opens the first window
		{roomWindow / 2, time.Minute, false},         // before it closes
		{roomWindow, time.Minute + roomWindow, true}, // one of two CPUs
		{2 * roomWindow, time.Minute + 2*roomWindow + time.Second, false},
		{3 * roomWindow, time.Minute + 2*roomWindow + time.Second, true},
		{2 * roomWindow, time.Minute + 3*roomWindow, true}, // the clock went back: a new window
	} {
		c.sample(t0.Add(s.at), s.used, 2)
		if c.room.Load() != s.room {
			t.Fatalf("at %v, %v used: room %v, want %v", s.at, s.used, c.room.Load(), s.room)
		}
	}
}

// TestMergeSealedPartition recompresses a trickle of blocks one pause at a
// time, each into sstables of its own; once the partition is sealed, they
// are merged.
func TestMergeSealedPartition(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour).Add(10 * time.Minute)}
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, RecompressAfter: time.Second, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 100, Start: clk.now(), TracesPerSecond: 1})
	want := otlptest.Traces{}
	for range 12 {
		r := gen.Next()
		if err := want.AddRequest(r.Bytes); err != nil {
			t.Fatal(err)
		}
		writeAt(t, db, r.Bytes)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
		clk.add(2 * time.Second)
		if err := db.recompress(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	p := partitionOf(uint64(clk.now().UnixNano()))
	lo, hi := keys.PartitionPrefix(keys.KindData, p), keys.PartitionPrefix(keys.KindData, p+1)
	tables := func() int {
		levels, err := db.spans.SSTables(pebble.WithKeyRangeFilter(lo, hi))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range levels {
			n += len(l)
		}
		return n
	}
	before := tables()
	clk.add(time.Hour)
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := tables()
	t.Logf("partition sstables: %d before sealing, %d after", before, after)
	if before < 12 || after > recompressWorkers(&db.opts) {
		t.Fatalf("%d sstables before sealing, %d after: want one per pass, then one per range", before, after)
	}
	checkAll(t, db, want)
}

// TestOpenDeletesUnreachableSpanData leaves span data behind as a crash
// would, between a cut's two ingests (a block newer than the last block
// record) and between a partition drop's two deletions (a partition the
// index does not list); Open deletes both.
func TestOpenDeletesUnreachableSpanData(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: -1}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := writeBlocks(t, db, bench.NewGenerator(bench.Config{BatchSpans: 200}), 10)
	var p uint32
	for q := range db.partitions {
		p = q
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	cache := pebble.NewCache(1 << 20)
	spans, err := pebble.Open(filepath.Join(dir, "spans"), spansOptions(opts.EnsureDefaults(), cache, nil))
	cache.Unref()
	if err != nil {
		t.Fatal(err)
	}
	var id TraceID
	orphans := [][]byte{keys.Data(p, 1<<40, id), keys.Data(p+1000, 1, id), keys.Recompressed(p + 1000)}
	for _, k := range orphans {
		if err := spans.Set(k, []byte("orphan"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := spans.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, k := range orphans {
		if _, closer, err := db.spans.Get(k); err == nil {
			closer.Close()
			t.Fatalf("unreachable key %v survived Open", keys.Comparer.FormatKey(k))
		}
	}
	checkAll(t, db, want)
}

func TestOpenRefusesOlderLayout(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pebble"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, nil); err == nil || !strings.Contains(err.Error(), "format version") {
		t.Fatalf("Open of a version 2 layout: %v", err)
	}
}
