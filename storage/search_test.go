package storage

import (
	"context"
	"encoding/binary"
	"fmt"
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

	"cairn/internal/otlpwire"
)

// modelSpan is a span as the brute-force model sees it.
type modelSpan struct {
	trace      TraceID
	service    string
	name       string
	start, end uint64
	err        bool
	attrs      map[string]*commonpb.AnyValue // span and resource attributes
}

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
		if a.Key == "error" && a.Type == otlpwire.BoolValue {
			if !m.err {
				return false
			}
			continue
		}
		v, ok := m.attrs[a.Key]
		if !ok {
			return false
		}
		t, canon := canonical(v)
		if t != a.Type || string(canon) != string(a.Value) {
			return false
		}
	}
	return true
}

// canonical is the model's own encoding of an attribute value, written from
// the documented canonical form rather than shared with the code under test.
func canonical(v *commonpb.AnyValue) (otlpwire.ValueType, []byte) {
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		return otlpwire.StringValue, []byte(x.StringValue)
	case *commonpb.AnyValue_BoolValue:
		if x.BoolValue {
			return otlpwire.BoolValue, []byte{1}
		}
		return otlpwire.BoolValue, []byte{0}
	case *commonpb.AnyValue_IntValue:
		return otlpwire.IntValue, binary.BigEndian.AppendUint64(nil, uint64(x.IntValue))
	case *commonpb.AnyValue_DoubleValue:
		return otlpwire.DoubleValue, binary.BigEndian.AppendUint64(nil, math.Float64bits(x.DoubleValue))
	}
	return 0, nil
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
	// Values drawn from small sets, so that queries hit; ints and strings
	// share spellings, so that types must be told apart.
	attrValue := func() *commonpb.AnyValue {
		switch rng.IntN(4) {
		case 0:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(rng.IntN(3))}}
		case 1:
			return strV(fmt.Sprint(rng.IntN(3)))
		case 2:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: rng.IntN(2) == 0}}
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
					attrs: map[string]*commonpb.AnyValue{"tier": strV(tier)}}
				for _, k := range []string{"a", "b"} {
					if rng.IntN(3) > 0 {
						v := attrValue()
						sp.Attributes = append(sp.Attributes, &commonpb.KeyValue{Key: k, Value: v})
						m.attrs[k] = v
					}
				}
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
				q.Attributes = append(q.Attributes, Attribute{Key: "error", Type: otlpwire.BoolValue, Value: []byte{1}})
			case 1:
				tp, v := canonical(strV(fmt.Sprint("t", rng.IntN(2))))
				q.Attributes = append(q.Attributes, Attribute{Key: "tier", Type: tp, Value: v})
			default:
				tp, v := canonical(attrValue())
				q.Attributes = append(q.Attributes, Attribute{Key: []string{"a", "b"}[rng.IntN(2)], Type: tp, Value: v})
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
