package storage

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/index"
	"cairn/internal/bulk"
	"cairn/internal/otlptest"
	"cairn/internal/otlpwire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// write parses and stores one encoded request.
func write(t testing.TB, db *DB, req []byte) {
	t.Helper()
	var b otlpwire.Batch
	if err := otlpwire.Parse(req, &b, otlpwire.Window{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(context.Background(), req, &b); err != nil {
		t.Fatal(err)
	}
}

// decode turns an assembled trace back into OTLP resource spans.
func decode(t testing.TB, tr *Trace) []*tracepb.ResourceSpans {
	t.Helper()
	var out []*tracepb.ResourceSpans
	for _, g := range tr.Groups {
		rs := &tracepb.ResourceSpans{SchemaUrl: string(g.ResourceSchemaURL)}
		if g.Resource != nil {
			rs.Resource = &resourcepb.Resource{}
			if err := proto.Unmarshal(g.Resource, rs.Resource); err != nil {
				t.Fatal(err)
			}
		}
		ss := &tracepb.ScopeSpans{SchemaUrl: string(g.ScopeSchemaURL)}
		if g.Scope != nil {
			ss.Scope = &commonpb.InstrumentationScope{}
			if err := proto.Unmarshal(g.Scope, ss.Scope); err != nil {
				t.Fatal(err)
			}
		}
		for _, raw := range g.Spans {
			s := &tracepb.Span{}
			if err := proto.Unmarshal(raw, s); err != nil {
				t.Fatal(err)
			}
			ss.Spans = append(ss.Spans, s)
		}
		rs.ScopeSpans = []*tracepb.ScopeSpans{ss}
		out = append(out, rs)
	}
	return out
}

// checkAll reads every trace of want and compares it.
func checkAll(t *testing.T, db *DB, want otlptest.Traces) {
	t.Helper()
	for id, entries := range want {
		tr := readTrace(t, db, id)
		if tr == nil {
			t.Fatalf("trace %s not found", id)
		}
		got := otlptest.Traces{}
		got.Add(decode(t, tr))
		if d := otlptest.DiffTrace(entries, got[id]); d != "" {
			t.Fatalf("trace %s: %s", id, d)
		}
		if tr.Spans != len(entries) {
			t.Fatalf("trace %s: Spans = %d, want %d", id, tr.Spans, len(entries))
		}
	}
}

// checkAbsent checks that no trace of ids (hex) can be read.
func checkAbsent(t *testing.T, db *DB, ids []string) {
	t.Helper()
	for _, id := range ids {
		if tr := readTrace(t, db, id); tr != nil {
			t.Fatalf("trace %s read, with %d spans; want none", id, tr.Spans)
		}
	}
}

// readTrace reads the trace of id (hex), nil if the store has none.
func readTrace(t *testing.T, db *DB, id string) *Trace {
	t.Helper()
	raw, _ := hex.DecodeString(id)
	tr, err := db.Trace(context.Background(), TraceID(raw), TimeRange{})
	if err != nil {
		t.Fatalf("trace %s: %v", id, err)
	}
	return tr
}

func TestRoundTripAcrossCutsAndReopen(t *testing.T) {
	dir := t.TempDir()
	// A small buffer and interval make cuts happen while requests arrive, so
	// traces end up split over the live buffer and several blocks.
	opts := &Options{BufferBytes: 1 << 20, FlushInterval: 20 * time.Millisecond}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 200, LargeTraceEvery: 150})
	want := otlptest.Traces{}
	for range 60 {
		req := gen.Next()
		if err := want.AddRequest(req.Bytes); err != nil {
			t.Fatal(err)
		}
		write(t, db, req.Bytes)
	}
	checkAll(t, db, want)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if blocks := db.live.block - 1; blocks < 5 {
		t.Fatalf("only %d blocks were cut; the test needs traces split over several", blocks)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	db, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkAll(t, db, want)
}

// crash stops db as a killed process would: nothing buffered is cut.
func crash(t *testing.T, db *DB) {
	t.Helper()
	db.mu.Lock()
	db.closed = true
	db.mu.Unlock()
	close(db.stop)
	db.flusherWG.Wait()
	db.maintainerWG.Wait()
	if err := db.closeStores(); err != nil {
		t.Fatal(err)
	}
}

// reopen closes db and opens the store in dir again, until the test ends.
func reopen(t *testing.T, db *DB, dir string, opts *Options) *DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestReplayAfterCrash(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 100})
	want := otlptest.Traces{}
	for i := range 20 {
		req := gen.Next()
		if err := want.AddRequest(req.Bytes); err != nil {
			t.Fatal(err)
		}
		write(t, db, req.Bytes)
		if i == 9 {
			if err := db.cut(); err != nil { // half in a block, half only in the WAL
				t.Fatal(err)
			}
		}
	}
	crash(t, db)
	// A cut the crash interrupted leaves sstables that were never ingested.
	if err := os.MkdirAll(filepath.Join(dir, "ingest"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ingest", "data-1.sst"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}

	db, err = Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// (The directory itself may be back: replayed spans are cut at once.)
	if _, err := os.Stat(filepath.Join(dir, "ingest", "data-1.sst")); !os.IsNotExist(err) {
		t.Fatalf("interrupted cut left behind: %v", err)
	}
	checkAll(t, db, want)
	// Replayed spans are cut like any others, and not duplicated.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkAll(t, db, want)
}

// TestCrashAfterCleanRestart crashes a store reopened after a clean close,
// which cut everything and removed the whole log: what it acknowledged
// since must still be replayed, although the log's directory was empty when
// it opened and the newest block names a segment the log no longer has.
func TestCrashAfterCleanRestart(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 100})
	want := otlptest.Traces{}
	add := func(db *DB) {
		req := gen.Next()
		if err := want.AddRequest(req.Bytes); err != nil {
			t.Fatal(err)
		}
		write(t, db, req.Bytes)
	}
	for range 3 {
		add(db)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	add(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if left, err := os.ReadDir(filepath.Join(dir, "wal")); err != nil || len(left) != 0 {
		t.Fatalf("a clean close left %d log segments (%v); the test needs none", len(left), err)
	}

	for range 2 { // the second time, after a crash that left a segment
		if db, err = Open(dir, opts); err != nil {
			t.Fatal(err)
		}
		add(db)
		crash(t, db)
	}
	db, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkAll(t, db, want)
}

func TestUnknownTrace(t *testing.T) {
	db, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tr, err := db.Trace(context.Background(), TraceID{1}, TimeRange{})
	if err != nil || tr != nil {
		t.Fatalf("Trace(unknown) = %v, %v; want nil, nil", tr, err)
	}
}

// TestConcurrentReadsWritesAndClose reads, searches and writes while cuts run and the
// store closes: nothing may race, panic, or leak an iterator, and every read
// either succeeds or reports ErrClosed.
func TestConcurrentReadsWritesAndClose(t *testing.T) {
	// Writes and cuts run their heavy parts on a bulk pool, as in a server.
	pool := bulk.New(&bulk.Options{Workers: 2})
	t.Cleanup(pool.Close)
	db, err := Open(t.TempDir(), &Options{BufferBytes: 256 << 10, FlushInterval: 5 * time.Millisecond, Bulk: pool})
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 64})
	reqs := make([]bench.Request, 64)
	for i := range reqs {
		reqs[i] = gen.Next()
	}
	done := make(chan struct{})
	errs := make(chan error, 8)
	for w := range 4 {
		go func() {
			for i := w; ; i += 4 {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				r := reqs[i%len(reqs)]
				if w%2 == 0 {
					var b otlpwire.Batch
					otlpwire.Parse(r.Bytes, &b, otlpwire.Window{})
					if err := db.Write(context.Background(), r.Bytes, &b); err != nil && err != ErrClosed {
						errs <- err
						return
					}
				} else if _, err := db.Trace(context.Background(), r.Traces[0], TimeRange{}); err != nil && err != ErrClosed {
					errs <- err
					return
				} else if _, err := db.Find(context.Background(), Query{Service: "checkout", Limit: 5}); err != nil && err != ErrClosed {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	closed := make(chan error)
	go func() { closed <- db.Close() }()
	time.Sleep(20 * time.Millisecond)
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// TestAcknowledgedVisibleWhileBuffersTurnOver reads traces back, and
// searches, while writers insert and cuts freeze the buffers they insert
// into: every span acknowledged before a read starts must be in it, and
// all of them once the store is reopened. Run with -race, it also checks
// that reads, which take no lock on the buffers, race with no insert.
func TestAcknowledgedVisibleWhileBuffersTurnOver(t *testing.T) {
	pool := bulk.New(&bulk.Options{Workers: 2})
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	db, err := Open(dir, &Options{BufferBytes: 128 << 10, FlushInterval: 2 * time.Millisecond, Bulk: pool})
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 401})
	var (
		mu    sync.Mutex
		acked = map[TraceID]int{} // spans of the trace acknowledged
		ids   []TraceID
	)
	const writers, readers, requests = 3, 2, 40
	var wg sync.WaitGroup
	reqs := make(chan []byte)
	go func() {
		for range requests {
			reqs <- gen.Next().Bytes
		}
		close(reqs)
	}()
	for range writers {
		wg.Go(func() {
			for req := range reqs {
				var b otlpwire.Batch
				if err := otlpwire.Parse(req, &b, otlpwire.Window{}); err != nil {
					t.Error(err)
					return
				}
				if err := db.Write(context.Background(), req, &b); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, s := range b.Spans {
					if acked[s.TraceID] == 0 {
						ids = append(ids, s.TraceID)
					}
					acked[s.TraceID]++
				}
				mu.Unlock()
			}
		})
	}
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for r := range readers {
		rwg.Go(func() {
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				if len(ids) == 0 {
					mu.Unlock()
					runtime.Gosched()
					continue
				}
				id := ids[(i*7919)%len(ids)]
				want := acked[id]
				mu.Unlock()
				tr, err := db.Trace(context.Background(), id, TimeRange{})
				if err != nil {
					t.Error(err)
					return
				}
				if tr == nil || tr.Spans < want {
					got := 0
					if tr != nil {
						got = tr.Spans
					}
					t.Errorf("trace %x: %d spans read, %d acknowledged before", id, got, want)
					return
				}
			}
		})
	}
	rwg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			services, err := db.Services()
			if err != nil {
				t.Error(err)
				return
			}
			for _, svc := range services {
				if _, err := db.Find(context.Background(), Query{Service: svc, DurationMin: time.Millisecond, Limit: 20}); err != nil {
					t.Error(err)
					return
				}
			}
			runtime.Gosched()
		}
	})
	wg.Wait()
	close(stop)
	rwg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, &Options{}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for id, want := range acked {
		tr, err := db.Trace(context.Background(), id, TimeRange{})
		if err != nil {
			t.Fatal(err)
		}
		if tr == nil || tr.Spans != want {
			t.Fatalf("after reopening, trace %x: %v, want %d spans", id, tr, want)
		}
	}
}

