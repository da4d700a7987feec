package storage

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/storage/internal/keys"
)

// metricSpan is a generated span and what span metrics should make of it.
type metricSpan struct {
	trace   TraceID
	service string
	span    *tracepb.Span
}

func (s metricSpan) series() SpanSeries {
	return SpanSeries{Service: s.service, Name: s.span.Name, Kind: uint8(s.span.Kind), Status: uint8(s.span.GetStatus().GetCode())}
}

// generateSpans makes spans of random traces: services, names, kinds,
// status codes, start times over a few minutes and durations over many
// orders of magnitude.
func generateSpans(r *rand.Rand, base time.Time, traces int) []metricSpan {
	var out []metricSpan
	for ti := range traces {
		var id TraceID
		id[0], id[15] = byte(ti>>8)+1, byte(ti)
		for si := range 1 + r.IntN(12) {
			start := uint64(base.UnixNano()) + r.Uint64N(uint64(5*time.Minute))
			span := &tracepb.Span{
				TraceId: id[:], SpanId: []byte{0, 0, 0, 0, 0, byte(si), byte(ti >> 8), byte(ti) + 1},
				Name:              fmt.Sprintf("op%d", r.IntN(4)),
				Kind:              tracepb.Span_SpanKind(r.IntN(6)),
				StartTimeUnixNano: start,
				EndTimeUnixNano:   start + uint64(math.Exp(r.Float64()*math.Log(1e10))),
			}
			if c := r.IntN(3); c > 0 {
				span.Status = &tracepb.Status{Code: tracepb.Status_StatusCode(c)}
			}
			out = append(out, metricSpan{trace: id, service: fmt.Sprintf("svc%d", r.IntN(3)), span: span})
		}
	}
	return out
}

// encodeSpans makes one export request of spans, a resource per service.
func encodeSpans(t testing.TB, spans []metricSpan) []byte {
	t.Helper()
	byService := map[string]*tracepb.ResourceSpans{}
	req := &collectorpb.ExportTraceServiceRequest{}
	for _, s := range spans {
		rs := byService[s.service]
		if rs == nil {
			rs = &tracepb.ResourceSpans{
				Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
					Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s.service}}}}},
				ScopeSpans: []*tracepb.ScopeSpans{{}},
			}
			byService[s.service] = rs
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		rs.ScopeSpans[0].Spans = append(rs.ScopeSpans[0].Spans, s.span)
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

type seriesMinute struct {
	series SpanSeries
	minute uint64
}

// checkSpanMetrics compares span metrics in steps of step minutes from
// minute first with what the spans make: every count exact, every quantile
// within the histogram's bound, the exemplars the slowest of distinct
// traces.
func checkSpanMetrics(t *testing.T, got []SpanMetricsSeries, spans []metricSpan, first, step uint64) {
	t.Helper()
	want := map[seriesMinute][]metricSpan{}
	for _, s := range spans {
		m := s.span.StartTimeUnixNano / minuteNanos
		k := seriesMinute{s.series(), m - (m-first)%step}
		want[k] = append(want[k], s)
	}
	seen := 0
	for _, gs := range got {
		for i := range gs.Minutes {
			m := &gs.Minutes[i]
			k := seriesMinute{gs.SpanSeries, m.Minute}
			ws, ok := want[k]
			if !ok {
				t.Fatalf("series %+v minute %d: not in the model", gs.SpanSeries, m.Minute)
			}
			seen++
			checkMinute(t, k, m, ws)
		}
	}
	if seen != len(want) {
		t.Fatalf("%d series minutes, model has %d", seen, len(want))
	}
}

