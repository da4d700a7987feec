package storage

import (
	"context"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/internal/otlpwire"
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
		size, err := db.diskBytes()
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

func TestMaxDiskBytesDropsOldestPartitions(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	// The bound is an option of Open, read by the maintainer goroutine:
	// the store is reopened with each bound rather than changed under it.
	open := func(maxDisk int64) *DB {
		db, err := Open(dir, &Options{Retention: 24 * time.Hour, FlushInterval: time.Hour, Now: clk.now, MaxDiskBytes: maxDisk})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	// enforced waits for the maintainer to have enforced the bound: until
	// done holds.
	enforced := func(done func() bool) {
		for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the maintainer did not enforce the bound within 10s")
			}
		}
	}
	db := open(0)
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
	size, err := db.diskBytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(size / 2)
	enforced(func() bool { n, _ := db.diskBytes(); return n <= size/2 })
	after, _ := db.diskBytes()
	db.mu.Lock()
	parts := len(db.partitions)
	_, newest := db.partitions[partitionOf(uint64(clk.now().Add(-time.Hour).UnixNano()))]
	db.mu.Unlock()
	if after > size/2 || parts >= 5 || !newest {
		t.Fatalf("%d -> %d bytes (bound %d), %d partitions left, newest kept: %v", size, after, size/2, parts, newest)
	}
	// Nothing is ever dropped below one partition.
	db.Close()
	db = open(1)
	defer db.Close()
	enforced(func() bool { db.mu.Lock(); defer db.mu.Unlock(); return len(db.partitions) <= 1 })
	db.mu.Lock()
	defer db.mu.Unlock()
	if len(db.partitions) != 1 {
		t.Fatalf("%d partitions left under an impossible bound", len(db.partitions))
	}
}
