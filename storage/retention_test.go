package storage

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/internal/bulk"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/keys"
)

// clock is a settable time source for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// writeAt stores a request as ingest would, rejecting what is too old.
func writeAt(t testing.TB, db *DB, req []byte) otlpwire.Rejection {
	t.Helper()
	var b otlpwire.Batch
	if err := otlpwire.Parse(req, &b, db.Accepts()); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(context.Background(), req, &b); err != nil {
		t.Fatal(err)
	}
	return b.Rejected
}

func TestRetentionIsExact(t *testing.T) {
	clk := &clock{t: time.Now()}
	db, err := Open(t.TempDir(), &Options{Retention: 2 * time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	horizon := clk.now().Add(-2 * time.Hour)
	id := []byte{15: 9}
	span := func(sid byte, start time.Time) *tracepb.Span {
		return &tracepb.Span{TraceId: id, SpanId: []byte{7: sid}, StartTimeUnixNano: uint64(start.UnixNano()), EndTimeUnixNano: uint64(start.UnixNano())}
	}
	req, _ := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			span(1, horizon.Add(-time.Minute)), span(2, horizon.Add(time.Minute)), span(3, horizon.Add(30*time.Minute)),
		}}},
	}}})
	if rej := writeAt(t, db, req); rej.TooOld != 1 {
		t.Fatalf("rejected %+v, want the span a minute too old", rej)
	}
	count := func() int {
		tr, err := db.Trace(context.Background(), TraceID(id), TimeRange{})
		if err != nil {
			t.Fatal(err)
		}
		if tr == nil {
			return 0
		}
		return tr.Spans
	}
	for _, step := range []struct {
		advance time.Duration
		cut     bool
		want    int
	}{
		{0, false, 2},                // in the live buffer
		{0, true, 2},                 // in a block
		{2 * time.Minute, false, 1},  // span 2 has aged out, though its partition remains
		{30 * time.Minute, false, 0}, // all aged out
	} {
		clk.add(step.advance)
		if step.cut {
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
		}
		if got := count(); got != step.want {
			t.Fatalf("after +%v: %d spans, want %d", step.advance, got, step.want)
		}
	}
}