func checkMinute(t *testing.T, k seriesMinute, m *SpanMinute, spans []metricSpan) {
	t.Helper()
	durations := make([]uint64, len(spans))
	slowest := map[TraceID]uint64{}
	var sum uint64
	for i, s := range spans {
		durations[i] = s.span.EndTimeUnixNano - s.span.StartTimeUnixNano
		sum += durations[i]
		slowest[s.trace] = max(slowest[s.trace], durations[i])
	}
	if m.Latency.Count() != uint64(len(spans)) || m.Latency.Sum() != sum {
		t.Fatalf("%+v: %d calls summing %d ns, want %d summing %d", k, m.Latency.Count(), m.Latency.Sum(), len(spans), sum)
	}
	slices.Sort(durations)
	for _, q := range []float64{0.5, 0.95, 0.99, 1} {
		exact := float64(durations[max(1, int(math.Ceil(q*float64(len(durations)))))-1])
		if got := m.Latency.Quantile(q); math.Abs(got-exact) > exact/128 {
			t.Fatalf("%+v: q%v = %v, exact %v", k, q, got, exact)
		}
	}
	var top []uint64
	for _, d := range slowest {
		top = append(top, d)
	}
	slices.SortFunc(top, func(a, b uint64) int { return cmp.Compare(b, a) })
	top = top[:min(len(top), MaxExemplars)]
	for i, e := range m.Slowest {
		if i >= len(top) || e.Duration != top[i] || slowest[e.TraceID] != e.Duration {
			t.Fatalf("%+v: exemplars %v, want durations %v", k, m.Slowest, top)
		}
	}
	if len(m.Slowest) != len(top) {
		t.Fatalf("%+v: %d exemplars, want %d", k, len(m.Slowest), len(top))
	}
}

// TestSpanMetricsAgainstModel sends the spans of random traces shuffled
// across many requests, cut into several blocks, with a crash that leaves
// some in the write-ahead log to be replayed and a clean reopen: span
// metrics count every span exactly once.
func TestSpanMetricsAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	spans := generateSpans(r, base, 150)
	r.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })

	dir := t.TempDir()
	opts := &Options{FlushInterval: time.Hour}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	const requests = 40
	for i := range requests {
		write(t, db, encodeSpans(t, spans[i*len(spans)/requests:(i+1)*len(spans)/requests]))
		switch i {
		case 9, 17, 25:
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
		case 21:
			crash(t, db) // requests 18-21 are replayed
			if db, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
		case 30:
			db = reopen(t, db, dir, opts)
		}
	}
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: base.Add(-time.Hour), To: base.Add(time.Hour), Step: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	checkSpanMetrics(t, got, spans, 0, 1)

	// A window and a filter narrow it to their minutes and series, and
	// steps merge minutes.
	from, to := base.Add(time.Minute), base.Add(4*time.Minute)
	got, err = db.SpanMetrics(context.Background(), SpanMetricsQuery{From: from, To: to, Step: 2 * time.Minute, Service: "svc1"})
	if err != nil {
		t.Fatal(err)
	}
	var narrowed []metricSpan
	for _, s := range spans {
		if start := time.Unix(0, int64(s.span.StartTimeUnixNano)); s.service == "svc1" && !start.Before(from) && start.Before(to) {
			narrowed = append(narrowed, s)
		}
	}
	checkSpanMetrics(t, got, narrowed, uint64(from.Unix()/60), 2)
}

