// Package pairing finds the edges of the service graph as blocks are cut.
//
// A span whose parent belongs to another service is a call from the
// parent's service to the span's: one edge, with the child's start, latency
// and status. A client or producer span that names its peer and gets no
// child in another service within the window is a call to that peer, which
// sends no spans of its own: an edge to a virtual node.
//
// The two spans of a pair may arrive in either order, in requests and cuts
// far apart. Each cut is one generation: the IDs and services of its spans,
// and its client and producer spans still waiting for a child. A span
// whose parent is in neither its own cut nor a generation still held waits
// as an orphan for its parent. Every edge is emitted once, at the cut
// that completes it, so summing what the cuts emit counts each pair
// exactly once, whatever the order and the number of cuts in between.
//
// A generation is held for the window, measured in cut times; then its
// unanswered clients become virtual edges and its orphans stragglers. A
// pairer's state is a function of the cuts of the last two windows (while
// Options.MaxSpans lets none go early): a span pairs only with spans of
// cuts less than a window before or after its own, so feeding those cuts
// again to an empty pairer, in order and with their times, and dropping
// what it emits, rebuilds the state a restart lost. What the first window
// of them gets wrong, lacking older cuts, has expired by the last cut.
package pairing

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math/bits"
	"slices"

	"cairn/internal/radix"
	"cairn/storage/internal/spanindex"
)

// Span kinds that can call a peer which sends no spans.
const (
	kindClient   = 3
	kindProducer = 4
)

// Span is what pairing needs of one span.
type Span struct {
	ID       [8]byte
	Parent   [8]byte // all zero for a root span
	Service  uint32  // a name number from Pairer.Intern
	Kind     int32   // opentelemetry.proto.trace.v1.Span.SpanKind
	Start    uint64  // unix nanoseconds
	Duration uint64  // nanoseconds
	Err      bool    // status ERROR
}

// Edge is one call of the service graph.
type Edge struct {
	Parent, Child uint32 // name numbers
	// Virtual marks a call to a peer named by a client or producer span
	// that got no child from another service.
	Virtual  bool
	Start    uint64 // of the child span, or of the client span if Virtual
	Duration uint64
	Err      bool
}

// Stats counts what pairing gave up on.
type Stats struct {
	// Stragglers are spans whose parent did not arrive within the window.
	// A root span has no parent and is not one.
	Stragglers uint64
	// Evicted are spans forgotten before their window passed, to keep
	// within Options.MaxSpans.
	Evicted uint64
}

// Options configures a Pairer.
type Options struct {
	// Window is how far apart, in cut times, the two spans of a pair may
	// arrive. Required.
	Window uint64
	// MaxSpans bounds the spans held for pairing; past it the oldest
	// generations are let go early, counted in Stats.Evicted. Required.
	MaxSpans int
}

// Pairer holds the spans of recent cuts that a later span may pair with.
// It is not safe for concurrent use: cuts run one at a time.
type Pairer struct {
	opts    Options
	names   []string
	ids     map[string]uint32
	gens    []*generation // oldest first
	held    int           // spans in gens
	orphans map[uint64][]orphan
	seq     uint64 // of the next generation
	last    uint64 // time of the last cut
	stats   Stats
	scratch []entry // of the cuts' radix sorts
	// lastPeer and lastPeerN remember the peer interned last: most client
	// spans of a cut name a few peers, and comparing spares hashing.
	lastPeer  []byte
	lastPeerN uint32
	// sends says, by name number, whether spans came from that service:
	// a peer that never sent any (a database) answers no client.
	sends []bool
}

// generation is what one cut left for later cuts to pair with.
type generation struct {
	seq, at uint64
	spans   []entry  // ascending by key
	clients []client // in no order; entries point into it
	orphans []uint64 // keys of the parents its orphans wait for
	// thin says spans holds only the clients still waiting for a child
	// (see Cut.End).
	thin bool
}

// entry is a span of a generation.
type entry struct {
	key     uint64 // first: radix.Sort orders entries by it
	service uint32
	client  int32 // index into clients, or -1
}

