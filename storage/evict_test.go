package storage

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/storage/internal/keys"
)

// dictModel is what the resource dictionary must hold and what resource
// attribute searches must find, computed by brute force.
type dictModel struct {
	spans []dictSpan
}

type dictSpan struct {
	trace    TraceID
	resource int
	start    uint64
	cut      bool // in a block, not a live buffer
}

// modelResource is resource i of the test's pool: three services, two
// zones, a host each.
// modelRequest is an encoded Export request of spans, all of resource 0.
func modelRequest(t *testing.T, spans []*tracepb.Span) []byte {
	t.Helper()
	raw, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{Resource: modelResource(0),
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func modelResource(i int) *resourcepb.Resource {
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	return &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
		str("service.name", fmt.Sprint("svc", i%3)), str("zone", fmt.Sprint("z", i%2)), str("host", fmt.Sprint("h", i)),
	}}
}

// TestResourceDictionaryAgainstModel ingests random traces of a pool of
// resources over simulated hours with a three-hour retention, through
// cuts, drops and reopenings, with a dictionary cache too small to hold
// them: resource attribute searches find exactly the traces a brute-force
// model does, and the dictionary keeps exactly the resources of retained
// spans.
func TestResourceDictionaryAgainstModel(t *testing.T) {
	const pool = 40
	rng := rand.New(rand.NewPCG(1, 2))
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	opts := &Options{Retention: 3 * time.Hour, FlushInterval: time.Hour, Now: clk.now, DictionaryCache: 4}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	var model dictModel
	searchesFound := false
	nextTrace := byte(0)
	write := func() {
		req := &collectorpb.ExportTraceServiceRequest{}
		for _, r := range rng.Perm(pool)[:1+rng.IntN(4)] {
			rs := &tracepb.ResourceSpans{Resource: modelResource(r), ScopeSpans: []*tracepb.ScopeSpans{{}}}
			for range 1 + rng.IntN(2) {
				nextTrace++
				id := TraceID{0: 0xee, 14: byte(len(model.spans) >> 8), 15: nextTrace}
				// Mostly now; sometimes late, in an earlier hour.
				start := uint64(clk.now().Add(-time.Duration(rng.IntN(3)) * time.Hour * time.Duration(rng.IntN(2))).UnixNano())
				rs.ScopeSpans[0].Spans = append(rs.ScopeSpans[0].Spans, &tracepb.Span{TraceId: id[:], SpanId: []byte{7: 1}, Name: "op", StartTimeUnixNano: start, EndTimeUnixNano: start + 1})
				model.spans = append(model.spans, dictSpan{trace: id, resource: r, start: start})
			}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		raw, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if rej := writeAt(t, db, raw); rej.Total() != 0 {
			t.Fatalf("rejected %+v", rej)
		}
	}
	cut := func() {
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
		for i := range model.spans {
			model.spans[i].cut = true
		}
	}
	check := func(step string) {
		t.Helper()
		notBefore := db.NotBefore()
		retained := map[uint32]bool{}
		for _, p := range db.sortedPartitions() {
			retained[p] = true
		}
		// Searches: each attribute, with and without a service.
		for _, attr := range []struct{ key, value string }{{"zone", "z0"}, {"zone", "z1"}, {"host", "h5"}, {"host", "h11"}} {
			for _, svc := range []string{"", "svc0", "svc2"} {
				var want []TraceID
				for _, s := range model.spans {
					res := modelResource(s.resource)
					has := false
					for _, kv := range res.Attributes {
						has = has || kv.Key == attr.key && kv.Value.GetStringValue() == attr.value
					}
					if has && s.start >= notBefore && (svc == "" || fmt.Sprint("svc", s.resource%3) == svc) {
						want = append(want, s.trace)
					}
				}
				found, err := db.Find(context.Background(), Query{Service: svc, Limit: 10000,
					Attributes: []Attribute{{Key: attr.key, Value: attr.value}}})
				if err != nil {
					t.Fatal(err)
				}
				var got []TraceID
				for _, f := range found {
					got = append(got, f.ID)
				}
				sortIDs(want)
				sortIDs(got)
				want = slices.Compact(want)
				searchesFound = searchesFound || len(want) > 0
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("%s: search %s=%s service %q: %d traces, want %d", step, attr.key, attr.value, svc, len(got), len(want))
				}
			}
		}
		// The dictionary: the resources of spans in retained partitions
		// and in the live buffer.
		wantRes := map[dictID]bool{}
		for _, s := range model.spans {
			if !s.cut || retained[partitionOf(s.start)] {
				raw, _ := proto.Marshal(modelResource(s.resource))
				wantRes[hashDict(raw, nil)] = true
			}
		}
		it, err := db.idx.NewIter(keys.KindRange(keys.KindResource))
		if err != nil {
			t.Fatal(err)
		}
		stored := map[dictID]bool{}
		for ok := it.First(); ok; ok = it.Next() {
			stored[dictID(it.Key()[1:])] = true
		}
		it.Close()
		for id := range wantRes {
			if !stored[id] && !db.resources.isPending(id) {
				t.Fatalf("%s: resource %x of retained spans is neither stored nor pending", step, id)
			}
		}
		for id := range stored {
			if !wantRes[id] {
				t.Fatalf("%s: resource %x stored, which no retained span has", step, id)
			}
		}
	}
	for hour := range 9 {
		for range 3 {
			write()
		}
		check(fmt.Sprintf("hour %d, live", hour))
		cut()
		write()
		check(fmt.Sprintf("hour %d, cut", hour))
		if hour%3 == 2 {
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if db, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
			for i := range model.spans {
				model.spans[i].cut = true // Close cut them
			}
			check(fmt.Sprintf("hour %d, reopened", hour))
		}
		clk.add(time.Hour)
		if err := db.enforceRetention(); err != nil {
			t.Fatal(err)
		}
		cut()
		if err := db.evictResources(); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("hour %d, retained", hour+1))
	}
	// The model must have made the dictionary evict and the searches find.
	if n := testutil.ToFloat64(db.metrics.evictedResources); n == 0 || !searchesFound {
		t.Fatalf("%v resources evicted, searches found traces: %v", n, searchesFound)
	}
	t.Logf("%d spans written, %v resources evicted since the last open", len(model.spans), testutil.ToFloat64(db.metrics.evictedResources))
}

