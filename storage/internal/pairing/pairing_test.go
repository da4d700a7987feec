package pairing

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// genSpan is a generated span with where it arrives.
type genSpan struct {
	Span
	peer    string
	arrival int  // the cut it arrives with
	sent    bool // a parent that is never sent leaves its children waiting
}

type genTrace struct {
	id    [16]byte
	spans []genSpan
}

var testServices = []string{"web", "orders", "payments", "stock", "mail", "auth"}
var testPeers = []string{"postgresql", "kafka", "redis.internal", "billing"}

// generate builds traces whose spans arrive spread over cuts cuts,
// clustered around a random cut per trace, as exporters of several services
// send them.
func generate(rng *rand.Rand, traces, cuts int, names func(string) uint32) []genTrace {
	var out []genTrace
	var nextID uint64 = 1
	for t := 0; t < traces; t++ {
		var tr genTrace
		binary.BigEndian.PutUint64(tr.id[:8], rng.Uint64())
		binary.BigEndian.PutUint64(tr.id[8:], rng.Uint64())
		base := rng.IntN(cuts)
		n := 1 + rng.IntN(25)
		svcs := make([]int, n)
		for i := 0; i < n; i++ {
			var s genSpan
			binary.BigEndian.PutUint64(s.ID[:], nextID)
			nextID++
			svc := rng.IntN(len(testServices))
			if i > 0 {
				j := rng.IntN(i)
				s.Parent = tr.spans[j].ID
				if rng.IntN(2) == 0 {
					svc = svcs[j]
				}
			}
			svcs[i] = svc
			s.Service = names(testServices[svc])
			s.Kind = int32(rng.IntN(6))
			if (s.Kind == kindClient || s.Kind == kindProducer) && rng.IntN(2) == 0 {
				s.peer = testPeers[rng.IntN(len(testPeers))]
			}
			s.Start = uint64(rng.IntN(10)) * 60e9
			s.Duration = uint64(rng.IntN(1e9))
			s.Err = rng.IntN(10) == 0
			s.arrival = min(cuts-1, max(0, base+int(rng.NormFloat64()*3)))
			s.sent = rng.IntN(30) != 0
			tr.spans = append(tr.spans, s)
		}
		// Copies of spans, as a client retrying an export sends them, in
		// the same cut.
		for i := range n {
			if rng.IntN(8) == 0 {
				tr.spans = append(tr.spans, tr.spans[i])
			}
		}
		out = append(out, tr)
	}
	return out
}

// edgeKey groups edges the way stored aggregates do, by minute.
type edgeKey struct {
	parent, child string
	virtual       bool
	minute        uint64
}

type edgeSum struct{ calls, errors, nanos uint64 }

func add(m map[edgeKey]edgeSum, k edgeKey, e Edge) {
	s := m[k]
	s.calls++
	if e.Err {
		s.errors++
	}
	s.nanos += e.Duration
	m[k] = s
}

// model pairs by brute force: a child and its parent pair if both are sent
// and their cuts are less than window apart; a client or producer naming a
// peer with no child from another service paired is a virtual edge. Each
// copy of a span counts as a span of its own, but the copies of a parent
// are one parent: a child pairs once.
func model(traces []genTrace, at []uint64, window uint64, name func(uint32) string) (map[edgeKey]edgeSum, uint64) {
	edges := map[edgeKey]edgeSum{}
	var stragglers uint64
	within := func(a, b int) bool { return max(at[a], at[b])-min(at[a], at[b]) < window }
	for _, tr := range traces {
		for i, c := range tr.spans {
			if !c.sent {
				continue
			}
			if c.Parent != ([8]byte{}) {
				paired := false
				for _, p := range tr.spans {
					if p.ID == c.Parent && p.sent && within(p.arrival, c.arrival) {
						paired = true
						if p.Service != c.Service {
							add(edges, edgeKey{name(p.Service), name(c.Service), false, c.Start / 60e9}, Edge{Duration: c.Duration, Err: c.Err})
						}
						break
					}
				}
				if !paired {
					stragglers++
				}
			}
			if c.peer == "" {
				continue
			}
			answered := false
			for j, ch := range tr.spans {
				if j != i && ch.sent && ch.Parent == c.ID && ch.Service != c.Service && within(ch.arrival, c.arrival) {
					answered = true
				}
			}
			if !answered {
				add(edges, edgeKey{name(c.Service), c.peer, true, c.Start / 60e9}, Edge{Duration: c.Duration, Err: c.Err})
			}
		}
	}
	return edges, stragglers
}