// TestRetentionKeepsDiskFlat ingests for ten simulated hours with a two-hour
// retention: expired partitions are dropped whole and disk use stops growing.
func TestRetentionKeepsDiskFlat(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	db, err := Open(t.TempDir(), &Options{Retention: 2 * time.Hour, FlushInterval: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var sizes []int64
	var firstHour [][16]byte
	for hour := range 10 {
		gen := bench.NewGenerator(bench.Config{Seed: uint64(hour + 1), Start: clk.now(), BatchSpans: 1000, TracesPerSecond: 0.2})
		for range 15 {
			r := gen.Next()
			if hour == 0 {
				firstHour = append(firstHour, r.Traces...)
			}
			writeAt(t, db, r.Bytes)
		}
		clk.add(time.Hour)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
		if err := db.enforceRetention(); err != nil {
			t.Fatal(err)
		}
		size, err := db.retainedBytes() // files Pebble has let go of are deleted asynchronously
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, size)
		db.mu.Lock()
		parts := len(db.partitions)
		db.mu.Unlock()
		if parts > 3 {
			t.Fatalf("hour %d: %d partitions kept with a 2h retention", hour, parts)
		}
	}
	t.Logf("disk bytes by hour: %v", sizes)
	if sizes[9] > sizes[3]*3/2 {
		t.Fatalf("disk grew from %d to %d bytes between hours 3 and 9", sizes[3], sizes[9])
	}
	for _, id := range firstHour[:20] {
		if tr, err := db.Trace(context.Background(), id, TimeRange{}); err != nil || tr != nil {
			t.Fatalf("trace %x from the first hour: %v, %v", id, tr, err)
		}
	}
}

// openBounded opens the store in dir with a day's retention and a bound of
// maxDisk bytes. The bound is an option of Open, read by the maintainer
// goroutine: tests reopen the store with each bound rather than change it
// under the store.
func openBounded(t *testing.T, dir string, clk *clock, maxDisk int64) *DB {
	t.Helper()
	db, err := Open(dir, &Options{Retention: 24 * time.Hour, FlushInterval: time.Hour, Now: clk.now, MaxDiskBytes: maxDisk})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestMaxDiskBytesDropsOldestPartitions(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	// enforced waits for the maintainer to have enforced the bound: until
	// done holds.
	enforced := func(done func() bool) {
		for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the maintainer did not enforce the bound within 10s")
			}
		}
	}
	db := openBounded(t, dir, clk, 0)
	for hour := range 5 {
		gen := bench.NewGenerator(bench.Config{Seed: uint64(hour + 1), Start: clk.now(), BatchSpans: 1000, TracesPerSecond: 0.2})
		for range 10 {
			writeAt(t, db, gen.Next().Bytes)
		}
		clk.add(time.Hour)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	size, err := db.retainedBytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openBounded(t, dir, clk, size/2)
	enforced(func() bool { n, _ := db.retainedBytes(); return n <= size/2 })
	after, _ := db.retainedBytes()
	db.mu.Lock()
	parts := len(db.partitions)
	_, newest := db.partitions[partitionOf(uint64(clk.now().Add(-time.Hour).UnixNano()))]
	db.mu.Unlock()
	if after > size/2 || parts >= 5 || !newest {
		t.Fatalf("%d -> %d bytes (bound %d), %d partitions left, newest kept: %v", size, after, size/2, parts, newest)
	}
	// The newest block is never dropped: only the partitions it has data in
	// are left under an impossible bound.
	db.Close()
	db = openBounded(t, dir, clk, 1)
	defer db.Close()
	holdsNewest := func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		var newest uint64
		for _, b := range db.partitions {
			newest = max(newest, b)
		}
		for _, b := range db.partitions {
			if b != newest {
				return false
			}
		}
		return len(db.partitions) > 0
	}
	enforced(holdsNewest)
	if err := db.enforceDiskBound(); err != nil {
		t.Fatal(err)
	}
	if !holdsNewest() {
		t.Fatal("the newest block was dropped under an impossible bound")
	}
}