// expectedCatalog computes services and operations from the requests
// themselves, with the reference protobuf implementation.
func expectedCatalog(t *testing.T, reqs [][]byte) map[string][]Operation {
	t.Helper()
	want := map[string]map[Operation]bool{}
	for _, raw := range reqs {
		var req collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			t.Fatal(err)
		}
		for _, rs := range req.ResourceSpans {
			svc := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					svc = kv.GetValue().GetStringValue()
				}
			}
			if want[svc] == nil {
				want[svc] = map[Operation]bool{}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					want[svc][Operation{Name: s.Name, Kind: int32(s.Kind)}] = true
				}
			}
		}
	}
	out := map[string][]Operation{}
	for svc, ops := range want {
		for op := range ops {
			out[svc] = append(out[svc], op)
		}
		slices.SortFunc(out[svc], func(a, b Operation) int {
			if c := strings.Compare(a.Name, b.Name); c != 0 {
				return c
			}
			return int(a.Kind - b.Kind)
		})
	}
	return out
}

func checkCatalog(t *testing.T, db *DB, want map[string][]Operation) {
	t.Helper()
	services, err := db.Services()
	if err != nil {
		t.Fatal(err)
	}
	var wantServices []string
	for s := range want {
		wantServices = append(wantServices, s)
	}
	slices.Sort(wantServices)
	if !slices.Equal(services, wantServices) {
		t.Fatalf("services %q, want %q", services, wantServices)
	}
	for _, s := range services {
		ops, _, err := db.Operations(s)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ops, want[s]) {
			t.Fatalf("operations of %s: %v, want %v", s, ops, want[s])
		}
	}
}