func sortIDs(ids []TraceID) {
	slices.SortFunc(ids, func(a, b TraceID) int { return slices.Compare(a[:], b[:]) })
}

// TestUpgradeFromFormat3 opens a store as format version 3 wrote it, without
// group numbers by pair, resource attribute keys or resource uses: they are
// rebuilt, searches and reads work as before, and the store is version 5.
func TestUpgradeFromFormat3(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	req := &collectorpb.ExportTraceServiceRequest{}
	for r := range 6 {
		start := uint64(time.Now().UnixNano())
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{Resource: modelResource(r), ScopeSpans: []*tracepb.ScopeSpans{{
			Spans: []*tracepb.Span{{TraceId: []byte{15: byte(r + 1)}, SpanId: []byte{7: 1}, Name: "op", StartTimeUnixNano: start, EndTimeUnixNano: start}},
		}}})
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, db, raw)
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	b := db.idx.NewBatch()
	for _, kind := range []byte{keys.KindGroupNumber, keys.KindResourceAttr, keys.KindResourceUse} {
		if err := b.DeleteRange([]byte{kind}, keys.KindEnd(kind), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Set(keys.Meta("format"), []byte{3}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}

	db = reopen(t, db, dir, nil)
	if v, closer, err := db.idx.Get(keys.Meta("format")); err != nil || fmt.Sprint(v) != fmt.Sprint([]byte{FormatVersion}) {
		t.Fatalf("format after upgrade: %v, %v", v, err)
	} else {
		closer.Close()
	}
	got := lastIDBytes(t, db, Query{Service: "svc1", Limit: 10, Attributes: []Attribute{{Key: "zone", Value: "z1"}}})
	if fmt.Sprint(got) != "[2]" { // resources 1 and 4 have service svc1; 1 and 5 zone z1
		t.Fatalf("search after upgrade found traces %v, want [2]", got)
	}
	for r := range 6 {
		if tr, err := db.Trace(context.Background(), TraceID{15: byte(r + 1)}, TimeRange{}); err != nil || tr == nil {
			t.Fatalf("trace %d after upgrade: %v, %v", r+1, tr, err)
		}
	}
	// A cut after the upgrade numbers new pairs after the old ones.
	req.ResourceSpans[0].Resource = modelResource(7)
	raw, _ = proto.Marshal(req)
	writeAt(t, db, raw)
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	if tr, err := db.Trace(context.Background(), TraceID{15: 1}, TimeRange{}); err != nil || tr == nil || len(tr.Groups) != 2 {
		t.Fatalf("trace 1 with a new resource: %v, %v", tr, err)
	}
}

// TestReadsKeepTheirViewOfEvictedResources evicts a resource while a read
// that began before its partition was dropped is still under way: the
// read resolves its groups and dictionary entries as of its view.
func TestReadsKeepTheirViewOfEvictedResources(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	db, err := Open(t.TempDir(), &Options{Retention: 2 * time.Hour, FlushInterval: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := uint64(clk.now().UnixNano())
	writeAt(t, db, modelRequest(t, []*tracepb.Span{{TraceId: []byte{15: 1}, SpanId: []byte{7: 1}, StartTimeUnixNano: start}}))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	v, err := db.openView(0, math.MaxUint32)
	if err != nil {
		t.Fatal(err)
	}
	defer db.release(v)
	res, _, err := db.groups.pair(iterGetter(v.index), 0)
	if err != nil {
		t.Fatal(err)
	}
	clk.add(3 * time.Hour)
	if err := db.enforceRetention(); err != nil {
		t.Fatal(err)
	}
	if err := db.evictResources(); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(db.metrics.evictedResources); n != 1 {
		t.Fatalf("%v resources evicted, want 1", n)
	}
	if got, _, err := db.groups.pair(iterGetter(v.index), 0); err != nil || got != res {
		t.Fatalf("group 0 as of the view: %x, %v", got, err)
	}
	if _, err := db.dict.lookup(iterGetter(v.index), keys.KindResource, res); err != nil {
		t.Fatalf("resource as of the view: %v", err)
	}
	now, err := db.idx.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer now.Close()
	if _, found, err := iterGetter(now)(keys.Dict(keys.KindResource, res)); found || err != nil {
		t.Fatalf("resource still stored (%v, %v) after eviction", found, err)
	}
}

// TestStaleReadsNeverMarkEvictedResourcesStored drops and evicts a
// resource in the middle of a read that began before, which resolves it
// through its view; the same resource then comes again: the cut must store
// it again, and its trace must read back after a restart, when no cache
// holds it.
func TestStaleReadsNeverMarkEvictedResourcesStored(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	opts := &Options{Retention: 2 * time.Hour, FlushInterval: time.Hour, Now: clk.now}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	request := func(trace byte) []byte {
		start := uint64(clk.now().UnixNano())
		return modelRequest(t, []*tracepb.Span{{TraceId: []byte{15: trace}, SpanId: []byte{7: 1}, Name: "op",
			StartTimeUnixNano: start, EndTimeUnixNano: start + 1}})
	}
	writeAt(t, db, request(1))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	evicted := false
	found, err := db.TracePieces(context.Background(), TraceID{15: 1}, TimeRange{}, 1<<20, func(int) error {
		if evicted { // the read has its view; its fragment is about to be decoded
			return nil
		}
		evicted = true
		clk.add(3 * time.Hour)
		if err := db.enforceRetention(); err != nil {
			return err
		}
		return db.evictResources()
	}, func(*Trace) error { return nil })
	if err != nil || !found || testutil.ToFloat64(db.metrics.evictedResources) != 1 {
		t.Fatalf("read across the eviction: found %v, %v, %v resources evicted", found, err, testutil.ToFloat64(db.metrics.evictedResources))
	}
	writeAt(t, db, request(2))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir, opts)
	if tr, err := db.Trace(context.Background(), TraceID{15: 2}, TimeRange{}); err != nil || tr == nil {
		t.Fatalf("trace of the resource stored again, after a restart: %v, %v", tr, err)
	}
}
