package storage

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/klauspost/compress/s2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"cairn/bench"
	"cairn/internal/otlptest"
	"cairn/internal/otlpwire"
)

// logs keeps what a store logs, for tests to count.
type logs struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logs) WithGroup(string) slog.Handler            { return l }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	return nil
}

// count is how many records start with msg.
func (l *logs) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if strings.HasPrefix(r.Message, msg) {
			n++
		}
	}
	return n
}

// attrs returns the attributes of the first record that starts with msg.
func (l *logs) attrs(msg string) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if strings.HasPrefix(r.Message, msg) {
			m := map[string]string{}
			r.Attrs(func(a slog.Attr) bool {
				m[a.Key] = a.Value.String()
				return true
			})
			return m
		}
	}
	return nil
}

// fault injects err into the operations of kinds on files under dir (whose
// names end in suffix) while on.
type fault struct {
	dir    string
	suffix string
	kinds  []errorfs.OpKind
	err    error
	on     atomic.Bool
}

func (f *fault) MaybeError(op errorfs.Op) error {
	if f.on.Load() && strings.HasPrefix(op.Path, f.dir+string(filepath.Separator)) && strings.HasSuffix(op.Path, f.suffix) &&
		slices.Contains(f.kinds, op.Kind) {
		return &os.PathError{Op: "injected", Path: op.Path, Err: f.err}
	}
	return nil
}

func (f *fault) String() string { return "test fault" }

// tryWrite is write that returns the store's error.
func tryWrite(t *testing.T, db *DB, req []byte) error {
	t.Helper()
	var b otlpwire.Batch
	if err := otlpwire.Parse(req, &b, otlpwire.Window{}); err != nil {
		t.Fatal(err)
	}
	return db.Write(context.Background(), req, &b)
}

func hasFault(db *DB, kind string) bool {
	return slices.ContainsFunc(db.Faults(), func(f Fault) bool { return f.Kind == kind })
}

