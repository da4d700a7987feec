package analysis

import (
	"fmt"
	"math/rand/v2"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
)

// BenchmarkCriticalPath times the critical path of traces of 10k spans in
// three shapes: a request fanning out into calls that each make a few
// more (bushy), one span with every other as its child (wide), and a chain
// (deep), a wide one whose every other span lost its parent (orphans), one
// span publishing messages, each consumed after its producer ended
// (publish), and a request whose one call's children, one after the other,
// all lost their parent, the span of a service that sent none (lostparent).
func BenchmarkCriticalPath(b *testing.B) {
	const spans = 10_000
	for _, shape := range []string{"bushy", "wide", "deep", "orphans", "publish", "lostparent", "deeplost"} {
		tr := shapedTrace(shape, spans)
		b.Run(fmt.Sprintf("spans=%d/shape=%s", spans, shape), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				CriticalPath(tr, nil)
			}
		})
	}
}

func shapedTrace(shape string, n int) *Trace {
	rng := rand.New(rand.NewPCG(3, 4))
	tr := &Trace{Resources: make([][]*commonpb.KeyValue, 20)}
	for i := range n {
		s := Span{Service: fmt.Sprint("svc", i%20), Name: fmt.Sprint("op", i%50), Resource: i % 20, Kind: kinds[i%len(kinds)]}
		s.ID[0], s.ID[1], s.ID[2] = byte(i>>16)+1, byte(i>>8), byte(i)
		s.Start, s.End = 0, 1_000_000_000
		if i > 0 {
			var p *Span
			switch shape {
			case "bushy":
				p = &tr.Spans[rng.IntN(i)]
			case "wide", "orphans", "lostparent":
				p = &tr.Spans[0]
			case "publish":
				p = &tr.Spans[0]
				if i%2 == 0 {
					p = &tr.Spans[i-1]
				}
			case "deep", "deeplost":
				p = &tr.Spans[i-1]
			}
			s.Parent = p.ID
			d := p.End - p.Start
			s.Start = p.Start + rng.Uint64N(d/2+1)
			s.End = s.Start + rng.Uint64N(p.End-s.Start+1)
			if shape == "lostparent" {
				// Span 1 is the call, 1 ms into the root; the others, 90 µs
				// each, 100 µs apart within it, have a parent no one sent.
				p = &tr.Spans[0]
				s.Parent, s.Start, s.End = p.ID, 1_000_000, 999_000_000
				if i > 1 {
					s.Parent[0] = 0xff
					s.Start = 1_000_000 + uint64(i)*(990_000_000/uint64(n))
					s.End = s.Start + 90_000
				}
			}
			if shape == "deeplost" {
				// A recursion half the trace deep, each call 1 µs inside
				// its caller, and under its deepest calls spans as many
				// whose parent no one sent, 1 ns apart.
				half := uint64(n / 2)
				switch k := uint64(i); {
				case k < half:
					s.Parent = tr.Spans[i-1].ID
					s.Start, s.End = k*1000, (2*half-k)*1000
				default:
					s.Parent[0] = 0xff
					s.Start = half*1000 - 500 + k
					s.End = s.Start + 400
				}
			}
			if shape == "orphans" && i%2 == 0 {
				s.Parent[0] = 0xff
			}
			if shape == "publish" {
				// Producers, and under each a consumer that starts as it
				// ends and outlasts it.
				s.Kind, s.End = kindProducer, s.Start+1000
				if i%2 == 0 {
					s.Kind, s.Start = kindConsumer, p.End
					s.End = s.Start + 1 + rng.Uint64N(1_000_000)
				}
			}
		}
		tr.Spans = append(tr.Spans, s)
	}
	return tr
}