// TestMaxDiskBytesWithinOneHour holds the bound when all the data is in
// the current hour: the oldest blocks go first, the newest stays, every
// drop is counted, and a reopened store agrees.
func TestMaxDiskBytesWithinOneHour(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	db := openBounded(t, dir, clk, 0)
	gen := bench.NewGenerator(bench.Config{Start: clk.now(), BatchSpans: 1000, TracesPerSecond: 0.2})
	var batches [][][16]byte
	for range 12 {
		r := gen.Next()
		batches = append(batches, r.Traces)
		writeAt(t, db, r.Bytes)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	clk.add(50 * time.Minute) // every span is still in the current hour
	if parts := db.sortedPartitions(); len(parts) != 1 || parts[0] != partitionOf(uint64(clk.now().UnixNano())) {
		t.Fatalf("partitions %v, want the current hour's alone", parts)
	}
	size, err := db.retainedBytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	bound := size / 2
	db = openBounded(t, dir, clk, bound)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// The drop is counted once its space is returned.
		if n, _ := db.retainedBytes(); n <= bound && testutil.ToFloat64(db.metrics.droppedBlocks.WithLabelValues(dropDiskBound)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the maintainer did not get the store under its bound within 10s")
		}
	}
	if n := testutil.ToFloat64(db.metrics.droppedBlocks.WithLabelValues(dropDiskBound)); n < 1 || n > 11 {
		t.Fatalf("%v blocks counted as dropped, want 1 to 11", n)
	}
	if n := testutil.ToFloat64(db.metrics.droppedBytes.WithLabelValues(dropDiskBound)); n <= 0 {
		t.Fatalf("%v bytes counted as dropped", n)
	}
	// present reports for each batch whether all, some or none of its traces
	// can be read.
	present := func(db *DB) []string {
		var out []string
		for _, ids := range batches {
			found := 0
			for _, id := range ids {
				tr, err := db.Trace(context.Background(), id, TimeRange{})
				if err != nil {
					t.Fatal(err)
				}
				if tr != nil {
					found++
				}
			}
			out = append(out, map[bool]string{true: "some", false: map[bool]string{true: "none", false: "all"}[found == 0]}[found > 0 && found < len(ids)])
		}
		return out
	}
	got := present(db)
	// Oldest first: none of the first batches, then at most one batch cut
	// on both sides of the boundary (a trace whose spans came in two
	// requests), then all of the rest, the newest included.
	want := regexp.MustCompile(`^(none )+(some )?(all )+$`)
	if s := strings.Join(got, " ") + " "; !want.MatchString(s) {
		t.Fatalf("traces left by batch: %s", s)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openBounded(t, dir, clk, 0)
	defer db.Close()
	if again := present(db); fmt.Sprint(again) != fmt.Sprint(got) {
		t.Fatalf("after reopening, traces left by batch %v, before %v", again, got)
	}
}

// TestFutureSpansNeverSteerRetention rejects spans far in the future at
// ingest and at replay; a partition in the future that an older store
// holds is never taken for the newest data by the disk bound, and
// retention drops it.
func TestFutureSpansNeverSteerRetention(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour).Add(30 * time.Minute)}
	dir := t.TempDir()
	db, err := Open(dir, &Options{FlushInterval: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	y2200 := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	span := func(id byte, start time.Time) *tracepb.Span {
		return &tracepb.Span{TraceId: []byte{15: id}, SpanId: []byte{7: 1}, StartTimeUnixNano: uint64(start.UnixNano()), EndTimeUnixNano: uint64(start.UnixNano())}
	}
	request := func(spans ...*tracepb.Span) []byte {
		req, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	found := func(db *DB, id byte) bool {
		tr, err := db.Trace(context.Background(), TraceID{15: id}, TimeRange{})
		if err != nil {
			t.Fatal(err)
		}
		return tr != nil
	}
	// At ingest: the tolerance is an hour.
	rej := writeAt(t, db, request(span(1, clk.now()), span(2, clk.now().Add(59*time.Minute)), span(3, clk.now().Add(61*time.Minute)), span(4, y2200)))
	if rej.TooNew != 2 || rej.Total() != 2 {
		t.Fatalf("rejected %+v, want the spans 61 minutes and 175 years ahead", rej)
	}

	// At replay: a log written before such spans were rejected.
	var b otlpwire.Batch
	old := request(span(5, clk.now()), span(6, y2200))
	if err := otlpwire.Parse(old, &b, otlpwire.Window{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(context.Background(), old, &b); err != nil {
		t.Fatal(err)
	}
	replayed := t.TempDir()
	if err := os.CopyFS(filepath.Join(replayed, "wal"), os.DirFS(filepath.Join(dir, "wal"))); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(replayed, &Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if !found(db2, 5) || found(db2, 6) {
		t.Fatalf("replay kept the span of now: %v, of 2200: %v", found(db2, 5), found(db2, 6))
	}
	if err := db2.Close(); err != nil {
		t.Fatal(err)
	}

	// On disk, as an older cairn would have stored them.
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	current, future := partitionOf(uint64(clk.now().UnixNano())), partitionOf(uint64(y2200.UnixNano()))
	if parts := db.sortedPartitions(); fmt.Sprint(parts) != fmt.Sprint([]uint32{current, current + 1, future}) {
		t.Fatalf("partitions %v, want %d, the next and %d", parts, current, future)
	}
	writeAt(t, db, request(span(7, clk.now())))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	plan, _, err := db.planDrops(math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if want := []dropTo{{current, 1}}; fmt.Sprint(plan) != fmt.Sprint(want) {
		t.Fatalf("disk bound would drop %v, want %v: the current hour's older block", plan, want)
	}
	if err := db.enforceRetention(); err != nil {
		t.Fatal(err)
	}
	if parts := db.sortedPartitions(); fmt.Sprint(parts) != fmt.Sprint([]uint32{current, current + 1}) {
		t.Fatalf("after retention, partitions %v, want %d and the next", parts, current)
	}
	if n := testutil.ToFloat64(db.metrics.droppedBlocks.WithLabelValues(dropFuture)); n != 1 {
		t.Fatalf("%v future blocks counted as dropped, want 1", n)
	}
	for _, id := range []byte{1, 2, 5, 7} {
		if !found(db, id) {
			t.Fatalf("trace %d of the current hour lost", id)
		}
	}
	if found(db, 6) {
		t.Fatal("the span of 2200 is still read")
	}
}

func TestTimeConversionsAtTheEdges(t *testing.T) {
	const maxU64 = uint64(math.MaxUint64)
	for _, c := range []struct {
		t    time.Time
		want uint64
	}{
		{time.Unix(0, 0), 0},
		{time.Unix(-1, 999_999_999), 0},
		{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), 0},
		{time.Unix(0, math.MaxInt64), math.MaxInt64},
		{time.Unix(0, math.MaxInt64).Add(1), math.MaxInt64 + 1}, // where UnixNano wraps
		{time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), uint64(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC).Unix()) * 1e9},
		{time.Unix(int64(maxU64/1e9), int64(maxU64%1e9)), maxU64},
		{time.Unix(int64(maxU64/1e9), int64(maxU64%1e9)+1), maxU64},
		{time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC), maxU64},
	} {
		if got := unixNanos(c.t); got != c.want {
			t.Errorf("unixNanos(%v) = %d, want %d", c.t, got, c.want)
		}
	}
	last := partitionOf(maxU64)
	if partitionOf(partitionStart(last)) != last || partitionEnd(last) != maxU64 || partitionEnd(last-1) != partitionStart(last) {
		t.Errorf("last partition %d: [%d, %d)", last, partitionStart(last), partitionEnd(last))
	}
	if partitionStart(math.MaxUint32) != maxU64 || partitionEnd(math.MaxUint32) != maxU64 {
		t.Errorf("partition %d: [%d, %d), want saturated", uint32(math.MaxUint32), partitionStart(math.MaxUint32), partitionEnd(math.MaxUint32))
	}
	for _, c := range []struct {
		r      TimeRange
		lo, hi uint32
	}{
		{TimeRange{}, 0, math.MaxUint32},
		{TimeRange{Start: time.Unix(-100, 0), End: time.Unix(0, 0)}, 0, 1},
		{TimeRange{Start: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), End: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
			partitionOf(unixNanos(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC))) - 1, last + 1},
	} {
		if lo, hi := c.r.bounds(); lo != c.lo || hi != c.hi {
			t.Errorf("bounds of %v–%v = [%d, %d], want [%d, %d]", c.r.Start, c.r.End, lo, hi, c.lo, c.hi)
		}
	}
}

// TestSpanTimesAtTheEdges stores spans starting at 0, at the largest
// uint64 and past 2262, and ending before they start, and reads and finds
// them in the live buffer and in a block alike.
func TestSpanTimesAtTheEdges(t *testing.T) {
	clk := &clock{t: time.Now()}
	db, err := Open(t.TempDir(), &Options{Retention: math.MaxInt64, FlushInterval: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	y2300 := uint64(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC).Unix()) * 1e9
	starts := map[byte][2]uint64{ // trace → start, end
		1: {0, 0},
		2: {math.MaxUint64, 0},
		3: {y2300, y2300 - 1},
		4: {uint64(clk.now().UnixNano()), 5},
	}
	var spans []*tracepb.Span
	for id, se := range starts {
		spans = append(spans, &tracepb.Span{TraceId: []byte{15: id}, SpanId: []byte{7: 1}, Name: "edge", StartTimeUnixNano: se[0], EndTimeUnixNano: se[1]})
	}
	req, _ := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
	var b otlpwire.Batch
	if err := otlpwire.Parse(req, &b, otlpwire.Window{}); err != nil { // as if there were no tolerance
		t.Fatal(err)
	}
	if err := db.Write(context.Background(), req, &b); err != nil {
		t.Fatal(err)
	}
	find := func(from, to time.Time) []byte {
		return lastIDBytes(t, db, Query{StartMin: from, StartMax: to, Limit: 10})
	}
	for _, cut := range []bool{false, true} {
		if cut {
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
		}
		for id, se := range starts {
			tr, err := db.Trace(context.Background(), TraceID{15: id}, TimeRange{})
			if err != nil || tr == nil || tr.Spans != 1 {
				t.Fatalf("cut %v: trace %d (start %d, end %d): %v, %v", cut, id, se[0], se[1], tr, err)
			}
		}
		y9999 := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
		for _, c := range []struct {
			from, to time.Time
			want     []byte
		}{
			{time.Time{}, time.Time{}, []byte{1, 2, 3, 4}},
			{time.Unix(0, 0), y9999, []byte{1, 2, 3, 4}},
			{time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC), y9999, []byte{2, 3}},
			{time.Time{}, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), []byte{1, 3, 4}},
			{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, 0), []byte{1}},
		} {
			if got := find(c.from, c.to); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("cut %v: find %v–%v: %v, want %v", cut, c.from, c.to, got, c.want)
			}
		}
	}
}

