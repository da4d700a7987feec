package bench

import (
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/internal/otlpjson"
)

// TestPoolRounds checks that every round is valid OTLP with the first round's
// shape but IDs of its own, times shifted past the previous round's, and
// parents still pointing at spans of the same trace.
func TestPoolRounds(t *testing.T) {
	p, err := NewPool(Config{BatchSpans: 100, LargeTraceEvery: 50}, 3000)
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(p.Requests())
	seen := map[[8]byte]bool{}
	var buf []byte
	for round := range uint64(3) {
		spans := map[[8]byte]bool{}
		var parents [][8]byte
		for i := range n {
			seq := round*n + i
			buf = p.Request(buf, seq)
			var req collectorpb.ExportTraceServiceRequest
			if err := proto.Unmarshal(buf, &req); err != nil {
				t.Fatalf("round %d request %d: %v", round, i, err)
			}
			var first collectorpb.ExportTraceServiceRequest
			if err := proto.Unmarshal(p.reqs[i].bytes, &first); err != nil {
				t.Fatal(err)
			}
			count := 0
			for ri, rs := range req.ResourceSpans {
				for si, ss := range rs.ScopeSpans {
					for k, s := range ss.Spans {
						f := first.ResourceSpans[ri].ScopeSpans[si].Spans[k]
						count++
						if s.Name != f.Name || len(s.Attributes) != len(f.Attributes) {
							t.Fatalf("round %d changed span content", round)
						}
						if want := TraceIDIn([16]byte(f.TraceId), round); [16]byte(s.TraceId) != want {
							t.Fatalf("round %d trace ID %x, want %x", round, s.TraceId, want)
						}
						if got, want := s.StartTimeUnixNano-f.StartTimeUnixNano, round*p.period; got != want {
							t.Fatalf("round %d start shifted by %d, want %d", round, got, want)
						}
						id := [8]byte(s.SpanId)
						if seen[id] {
							t.Fatalf("span ID %x repeats", id)
						}
						seen[id], spans[id] = true, true
						if len(s.ParentSpanId) == 8 {
							parents = append(parents, [8]byte(s.ParentSpanId))
						}
					}
				}
			}
			if count != p.Spans(seq) {
				t.Fatalf("request %d has %d spans, pool says %d", seq, count, p.Spans(seq))
			}
			probe := p.Probe(seq)
			last := req.ResourceSpans[len(req.ResourceSpans)-1].ScopeSpans
			ls := last[len(last)-1].Spans
			if s := ls[len(ls)-1]; [16]byte(s.TraceId) != probe.TraceID || [8]byte(s.SpanId) != probe.SpanID {
				t.Fatalf("probe of request %d is not its last span", seq)
			}
		}
		for _, parent := range parents {
			if !spans[parent] {
				t.Fatalf("round %d: parent %x is not a span of the round", round, parent)
			}
		}
	}
	total := 0
	for _, tr := range p.Traces() {
		total += tr.Spans
	}
	if want := int(n) * 100; total != want {
		t.Fatalf("traces hold %d spans, requests %d", total, want)
	}
}

// TestPoolJSON checks that an OTLP/JSON pool sends, round after round, the
// very requests the protobuf pool does.
func TestPoolJSON(t *testing.T) {
	cfg := Config{BatchSpans: 100, LargeTraceEvery: 50, Start: time.Unix(1_750_000_000, 0)}
	pb, err := NewPool(cfg, 2000)
	if err != nil {
		t.Fatal(err)
	}
	js, err := NewPool(cfg, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.EncodeJSON(); err != nil {
		t.Fatal(err)
	}
	var pbuf, jbuf []byte
	for seq := range 3 * uint64(pb.Requests()) {
		pbuf, jbuf = pb.Request(pbuf, seq), js.Request(jbuf, seq)
		wire, err := otlpjson.DecodeRequest(jbuf)
		if err != nil {
			t.Fatalf("request %d: %v", seq, err)
		}
		var want, got collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(pbuf, &want); err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, &want) {
			t.Fatalf("request %d differs between OTLP/JSON and protobuf", seq)
		}
		if js.Probe(seq) != pb.Probe(seq) || js.Spans(seq) != pb.Spans(seq) {
			t.Fatalf("request %d: probes or span counts differ", seq)
		}
	}
}

// TestPoolJSONNeedsFixedWidthTimes checks that a pool whose times would not
// keep their width in OTLP/JSON says so rather than sending garbled times.
func TestPoolJSONNeedsFixedWidthTimes(t *testing.T) {
	p, err := NewPool(Config{BatchSpans: 10, Start: time.Unix(900_000_000, 0)}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EncodeJSON(); err == nil || !strings.Contains(err.Error(), "not 19") {
		t.Fatalf("times of 1998 encoded: %v", err)
	}
}

// TestExporters checks that with Config.Exporters every request holds one
// service instance's spans, a full batch of them, each span once, and that
// traces arrive in more requests than whole-trace batching sends them in.
func TestExporters(t *testing.T) {
	requestsPerTrace := func(exporters bool) float64 {
		g := NewGenerator(Config{BatchSpans: 100, Exporters: exporters})
		spans := map[[8]byte]bool{}
		requests := map[[16]byte]int{}
		for range 200 {
			r := g.Next()
			var req collectorpb.ExportTraceServiceRequest
			if err := proto.Unmarshal(r.Bytes, &req); err != nil {
				t.Fatal(err)
			}
			if exporters && len(req.ResourceSpans) != 1 {
				t.Fatalf("a request of %d resources, want one instance's", len(req.ResourceSpans))
			}
			n := 0
			for _, rs := range req.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						if spans[[8]byte(s.SpanId)] {
							t.Fatalf("span %x sent twice", s.SpanId)
						}
						spans[[8]byte(s.SpanId)] = true
						n++
					}
				}
			}
			if n != 100 || r.Spans != 100 {
				t.Fatalf("a request of %d spans (%d counted), want 100", n, r.Spans)
			}
			for _, id := range r.Traces {
				requests[id]++
			}
		}
		total := 0
		for _, n := range requests {
			total += n
		}
		return float64(total) / float64(len(requests))
	}
	whole, apart := requestsPerTrace(false), requestsPerTrace(true)
	if whole > 1.5 || apart < 3 {
		t.Fatalf("requests per trace: %.2f in whole traces, %.2f by exporter; want about 1 and several", whole, apart)
	}
}
