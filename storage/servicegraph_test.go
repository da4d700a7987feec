package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/internal/histogram"
	"cairn/internal/otlpwire"
)

type graphSpan struct {
	span    *tracepb.Span
	service string
	peer    string
	cut     int // the cut it arrives before
}

// graphModel is the brute-force service graph of spans that arrive in
// cuts at times at: a span and its parent pair if their cuts are less than
// window apart; an unanswered client or producer naming its peer is a
// virtual edge.
func graphModel(traces [][]*graphSpan, at []time.Time, window time.Duration) map[string][2]uint64 {
	out := map[string][2]uint64{}
	within := func(a, b *graphSpan) bool {
		d := at[a.cut].Sub(at[b.cut])
		return d < window && -d < window
	}
	count := func(k string, s *tracepb.Span) {
		v := out[k]
		v[0]++
		if s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			v[1]++
		}
		out[k] = v
	}
	for _, tr := range traces {
		for _, c := range tr {
			for _, p := range tr {
				if string(p.span.SpanId) == string(c.span.ParentSpanId) && p.service != c.service && within(p, c) {
					count(p.service+"->"+c.service, c.span)
				}
			}
			if c.peer == "" {
				continue
			}
			answered := false
			for _, ch := range tr {
				if string(ch.span.ParentSpanId) == string(c.span.SpanId) && ch.service != c.service && within(ch, c) {
					answered = true
				}
			}
			if !answered {
				count(c.service+"->"+c.peer+" (virtual)", c.span)
			}
		}
	}
	return out
}

func genGraphTraces(rng *rand.Rand, n, cuts int, start time.Time) [][]*graphSpan {
	services := []string{"web", "orders", "payments", "stock"}
	peers := map[string]string{"peer.service": "billing", "db.system": "postgresql", "messaging.system": "kafka"}
	var out [][]*graphSpan
	for range n {
		tid := make([]byte, 16)
		binary.BigEndian.PutUint64(tid, rng.Uint64()|1)
		base := rng.IntN(cuts)
		var tr []*graphSpan
		for i := range 1 + rng.IntN(12) {
			s := &tracepb.Span{TraceId: tid, SpanId: binary.BigEndian.AppendUint64(nil, rng.Uint64()|1), Name: "op",
				Kind:              tracepb.Span_SpanKind(rng.IntN(6)),
				StartTimeUnixNano: uint64(start.Add(time.Duration(rng.IntN(120)) * time.Second).UnixNano())}
			s.EndTimeUnixNano = s.StartTimeUnixNano + uint64(rng.IntN(1e9))
			if rng.IntN(8) == 0 {
				s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
			}
			g := &graphSpan{span: s, service: services[rng.IntN(len(services))],
				cut: min(cuts-1, max(0, base+rng.IntN(5)-2))}
			if i > 0 {
				p := tr[rng.IntN(i)]
				s.ParentSpanId = p.span.SpanId
				if rng.IntN(2) == 0 {
					g.service = p.service
				}
			}
			if (s.Kind == tracepb.Span_SPAN_KIND_CLIENT || s.Kind == tracepb.Span_SPAN_KIND_PRODUCER) && rng.IntN(2) == 0 {
				for k, v := range peers {
					s.Attributes = []*commonpb.KeyValue{{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}}
					g.peer = v
					break
				}
			}
			tr = append(tr, g)
		}
		out = append(out, tr)
	}
	return out
}

// exportRequests encodes the spans that arrive before cut i as a few
// requests, each span alone in a resource of its service, in random order.
func exportRequests(rng *rand.Rand, traces [][]*graphSpan, i int) [][]byte {
	var spans []*graphSpan
	for _, tr := range traces {
		for _, s := range tr {
			if s.cut == i {
				spans = append(spans, s)
			}
		}
	}
	rng.Shuffle(len(spans), func(a, b int) { spans[a], spans[b] = spans[b], spans[a] })
	var reqs [][]byte
	for len(spans) > 0 {
		n := min(len(spans), 1+rng.IntN(20))
		req := &collectorpb.ExportTraceServiceRequest{}
		for _, s := range spans[:n] {
			req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
				Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
					Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s.service}}}}},
				ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{s.span}}},
			})
		}
		b, err := proto.Marshal(req)
		if err != nil {
			panic(err)
		}
		reqs = append(reqs, b)
		spans = spans[n:]
	}
	return reqs
}

