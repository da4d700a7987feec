package bench

import (
	"math/rand/v2"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestSamplerPicksWholeTraces checks that a sampler draws only traces whose
// every request was among those sent and acknowledged whole, from every
// round sent whole, and from every size class the pool has; and that
// without unacknowledged requests every draw finds one, however few
// requests were sent.
func TestSamplerPicksWholeTraces(t *testing.T) {
	pool, err := NewPool(Config{Seed: 3, BatchSpans: 100, LargeTraceEvery: 50, TracesPerSecond: 10_000}, 30_000)
	if err != nil {
		t.Fatal(err)
	}
	per := uint64(pool.Requests())
	rng := rand.New(rand.NewPCG(1, 2))
	for _, lossy := range []bool{false, true} {
		u := &unacked{}
		if lossy {
			for seq := uint64(3); seq < 4*per; seq += 10 {
				u.add(seq)
			}
		}
		s := newSampler(pool, u)
		for _, sent := range []uint64{0, 1, 2, per / 2, per, per + 7, 3 * per} {
			whole := map[[16]byte]int{} // trace ID in its round: size class
			wholeIn := make([]int, len(sizeClasses))
			for c := range sizeClasses {
				for _, i := range s.byClass[c] {
					tr := pool.traces[i]
					for round := uint64(0); round*per+uint64(tr.Last) < sent; round++ {
						if !u.any(round*per+uint64(tr.First), round*per+uint64(tr.Last)) {
							whole[TraceIDIn(tr.ID, round)] = c
							wholeIn[c]++
						}
					}
				}
			}
			for c := range sizeClasses {
				picked := 0
				for range 200 {
					p, ok := s.pick(rng, c, sent)
					if !ok {
						continue
					}
					if got, sentWhole := whole[p.id]; !sentWhole || got != c {
						t.Fatalf("sent %d: picked %x, class %d, which was not sent whole in class %d", sent, p.id, got, c)
					}
					picked++
				}
				switch {
				case wholeIn[c] > 0 && picked == 0:
					t.Errorf("lossy %v, sent %d: no pick of class %d among %d whole traces", lossy, sent, c, wholeIn[c])
				case !lossy && wholeIn[c] > 0 && sent < per && picked < 200:
					t.Errorf("sent %d of a round: %d of 200 picks of class %d found one of its %d whole traces", sent, picked, c, wholeIn[c])
				}
			}
		}
	}
}

// TestBackgroundPhaseWindow checks that a phase reports the reads that
// started within its bounds, by size class and search shape.
func TestBackgroundPhaseWindow(t *testing.T) {
	start := time.Now()
	at := func(sec float64) time.Time { return start.Add(time.Duration(sec * float64(time.Second))) }
	b := &background{stop: make(chan struct{}), traces: make([][]timedRead, len(sizeClasses)),
		searches: make([][]timedRead, len(searchShapes))}
	for i := range 10 {
		b.traces[1] = append(b.traces[1], timedRead{at: at(float64(i)), d: time.Duration(i+1) * time.Millisecond, id: [16]byte{byte(i % 3)}})
		b.searches[2] = append(b.searches[2], timedRead{at: at(float64(i) + 0.5), d: time.Millisecond, found: 20})
	}
	ph := b.finish(start, at(2), at(6))
	if ph.FromSec != 2 || ph.ToSec != 6 {
		t.Errorf("phase from %gs to %gs, want 2 to 6", ph.FromSec, ph.ToSec)
	}
	if len(ph.GetTraces) != 1 || ph.GetTraces[0].Class != sizeClasses[1].name || ph.GetTraces[0].Queries != 4 ||
		ph.GetTraces[0].Traces != 3 || ph.GetTraces[0].P50Ms != 5 || ph.GetTraces[0].MaxMs != 6 {
		t.Errorf("trace reads %+v, want 4 of class %s, of 3 traces, 3 to 6 ms", ph.GetTraces, sizeClasses[1].name)
	}
	if len(ph.Searches) != 1 || ph.Searches[0].Shape != searchShapes[2].name || ph.Searches[0].Queries != 4 || ph.Searches[0].MeanTraces != 20 {
		t.Errorf("searches %+v, want 4 of shape %s", ph.Searches, searchShapes[2].name)
	}
}

// TestTracesIn checks the count of traces in FindTraces chunks against the
// trace IDs the chunks were built with: a trace split over chunks counts
// once, and chunks without spans, or malformed, count for none.
func TestTracesIn(t *testing.T) {
	chunk := func(id byte) []byte {
		span := &tracepb.Span{TraceId: []byte{id, 15: id}, SpanId: []byte{1, 7: 1}, Name: "op"}
		// Fields before those walked, as a chunk from another encoder
		// might put them.
		td := &tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource:   &resourcepb.Resource{DroppedAttributesCount: 1},
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "s"}, Spans: []*tracepb.Span{span}}},
		}}}
		b, err := proto.Marshal(td)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	empty, err := proto.Marshal(&tracepb.TracesData{ResourceSpans: []*tracepb.ResourceSpans{{}}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := chunk(1), chunk(2)
	for _, c := range []struct {
		chunks [][]byte
		want   int
	}{
		{nil, 0},
		{[][]byte{a}, 1},
		{[][]byte{a, a, b}, 2},
		{[][]byte{a, b, a}, 3},
		{[][]byte{empty, a, {0xff}, a[:len(a)-3], b}, 2},
	} {
		var traces traceCounter
		for _, ch := range c.chunks {
			traces.add(ch)
		}
		if got := traces.n; got != c.want {
			t.Errorf("%d chunks: %d traces, want %d", len(c.chunks), got, c.want)
		}
	}
}