// TestSpanMetricsBoundSeries counts spans past the bound on series into
// overflow series, by status code, losing none.
func TestSpanMetricsBoundSeries(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	spans := generateSpans(r, base, 60)
	db, err := Open(t.TempDir(), &Options{FlushInterval: time.Hour, SpanMetricsMaxSeries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	write(t, db, encodeSpans(t, spans[:len(spans)/2]))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	write(t, db, encodeSpans(t, spans[len(spans)/2:]))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: base.Add(-time.Hour), To: base.Add(time.Hour), Step: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var calls, overflowed, named uint64
	byStatus := map[uint8]uint64{}
	for _, s := range got {
		for i := range s.Minutes {
			n := s.Minutes[i].Latency.Count()
			calls += n
			byStatus[s.Status] += n
			if s.Overflow {
				overflowed += n
			}
		}
		if !s.Overflow {
			named++
		}
	}
	if calls != uint64(len(spans)) || named != 5 || overflowed == 0 {
		t.Fatalf("%d calls in %d named series, %d overflowed; want %d calls in 5 named series, some overflowed", calls, named, overflowed, len(spans))
	}
	for st, n := range byStatus {
		var want uint64
		for _, s := range spans {
			if uint8(s.span.GetStatus().GetCode()) == st {
				want++
			}
		}
		if n != want {
			t.Fatalf("status %d: %d calls, want %d", st, n, want)
		}
	}
}

// totalCalls is the calls of every series and minute.
func totalCalls(t *testing.T, db *DB, from, to time.Time) uint64 {
	t.Helper()
	got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: from, To: to, Step: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, s := range got {
		for i := range s.Minutes {
			n += s.Minutes[i].Latency.Count()
		}
	}
	return n
}

// TestSpanMetricsFollowRetention drops span metrics with their partition,
// and counts within the retention period only.
func TestSpanMetricsFollowRetention(t *testing.T) {
	clk := &clock{t: time.Now()}
	db, err := Open(t.TempDir(), &Options{Retention: 3 * time.Hour, Now: clk.now, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old := clk.now().Add(-2 * time.Hour).Truncate(time.Hour) // 2 to 3 hours ago
	var spans []metricSpan
	for i, start := range []time.Time{old.Add(time.Minute), clk.now()} {
		ns := uint64(start.UnixNano())
		spans = append(spans, metricSpan{trace: TraceID{15: byte(i + 1)}, service: "svc",
			span: &tracepb.Span{TraceId: []byte{15: byte(i + 1)}, SpanId: []byte{7: 1}, Name: "op", StartTimeUnixNano: ns, EndTimeUnixNano: ns + 1}})
	}
	writeAt(t, db, encodeSpans(t, spans))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	from, to := old.Add(-time.Hour), old.Add(6*time.Hour)
	if n := totalCalls(t, db, from, to); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	clk.add(2 * time.Hour) // the first span's partition ages out
	if err := db.enforceRetention(); err != nil {
		t.Fatal(err)
	}
	if n := totalCalls(t, db, from, to); n != 1 {
		t.Fatalf("%d calls after the drop, want 1", n)
	}
	it, err := db.idx.NewIter(keys.KindRange(keys.KindAggregate))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	kept := 0
	for ok := it.First(); ok; ok = it.Next() {
		if p := binary.BigEndian.Uint32(it.Key()[1:]); p == partitionOf(uint64(old.UnixNano())) {
			t.Fatalf("aggregate key %x of the dropped partition survived", it.Key())
		}
		kept++
	}
	if kept != 2 {
		t.Fatalf("%d aggregate keys left, want the other partition's two (its service's shard, the totals)", kept)
	}
}

// TestUpgradeFromFormat5 opens a store of version 5, which has no
// aggregates: it becomes version 6 and its new blocks have span metrics.
func TestUpgradeFromFormat5(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.idx.Set(keys.Meta("format"), []byte{5}, nil); err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, dir, &Options{FlushInterval: time.Hour})
	if v, closer, err := db.idx.Get(keys.Meta("format")); err != nil || v[0] != FormatVersion {
		t.Fatalf("format after upgrade: %v, %v", v, err)
	} else {
		closer.Close()
	}
	start := time.Now().Add(-time.Minute)
	ns := uint64(start.UnixNano())
	write(t, db, encodeSpans(t, []metricSpan{{trace: TraceID{15: 1}, service: "svc",
		span: &tracepb.Span{TraceId: []byte{15: 1}, SpanId: []byte{7: 1}, Name: "op", StartTimeUnixNano: ns, EndTimeUnixNano: ns + 1}}}))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	if n := totalCalls(t, db, start.Add(-time.Hour), start.Add(time.Hour)); n != 1 {
		t.Fatalf("%d calls, want 1", n)
	}
}

// TestSpanMetricsByServiceBound reads span metrics by service with a bound
// of as many series as there are services, fewer than their series by
// status code: each service comes once a status code, with all of its
// calls, rather than in part in an overflow series of its own or of no
// service. Past the bound, services go into the overflow.
func TestSpanMetricsByServiceBound(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	spans := generateSpans(r, base, 80)
	dir := t.TempDir()
	db := reopen(t, cutSpans(t, dir, spans), dir, &Options{FlushInterval: time.Hour, SpanMetricsMaxSeries: 3})
	defer db.Close()
	got := readByService(t, db, base)
	type key struct {
		service string
		status  uint8
	}
	want := map[key]uint64{}
	for _, s := range spans {
		want[key{s.service, uint8(s.span.GetStatus().GetCode())}]++
	}
	have := map[key]uint64{}
	for _, s := range got {
		k := key{s.Service, s.Status}
		if s.Overflow {
			t.Errorf("series %+v overflowed", s.SpanSeries)
		}
		if _, dup := have[k]; dup {
			t.Errorf("%s, status %d, comes twice", k.service, k.status)
		}
		for i := range s.Minutes {
			have[k] += s.Minutes[i].Latency.Count()
		}
	}
	if len(want) <= 3 || !maps.Equal(have, want) {
		t.Errorf("calls by service and status %v, want %v (more series than the bound's 3)", have, want)
	}

	// Past as many services as the bound, the least called go into the
	// overflow of no service, each status code's.
	db = reopen(t, db, dir, &Options{FlushInterval: time.Hour, SpanMetricsMaxSeries: 1})
	got = readByService(t, db, base)
	byService := map[string]uint64{}
	for _, s := range spans {
		byService[s.service]++
	}
	busiest := slices.MaxFunc(slices.Collect(maps.Keys(byService)), func(a, b string) int { return cmp.Compare(byService[a], byService[b]) })
	services := map[string]bool{}
	var rest uint64
	for _, s := range got {
		for i := range s.Minutes {
			if s.Overflow {
				rest += s.Minutes[i].Latency.Count()
			}
		}
		if s.Overflow != (s.Service == "") {
			t.Errorf("series %+v", s.SpanSeries)
		}
		if !s.Overflow {
			services[s.Service] = true
		}
	}
	if len(services) != 1 || !services[busiest] || rest != uint64(len(spans))-byService[busiest] {
		t.Errorf("services %v, %d calls of others in the overflow; want %s alone, %d", services, rest, busiest, uint64(len(spans))-byService[busiest])
	}
}

// TestSpanMetricsByServiceUnnamed: spans whose resource names no service
// are a service of their own in an answer by service, not the overflow of
// no service.
func TestSpanMetricsByServiceUnnamed(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	spans := generateSpans(r, base, 40)
	want := map[string]uint64{}
	for i := range spans {
		if spans[i].service == "svc0" {
			spans[i].service = ""
		}
		want[spans[i].service]++
	}
	dir := t.TempDir()
	db := cutSpans(t, dir, spans)
	have := map[string]uint64{}
	for _, s := range readByService(t, db, base) {
		if s.Overflow {
			t.Errorf("series %+v overflowed", s.SpanSeries)
		}
		for i := range s.Minutes {
			have[s.Service] += s.Minutes[i].Latency.Count()
		}
	}
	if want[""] == 0 || !maps.Equal(have, want) {
		t.Errorf("calls by service %v, want %v", have, want)
	}

	// Past a bound of one service, whichever the unnamed one is, every
	// call is counted once.
	db = reopen(t, db, dir, &Options{FlushInterval: time.Hour, SpanMetricsMaxSeries: 1})
	defer db.Close()
	var calls uint64
	for _, s := range readByService(t, db, base) {
		for i := range s.Minutes {
			calls += s.Minutes[i].Latency.Count()
		}
	}
	if calls != uint64(len(spans)) {
		t.Errorf("%d calls past the bound, want %d", calls, len(spans))
	}
}

// cutSpans opens a store in dir and cuts spans into it.
func cutSpans(t *testing.T, dir string, spans []metricSpan) *DB {
	t.Helper()
	db, err := Open(dir, &Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	write(t, db, encodeSpans(t, spans))
	if err := db.cut(); err != nil {
		t.Fatal(err)
	}
	return db
}

// readByService reads span metrics by service over the two hours around
// base, as one step.
func readByService(t *testing.T, db *DB, base time.Time) []SpanMetricsSeries {
	t.Helper()
	got, err := db.SpanMetrics(context.Background(), SpanMetricsQuery{From: base.Add(-time.Hour), To: base.Add(time.Hour), Step: 2 * time.Hour, ByService: true})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