// TestServiceGraphMatchesModel stores generated traces whose spans arrive
// shuffled over many requests and cuts, with a restart among them (a
// graceful stop, or a crash whose last requests the log gives back), and
// checks every edge's calls and errors against the brute-force model.
func TestServiceGraphMatchesModel(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 12))
			const cuts = 12
			window := 5 * time.Minute
			clk := &clock{t: time.Now().Truncate(time.Hour)}
			start := clk.now()
			at := make([]time.Time, cuts+1)
			for i := range at {
				at[i] = start.Add(time.Duration(i) * 2 * time.Minute)
			}
			traces := genGraphTraces(rng, 150, cuts, start)
			dir := t.TempDir()
			open := func() *DB {
				// Recompression's merges are made by mergeAll before each
				// restart instead of when the maintainer's tick falls.
				db, err := Open(dir, &Options{FlushInterval: time.Hour, Now: clk.now, PairingWindow: window, RecompressAfter: -1})
				if err != nil {
					t.Fatal(err)
				}
				return db
			}
			db := open()
			restart := 2 + rng.IntN(cuts-4)
			for i := range cuts {
				clk.set(at[i])
				for _, req := range exportRequests(rng, traces, i) {
					write(t, db, req)
				}
				if i == restart {
					// Merged fragments hold spans of earlier cuts, which
					// the replay after the restart must pair with theirs.
					mergeAll(t, db)
				}
				if i == restart && seed%2 == 0 {
					// A graceful stop cuts the live buffer.
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
					db = open()
				}
				if i == restart && seed%2 == 1 {
					// After a crash the live buffer's spans are replayed
					// from the log and cut at once, by the flusher.
					crash(t, db)
					db = open()
					waitCut(t, db)
				}
				if err := db.cut(); err != nil {
					t.Fatal(err)
				}
			}
			// With no more spans, a cut once the last window has passed lets
			// the last clients go, as the flusher makes it; and the counts
			// hold across a restart after it, whose replay takes that cut.
			clk.set(at[cuts-1].Add(window))
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
			mergeAll(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db = open()
			clk.set(at[cuts-1].Add(3 * window))
			if err := db.cut(); err != nil {
				t.Fatal(err)
			}
			defer db.Close()

			edges, err := db.ServiceGraph(context.Background(), start, start.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			// Ordered by parent, child, the virtual edge after the real one.
			if !slices.IsSortedFunc(edges, func(a, b Edge) int {
				return cmp.Or(cmp.Compare(a.Parent, b.Parent), cmp.Compare(a.Child, b.Child), compareBool(a.Virtual, b.Virtual))
			}) {
				t.Errorf("edges out of order: %v", edges)
			}
			got := map[string][2]uint64{}
			for _, e := range edges {
				k := e.Parent + "->" + e.Child
				if e.Virtual {
					k += " (virtual)"
				}
				got[k] = [2]uint64{e.Calls, e.Errors}
				if e.Latency.Count() != e.Calls {
					t.Errorf("%s: %d latencies, %d calls", k, e.Latency.Count(), e.Calls)
				}
			}
			want := graphModel(traces, at, window)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("edges (calls, errors):\n got %v\nwant %v", got, want)
			}
			// Dependencies are the same edges, counted without latencies.
			deps, err := db.Dependencies(context.Background(), start, start.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			for i := range edges {
				edges[i].Latency = histogram.Histogram{}
			}
			if !reflect.DeepEqual(deps, edges) {
				t.Errorf("dependencies:\n got %+v\nwant %+v", deps, edges)
			}
			if len(want) < 10 {
				t.Errorf("only %d edges: the test pairs too little", len(want))
			}
		})
	}
}

// mergeAll merges the fragments of every trace split across blocks, as
// recompression does before it rewrites them.
func mergeAll(t *testing.T, db *DB) {
	t.Helper()
	db.mu.Lock()
	parts := maps.Clone(db.partitions)
	db.mu.Unlock()
	db.maintMu.Lock()
	defer db.maintMu.Unlock()
	for p, newest := range parts {
		if _, err := db.mergeFragments(context.Background(), p, 1, newest); err != nil {
			t.Fatal(err)
		}
	}
}