// TestCatalogPersists checks services and operations against the requests,
// while spans are only in memory, after a crash (replayed from the WAL), and
// after a clean restart (loaded from their own keys).
func TestCatalogPersists(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{BatchSpans: 500})
	var reqs [][]byte
	for i := range 30 {
		r := gen.Next()
		reqs = append(reqs, r.Bytes)
		write(t, db, r.Bytes)
		if i == 10 {
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := expectedCatalog(t, reqs)
	if len(want) != 14 {
		t.Fatalf("workload has %d services", len(want))
	}
	checkCatalog(t, db, want)
	crash(t, db)

	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCatalog(t, db, want)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.live.spans != 0 {
		t.Fatal("clean restart replayed spans")
	}
	checkCatalog(t, db, want)
	if ops, _, _ := db.Operations("no such service"); len(ops) != 0 {
		t.Fatalf("operations of an unknown service: %v", ops)
	}
}

func TestCatalogBoundsOperations(t *testing.T) {
	c := newCatalog()
	svc := c.service([]byte("s"))
	for i := range maxOperationsPerService + 10 {
		c.see([]byte("s"), svc, 2, []byte(fmt.Sprintf("GET /item/%d", i)), 1, 0)
	}
	if ops, more := c.listOperations("s", 0); len(ops) != maxOperationsPerService || !more {
		t.Fatalf("%d operations remembered, more %v; want the bound %d, and more", len(ops), more, maxOperationsPerService)
	}
	if n := len(c.takePending()); n != maxOperationsPerService+1 {
		t.Fatalf("%d pending writes, want %d", n, maxOperationsPerService+1)
	}
	if n := len(c.takePending()); n != 0 {
		t.Fatalf("%d pending writes after taking them", n)
	}
	// While none has aged out, a new name is passed over without going
	// through them all again for the same horizon.
	c.see([]byte("s"), svc, 2, []byte("GET /late"), 1, 1)
	if svc.pruned != 1 || len(svc.ops) != maxOperationsPerService {
		t.Fatalf("pruned for horizon %d, %d operations", svc.pruned, len(svc.ops))
	}
	// Once partition 1 has aged out, its operations make room, and are
	// deleted on disk with the next block.
	c.see([]byte("s"), svc, 2, []byte("GET /fresh"), 3, 2)
	if ops, more := c.listOperations("s", 2); len(ops) != 1 || ops[0].Name != "GET /fresh" || more {
		t.Fatalf("operations after the others aged out: %v", ops)
	}
	deletes := 0
	for _, w := range c.takePending() {
		if w.value == nil {
			deletes++
		}
	}
	if deletes != maxOperationsPerService {
		t.Fatalf("%d operation keys to delete, want %d", deletes, maxOperationsPerService)
	}
}

// TestAgedOutOperationsMakeRoom fills a service's operations to the bound
// in one hour, lets the hour age out, and sends a new operation: it must be
// listed, as the old ones, all gone, no longer take room.
func TestAgedOutOperationsMakeRoom(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	opts := &Options{Retention: 2 * time.Hour, FlushInterval: time.Hour, Now: clk.now}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	request := func(names []string) []byte {
		start := uint64(clk.now().UnixNano())
		var spans []*tracepb.Span
		for i, n := range names {
			spans = append(spans, &tracepb.Span{TraceId: []byte{0: 1, 14: byte(i >> 8), 15: byte(i)}, SpanId: []byte{7: 1}, Name: n,
				StartTimeUnixNano: start, EndTimeUnixNano: start + 1})
		}
		return modelRequest(t, spans)
	}
	var names []string
	for i := range maxOperationsPerService {
		names = append(names, fmt.Sprint("op-", i))
	}
	writeAt(t, db, request(names))
	// One name more is stored, not listed, and the list says there are more.
	writeAt(t, db, request([]string{"one-too-many"}))
	if ops, more, err := db.Operations("svc0"); err != nil || len(ops) != maxOperationsPerService || !more {
		t.Fatalf("past the bound: %d operations, more %v, %v; want %d and more", len(ops), more, err, maxOperationsPerService)
	}
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	clk.add(3 * time.Hour)
	if err := db.enforceRetention(); err != nil {
		t.Fatal(err)
	}
	writeAt(t, db, request([]string{"fresh"}))
	ops, more, err := db.Operations("svc0")
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].Name != "fresh" || more {
		t.Fatalf("operations of a service whose only retained span is named fresh: %v, more %v", ops, more)
	}
	// The old ones are gone from disk too: a restart does not load them
	// back past the bound.
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir, opts)
	if n := len(db.catalog.services["svc0"].ops); n != 1 {
		t.Fatalf("%d operations of svc0 loaded after a restart, want 1", n)
	}
}