// TestNextDropDeletesSpanDataOfInterruptedDrop crashes a drop of a
// partition's oldest blocks between its two stores: the span data the index
// no longer refers to is never read, and the next drop of the partition
// deletes it with its own blocks, keeping the rest.
func TestNextDropDeletesSpanDataOfInterruptedDrop(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour, Now: clk.now}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	gen := bench.NewGenerator(bench.Config{Start: clk.now(), BatchSpans: 200, TracesPerSecond: 0.2})
	for range 4 {
		writeAt(t, db, gen.Next().Bytes)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	p := partitionOf(uint64(clk.now().UnixNano()))
	_, traces, err := db.survey(p, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	// The index store's half of dropping blocks 1 and 2, and no more.
	if err := commitDeletes(db.idx, [][2][]byte{{keys.Rows(p, 0), keys.Rows(p, 3)}, {keys.Postings(p, 0, 0), keys.Postings(p, 3, 0)}}, traces); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir, opts)
	if err := db.drop(p, 3, dropDiskBound); err != nil {
		t.Fatal(err)
	}
	it, err := db.spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	blocks := map[uint64]bool{}
	for ok := it.First(); ok; ok = it.Next() {
		_, b, _, err := keys.ParseData(it.Key())
		if err != nil {
			t.Fatal(err)
		}
		blocks[b] = true
	}
	if fmt.Sprint(blocks) != fmt.Sprint(map[uint64]bool{4: true}) {
		t.Fatalf("span data of blocks %v after the next drop, want 4 alone", blocks)
	}
}

// TestMaintenanceRunsBelowReads checks that the maintainer runs on a thread
// at the bulk pool's priority: recompression's merge is seconds of CPU
// that reads must not wait behind.
func TestMaintenanceRunsBelowReads(t *testing.T) {
	const nice = 3
	pool := bulk.New(&bulk.Options{Workers: 1, Nice: nice})
	t.Cleanup(pool.Close)
	db, err := Open(t.TempDir(), &Options{Bulk: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The pool's worker, and the maintainer once it has started. An empty
	// store has nothing for Pebble to flush or compact.
	waitFor(t, "the maintainer's thread is lowered", func() bool { return threadsAtNice(t, nice) == 2 })
}

// threadsAtNice counts the process's threads at a nice value.
func threadsAtNice(t *testing.T, nice int) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	n := 0
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		// The command, in parentheses, may hold spaces: the nice value is
		// the 19th field of the line, the 17th after the command.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 16 && fields[16] == strconv.Itoa(nice) {
			n++
		}
	}
	return n
}
