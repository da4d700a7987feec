package storage

import (
	"bytes"
	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// modelSpan is a span as the brute-force model sees it.
type modelSpan struct {
	trace      TraceID
	service    string
	name       string
	start, end uint64
	err        bool
	// attrs holds, by key, the text of every scalar value the span, its
	// events and its resource give the key.
	attrs map[string][]string
}

// matches decides as Jaeger's memory store does: an attribute condition
// holds if the span, one of its events or its resource has the key with a
// value of the same text.
func (m modelSpan) matches(q Query, notBefore uint64) bool {
	if q.Service != "" && m.service != q.Service || q.Operation != "" && m.name != q.Operation {
		return false
	}
	if m.start < notBefore || !q.StartMin.IsZero() && m.start < uint64(q.StartMin.UnixNano()) ||
		!q.StartMax.IsZero() && m.start > uint64(q.StartMax.UnixNano()) {
		return false
	}
	d := uint64(0)
	if m.end > m.start {
		d = m.end - m.start
	}
	if q.DurationMin > 0 && d < uint64(q.DurationMin) || q.DurationMax > 0 && d > uint64(q.DurationMax) {
		return false
	}
	for _, a := range q.Attributes {
		if a.Key == "error" && a.Value == "true" {
			if !m.err {
				return false
			}
			continue
		}
		if !slices.Contains(m.attrs[a.Key], a.Value) {
			return false
		}
	}
	return true
}

// addAttrs records the text of scalar attributes in the model.
func (m modelSpan) addAttrs(t testing.TB, kvs []*commonpb.KeyValue) {
	for _, kv := range kvs {
		if text, ok := jsonText(t, kv.Value); ok {
			m.attrs[kv.Key] = append(m.attrs[kv.Key], text)
		}
	}
}

// jsonText is a scalar value's text as OTLP JSON writes it, taken from
// protobuf's JSON encoding rather than from the code under test.
func jsonText(t testing.TB, v *commonpb.AnyValue) (string, bool) {
	j, err := protojson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var field map[string]json.RawMessage
	if err := json.Unmarshal(j, &field); err != nil {
		t.Fatal(err)
	}
	for name, raw := range field {
		if name == "arrayValue" || name == "kvlistValue" {
			return "", false
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s, true
		}
		return string(raw), true
	}
	return "", false
}

func strV(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}

// TestFindAgainstModel writes random traces, cutting blocks now and then so
// that answers come from live buffers and segments alike, and compares the
// answers to random queries with a brute-force scan of every span.
func TestFindAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	clk := &clock{t: time.Now().Truncate(time.Hour)}
	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour, Now: clk.now}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()

	services := []string{"api", "cart", "db", "mail"}
	names := []string{"GET", "POST", "query", "send"}
	base := uint64(clk.now().Add(-5 * time.Hour).UnixNano())
	var spans []modelSpan
	// Values drawn from small sets, so that queries hit; ints, doubles,
	// bools and strings share spellings (1, 1.0 and "1"; true and "true"),
	// so that values of different types must match by their text.
	attrValue := func() *commonpb.AnyValue {
		switch rng.IntN(5) {
		case 0:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(rng.IntN(3))}}
		case 1:
			return strV(fmt.Sprint(rng.IntN(3)))
		case 2:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: rng.IntN(2) == 0}}
		case 3:
			return strV([]string{"true", "0.5", "1.0"}[rng.IntN(3)])
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: float64(rng.IntN(3)) / 2}}
	}
	for batch := range 12 {
		req := &collectorpb.ExportTraceServiceRequest{}
		for svcIdx, svc := range services {
			tier := fmt.Sprint("t", svcIdx%2)
			rs := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
				{Key: "service.name", Value: strV(svc)}, {Key: "tier", Value: strV(tier)},
			}}}
			ss := &tracepb.ScopeSpans{}
			for range 30 {
				var tid TraceID
				tid[0] = byte(rng.IntN(40)) // traces recur across batches and services
				tid[15] = 1
				start := base + uint64(rng.IntN(int(4*time.Hour)))
				dur := uint64(rng.IntN(3)) * uint64(time.Millisecond) * uint64(rng.IntN(1000))
				sp := &tracepb.Span{TraceId: tid[:], SpanId: binary.BigEndian.AppendUint64(nil, rng.Uint64()|1),
					Name: names[rng.IntN(len(names))], StartTimeUnixNano: start, EndTimeUnixNano: start + dur}
				if rng.IntN(8) == 0 {
					sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
				}
				m := modelSpan{trace: tid, service: svc, name: sp.Name, start: start, end: start + dur, err: sp.Status != nil,
					attrs: map[string][]string{}}
				m.addAttrs(t, rs.Resource.Attributes)
				for _, k := range []string{"a", "b"} {
					if rng.IntN(3) > 0 {
						sp.Attributes = append(sp.Attributes, &commonpb.KeyValue{Key: k, Value: attrValue()})
					}
				}
				// Events have keys of their own and the span's.
				for range rng.IntN(3) {
					ev := &tracepb.Span_Event{Name: "ev", TimeUnixNano: start}
					for _, k := range []string{"a", "e"} {
						if rng.IntN(2) > 0 {
							ev.Attributes = append(ev.Attributes, &commonpb.KeyValue{Key: k, Value: attrValue()})
						}
					}
					sp.Events = append(sp.Events, ev)
					m.addAttrs(t, ev.Attributes)
				}
				m.addAttrs(t, sp.Attributes)
				ss.Spans = append(ss.Spans, sp)
				spans = append(spans, m)
			}
			rs.ScopeSpans = []*tracepb.ScopeSpans{ss}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		raw, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		writeAt(t, db, raw)
		if batch%3 != 2 { // most batches end up in segments, some stay live
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
		}
	}

	randomQuery := func() Query {
		q := Query{Limit: 1000}
		if rng.IntN(3) > 0 {
			q.Service = services[rng.IntN(len(services))]
			if rng.IntN(2) == 0 {
				q.Operation = names[rng.IntN(len(names))]
			}
		}
		for range rng.IntN(3) {
			switch rng.IntN(4) {
			case 0:
				q.Attributes = append(q.Attributes, Attribute{Key: "error", Value: "true"})
			case 1:
				q.Attributes = append(q.Attributes, Attribute{Key: "tier", Value: fmt.Sprint("t", rng.IntN(2))})
			default:
				text, _ := jsonText(t, attrValue())
				q.Attributes = append(q.Attributes, Attribute{Key: []string{"a", "b", "e"}[rng.IntN(3)], Value: text})
			}
		}
		if rng.IntN(2) == 0 {
			q.StartMin = time.Unix(0, int64(base+uint64(rng.IntN(int(2*time.Hour)))))
		}
		if rng.IntN(2) == 0 {
			q.StartMax = time.Unix(0, int64(base+uint64(time.Hour)+uint64(rng.IntN(int(3*time.Hour)))))
		}
		if rng.IntN(3) == 0 {
			q.DurationMin = time.Duration(rng.IntN(1500)) * time.Millisecond
		}
		if rng.IntN(3) == 0 {
			q.DurationMax = time.Duration(rng.IntN(1500)) * time.Millisecond
		}
		return q
	}

	notBefore := db.NotBefore()
	nonEmpty, partial := 0, 0
	defer func() { t.Logf("%d of 550 queries match something; %d match fewer than all traces", nonEmpty, partial) }()
	check(t, db, 400, randomQuery, spans, notBefore, &nonEmpty, &partial)
	// After a restart, the catalog, groups and resource index come from disk.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	check(t, db, 150, randomQuery, spans, notBefore, &nonEmpty, &partial)
}