// waitFor polls cond, which the store's background goroutines make true.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// writeAcked writes n requests of gen, each of which the store must
// acknowledge, and adds them to every model.
func writeAcked(t *testing.T, db *DB, gen *bench.Generator, n int, models ...otlptest.Traces) {
	t.Helper()
	for range n {
		req := gen.Next()
		write(t, db, req.Bytes)
		for _, m := range models {
			if err := m.AddRequest(req.Bytes); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestWALWriteErrorsAreNotSticky fails the write-ahead log's writes (a full
// disk) and its segment creation (no file descriptors left), and checks
// that exports fail with a message that says so while the fault lasts, that
// the store reports the fault and logs it once, and that once the fault is
// gone writes succeed again without a restart and nothing acknowledged is
// lost, whether the store is then closed or crashes. The store finds out
// that the fault is gone without an export to try.
func TestWALWriteErrorsAreNotSticky(t *testing.T) {
	for _, tc := range []struct {
		err   error
		kinds []errorfs.OpKind
		want  string
	}{
		{syscall.ENOSPC, []errorfs.OpKind{errorfs.OpFileWriteAt, errorfs.OpFileSyncData}, "disk full"},
		{syscall.EMFILE, []errorfs.OpKind{errorfs.OpCreate, errorfs.OpOpenDir}, "out of file descriptors"},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			dir := t.TempDir()
			flt := &fault{dir: filepath.Join(dir, "wal"), kinds: tc.kinds, err: tc.err}
			log := &logs{}
			opts := &Options{FlushInterval: time.Hour, FS: errorfs.Wrap(vfs.Default, flt), Logger: slog.New(log)}
			db, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			gen := bench.NewGenerator(bench.Config{BatchSpans: 50})
			acked := otlptest.Traces{}
			writeAcked(t, db, gen, 3, acked)
			// A cut makes the next write start a segment.
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
			flt.on.Store(true)
			var refused []string
			for range 4 {
				req := gen.Next()
				err := tryWrite(t, db, req.Bytes)
				if err == nil || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("write while failing: %v; want an error saying %q", err, tc.want)
				}
				m := otlptest.Traces{}
				if err := m.AddRequest(req.Bytes); err != nil {
					t.Fatal(err)
				}
				refused = slices.AppendSeq(refused, maps.Keys(m))
			}
			ghost := ghostRequest(t)
			if err := tryWrite(t, db, ghost); err == nil {
				t.Fatal("a write while failing succeeded")
			}
			if !hasFault(db, FaultWAL) {
				t.Fatalf("faults %v while the log cannot be written", db.Faults())
			}
			if n := log.count("write-ahead log cannot be written"); n != 1 {
				t.Fatalf("the failure was logged %d times, want once", n)
			}
			// A refused export's spans are neither read nor cut: its client
			// sends it again, and each attempt would be stored and counted.
			// A trace that straddles requests holds just its acknowledged
			// spans.
			checkAll(t, db, acked)
			notAcked := func() []string {
				return slices.DeleteFunc(slices.Clone(refused), func(id string) bool { return acked[id] != nil })
			}
			checkAbsent(t, db, notAcked())
			checkNotListed(t, db)

			flt.on.Store(false)
			// Readiness is false, so exports may not come: the store finds
			// out by itself that its log can be written again.
			waitFor(t, "the fault clears", func() bool { return !hasFault(db, FaultWAL) })
			writeAcked(t, db, gen, 3, acked)
			if hasFault(db, FaultWAL) || log.count("write-ahead log is written again") != 1 {
				t.Fatalf("after recovery: faults %v, recovery logged %d times", db.Faults(), log.count("write-ahead log is written again"))
			}
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
			checkAll(t, db, acked)
			checkAbsent(t, db, notAcked())
			if got, want := testutil.ToFloat64(db.metrics.cutSpans), float64(acked.Spans()); got != want {
				t.Fatalf("%v spans cut, want the %v acknowledged", got, want)
			}

			// The acknowledged records are in the log: a crash loses none.
			crash(t, db)
			if db, err = Open(dir, &Options{FlushInterval: time.Hour}); err != nil {
				t.Fatal(err)
			}
			checkAll(t, db, acked)
			db = reopen(t, db, dir, nil)
			checkAll(t, db, acked)
			checkNotListed(t, db)
		})
	}
}

// ghostRequest is one span of service svc0, which no request of the
// bench's generator sends.
func ghostRequest(t *testing.T) []byte {
	t.Helper()
	start := uint64(time.Now().UnixNano())
	return modelRequest(t, []*tracepb.Span{{TraceId: []byte{0: 0x9, 15: 1}, SpanId: []byte{7: 1},
		Name: "refused", StartTimeUnixNano: start, EndTimeUnixNano: start + 1}})
}

// checkNotListed checks that the service of ghostRequest, which the store
// refused, is not listed.
func checkNotListed(t *testing.T, db *DB) {
	t.Helper()
	svcs, err := db.Services()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(svcs, "svc0") {
		t.Fatalf("services %v list the refused request's", svcs)
	}
}

// TestFailedCutsAreRetried fails cuts (a full disk under the sstables they
// write, or no file descriptors to open them) while exports go on: the fault is reported and logged once, reads
// keep working, exports are refused with a clear message once the next
// buffer fills, and once the disk has room the cut is retried without a
// trigger and everything acknowledged is stored.
func TestFailedCutsAreRetried(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{syscall.ENOSPC, "disk full"},
		{syscall.EMFILE, "out of file descriptors"},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) { testFailedCuts(t, tc.err, tc.want) })
	}
}

