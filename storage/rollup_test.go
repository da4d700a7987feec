package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"cairn/storage/internal/keys"
)

// TestRollUpKeepsAnswers cuts a store's spans into many blocks, with
// service graph edges among them, and rolls their aggregate records up in
// groups: span metrics and the service graph answer as before, from one
// record per complete group, before and after a restart, and rolling up
// again changes nothing.
func TestRollUpKeepsAnswers(t *testing.T) {
	smallRollupGroups(t, 2, 4)

	r := rand.New(rand.NewPCG(3, 4))
	base := time.Now().Truncate(time.Hour) // one partition
	spans := generateSpans(r, base, 200)
	r.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
	const cuts = 11
	traces := genGraphTraces(r, 200, cuts, base)

	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: -1, PairingWindow: time.Hour}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cutSpansAndGraph(t, db, r, spans, traces, cuts)
	type answers struct {
		metrics, byStep, generated []SpanMetricsSeries
		graph                      []Edge
	}
	// answer gives the answers as lines, histograms by their encoding:
	// merged in another order, a histogram's slice may have another
	// length.
	answer := func() []string {
		t.Helper()
		var a answers
		ctx, from, to := context.Background(), base.Add(-time.Hour), base.Add(time.Hour)
		if a.metrics, err = db.SpanMetrics(ctx, SpanMetricsQuery{From: from, To: to, Step: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if a.byStep, err = db.SpanMetrics(ctx, SpanMetricsQuery{From: from, To: to, Step: 7 * time.Minute, Service: "svc1"}); err != nil {
			t.Fatal(err)
		}
		if a.generated, err = db.SpanMetrics(ctx, SpanMetricsQuery{From: from, To: to, Step: time.Minute, Keep: func(s *SpanSeries) bool { return strings.HasPrefix(s.Service, "svc") }}); err != nil {
			t.Fatal(err)
		}
		if a.graph, err = db.ServiceGraph(ctx, from, to); err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, ss := range [][]SpanMetricsSeries{a.metrics, a.byStep} {
			for _, s := range ss {
				for _, m := range s.Minutes {
					lines = append(lines, fmt.Sprintf("%+v %d %x %v", s.SpanSeries, m.Minute, m.Latency.Append(nil), m.Slowest))
				}
			}
		}
		for _, e := range a.graph {
			lines = append(lines, fmt.Sprintf("%s %s %v %d %d %x", e.Parent, e.Child, e.Virtual, e.Calls, e.Errors, e.Latency.Append(nil)))
		}
		if len(a.generated) == 0 || len(a.graph) < 10 {
			t.Fatalf("%d series of generated spans, %d edges: the test makes too little", len(a.generated), len(a.graph))
		}
		checkSpanMetrics(t, a.generated, spans, 0, 1)
		return lines
	}
	same := func(what string, got, want []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d lines of answers, want %d", what, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: answer line %d\n got %s\nwant %s", what, i, got[i], want[i])
			}
		}
	}
	// rolledUp checks that each shard has at most one record of each
	// complete group of four blocks before block end, under the newest
	// block it had one of.
	rolledUp := func(end uint64) {
		t.Helper()
		runs := aggregateBlocks(t, db)
		for run, blocks := range runs {
			newest := map[uint64]uint64{}
			for _, b := range blocks {
				if g := b / 4; b < end && newest[g] != 0 {
					t.Fatalf("%s: records of blocks %v, more than one of group %d", run, blocks, g)
				}
				newest[b/4] = b
			}
		}
		if len(runs) < 3 || runs["graph"] == nil {
			t.Fatalf("records of %d runs: the test makes too few", len(runs))
		}
	}
	// The maintainer may roll some groups up first: the answers are the
	// same either way.
	want := answer()
	runs := len(aggregateBlocks(t, db))
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Blocks 1 to 11 were cut: groups 0-3, 4-7 and 8-11 are complete (and
	// the groups of two in them).
	rolledUp(12)
	if n := len(aggregateBlocks(t, db)); n != runs {
		t.Fatalf("records of %d runs after the roll-up, %d before", n, runs)
	}
	same("after the roll-up", answer(), want)

	// Block 12 starts groups that wait for blocks 13 and 15; a restart looks at
	// the groups rolled up before again, and leaves them.
	write(t, db, encodeSpans(t, spans[:10]))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	spans = append(spans, spans[:10]...)
	want = answer()
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir, opts)
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	rolledUp(12)
	same("after the restart", answer(), want)
}