// check compares n random queries' answers with the model's.
func check(t *testing.T, db *DB, n int, randomQuery func() Query, spans []modelSpan, notBefore uint64, nonEmpty, partial *int) {
	t.Helper()
	for i := range n {
		q := randomQuery()
		want := map[TraceID]bool{}
		for _, m := range spans {
			if m.matches(q, notBefore) {
				want[m.trace] = true
			}
		}
		if len(want) > 0 {
			*nonEmpty++
		}
		if len(want) > 0 && len(want) < 40 {
			*partial++
		}
		got, err := db.Find(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[TraceID]bool{}
		for _, f := range got {
			ids[f.ID] = true
		}
		if len(ids) != len(got) || fmt.Sprint(sortedIDs(ids)) != fmt.Sprint(sortedIDs(want)) {
			t.Fatalf("query %d %+v:\n got  %d traces %x\n want %d traces %x", i, q, len(got), sortedIDs(ids), len(want), sortedIDs(want))
		}
		if !slices.IsSortedFunc(got, func(a, b Found) int { return -cmpU64(a.Start, b.Start) }) {
			t.Fatalf("query %d: not most recent first", i)
		}
		// With a small limit, every answer is a match and there are as many as
		// asked for.
		q.Limit = 3
		got, err = db.Find(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != min(3, len(want)) {
			t.Fatalf("query %d with limit 3: %d traces, %d match", i, len(got), len(want))
		}
		for _, f := range got {
			if !want[f.ID] {
				t.Fatalf("query %d with limit 3: %x does not match", i, f.ID)
			}
		}
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedIDs(m map[TraceID]bool) []TraceID {
	var ids []TraceID
	for id := range m {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b TraceID) int { return slices.Compare(a[:], b[:]) })
	return ids
}

// TestUpgradeFromFormat4 opens a store as format version 4 left it: rows
// records of version 2, whose segments' attribute terms search cannot look
// up, and resource attribute keys of old terms. Its segments are searched
// through their spans, its resource attribute keys are rebuilt, and
// segments cut after the upgrade are found through their terms.
func TestUpgradeFromFormat4(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	write := func(id byte, res int) {
		start := uint64(time.Now().UnixNano())
		sp := &tracepb.Span{TraceId: []byte{15: id}, SpanId: []byte{7: 1}, Name: "op", StartTimeUnixNano: start, EndTimeUnixNano: start,
			Attributes: []*commonpb.KeyValue{{Key: "code", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(id)}}}},
			Events:     []*tracepb.Span_Event{{Name: "exception", Attributes: []*commonpb.KeyValue{{Key: "exception.type", Value: strV(fmt.Sprint("E", id))}}}}}
		raw, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource: modelResource(res), ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{sp}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		writeAt(t, db, raw)
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
	}
	write(1, 1)
	write(2, 2)

	// What version 4 wrote differs from what this version writes in the
	// rows records and the terms; with the rows as version 2, the
	// segments' terms go unread, so it does not matter that they are new.
	b := db.idx.NewBatch()
	it, err := db.idx.NewIter(keys.KindRange(keys.KindRows))
	if err != nil {
		t.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := b.Set(it.Key(), rowsVersion2(t, it.Value()), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteRange([]byte{keys.KindResourceAttr}, keys.KindEnd(keys.KindResourceAttr), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Set(keys.Meta("format"), []byte{4}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}

	db = reopen(t, db, dir, &Options{FlushInterval: time.Hour})
	if v, closer, err := db.idx.Get(keys.Meta("format")); err != nil || fmt.Sprint(v) != fmt.Sprint([]byte{FormatVersion}) {
		t.Fatalf("format after upgrade: %v, %v", v, err)
	} else {
		closer.Close()
	}
	if got, want := storedResourceAttrs(t, db), resourceAttrsOfDict(t, db); got != want || want == "" {
		t.Fatalf("resource attribute keys after upgrade:\n%s\nwant\n%s", got, want)
	}
	write(3, 1) // cut after the upgrade, of a resource stored before it
	for _, c := range []struct {
		q    Query
		want string
	}{
		{Query{Attributes: []Attribute{{Key: "code", Value: "2"}}}, "[2]"},
		{Query{Attributes: []Attribute{{Key: "code", Value: "3"}}}, "[3]"},
		{Query{Service: "svc1", Attributes: []Attribute{{Key: "exception.type", Value: "E1"}}}, "[1]"},
		{Query{Attributes: []Attribute{{Key: "exception.type", Value: "E3"}}}, "[3]"},
		{Query{Attributes: []Attribute{{Key: "host", Value: "h1"}}}, "[1 3]"},
		{Query{Service: "svc1", Attributes: []Attribute{{Key: "zone", Value: "z1"}}}, "[1 3]"},
		{Query{Attributes: []Attribute{{Key: "zone", Value: "z0"}}}, "[2]"},
	} {
		c.q.Limit = 10
		if got := lastIDBytes(t, db, c.q); fmt.Sprint(got) != c.want {
			t.Errorf("%+v after upgrade: traces %v, want %s", c.q.Attributes, got, c.want)
		}
	}
}

// rowsVersion2 rewrites a rows record as cairn before format version 5
// wrote it: version 2, each row's min start coded from the newest, and its
// errors and split flag apart.
func rowsVersion2(t *testing.T, rec []byte) []byte {
	t.Helper()
	rows, err := index.DecodeRows(rec)
	if err != nil {
		t.Fatal(err)
	}
	// The header up to the offsets is the same.
	r := bytes.NewReader(rec[1:])
	n, _ := binary.ReadUvarint(r)
	newest, _ := binary.ReadUvarint(r)
	nsvc, _ := binary.ReadUvarint(r)
	for range nsvc {
		r.Seek(8, io.SeekCurrent)
		binary.ReadUvarint(r)
	}
	out := append([]byte{2}, rec[1:len(rec)-r.Len()]...)
	var body, offsets []byte
	for i, row := range rows {
		if i%32 == 0 {
			offsets = binary.LittleEndian.AppendUint32(offsets, uint32(len(body)))
		}
		body = append(body, row.TraceID[:]...)
		body = binary.AppendUvarint(body, newest-row.MinStart)
		body = binary.AppendUvarint(body, row.MaxStart-row.MinStart)
		body = binary.AppendVarint(body, int64(row.MaxEnd-row.MinStart))
		body = binary.AppendUvarint(body, uint64(row.Spans))
		body = binary.AppendUvarint(body, uint64(row.Errors))
		split := byte(0)
		if row.Split {
			split = 1
		}
		body = append(body, split)
	}
	if uint64(len(rows)) != n {
		t.Fatalf("%d rows, header says %d", len(rows), n)
	}
	return append(append(out, offsets...), body...)
}

// lastIDBytes returns the last byte of the ID of each trace that q finds,
// sorted: tests name their traces by it.
func lastIDBytes(t *testing.T, db *DB, q Query) []byte {
	t.Helper()
	found, err := db.Find(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var ids []byte
	for _, f := range found {
		ids = append(ids, f.ID[15])
	}
	slices.Sort(ids)
	return ids
}

// storedResourceAttrs lists the resource attribute keys (0x24) of a store.
func storedResourceAttrs(t *testing.T, db *DB) string {
	it, err := db.idx.NewIter(keys.KindRange(keys.KindResourceAttr))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, fmt.Sprintf("%x", it.Key()))
	}
	return strings.Join(out, "\n")
}

// resourceAttrsOfDict lists the resource attribute keys that the resources
// of a store's dictionary have.
func resourceAttrsOfDict(t *testing.T, db *DB) string {
	it, err := db.idx.NewIter(keys.KindRange(keys.KindResource))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	var h index.Hasher
	for ok := it.First(); ok; ok = it.Next() {
		d, err := codec.DecodeDict(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		for _, term := range resourceTerms(&h, d.Raw) {
			out = append(out, fmt.Sprintf("%x", keys.ResourceAttr(uint64(term), dictID(it.Key()[1:]))))
		}
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), "\n")
}

// TestHasAnyAgainstScan checks hasAny, with its filter of term bits, against
// a scan of every term of a trace, for traces of one to many runs and
// queries of one term and of many, half of them holding a term the trace
// has.
func TestHasAnyAgainstScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	// Terms that share low or high bits, as attribute buckets and duration
	// shards do, beside random ones.
	term := func() index.Term {
		switch rng.IntN(3) {
		case 0:
			return index.Term(rng.Uint64N(64) << 56)
		case 1:
			return index.Term(rng.Uint64N(64))
		}
		return index.Term(rng.Uint64())
	}
	for range 2000 {
		var tr traceState
		var all []index.Term
		for range 1 + rng.IntN(4) {
			run := make([]index.Term, 1+rng.IntN(40))
			for i := range run {
				run[i] = term()
			}
			slices.Sort(run)
			run = slices.Compact(run)
			tr.addTerms(run)
			all = append(all, run...)
		}
		q := make([]index.Term, 1+rng.IntN(30))
		for i := range q {
			q[i] = term()
		}
		if rng.IntN(2) == 0 {
			q[rng.IntN(len(q))] = all[rng.IntN(len(all))]
		}
		slices.Sort(q)
		q = slices.Compact(q)
		want := slices.ContainsFunc(q, func(x index.Term) bool { return slices.Contains(all, x) })
		if got := tr.hasAny(q); got != want {
			t.Fatalf("hasAny(%x) = %v for terms %x", q, got, all)
		}
	}
}

// TestAgedOutSpansNeverMatch writes a trace with a span of service a that is
// about to age out of retention and one of service b within it, and
// searches for service a once it has: live or cut, the trace must not be
// found, as no span of a is left.
func TestAgedOutSpansNeverMatch(t *testing.T) {
	for _, cut := range []bool{false, true} {
		clk := &clock{t: time.Now().Truncate(time.Hour).Add(30 * time.Minute)}
		db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		now := uint64(clk.now().UnixNano())
		old := now - uint64(db.opts.Retention) + uint64(time.Minute)
		req := &collectorpb.ExportTraceServiceRequest{}
		for i, sp := range []struct {
			service    string
			start, end uint64
		}{{"a", old, old + 1000}, {"b", now - uint64(10*time.Minute), now}} {
			req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
				Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: strV(sp.service)}}},
				ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{0: 1, 15: 1}, SpanId: []byte{7: byte(i + 1)},
					Name: "op", StartTimeUnixNano: sp.start, EndTimeUnixNano: sp.end}}}},
			})
		}
		raw, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		writeAt(t, db, raw)
		if cut {
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
		}
		clk.add(2 * time.Minute)
		for service, want := range map[string]int{"a": 0, "b": 1} {
			got, err := db.Find(context.Background(), Query{Service: service, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != want {
				t.Errorf("cut %v: service %s finds %d traces, want %d", cut, service, len(got), want)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSearchLiveAgainstScan checks that searchLive, which stops reading the
// buffers' arrival chunks once the rest cannot hold newer matches, answers
// as a look at every live trace does: the matches in newest-first order, up
// to the limit-th trace, with the same extents. Start times run against
// arrival order by up to an hour, so that chunks' bounds interleave and some
// traces span two partitions; they fall on whole minutes, so that starts
// tie; and traces recur in both buffers, live and frozen, with different
// ends.
func TestSearchLiveAgainstScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	resources := newResourceIndex()
	bufs := []*buffer{newBuffer(2), newBuffer(1)}
	services := []string{"api", "cart", "db"}
	base := uint64(time.Now().Add(-3 * time.Hour).Truncate(time.Hour).UnixNano())
	const batches, perBatch = 20, 150
	for b := range batches {
		req := &collectorpb.ExportTraceServiceRequest{}
		for _, svc := range services {
			rs := &tracepb.ResourceSpans{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
				{Key: "service.name", Value: strV(svc)}}}}
			ss := &tracepb.ScopeSpans{}
			for range perBatch / len(services) {
				var tid TraceID
				binary.BigEndian.PutUint64(tid[8:], uint64(rng.IntN(batches*perBatch/2))) // traces recur
				// Arrival order, give or take up to an hour.
				start := base + uint64(b)*uint64(5*time.Minute) + uint64(rng.IntN(60))*uint64(time.Minute)
				sp := &tracepb.Span{TraceId: tid[:], SpanId: binary.BigEndian.AppendUint64(nil, rng.Uint64()|1),
					Name: []string{"GET", "POST"}[rng.IntN(2)], StartTimeUnixNano: start,
					EndTimeUnixNano: start + uint64(rng.IntN(1000))*uint64(time.Millisecond)}
				if rng.IntN(3) == 0 {
					sp.Attributes = []*commonpb.KeyValue{{Key: "a", Value: strV(fmt.Sprint(rng.IntN(4)))}}
				}
				ss.Spans = append(ss.Spans, sp)
			}
			rs.ScopeSpans = []*tracepb.ScopeSpans{ss}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		raw, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var batch otlpwire.Batch
		if err := otlpwire.Parse(raw, &batch, otlpwire.Window{}); err != nil {
			t.Fatal(err)
		}
		prep := prepare(&batch, resources)
		bufs[b*2/batches].insert(&batch, prep) // the older half went to the frozen buffer
		prep.release()
	}
	var chunks []arrivals
	for _, buf := range bufs {
		chunks = buf.byID.appendArrivals(chunks)
	}
	if len(chunks) < 4 {
		t.Fatalf("%d arrival chunks; the test wants several", len(chunks))
	}
	// Spans of the first ten minutes have aged out.
	notBefore := base + uint64(10*time.Minute)

	// scan is searchLive as a look at every trace: all candidates, in order.
	scan := func(c *compiled) []Found {
		var cands []liveCandidate
		for _, ch := range chunks {
			for i := range ch.states {
				cands = c.candidates(cands, ch.states[i].Load(), notBefore)
			}
		}
		slices.SortFunc(cands, func(a, b liveCandidate) int { return newestFirst(&a, &b) })
		res := &results{byID: map[TraceID]int{}}
		for i := range cands {
			if len(res.list) >= c.limit {
				break
			}
			if c.overlaps(cands[i].start, cands[i].maxStart) && c.verifyLive(&cands[i], notBefore) {
				res.add(cands[i].id, cands[i].start, cands[i].end)
			}
		}
		return res.list
	}
	full := 0
	for i := range 400 {
		q := Query{Limit: []int{1, 2, 3, 20, 100, 5000}[rng.IntN(6)]}
		if rng.IntN(4) > 0 {
			q.Service = services[rng.IntN(len(services))]
		}
		if rng.IntN(3) == 0 {
			q.Attributes = []Attribute{{Key: "a", Value: fmt.Sprint(rng.IntN(4))}}
		}
		if rng.IntN(3) == 0 {
			q.StartMin = time.Unix(0, int64(base+uint64(rng.Int64N(int64(2*time.Hour)))))
		}
		if rng.IntN(3) == 0 {
			q.StartMax = time.Unix(0, int64(base+uint64(rng.Int64N(int64(3*time.Hour)))))
		}
		c := compile(q, notBefore, services, resources)
		want := scan(c)
		res := &results{byID: map[TraceID]int{}}
		c.searchLive(bufs, notBefore, res)
		if !slices.Equal(res.list, want) {
			t.Fatalf("query %d %+v:\n got  %v\n want %v", i, q, res.list, want)
		}
		if len(want) == q.Limit {
			full++
		}
	}
	if full < 100 {
		t.Fatalf("only %d of 400 queries met their limit; the test wants early stops", full)
	}
}