// TestUndefinedKindListsAsUnspecified sends spans of kinds OTLP does not
// define, which a kind byte would wrap onto defined ones (258 onto
// SERVER): they are listed as unspecified, as span metrics count them.
func TestUndefinedKindListsAsUnspecified(t *testing.T) {
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := uint64(time.Now().UnixNano())
	var spans []*tracepb.Span
	for i, kind := range []int32{258, -1, 6} {
		spans = append(spans, &tracepb.Span{TraceId: []byte{15: byte(i + 1)}, SpanId: []byte{7: 1}, Name: "op",
			Kind: tracepb.Span_SpanKind(kind), StartTimeUnixNano: start, EndTimeUnixNano: start + 1})
	}
	writeAt(t, db, modelRequest(t, spans))
	ops, _, err := db.Operations("svc0")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Operation{{Name: "op", Kind: 0}}; !slices.Equal(ops, want) {
		t.Fatalf("operations %v, want %v", ops, want)
	}
}

func TestFragmentRow(t *testing.T) {
	spans := []liveSpan{{start: 50, end: 90}, {start: 10, end: 60, err: true}, {start: 70, end: 120}}
	got := fragmentRow(TraceID{1}, spans, true)
	want := index.Row{TraceID: TraceID{1}, MinStart: 10, MaxStart: 70, MaxEnd: 120, Spans: 3, Errors: 1, Split: true}
	if got != want {
		t.Fatalf("row %+v, want %+v", got, want)
	}
}