// TestRollUpLeavesDamagedRecords merges no group with a record that cannot
// be decoded, and goes on with the others.
func TestRollUpLeavesDamagedRecords(t *testing.T) {
	base := time.Now().Truncate(time.Hour)
	var blocks [][]metricSpan
	for i := range 5 { // blocks 1 to 5
		blocks = append(blocks, []metricSpan{testSpan(base, byte(i+1), "a", "op")})
	}
	db := rollupStore(t, &Options{}, blocks)
	p := partitionOf(uint64(base.UnixNano()))
	// A section of span metrics that claims more series than it holds.
	if err := db.idx.Set(keys.Aggregate(p, serviceShard("a"), 2), []byte{1, 1, 2, 9, 9}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	if blocks, want := aggregateBlocks(t, db)[fmt.Sprintf("shard %d", serviceShard("a"))], []uint64{1, 2, 3, 5}; !reflect.DeepEqual(blocks, want) {
		t.Fatalf("aggregate records of blocks %v, want %v: group 2-3 as it was, group 4-5 merged", blocks, want)
	}
}

// TestRollUpLeavesLargeGroups merges no group whose records together
// pass rollupMaxBytes, and goes on with the others.
func TestRollUpLeavesLargeGroups(t *testing.T) {
	base := time.Now().Truncate(time.Hour)
	var blocks [][]metricSpan
	for i := range 5 { // blocks 1 to 5, block 2 of many series
		spans := []metricSpan{testSpan(base, byte(i+1), "a", "op")}
		if i == 1 {
			for j := range 50 {
				spans = append(spans, testSpan(base, byte(100+j), "a", fmt.Sprint("op", j)))
			}
		}
		blocks = append(blocks, spans)
	}
	db := rollupStore(t, &Options{}, blocks)
	p, shard := partitionOf(uint64(base.UnixNano())), serviceShard("a")
	size := func(block uint64) int {
		v, closer, err := db.idx.Get(keys.Aggregate(p, shard, block))
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		return len(v)
	}
	old := rollupMaxBytes
	t.Cleanup(func() { rollupMaxBytes = old })
	rollupMaxBytes = int64(size(4) + size(5))
	if int64(size(2)+size(3)) <= rollupMaxBytes {
		t.Fatalf("block 2's record of %d bytes is too small for the test", size(2))
	}
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	if blocks, want := aggregateBlocks(t, db)[fmt.Sprintf("shard %d", shard)], []uint64{1, 2, 3, 5}; !reflect.DeepEqual(blocks, want) {
		t.Fatalf("aggregate records of blocks %v, want %v: group 2-3 as it was, group 4-5 merged", blocks, want)
	}
}

// TestRollUpKeepsFilteredSeries merges blocks whose series together pass
// --span-metrics-max-series though each block's do not: a query of one
// service finds its series after the merge as before.
func TestRollUpKeepsFilteredSeries(t *testing.T) {
	base := time.Now().Truncate(time.Hour)
	span := func(trace byte, service, name string) metricSpan { return testSpan(base, trace, service, name) }
	db := rollupStore(t, &Options{SpanMetricsMaxSeries: 4}, [][]metricSpan{
		{span(1, "a", "a0")},
		{span(2, "a", "a1"), span(3, "a", "a2"), span(4, "a", "a3"), span(5, "a", "a4")}, // block 2: four series
		{span(6, "b", "b1")}, // block 3: another
	})
	ofB := func() string {
		got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: base, To: base.Add(time.Hour), Step: time.Hour, Service: "b"})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range got {
			out = append(out, fmt.Sprintf("%s/%s overflow=%v calls=%d", s.Service, s.Name, s.Overflow, s.Minutes[0].Latency.Count()))
		}
		return strings.Join(out, "; ")
	}
	want := ofB()
	if want != "b/b1 overflow=false calls=1" {
		t.Fatalf("before the merge: %s", want)
	}
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ofB(); got != want {
		t.Fatalf("after the merge of blocks 2 and 3: %s, want %s", got, want)
	}
}

// smallRollupGroups makes rollUpAggregates merge groups of sizes, until
// the test ends. It must be called while no store is open: the maintainer
// reads them.
func smallRollupGroups(t *testing.T, sizes ...uint64) {
	old := rollupGroups
	t.Cleanup(func() { rollupGroups = old })
	rollupGroups = sizes
}

// testSpan is a 1 ms span of service and name that starts at base plus
// trace nanoseconds, alone in its trace.
func testSpan(base time.Time, trace byte, service, name string) metricSpan {
	start := uint64(base.UnixNano()) + uint64(trace)
	return metricSpan{service: service, span: &tracepb.Span{TraceId: []byte{trace, 15: 1}, SpanId: []byte{7: trace},
		Name: name, StartTimeUnixNano: start, EndTimeUnixNano: start + 1e6}}
}

// rollupStore opens a store, closed when the test ends, whose aggregate
// records roll up in groups of two blocks, and cuts a block of each of
// blocks' spans, blocks 1 onward; opts gives the rest of its options.
func rollupStore(t *testing.T, opts *Options, blocks [][]metricSpan) *DB {
	t.Helper()
	smallRollupGroups(t, 2)
	opts.FlushInterval, opts.RecompressAfter = time.Hour, -1
	db, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, spans := range blocks {
		write(t, db, encodeSpans(t, spans))
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// aggregateKeys lists the keys of aggregate records, of span metrics then
// of the service graph, ascending.
func aggregateKeys(t *testing.T, db *DB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, kind := range []byte{keys.KindAggregate, keys.KindGraph} {
		it, err := db.idx.NewIter(keys.KindRange(kind))
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			out = append(out, slices.Clone(it.Key()))
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// aggregateRuns lists, by run (a shard of span metrics, or the service
// graph), the blocks that have aggregate records, ascending (one
// partition's, in these tests).
func aggregateBlocks(t *testing.T, db *DB) map[string][]uint64 {
	t.Helper()
	blocks := map[string][]uint64{}
	for _, k := range aggregateKeys(t, db) {
		run, b := "graph", uint64(0)
		if keys.HasKind(k, keys.KindAggregate) {
			_, shard, block, err := keys.ParseAggregate(k)
			if err != nil {
				t.Fatal(err)
			}
			run, b = fmt.Sprintf("shard %d", shard), block
		} else {
			_, block, err := keys.ParseGraph(k)
			if err != nil {
				t.Fatal(err)
			}
			b = block
		}
		blocks[run] = append(blocks[run], b)
	}
	return blocks
}