// client is a client or producer span naming a peer, until it gets a
// child from another service.
type client struct {
	service, peer   uint32
	start, duration uint64
	err, answered   bool
	// producer marks a producer span, whose child is a consumer of
	// another service, whatever its peer (a broker) sends.
	producer bool
	// copies are the span's copies in its cut beyond the first, which a
	// child answers with it: the same span sent again, as a client
	// retrying an export does. Unanswered, each is a call.
	copies uint32
}

// orphan is a span waiting for its parent.
type orphan struct {
	gen             uint64 // seq of the generation it arrived with
	service         uint32
	start, duration uint64
	err             bool
}

// New returns an empty Pairer.
func New(o Options) *Pairer {
	return &Pairer{opts: o, ids: map[string]uint32{}, orphans: map[uint64][]orphan{}}
}

// Intern returns the number of a service or peer name.
func (p *Pairer) Intern(name []byte) uint32 {
	if n, ok := p.ids[string(name)]; ok {
		return n
	}
	n := uint32(len(p.names))
	p.names = append(p.names, string(name))
	p.ids[p.names[n]] = n
	return n
}

// internPeer interns a peer name, comparing it with the last first.
func (p *Pairer) internPeer(name []byte) uint32 {
	if p.lastPeer == nil || !bytes.Equal(name, p.lastPeer) {
		p.lastPeerN = p.Intern(name)
		p.lastPeer = append(p.lastPeer[:0], name...)
	}
	return p.lastPeerN
}

// Name returns the name numbered n.
func (p *Pairer) Name(n uint32) string { return p.names[n] }

// Stats returns what pairing gave up on so far.
func (p *Pairer) Stats() Stats { return p.stats }

// Held is the number of spans held for pairing and of those waiting.
func (p *Pairer) Held() (spans, orphans int) {
	for _, os := range p.orphans {
		orphans += len(os)
	}
	return p.held, orphans
}

// key identifies a span of a trace.
func key(trace [16]byte, id [8]byte) uint64 {
	a := binary.LittleEndian.Uint64(trace[:8]) * 0x9e3779b97f4a7c15
	b := bits.RotateLeft64(binary.LittleEndian.Uint64(trace[8:])*0xc2b2ae3d27d4eb4f, 31)
	h := a ^ b ^ binary.LittleEndian.Uint64(id[:])
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	return h ^ h>>32
}

// Cut pairs the spans of one cut. Traces are added with Trace, then End
// keeps what later cuts may pair with.
type Cut struct {
	p    *Pairer
	emit func(Edge)
	gen  *generation
	byID spanindex.Index // scratch: a trace's spans by ID
	seen []bool          // scratch: by span, got a child from another service
	// clientAt is scratch too: by span, its index in the generation's
	// clients, or -1.
	clientAt []int32
}

// Cut starts the cut made at time now, of about spans spans; a time before
// the last cut's, from a clock set back, counts as the last cut's.
// Generations whose window has passed let go first: their unanswered
// clients are emitted as virtual edges. A nil emit drops the edges, to
// replay cuts whose edges are stored already.
func (p *Pairer) Cut(now uint64, spans int, emit func(Edge)) *Cut {
	if emit == nil {
		emit = func(Edge) {}
	}
	now = max(now, p.last)
	p.last = now
	for len(p.gens) > 0 && now-p.gens[0].at >= p.opts.Window {
		p.expire(emit, false)
	}
	g := &generation{seq: p.seq, at: now, spans: make([]entry, 0, spans)}
	// About as many clients for its spans as the last cut had: growing the
	// list from nothing allocated twice what it kept. The slack stays under
	// what End would trim with a copy.
	if n := len(p.gens); n > 0 {
		last := p.gens[n-1]
		want := len(last.clients) * spans / max(1, len(last.spans))
		g.clients = make([]client, 0, want+want/16)
	}
	p.seq++
	return &Cut{p: p, emit: emit, gen: g}
}

