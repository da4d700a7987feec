package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"cairn/storage/internal/keys"
)

// shardedStore is a store of one partition with spans of 150 services,
// so that shards hold several, and service graph edges, cut into blocks.
func shardedStore(t *testing.T, dir string, opts *Options, cuts int) (*DB, []metricSpan, time.Time) {
	t.Helper()
	r := rand.New(rand.NewPCG(11, 12))
	base := time.Now().Truncate(time.Hour)
	spans := generateSpans(r, base, 250) // 256 would give a span ID of zeros
	for i := range spans {
		spans[i].service = fmt.Sprintf("service-%d", r.IntN(150))
	}
	traces := genGraphTraces(r, 100, cuts, base)
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	cutSpansAndGraph(t, db, r, spans, traces, cuts)
	return db, spans, base
}

// cutSpansAndGraph writes spans and the spans of graph traces into cuts
// blocks, the spans in equal parts, each graph span before its cut.
func cutSpansAndGraph(t *testing.T, db *DB, r *rand.Rand, spans []metricSpan, traces [][]*graphSpan, cuts int) {
	t.Helper()
	for i := range cuts {
		write(t, db, encodeSpans(t, spans[i*len(spans)/cuts:(i+1)*len(spans)/cuts]))
		for _, req := range exportRequests(r, traces, i) {
			write(t, db, req)
		}
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSpanMetricsOfOneService reads each service's span metrics from its
// shard, before and after the shards' records are rolled up: they are
// those of its spans alone, though other services share its shard.
func TestSpanMetricsOfOneService(t *testing.T) {
	smallRollupGroups(t, 2)
	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: -1, PairingWindow: time.Hour}
	db, spans, base := shardedStore(t, dir, opts, 5)
	t.Cleanup(func() { db.Close() })
	byService := map[string][]metricSpan{}
	for _, s := range spans {
		byService[s.service] = append(byService[s.service], s)
	}
	shared := 0
	for svc := range byService {
		for other := range byService {
			if other != svc && serviceShard(other) == serviceShard(svc) {
				shared++
				break
			}
		}
	}
	if shared < 20 {
		t.Fatalf("%d services share a shard: the test makes too few", shared)
	}
	check := func(what string) {
		t.Helper()
		for svc, want := range byService {
			got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: base, To: base.Add(time.Hour), Step: time.Minute, Service: svc})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range got {
				if s.Service != svc {
					t.Fatalf("%s: span metrics of %s hold a series of %s", what, svc, s.Service)
				}
			}
			checkSpanMetrics(t, got, want, 0, 1)
		}
		got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: base, To: base.Add(time.Hour), Step: time.Minute,
			Keep: func(s *SpanSeries) bool { return strings.HasPrefix(s.Service, "service-") }}) // not the service graph's
		if err != nil {
			t.Fatal(err)
		}
		checkSpanMetrics(t, got, spans, 0, 1)
	}
	check("as cut")
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("rolled up")
}