func testFailedCuts(t *testing.T, errno error, want string) {
	dir := t.TempDir()
	flt := &fault{dir: filepath.Join(dir, "ingest"), kinds: []errorfs.OpKind{errorfs.OpCreate, errorfs.OpFileWrite}, err: errno}
	log := &logs{}
	opts := &Options{BufferBytes: 64 << 10, FlushInterval: time.Hour, FS: errorfs.Wrap(vfs.Default, flt), Logger: slog.New(log)}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 50})
	acked := otlptest.Traces{}
	flt.on.Store(true)
	var refused error
	for range 200 {
		req := gen.Next()
		if refused = tryWrite(t, db, req.Bytes); refused != nil {
			break
		}
		if err := acked.AddRequest(req.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	if refused == nil || !errors.Is(refused, errno) || !strings.Contains(refused.Error(), want) {
		t.Fatalf("export with the buffers full and cuts failing: %v", refused)
	}
	if !hasFault(db, FaultCut) {
		t.Fatalf("faults %v while cuts fail", db.Faults())
	}
	checkAll(t, db, acked)
	time.Sleep(300 * time.Millisecond) // a few retries
	if n := log.count("cannot cut the live buffer"); n != 1 {
		t.Fatalf("the failing cut was logged %d times, want once", n)
	}

	flt.on.Store(false)
	waitFor(t, "the cut is retried", func() bool { return !hasFault(db, FaultCut) })
	if log.count("blocks are cut again") != 1 {
		t.Fatal("recovery not logged")
	}
	writeAcked(t, db, gen, 20, acked)
	checkAll(t, db, acked)
	checkAll(t, reopen(t, db, dir, nil), acked)
}

// TestFailedRecompressionIsRetried fails the compactions that recompress
// span data (a full disk under the spans store's new sstables; Pebble's own
// logs are spared, as Pebble stops the process when they fail): reads are
// unaffected, the failure is logged once, and recompression completes by
// itself once the disk has room.
func TestFailedRecompressionIsRetried(t *testing.T) {
	dir := t.TempDir()
	flt := &fault{dir: filepath.Join(dir, "spans"), suffix: ".sst", kinds: []errorfs.OpKind{errorfs.OpCreate, errorfs.OpFileWrite}, err: syscall.ENOSPC}
	log := &logs{}
	clk := &clock{t: time.Now()}
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: time.Minute, Now: clk.now,
		FS: errorfs.Wrap(vfs.Default, flt), Logger: slog.New(log)}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := writeBlocks(t, db, bench.NewGenerator(bench.Config{BatchSpans: 200}), 15)

	flt.on.Store(true)
	clk.add(2 * time.Minute) // ingest has paused: the maintainer recompresses
	waitFor(t, "recompression fails", func() bool { return log.count("recompress span data") > 0 })
	checkAll(t, db, want)
	flt.on.Store(false)
	waitFor(t, "recompression succeeds", func() bool { return log.count("span data is recompressed again") > 0 })
	if n := log.count("recompress span data"); n != 1 {
		t.Fatalf("the failing recompression was logged %d times, want once", n)
	}
	db.maintMu.Lock()
	recompressed := maps.Clone(db.recompressed)
	db.maintMu.Unlock()
	db.mu.Lock()
	newest := maps.Clone(db.partitions)
	db.mu.Unlock()
	if !reflect.DeepEqual(recompressed, newest) {
		t.Fatalf("recompressed %v, partitions hold blocks up to %v", recompressed, newest)
	}
	if len(db.Faults()) > 0 {
		t.Fatalf("faults %v", db.Faults())
	}
	checkAll(t, db, want)
	checkAll(t, reopen(t, db, dir, nil), want)
}