// feed runs cut number i through p: every trace's spans that arrive then,
// shuffled.
func feed(p *Pairer, rng *rand.Rand, traces []genTrace, i int, at uint64, emit func(Edge)) {
	c := p.Cut(at, 0, emit)
	for _, tr := range traces {
		var spans []Span
		var peers []string
		for _, s := range tr.spans {
			if s.sent && s.arrival == i {
				spans = append(spans, s.Span)
				peers = append(peers, s.peer)
			}
		}
		if len(spans) == 0 {
			continue
		}
		rng.Shuffle(len(spans), func(a, b int) {
			spans[a], spans[b] = spans[b], spans[a]
			peers[a], peers[b] = peers[b], peers[a]
		})
		c.Trace(tr.id, spans, func(j int) []byte {
			if peers[j] == "" {
				return nil
			}
			return []byte(peers[j])
		})
	}
	c.End()
}

// TestPairingMatchesModel checks every edge sum against the brute-force
// model, over spans shuffled across many cuts, with a restart that
// rebuilds the pairer by replaying the cuts of the last two windows.
func TestPairingMatchesModel(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			const cuts = 40
			window := uint64(5 + rng.IntN(10))
			at := make([]uint64, cuts)
			for i := 1; i < cuts; i++ {
				at[i] = at[i-1] + uint64(rng.IntN(4)) // cuts may share a time
			}
			o := Options{Window: window, MaxSpans: 1 << 30}
			p := New(o)
			traces := generate(rng, 300, cuts, func(s string) uint32 { return p.Intern([]byte(s)) })

			got := map[edgeKey]edgeSum{}
			var stragglers uint64
			emit := func(p *Pairer) func(Edge) {
				return func(e Edge) {
					add(got, edgeKey{p.Name(e.Parent), p.Name(e.Child), e.Virtual, e.Start / 60e9}, e)
				}
			}
			restart := rng.IntN(cuts)
			for i := 0; i < cuts; i++ {
				feed(p, rng, traces, i, at[i], emit(p))
				if i != restart {
					continue
				}
				stragglers += p.Stats().Stragglers
				// A new process: names are numbered afresh.
				q := New(o)
				renumber(traces, p, q)
				for j := 0; j <= i; j++ {
					if at[j]+2*window > at[i] {
						feed(q, rng, traces, j, at[j], nil)
					}
				}
				stragglers -= q.Stats().Stragglers
				p = q
			}
			p.Cut(at[cuts-1]+window, 0, emit(p)).End()
			stragglers += p.Stats().Stragglers

			want, wantStragglers := model(traces, at, window, p.Name)
			if len(got) != len(want) {
				t.Errorf("%d edge keys, want %d", len(got), len(want))
			}
			for k, w := range want {
				if g := got[k]; g != w {
					t.Errorf("%+v: got %+v, want %+v", k, g, w)
				}
			}
			for k, g := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("%+v: got %+v, want none", k, g)
				}
			}
			if stragglers != wantStragglers {
				t.Errorf("stragglers %d, want %d", stragglers, wantStragglers)
			}
		})
	}
}

// renumber moves the spans' service numbers from p's names to q's.
func renumber(traces []genTrace, p, q *Pairer) {
	for _, tr := range traces {
		for i := range tr.spans {
			s := &tr.spans[i]
			s.Service = q.Intern([]byte(p.Name(s.Service)))
		}
	}
}