// waitCut waits for the flusher to have cut what the live buffer holds.
func waitCut(t *testing.T, db *DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		db.mu.Lock()
		done := db.live.spans == 0 && db.frozen == nil
		db.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the replayed spans were not cut within 10s")
		}
	}
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// TestPeerIsTheSpansOwn writes a client span that names its peer by
// server.address, with an event that carries peer.service, and pairs it
// once in one run and once across a restart: either way the call goes to
// the address, as an event's attributes are not the span's.
func TestPeerIsTheSpansOwn(t *testing.T) {
	strKV := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: strV(v)}
	}
	graph := func(restart bool) string {
		clk := &clock{t: time.Now().Truncate(time.Minute)}
		start := clk.now().Add(-time.Minute)
		dir := t.TempDir()
		opts := &Options{FlushInterval: time.Hour, Now: clk.now, PairingWindow: 5 * time.Minute}
		db, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		ns := uint64(start.UnixNano())
		client := &tracepb.Span{TraceId: []byte{15: 1}, SpanId: []byte{7: 1}, Name: "GET",
			Kind: tracepb.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: ns, EndTimeUnixNano: ns + 1e6,
			Attributes: []*commonpb.KeyValue{strKV("server.address", "10.0.0.7")},
			Events:     []*tracepb.Span_Event{{Name: "retry", TimeUnixNano: ns, Attributes: []*commonpb.KeyValue{strKV("peer.service", "billing")}}}}
		write(t, db, encodeSpans(t, []metricSpan{{trace: TraceID{15: 1}, service: "web", span: client}}))
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
		if restart {
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if db, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
		}
		defer db.Close()
		// Past the pairing window, the next cut lets the client go.
		clk.add(6 * time.Minute)
		later := uint64(clk.now().Add(-time.Second).UnixNano())
		other := &tracepb.Span{TraceId: []byte{15: 2}, SpanId: []byte{7: 2}, Name: "op", StartTimeUnixNano: later, EndTimeUnixNano: later + 1e6}
		write(t, db, encodeSpans(t, []metricSpan{{trace: TraceID{15: 2}, service: "other", span: other}}))
		if err := db.cut(); err != nil {
			t.Fatal(err)
		}
		edges, err := db.ServiceGraph(context.Background(), start.Add(-time.Hour), start.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for _, e := range edges {
			out += fmt.Sprintf("%s->%s virtual=%v calls=%d; ", e.Parent, e.Child, e.Virtual, e.Calls)
		}
		return out
	}
	const want = "web->10.0.0.7 virtual=true calls=1; "
	if live, restarted := graph(false), graph(true); live != want || restarted != want {
		t.Fatalf("service graph %q in one run, %q across a restart; want %q both ways", live, restarted, want)
	}
}

// TestFindPeerMatchesPeerOf checks that ingest, which finds a span's peer
// among the attributes Parse recorded, names the peer that peerOf finds in
// the span's bytes (as a span read back after a restart is paired): over
// random spans of every kind whose own attributes and events' attributes
// repeat the peer keys with string, empty, bytes and int values.
func TestFindPeerMatchesPeerOf(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	keys := append(slices.Clone(peerAttributes), "http.route", "peer")
	value := func() *commonpb.AnyValue {
		switch rng.IntN(5) {
		case 0:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{}}
		case 1:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte("bytes")}}
		case 2:
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprint("v", rng.IntN(100))}}
	}
	attrs := func() []*commonpb.KeyValue {
		var kvs []*commonpb.KeyValue
		for range rng.IntN(5) {
			kvs = append(kvs, &commonpb.KeyValue{Key: keys[rng.IntN(len(keys))], Value: value()})
		}
		return kvs
	}
	named := 0
	for range 200 {
		var spans []*tracepb.Span
		for range 20 {
			s := &tracepb.Span{TraceId: binary.BigEndian.AppendUint64(make([]byte, 8), rng.Uint64()|1),
				SpanId: binary.BigEndian.AppendUint64(nil, rng.Uint64()|1), Name: "op", Kind: tracepb.Span_SpanKind(rng.IntN(6)),
				StartTimeUnixNano: 1_700_000_000_000_000_000, EndTimeUnixNano: 1_700_000_000_001_000_000, Attributes: attrs()}
			for range rng.IntN(3) {
				s.Events = append(s.Events, &tracepb.Span_Event{Name: "e", Attributes: attrs()})
			}
			spans = append(spans, s)
		}
		req, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
		if err != nil {
			t.Fatal(err)
		}
		var b otlpwire.Batch
		if err := otlpwire.Parse(req, &b, otlpwire.Window{}); err != nil {
			t.Fatal(err)
		}
		for i := range b.Spans {
			s := &b.Spans[i]
			var want []byte
			if k := spanKind(s.Kind); k == kindClient || k == kindProducer {
				want = peerOf(s.Raw)
			}
			if got := findPeer(s, b.SpanAttrs(s)).Of(s.Raw); !bytes.Equal(got, want) {
				t.Fatalf("span %x: found peer %q, peerOf %q", s.SpanID, got, want)
			}
			if want != nil {
				named++
			}
		}
	}
	if named == 0 {
		t.Fatal("no span named a peer")
	}
}
