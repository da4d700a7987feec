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
// (deep), and a wide one whose every other span lost its parent (orphans).
func BenchmarkCriticalPath(b *testing.B) {
	const spans = 10_000
	for _, shape := range []string{"bushy", "wide", "deep", "orphans"} {
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
			case "wide", "orphans":
				p = &tr.Spans[0]
			case "deep":
				p = &tr.Spans[i-1]
			}
			s.Parent = p.ID
			d := p.End - p.Start
			s.Start = p.Start + rng.Uint64N(d/2+1)
			s.End = s.Start + rng.Uint64N(p.End-s.Start+1)
			if shape == "orphans" && i%2 == 0 {
				s.Parent[0] = 0xff
			}
		}
		tr.Spans = append(tr.Spans, s)
	}
	return tr
}