// TestReplaySkipsDamagedRecords damages the write-ahead log of a crashed
// store, a flipped bit in one record and a torn last record, and checks
// that replay keeps every other record and logs what it lost.
func TestReplaySkipsDamagedRecords(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 50})
	var reqs [][]byte
	for range 8 {
		req := gen.Next().Bytes
		write(t, db, req)
		reqs = append(reqs, req)
	}
	crash(t, db)

	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Records follow the 12-byte segment header, each a 12-byte header and
	// the S2-encoded request.
	starts := []int{12}
	for _, req := range reqs {
		starts = append(starts, starts[len(starts)-1]+12+len(s2.Encode(nil, req)))
	}
	if starts[len(reqs)] != len(data) {
		t.Fatalf("segment of %d bytes, records end at %d", len(data), starts[len(reqs)])
	}
	const damaged = 3
	data[(starts[damaged]+starts[damaged+1])/2] ^= 0x04
	data = data[:starts[len(reqs)-1]+20] // the last record torn
	if err := os.WriteFile(segs[0], data, 0o644); err != nil {
		t.Fatal(err)
	}

	log := &logs{}
	if db, err = Open(dir, &Options{FlushInterval: time.Hour, Logger: slog.New(log)}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := otlptest.Traces{}
	for i, req := range reqs[:len(reqs)-1] {
		if i != damaged {
			if err := want.AddRequest(req); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkAll(t, db, want)
	lost := otlptest.Traces{}
	lost.AddRequest(reqs[damaged])
	for id := range lost {
		if _, ok := want[id]; ok {
			continue
		}
		raw, _ := hex.DecodeString(id)
		if tr, _ := db.Trace(context.Background(), TraceID(raw), TimeRange{}); tr != nil {
			t.Fatalf("trace %s of the damaged record was replayed", id)
		}
	}
	mid := log.attrs("write-ahead log damaged")
	if mid == nil || mid["segment"] != filepath.Base(segs[0]) || mid["records_lost_at_least"] != "1" ||
		mid["bytes"] != itoa(starts[damaged+1]-starts[damaged]) || mid["why"] != "record checksum mismatch" {
		t.Fatalf("damage logged as %v", mid)
	}
	tail := log.attrs("write-ahead log ends in a partial or damaged write")
	if tail == nil || tail["bytes"] != "20" || tail["why"] != "record cut short" {
		t.Fatalf("torn tail logged as %v", tail)
	}
}

func itoa(n int) string { return slog.IntValue(n).String() }

// smallDisk reports avail bytes free.
type smallDisk struct {
	vfs.FS
	avail atomic.Int64
	total int64 // 1 TiB if 0
}

func (d *smallDisk) GetDiskUsage(string) (vfs.DiskUsage, error) {
	return vfs.DiskUsage{AvailBytes: uint64(d.avail.Load()), TotalBytes: uint64(cmp.Or(d.total, 1<<40))}, nil
}

// TestSmallVolumeWarns opens a store on a volume of 96 MiB, less than
// twice the default reserve of 128 MiB: every export would be refused,
// and the store says why as it opens.
func TestSmallVolumeWarns(t *testing.T) {
	for _, tc := range []struct {
		total int64
		warns int
	}{{96 << 20, 1}, {1 << 30, 0}} {
		disk := &smallDisk{FS: vfs.Default, total: tc.total}
		disk.avail.Store(tc.total - 1<<20)
		log := &logs{}
		db, err := Open(t.TempDir(), &Options{FS: disk, Logger: slog.New(log)})
		if err != nil {
			t.Fatal(err)
		}
		const msg = "the data directory's volume is small"
		if n := log.count(msg); n != tc.warns {
			t.Errorf("volume of %d MiB: warned %d times, want %d", tc.total>>20, n, tc.warns)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskReserve fills the disk down to the reserve that Pebble's own
// writes need: appends, cuts and recompression stop as if the disk were
// full, and resume by themselves once it has room, with nothing
// acknowledged lost.
func TestDiskReserve(t *testing.T) {
	dir := t.TempDir()
	disk := &smallDisk{FS: vfs.Default}
	disk.avail.Store(1 << 40)
	log := &logs{}
	clk := &clock{t: time.Now()}
	db, err := Open(dir, &Options{FlushInterval: time.Hour, RecompressAfter: time.Minute,
		Now: clk.now, FS: disk, Logger: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 50})
	acked := writeBlocks(t, db, gen, 10)
	writeAcked(t, db, gen, 1, acked) // for the cut to come

	disk.avail.Store(60 << 20) // under half the default reserve of 128 MiB
	if err := tryWrite(t, db, gen.Next().Bytes); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("write with the disk at its reserve: %v", err)
	}
	db.kick <- struct{}{} // a cut, as a full buffer asks for
	waitFor(t, "the cut fails", func() bool { return hasFault(db, FaultCut) })
	if why := db.Faults()[0].Why; !strings.HasPrefix(why, "disk full") {
		t.Fatalf("cut fault: %s", why)
	}
	clk.add(2 * time.Minute)
	waitFor(t, "recompression stops", func() bool { return log.count("recompress span data") > 0 })
	if !hasFault(db, FaultWAL) || !hasFault(db, FaultCut) {
		t.Fatalf("faults %v", db.Faults())
	}
	checkHas(t, db, acked)

	disk.avail.Store(1 << 40)
	waitFor(t, "the faults clear", func() bool { return len(db.Faults()) == 0 })
	writeAcked(t, db, gen, 5, acked)
	waitFor(t, "recompression resumes", func() bool { return log.count("span data is recompressed again") > 0 })
	checkHas(t, reopen(t, db, dir, nil), acked)
}

// TestCutNeedsWhatItWrites leaves room for what a cut writes, the
// buffer's compressed log records and its indexes, but not for the
// requests' own size: the cut must go ahead. A cut that asked for the
// requests' size stalled for good on a small disk, even once there was
// room for what it writes.
func TestCutNeedsWhatItWrites(t *testing.T) {
	disk := &smallDisk{FS: vfs.Default}
	disk.avail.Store(1 << 40)
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, FS: disk})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 500})
	acked := otlptest.Traces{}
	writeAcked(t, db, gen, 40, acked)
	db.mu.Lock()
	requests, logged := db.live.bytes, db.live.logged
	db.mu.Unlock()
	room := db.opts.DiskReserveBytes/2 + int64(logged)*3/2 + 1<<20
	if room >= db.opts.DiskReserveBytes/2+int64(requests) {
		t.Fatalf("requests of %d bytes logged in %d: the test needs them to compress", requests, logged)
	}
	disk.avail.Store(room)
	db.kick <- struct{}{}
	waitFor(t, "the cut", func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		return db.frozen == nil && db.live.spans == 0
	})
	if hasFault(db, FaultCut) {
		t.Fatalf("faults %v", db.Faults())
	}
	checkHas(t, db, acked)
}