// TestOpenRefusesDirectoryInUse opens a directory twice: the second Open
// names the holder, and once the first DB is closed the directory opens
// again.
func TestOpenRefusesDirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if db.lock == nil {
		db.Close()
		t.Skip("no flock on this platform")
	}
	_, err = Open(dir, nil)
	want := fmt.Sprintf("data directory %s is in use by another cairn (pid %d)", dir, os.Getpid())
	if !errors.Is(err, ErrLocked) || err.Error() != want {
		t.Fatalf("second Open: %v, want %q", err, want)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFileModes checks that what the store creates is private to its
// owner: directories 0700, its lock file 0600, and the files written
// through Options.FS (the log's and Pebble's), whatever the umask, inside a
// directory no one else may enter.
func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, db, bench.NewGenerator(bench.Config{BatchSpans: 100}).Next().Bytes)
	walFiles, _ := filepath.Glob(filepath.Join(dir, "wal", "*"))
	if len(walFiles) == 0 {
		t.Fatal("no write-ahead log segment")
	}
	own := []string{filepath.Join(dir, "LOCK")}
	for _, d := range []string{dir, filepath.Join(dir, "wal")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v, mode %v; want 0700", d, err, fi.Mode().Perm())
		}
	}
	for _, f := range own {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBufferCountsItsHeap writes two-span traces, whose in-memory form
// takes more than their requests: the buffer counts it, and is cut once
// requests and heap together reach BufferBytes, with a fraction of that
// in requests.
func TestBufferCountsItsHeap(t *testing.T) {
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, BufferBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := uint64(time.Now().UnixNano())
	var id uint32
	request := func() []byte {
		ss := &tracepb.ScopeSpans{}
		for range 512 {
			id++
			tid := []byte{0: 1, 12: byte(id >> 24), 13: byte(id >> 16), 14: byte(id >> 8), 15: byte(id)}
			parent := []byte{7: 1}
			ss.Spans = append(ss.Spans,
				&tracepb.Span{TraceId: tid, SpanId: parent, Name: "lets-go", StartTimeUnixNano: start, EndTimeUnixNano: start + 2000},
				&tracepb.Span{TraceId: tid, SpanId: []byte{7: 2}, ParentSpanId: parent, Name: "okey-dokey", StartTimeUnixNano: start + 50, EndTimeUnixNano: start + 1000})
		}
		raw, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "gen"}}}}},
			ScopeSpans: []*tracepb.ScopeSpans{ss},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	write(t, db, request())
	db.mu.Lock()
	bytes, heap, spans := db.live.bytes, int(db.live.heap.Load()), db.live.spans
	db.mu.Unlock()
	if min := spans*liveSpanSize + spans/2*newTraceSize; heap < min || heap < 2*bytes {
		t.Fatalf("%d spans in %d request bytes counted %d bytes of heap, want at least %d and twice the requests", spans, bytes, heap, min)
	}
	// Five requests' bytes are a third of the buffer; with their heap it
	// is full once the fifth comes.
	for range 4 {
		write(t, db, request())
	}
	waitFor(t, "a cut", func() bool {
		block, _, err := db.lastBlock()
		return err == nil && block > 0
	})
}

// TestMergeCatalogWrites checks that the catalog writes of a writer whose
// buffer was frozen while its request was logged join that buffer's in key
// order, the later of a key's two winning, as a block's sstable needs.
func TestMergeCatalogWrites(t *testing.T) {
	w := func(k, v string) catalogWrite {
		if v == "" {
			return catalogWrite{key: []byte(k)}
		}
		return catalogWrite{key: []byte(k), value: []byte(v)}
	}
	frozen := []catalogWrite{w("a", "1"), w("c", "1"), w("e", "1")}
	got := mergeCatalogWrites(frozen, []catalogWrite{w("b", "2"), w("c", "2"), w("f", "")})
	want := []catalogWrite{w("a", "1"), w("b", "2"), w("c", "2"), w("e", "1"), w("f", "")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merged %q, want %q", got, want)
	}
	if got := mergeCatalogWrites(frozen, nil); !reflect.DeepEqual(got, frozen) {
		t.Fatalf("merged with nothing: %q", got)
	}
}