// TestUpgradeShardsAggregates opens a store of format version 10, whose
// aggregate records held every shard of a block in one: they are
// rewritten into shards that answer as they did, and a record that cannot
// be decoded is dropped.
func TestUpgradeShardsAggregates(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: -1, PairingWindow: time.Hour}
	db, _, base := shardedStore(t, dir, opts, 3)
	answers := func() string {
		t.Helper()
		ctx, from, to := context.Background(), base, base.Add(time.Hour)
		metrics, err := db.SpanMetrics(ctx, SpanMetricsQuery{From: from, To: to, Step: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		one, err := db.SpanMetrics(ctx, SpanMetricsQuery{From: from, To: to, Step: time.Minute, Service: "service-7"})
		if err != nil {
			t.Fatal(err)
		}
		byService, err := db.SpanMetrics(ctx, SpanMetricsQuery{From: from, To: to, Step: time.Minute, ByService: true})
		if err != nil {
			t.Fatal(err)
		}
		one = append(one, byService...)
		graph, err := db.ServiceGraph(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if len(metrics) == 0 || len(one) == 0 || len(graph) == 0 {
			t.Fatalf("%d series, %d of service-7, %d edges: the test makes too little", len(metrics), len(one), len(graph))
		}
		var out string
		for _, s := range append(metrics, one...) {
			for _, m := range s.Minutes {
				out += fmt.Sprintf("%+v %d %x %v\n", s.SpanSeries, m.Minute, m.Latency.Append(nil), m.Slowest)
			}
		}
		for _, e := range graph {
			out += fmt.Sprintf("%s %s %v %d %d %x\n", e.Parent, e.Child, e.Virtual, e.Calls, e.Errors, e.Latency.Append(nil))
		}
		return out
	}
	want := answers()

	// Write the store as version 10 did: a block's records in one.
	p := partitionOf(uint64(base.UnixNano()))
	byBlock := map[uint64][][]byte{}
	b := db.idx.NewBatch()
	for _, k := range aggregateKeys(t, db) {
		block := binary.BigEndian.Uint64(k[len(k)-8:])
		if keys.HasKind(k, keys.KindAggregate) && k[5] == shardTotals {
			if err := b.Delete(k, nil); err != nil { // version 10 had none
				t.Fatal(err)
			}
			continue
		}
		v, closer, err := db.idx.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		byBlock[block] = append(byBlock[block], append([]byte(nil), v...))
		closer.Close()
		if err := b.Delete(k, nil); err != nil {
			t.Fatal(err)
		}
	}
	v10 := func(block uint64) []byte {
		return binary.BigEndian.AppendUint64(keys.PartitionPrefix(keys.KindAggregate, p), block)
	}
	for block, records := range byBlock {
		rec, err := mergeAggregates(records)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Set(v10(block), rec, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A section of span metrics that claims more series than it holds.
	if err := b.Set(v10(2000), []byte{1, 1, 2, 9, 9}, nil); err != nil {
		t.Fatal(err)
	}
	db = reopenUpgraded(t, db, b, 10, dir, opts)
	blocks := map[uint64]bool{}
	for _, bs := range aggregateBlocks(t, db) { // fails on a key of version 10
		for _, b := range bs {
			blocks[b] = true
		}
	}
	if len(blocks) != len(byBlock) {
		t.Fatalf("sharded records of %d blocks, want %d", len(blocks), len(byBlock))
	}
	if got := answers(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the upgrade:\n%s\nwant\n%s", got, want)
	}
}

// TestSpanMetricsByService merges each service's series as it reads them,
// so that the bound on series bounds services: every service's calls are
// counted under its name where the series of its operations overflow.
func TestSpanMetricsByService(t *testing.T) {
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: -1, PairingWindow: time.Hour, SpanMetricsMaxSeries: 500}
	db, spans, base := shardedStore(t, t.TempDir(), opts, 5)
	t.Cleanup(func() { db.Close() })
	want := map[string]uint64{}
	for _, s := range spans {
		want[s.service]++
	}
	q := SpanMetricsQuery{From: base, To: base.Add(time.Hour), Step: time.Hour,
		Keep: func(s *SpanSeries) bool { return strings.HasPrefix(s.Service, "service-") }}
	calls := func(series []SpanMetricsSeries) (map[string]uint64, uint64) {
		byService, overflowed := map[string]uint64{}, uint64(0)
		for _, s := range series {
			for _, m := range s.Minutes {
				if s.Overflow {
					overflowed += m.Latency.Count()
				} else {
					byService[s.Service] += m.Latency.Count()
				}
			}
		}
		return byService, overflowed
	}
	byOperation, err := db.SpanMetrics(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if _, overflowed := calls(byOperation); overflowed == 0 {
		t.Fatal("no series of operations overflowed: the test makes too few")
	}
	q.ByService = true
	byService, err := db.SpanMetrics(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	got, overflowed := calls(byService)
	if overflowed != 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("calls by service %v, %d overflowed; want %v", got, overflowed, want)
	}
	for _, s := range byService {
		if s.Name != "" || s.Kind != 0 {
			t.Fatalf("series %+v merged by service has a name or kind", s.SpanSeries)
		}
	}
}

// TestSpanMetricsByServiceReadsTotals answers queries by service from the
// services' totals as a merge of every series read would, under filters
// of kind and service, with series past the bound, before and after the
// records are rolled up, and from totals an upgrade wrote.
func TestSpanMetricsByServiceReadsTotals(t *testing.T) {
	smallRollupGroups(t, 2)
	dir := t.TempDir()
	// Series past 300 a block overflow as they are cut; queries bound
	// none, so that merging series by operation is the truth.
	opts := &Options{FlushInterval: time.Hour, RecompressAfter: -1, PairingWindow: time.Hour, SpanMetricsMaxSeries: 300}
	db, _, base := shardedStore(t, dir, opts, 5)
	opts.SpanMetricsMaxSeries = 1 << 20
	db = reopen(t, db, dir, opts)
	t.Cleanup(func() { db.Close() })
	serverOrConsumer := func(s *SpanSeries) bool { return s.Overflow && s.Service == "" || s.Kind == 2 || s.Kind == 5 }
	queries := []SpanMetricsQuery{
		{Step: time.Minute},
		{Step: 5 * time.Minute, Keep: serverOrConsumer},
		{Step: time.Minute, Service: "service-7"},
		{Step: time.Hour, Service: "service-7", Keep: serverOrConsumer},
	}
	// merged is what a query by service answers, from the series a query
	// by operation reads.
	overflowed := false
	merged := func(q SpanMetricsQuery) string {
		t.Helper()
		series, err := db.SpanMetrics(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		m := newSpanMetrics(math.MaxInt)
		for _, s := range series {
			overflowed = overflowed || s.Overflow && s.Service != ""
			total, _ := m.seriesOf(&SpanSeries{Service: s.Service, Status: s.Status, Overflow: s.Service == "" && s.Overflow})
			for i := range s.Minutes {
				total.minute(s.Minutes[i].Minute).Merge(&s.Minutes[i])
			}
		}
		return formatSeries(m.sorted())
	}
	check := func(what string) {
		t.Helper()
		for i, q := range queries {
			q.From, q.To = base, base.Add(time.Hour)
			want := merged(q)
			q.ByService = true
			got, err := db.SpanMetrics(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				t.Fatalf("%s, query %d: no series", what, i)
			}
			if g := formatSeries(got); g != want {
				t.Fatalf("%s, query %d: by service\n%s\nwant\n%s", what, i, g, want)
			}
		}
	}
	check("as cut")
	if !overflowed {
		t.Fatal("no service's series overflowed: the test makes too few")
	}
	if err := db.rollUpAggregates(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("rolled up")

	// A store of format version 11, which had no totals.
	b := db.idx.NewBatch()
	for _, k := range aggregateKeys(t, db) {
		if keys.HasKind(k, keys.KindAggregate) && k[5] == shardTotals {
			if err := b.Delete(k, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A record of a shard that claims more series than it holds: the
	// upgrade leaves it out of the totals.
	damaged := keys.Aggregate(partitionOf(uint64(base.UnixNano())), 3, 2000)
	if err := b.Set(damaged, []byte{1, 1, 2, 9, 9}, nil); err != nil {
		t.Fatal(err)
	}
	db = reopenUpgraded(t, db, b, 11, dir, opts)
	if err := db.idx.Delete(damaged, pebble.Sync); err != nil { // queries of its shard fail on it
		t.Fatal(err)
	}
	check("upgraded")
}

// reopenUpgraded commits b, which rewrites db's store as format version
// did, with that version, reopens the store, closed when the test ends,
// and checks that it was upgraded to FormatVersion.
func reopenUpgraded(t *testing.T, db *DB, b *pebble.Batch, version byte, dir string, opts *Options) *DB {
	t.Helper()
	if err := b.Set(keys.Meta("format"), []byte{version}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir, opts)
	t.Cleanup(func() { db.Close() })
	if v, closer, err := db.idx.Get(keys.Meta("format")); err != nil || v[0] != FormatVersion {
		t.Fatalf("format after the upgrade from %d: %v, %v", version, v, err)
	} else {
		closer.Close()
	}
	return db
}

// formatSeries prints span metrics series, a line a minute, with the
// durations of its exemplars: of spans as slow, which trace a merge keeps
// depends on its order.
func formatSeries(series []SpanMetricsSeries) string {
	var out strings.Builder
	for _, s := range series {
		for _, m := range s.Minutes {
			fmt.Fprintf(&out, "%+v %d %x", s.SpanSeries, m.Minute, m.Latency.Append(nil))
			for _, e := range m.Slowest {
				fmt.Fprintf(&out, " %d", e.Duration)
			}
			out.WriteByte('\n')
		}
	}
	return out.String()
}

// TestSpanMetricsOverflowKeepsService counts the spans of series past the
// bound into overflow series of their service and kind while there are at
// most as many of those, and past them into the overflow series of their
// status code: each of the first services' calls by kind stay exact.
func TestSpanMetricsOverflowKeepsService(t *testing.T) {
	base := time.Now().Truncate(time.Hour)
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, RecompressAfter: -1, SpanMetricsMaxSeries: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var spans []metricSpan
	want := map[string]uint64{}
	for i, service := range []string{"a", "b", "c", "d", "e"} {
		for op := range 4 {
			s := testSpan(base, byte(1+i*4+op), service, fmt.Sprintf("op%d", op))
			if service == "a" && op == 3 {
				s.span.Kind = tracepb.Span_SPAN_KIND_SERVER
			}
			spans = append(spans, s)
			want[service]++
		}
	}
	write(t, db, encodeSpans(t, spans))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	q := SpanMetricsQuery{From: base, To: base.Add(time.Hour), Step: time.Hour}
	all, err := db.SpanMetrics(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	named, services, ofAny := 0, 0, uint64(0)
	got := map[string]uint64{}
	for _, s := range all {
		n := s.Minutes[0].Latency.Count()
		switch {
		case !s.Overflow:
			named++
		case s.Service != "":
			services++
		default:
			ofAny += n
		}
		got[s.Service] += n
	}
	if named != 3 || services != 3 || ofAny == 0 || got[""] != ofAny {
		t.Fatalf("%d named series, %d overflow series of services, %d spans of any service; want 3, 3 (a's server spans, b's, c's) and some", named, services, ofAny)
	}
	exact := 0
	for svc, n := range want {
		if got[svc] == n {
			exact++
		}
	}
	if exact != 3 {
		t.Fatalf("calls by service %v, want %v for three of them", got, want)
	}
	// A query of one service reads its own overflow series and that of any
	// service, not the other services'; its own keep their kind.
	q.Service = "a"
	q.Keep = func(s *SpanSeries) bool { return s.Service == "" || s.Kind == uint8(tracepb.Span_SPAN_KIND_SERVER) }
	ofA, err := db.SpanMetrics(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	server := uint64(0)
	for _, s := range ofA {
		if s.Service != "a" && s.Service != "" {
			t.Fatalf("span metrics of a hold a series of %q", s.Service)
		}
		if s.Service == "a" {
			server += s.Minutes[0].Latency.Count()
		}
	}
	if server != 1 {
		t.Fatalf("%d server spans of a, want its one, an overflowed operation", server)
	}
}