// checkHas checks that db holds at least the spans of want: a refused
// write's spans may be stored too, as a failed export's may.
func checkHas(t *testing.T, db *DB, want otlptest.Traces) {
	t.Helper()
	for id, entries := range want {
		raw, _ := hex.DecodeString(id)
		if tr, err := db.Trace(context.Background(), TraceID(raw), TimeRange{}); err != nil || tr == nil || tr.Spans < len(entries) {
			t.Fatalf("trace %s: %v, %v; want %d spans", id, tr, err, len(entries))
		}
	}
}

// TestWALFaultHoldsWhileExportsDoNotFit leaves room for a probe of the log
// but not for an export: the fault must hold, and be logged once, for as
// long as exports fail with a full disk.
func TestWALFaultHoldsWhileExportsDoNotFit(t *testing.T) {
	disk := &smallDisk{FS: vfs.Default}
	disk.avail.Store(1 << 40)
	log := &logs{}
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, FS: disk, Logger: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gen := bench.NewGenerator(bench.Config{BatchSpans: 500})
	disk.avail.Store(db.opts.DiskReserveBytes + 8<<10) // a probe fits, an export does not
	for i := range 3 {
		if err := tryWrite(t, db, gen.Next().Bytes); err == nil {
			t.Fatalf("export %d fit", i)
		}
		time.Sleep(1500 * time.Millisecond) // a probe runs within a second
		if len(db.Faults()) == 0 {
			t.Fatalf("after failed export %d: no fault reported", i)
		}
	}
	if n := log.count("write-ahead log cannot be written"); n != 1 {
		t.Errorf("failure logged %d times, want once; recovery logged %d times", n, log.count("write-ahead log is written again"))
	}
}