// TestMaxSpans checks that a pairer past its bound lets its oldest
// generations go early, and counts the spans it forgot.
func TestMaxSpans(t *testing.T) {
	p := New(Options{Window: 100, MaxSpans: 10})
	web, db := p.Intern([]byte("web")), p.Intern([]byte("postgresql"))
	var virtual int
	for i := range 5 {
		c := p.Cut(uint64(i), 4, func(e Edge) {
			if e.Virtual && e.Parent == web && e.Child == db {
				virtual++
			}
		})
		spans := make([]Span, 4)
		for j := range spans {
			spans[j] = Span{ID: [8]byte{byte(i), byte(j + 1)}, Service: web, Kind: kindClient}
		}
		c.Trace([16]byte{1}, spans, func(int) []byte { return []byte("postgresql") })
		c.End()
	}
	if held, _ := p.Held(); held > 10 {
		t.Errorf("%d spans held, bound 10", held)
	}
	if s := p.Stats(); s.Evicted != 12 || virtual != 12 {
		t.Errorf("evicted %d, virtual edges %d; want 12 and 12", s.Evicted, virtual)
	}
}

// TestMaxSpansKeepsWaitingClients checks that a pairer past its bound
// lets go of the other spans of its oldest generations before their
// clients still waiting for a child from a service that sends spans: a
// child five cuts after its client, past a bound of twice a cut's spans,
// is a call to its service, not the client's a call to a virtual node.
// A client of a database, which sends no spans, is let go then, counted
// as its call once.
func TestMaxSpansKeepsWaitingClients(t *testing.T) {
	p := New(Options{Window: 100, MaxSpans: 20})
	web, orders, db := p.Intern([]byte("web")), p.Intern([]byte("orders")), p.Intern([]byte("postgresql"))
	var edges []Edge
	emit := func(e Edge) { edges = append(edges, e) }
	for i := range 5 {
		c := p.Cut(uint64(i), 10, emit)
		spans := make([]Span, 10)
		for j := range spans {
			spans[j] = Span{ID: [8]byte{byte(i), byte(j + 1)}, Service: web, Kind: 1}
		}
		spans[0].Kind = kindClient // waits for orders' server span
		spans[1].Kind = kindClient // calls the database
		spans[9].Service = orders  // orders sends spans
		c.Trace([16]byte{byte(i)}, spans, func(j int) []byte { return []byte([]string{0: "orders", 1: "postgresql"}[j]) })
		c.End()
	}
	if held, _ := p.Held(); held > 20 {
		t.Errorf("%d spans held, bound 20", held)
	}
	c := p.Cut(5, 1, emit)
	c.Trace([16]byte{0}, []Span{{ID: [8]byte{9, 9}, Parent: [8]byte{0, 1}, Service: orders, Kind: 2}}, func(int) []byte { return nil })
	c.End()
	c = p.Cut(200, 0, emit) // every generation's window has passed
	c.End()
	calls := map[[3]uint32]int{}
	for _, e := range edges {
		v := uint32(0)
		if e.Virtual {
			v = 1
		}
		calls[[3]uint32{e.Parent, e.Child, v}]++
	}
	want := map[[3]uint32]int{{web, orders, 0}: 1, {web, orders, 1}: 4, {web, db, 1}: 5}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("calls %v, want %v (web -> orders once, 4 unanswered; 5 database calls)", calls, want)
	}
	if s := p.Stats(); s.Evicted == 0 {
		t.Errorf("nothing let go past the bound: %+v", s)
	}
}

// TestClockSetBack checks that a cut timed before the last, as a clock set
// back gives, counts as made at the last cut's time rather than letting
// every generation go.
func TestClockSetBack(t *testing.T) {
	p := New(Options{Window: 100, MaxSpans: 100})
	web, orders := p.Intern([]byte("web")), p.Intern([]byte("orders"))
	c := p.Cut(1000, 1, nil)
	c.Trace([16]byte{1}, []Span{{ID: [8]byte{1}, Service: web, Kind: kindClient}}, func(int) []byte { return []byte("orders") })
	c.End()
	var edges []Edge
	c = p.Cut(10, 1, func(e Edge) { edges = append(edges, e) })
	c.Trace([16]byte{1}, []Span{{ID: [8]byte{2}, Parent: [8]byte{1}, Service: orders}}, func(int) []byte { return nil })
	c.End()
	if len(edges) != 1 || edges[0].Virtual || edges[0].Parent != web || edges[0].Child != orders {
		t.Fatalf("edges %+v, want web -> orders", edges)
	}
}