// Due reports whether a cut at time now would let a generation go: a store
// that receives nothing makes no cuts of spans, and cuts with none at such
// times, so that calls to virtual nodes and stragglers are counted a
// window after they came rather than whenever spans come again.
func (p *Pairer) Due(now uint64) bool {
	return len(p.gens) > 0 && now >= p.gens[0].at && now-p.gens[0].at >= p.opts.Window
}

// expire lets go of the oldest generation.
func (p *Pairer) expire(emit func(Edge), early bool) {
	g := p.gens[0]
	p.gens[0] = nil
	p.gens = p.gens[1:]
	p.held -= len(g.spans)
	if early {
		p.stats.Evicted += uint64(len(g.spans))
	}
	for _, c := range g.clients {
		if c.answered {
			continue
		}
		for range 1 + c.copies {
			emit(Edge{Parent: c.service, Child: c.peer, Virtual: true, Start: c.start, Duration: c.duration, Err: c.err})
		}
	}
	for _, k := range g.orphans {
		os := p.orphans[k]
		kept := os[:0]
		for _, o := range os {
			if o.gen > g.seq {
				kept = append(kept, o)
			} else {
				p.stats.Stragglers++
			}
		}
		if len(kept) == 0 {
			delete(p.orphans, k)
		} else {
			p.orphans[k] = kept
		}
	}
}

// Trace pairs the spans of one trace in the cut; a trace is added once per
// cut. peer returns the peer that span i names, nil if none; it is asked
// only of client and producer spans that got no child from another service.
//
// A span may come more than once, sent again by a client that retried an
// export whose acknowledgement it lost: each copy of a child is a call, as
// span metrics count each copy, and the copies of a parent in one cut are
// one span, which one child answers for all of them.
func (c *Cut) Trace(trace [16]byte, spans []Span, peer func(i int) []byte) {
	p, g := c.p, c.gen
	c.byID.Reset(len(spans))
	for i := range spans {
		c.byID.Add(spans[i].ID, i)
	}
	c.seen = slices.Grow(c.seen[:0], len(spans))[:len(spans)]
	clear(c.seen)
	c.clientAt = slices.Grow(c.clientAt[:0], len(spans))[:len(spans)]

	for i := range spans {
		s := &spans[i]
		if s.Parent == ([8]byte{}) {
			continue
		}
		if j, ok := c.byID.Find(s.Parent); ok {
			parent := &spans[j]
			if parent.Service != s.Service {
				c.emit(Edge{Parent: parent.Service, Child: s.Service, Start: s.Start, Duration: s.Duration, Err: s.Err})
				c.seen[j] = true
			}
			continue
		}
		k := key(trace, s.Parent)
		if svc, ok := p.answer(k, s.Service); ok {
			if svc != s.Service {
				c.emit(Edge{Parent: svc, Child: s.Service, Start: s.Start, Duration: s.Duration, Err: s.Err})
			}
			continue
		}
		p.orphans[k] = append(p.orphans[k], orphan{gen: g.seq, service: s.Service, start: s.Start, duration: s.Duration, err: s.Err})
		g.orphans = append(g.orphans, k)
	}

	for i := range spans {
		s := &spans[i]
		c.clientAt[i] = -1
		// Children found the first copy (byID gives the first), and so
		// did orphans, which the first copy took.
		if first, _ := c.byID.Find(s.ID); first != i && spans[first].Service == s.Service && spans[first].Kind == s.Kind {
			if at := c.clientAt[first]; at >= 0 {
				g.clients[at].copies++
			}
			continue
		}
		k := key(trace, s.ID)
		if len(p.orphans) > 0 {
			if os, ok := p.orphans[k]; ok {
				for _, o := range os {
					if o.service != s.Service {
						c.emit(Edge{Parent: s.Service, Child: o.service, Start: o.start, Duration: o.duration, Err: o.err})
						c.seen[i] = true
					}
				}
				delete(p.orphans, k)
			}
		}
		if int(s.Service) >= len(p.sends) {
			p.sends = append(p.sends, make([]bool, int(s.Service)+1-len(p.sends))...)
		}
		p.sends[s.Service] = true
		e := entry{key: k, service: s.Service, client: -1}
		if !c.seen[i] && (s.Kind == kindClient || s.Kind == kindProducer) {
			if name := peer(i); len(name) > 0 {
				e.client = int32(len(g.clients))
				g.clients = append(g.clients, client{service: s.Service, peer: p.internPeer(name),
					start: s.Start, duration: s.Duration, err: s.Err, producer: s.Kind == kindProducer})
			}
		}
		c.clientAt[i] = e.client
		g.spans = append(g.spans, e)
	}
}

// answer finds the service of the span with key k in the generations held,
// newest first, and marks it answered if it is a client waiting for a
// child and child is another service.
func (p *Pairer) answer(k uint64, child uint32) (uint32, bool) {
	for i := len(p.gens) - 1; i >= 0; i-- {
		g := p.gens[i]
		j, ok := slices.BinarySearchFunc(g.spans, k, func(e entry, k uint64) int { return cmp.Compare(e.key, k) })
		if !ok {
			continue
		}
		e := g.spans[j]
		if e.service != child && e.client >= 0 {
			g.clients[e.client].answered = true
		}
		return e.service, true
	}
	return 0, false
}

// End keeps the cut's spans for later cuts to pair with, letting go of the
// oldest generations early if more than Options.MaxSpans would be held.
func (c *Cut) End() {
	p, g := c.p, c.gen
	if len(g.spans) == 0 && len(g.orphans) == 0 {
		return // nothing to pair with: kept, it would make Due a window on
	}
	g.spans, p.scratch = radix.Sort(g.spans, p.scratch)
	// Held for a window: what append left spare would be held too, and the
	// sorted spans may be in the scratch, as long as the largest cut's.
	if cap(g.spans) > len(g.spans)+len(g.spans)/8 {
		g.spans = slices.Clone(g.spans)
	}
	if cap(g.clients) > len(g.clients)+len(g.clients)/8 {
		g.clients = slices.Clone(g.clients)
	}
	p.gens = append(p.gens, g)
	p.held += len(g.spans)
	// Past the bound, the oldest generations first keep only their
	// clients still waiting for a child, then go whole. A client let go
	// early counts as a call to its peer even if its child comes later:
	// where a trace's spans arrive seconds apart (each service's exporter
	// sends its own), at full ingest the bound held under a second of
	// them, and one call in a hundred became a call to a virtual node.
	// The other spans pair only with children from another service that
	// no client span called (an uninstrumented client), which come with
	// them or soon after.
	for _, old := range p.gens[:len(p.gens)-1] {
		if p.held <= p.opts.MaxSpans {
			break
		}
		if !old.thin {
			p.thin(old, c.emit)
		}
	}
	for p.held > p.opts.MaxSpans && len(p.gens) > 1 {
		p.expire(c.emit, true)
	}
}

// thin lets go of a generation's spans, early, but its clients still
// waiting for a child from a service that sends spans, and its producers
// waiting for a consumer. Clients of a peer that never sent any, a
// database most often, which a store at full ingest has most of, are its
// calls now rather than a window later.
func (p *Pairer) thin(g *generation, emit func(Edge)) {
	kept := slices.DeleteFunc(g.spans, func(e entry) bool {
		if e.client < 0 {
			return true
		}
		c := &g.clients[e.client]
		switch {
		case c.answered:
			return true
		case c.producer || int(c.peer) < len(p.sends) && p.sends[c.peer]:
			return false
		}
		for range 1 + c.copies {
			emit(Edge{Parent: c.service, Child: c.peer, Virtual: true, Start: c.start, Duration: c.duration, Err: c.err})
		}
		c.answered = true // counted: not again when the generation goes
		return true
	})
	p.held -= len(g.spans) - len(kept)
	p.stats.Evicted += uint64(len(g.spans) - len(kept))
	g.spans, g.thin = slices.Clone(kept), true // a copy: the rest is let go
}
