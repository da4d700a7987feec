package storage

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"cairn/internal/histogram"
	"cairn/internal/otlpwire"
	"cairn/internal/radix"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
	"cairn/storage/internal/pairing"
)

// Edge is the calls of one edge of the service graph over a time range.
type Edge struct {
	Parent, Child string
	// Virtual marks a call to a peer that sends no spans, named by client
	// or producer spans that got no child from another service.
	Virtual bool
	Calls   uint64
	Errors  uint64 // calls whose child (or, if Virtual, client) span failed
	Latency histogram.Histogram
}

// serviceGraph pairs the spans of each cut into edges (package pairing),
// which the cut stores with its block, in the aggregate of the partition
// of each edge's minute. Only cuts, one at a time, and Open use pairer.
type serviceGraph struct {
	pairer   *pairing.Pairer
	services map[*group]uint32 // of the cut in progress
	spans    []pairing.Span    // scratch: one trace's
	peers    [][]byte          // by span in spans

	mu       sync.Mutex
	totals   map[[2]string]*[2]uint64 // calls and failed calls since start, by (client, server)
	stats    pairing.Stats            // of cuts since start, replay left out
	replayed pairing.Stats
	held     int // spans held for pairing
}

func newServiceGraph(o *Options) *serviceGraph {
	return &serviceGraph{
		pairer:   pairing.New(pairing.Options{Window: uint64(o.PairingWindow), MaxSpans: o.PairingMaxSpans}),
		services: map[*group]uint32{},
		totals:   map[[2]string]*[2]uint64{},
	}
}

// blockEdges are the edges a cut emits, by partition and then edge and
// minute.
type blockEdges map[uint32]map[edgeMinute]*codec.GraphEdge

type edgeMinute struct {
	parent, child uint32 // name numbers
	virtual       bool
	minute        uint64
}

func (b blockEdges) add(p *pairing.Pairer, e pairing.Edge) {
	part := partitionOf(e.Start)
	m := b[part]
	if m == nil {
		m = map[edgeMinute]*codec.GraphEdge{}
		b[part] = m
	}
	k := edgeMinute{e.Parent, e.Child, e.Virtual, e.Start / minuteNanos}
	g := m[k]
	if g == nil {
		g = &codec.GraphEdge{Parent: p.Name(e.Parent), Child: p.Name(e.Child), Virtual: e.Virtual, Minute: k.minute}
		m[k] = g
	}
	g.Latency.Add(e.Duration)
	if e.Err {
		g.Errors++
	}
}

// section encodes the edges of partition p, ordered.
func (b blockEdges) section(p uint32) []byte { return edgesSection(b[p]) }

// edgesSection encodes edges as a service graph section, ordered; nil if
// there are none.
func edgesSection[K comparable](m map[K]*codec.GraphEdge) []byte {
	if len(m) == 0 {
		return nil
	}
	edges := make([]codec.GraphEdge, 0, len(m))
	for _, e := range m {
		edges = append(edges, *e)
	}
	slices.SortFunc(edges, compareEdges)
	return codec.AppendServiceGraph(nil, edges)
}

// cut pairs the spans of a frozen buffer, whose traces are in ID order, at
// time now, the block's creation time.
func (g *serviceGraph) cut(now uint64, spans int, traces []*traceState) blockEdges {
	edges := blockEdges{}
	c := g.pairer.Cut(now, spans, func(e pairing.Edge) { edges.add(g.pairer, e) })
	clear(g.services)
	for _, t := range traces {
		g.spans, g.peers = g.spans[:0], g.peers[:0]
		for s := range t.spans.each {
			svc, ok := g.services[s.group]
			if !ok {
				svc = g.pairer.Intern(s.group.service)
				g.services[s.group] = svc
			}
			g.spans = append(g.spans, pairing.Span{ID: s.id, Parent: s.parent, Service: svc, Kind: int32(s.kind),
				Start: s.start, Duration: s.duration(), Err: s.err})
			g.peers = append(g.peers, s.peerName())
		}
		c.Trace(t.id, g.spans, g.peer)
	}
	c.End()
	return edges
}

// peer returns the peer that span i of the trace being paired names.
func (g *serviceGraph) peer(i int) []byte { return g.peers[i] }

// Span kinds that name peers.
const (
	kindClient   = 3
	kindProducer = 4
)

// peerAttributes name the peer of a client or producer span, most
// specific first.
var peerAttributes = []string{"peer.service", "db.system.name", "db.system", "messaging.system", "server.address"}

// peerOf returns the peer that an encoded span's own attributes name, nil
// if none. Its events' attributes are not the span's: an event's
// peer.service must not rename the call, and a span read back after a
// restart has only its own to go by.
func peerOf(raw []byte) []byte {
	best, name := len(peerAttributes), []byte(nil)
	otlpwire.Attributes(raw, otlpwire.SpanAttributes, func(key []byte, t otlpwire.ValueType, b []byte, _ uint64) {
		if t != otlpwire.StringValue || len(b) == 0 {
			return
		}
		if j := peerRank(key, best); j < best {
			best, name = j, b
		}
	})
	return name
}

// peerRank is the rank of key in peerAttributes if it ranks before best,
// best otherwise.
func peerRank(key []byte, best int) int {
	for j := range best {
		if string(key) == peerAttributes[j] {
			return j
		}
	}
	return best
}

// stored counts the edges of a block once it is stored, for Prometheus.
func (g *serviceGraph) stored(edges blockEdges) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range edges {
		for _, e := range m {
			k := [2]string{e.Parent, e.Child}
			t := g.totals[k]
			if t == nil {
				t = new([2]uint64)
				g.totals[k] = t
			}
			t[0] += e.Latency.Count()
			t[1] += e.Errors
		}
	}
	g.held, _ = g.pairer.Held()
	s := g.pairer.Stats()
	g.stats = pairing.Stats{Stragglers: s.Stragglers - g.replayed.Stragglers, Evicted: s.Evicted - g.replayed.Evicted}
}

// replayPairing rebuilds the pairer after a restart by pairing again the
// blocks cut within two pairing windows of the last, in order and at the
// times they were cut, dropping the edges, which their aggregates hold
// already (package pairing explains why two windows give back the state
// exactly). It reads no more blocks than the pairer would hold spans of,
// so that a restart reads at most Options.PairingMaxSpans spans.
//
// Recompression may have merged a trace's fragments into its newest
// block's: each span is paired with the cut it came with, which the merged
// fragment records, and spans of cuts before the first replayed are left
// out, as they would be had they stayed in their blocks.
func (db *DB) replayPairing() error {
	window := uint64(db.opts.PairingWindow)
	var (
		blocks []uint64 // newest first
		spans  uint64
		last   uint64
	)
	cuts := map[uint64]*replayCut{}
	it, err := db.idx.NewIter(keys.KindRange(keys.KindBlock))
	if err != nil {
		return fmt.Errorf("replay pairing: %w", err)
	}
	for it.Last(); it.Valid(); it.Prev() {
		b, err := keys.ParseBlock(it.Key())
		if err != nil {
			it.Close()
			return fmt.Errorf("replay pairing: %w", err)
		}
		rec, err := codec.DecodeBlockRecord(it.Value())
		if err != nil {
			it.Close()
			return fmt.Errorf("replay pairing: block %d: %w", b, err)
		}
		if len(blocks) == 0 {
			last = rec.Created
		}
		spans += rec.Spans
		if rec.Created+2*window <= last || spans > uint64(db.opts.PairingMaxSpans) {
			break
		}
		blocks = append(blocks, b)
		cuts[b] = &replayCut{created: rec.Created, traces: map[TraceID]*replayTrace{}}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("replay pairing: %w", err)
	}
	for _, b := range slices.Backward(blocks) {
		// Edges already stored are not at stake, only pairs split across
		// this block and the restart: a block that cannot be read costs
		// those, not the open.
		if err := db.replayBlock(b, cuts); err != nil {
			db.opts.Logger.Warn("cannot pair the spans of a block again after the restart; calls split across it and the restart may be missed",
				"block", b, "err", err)
		}
	}
	for _, b := range slices.Backward(blocks) {
		cuts[b].pair(db.graph)
	}
	db.graph.replayed = db.graph.pairer.Stats()
	return nil
}

// replayCut is what a replay gathered of the spans one cut brought, each
// trace whole as the cut had it, though its spans are stored per partition
// and some may have been merged into a later block's fragments.
type replayCut struct {
	created uint64
	spans   int
	traces  map[TraceID]*replayTrace
}

type replayTrace struct {
	spans []pairing.Span
	peers [][]byte // by span in spans
}

// add appends a span read back from a block to the trace, as cut would
// have had it.
func (t *replayTrace) add(raw []byte, service uint32) {
	f := otlpwire.Facts(raw)
	s := liveSpan{raw: raw, start: f.Start, end: f.End, err: f.Error, kind: spanKind(f.Kind), id: f.ID}
	if len(f.Parent) == 8 {
		s.parent = [8]byte(f.Parent)
	}
	var peer []byte
	if s.kind == kindClient || s.kind == kindProducer {
		// A copy: the replay holds the spans of every cut it pairs again
		// at once, and the peer would keep its whole fragment's buffer.
		peer = bytes.Clone(peerOf(raw))
	}
	t.spans = append(t.spans, pairing.Span{ID: s.id, Parent: s.parent, Service: service, Kind: int32(s.kind),
		Start: s.start, Duration: s.duration(), Err: s.err})
	t.peers = append(t.peers, peer)
}

// peer returns the peer that span i of the trace names.
func (t *replayTrace) peer(i int) []byte { return t.peers[i] }

// pair pairs the cut's spans again, dropping the edges.
func (rc *replayCut) pair(g *serviceGraph) {
	ids := slices.SortedFunc(maps.Keys(rc.traces), func(a, b TraceID) int { return slices.Compare(a[:], b[:]) })
	c := g.pairer.Cut(rc.created, rc.spans, nil)
	for _, id := range ids {
		t := rc.traces[id]
		c.Trace(id, t.spans, t.peer)
	}
	c.End()
}

// replayBlock reads the spans stored in block b into the cuts they came
// with, those of cuts not replayed left out.
func (db *DB) replayBlock(b uint64, cuts map[uint64]*replayCut) error {
	g := db.graph
	get := func(k []byte) ([]byte, bool, error) {
		v, closer, err := db.idx.Get(k)
		if err == pebble.ErrNotFound {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		defer closer.Close()
		return slices.Clone(v), true, nil
	}
	services := map[uint32]uint32{} // group number → name number
	it, err := db.spans.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	var frags []codec.Group
	for p := range db.partitions {
		lo, hi := keys.DataBlock(p, b), keys.DataBlock(p, b+1)
		for it.SeekGE(lo); it.Valid() && keys.Comparer.Compare(it.Key(), hi) < 0; it.Next() {
			_, _, id, err := keys.ParseData(it.Key())
			if err != nil {
				return err
			}
			if frags, _, err = codec.DecodeFragment(frags[:0], nil, it.Value(), id); err != nil {
				return err
			}
			for _, fr := range frags {
				if fr.Back > b {
					return fmt.Errorf("%w: trace %x: group %d was cut %d blocks before block %d", codec.ErrCorrupt, id, fr.Num, fr.Back, b)
				}
				rc := cuts[b-fr.Back]
				if rc == nil {
					continue // cut before the first replayed
				}
				svc, ok := services[fr.Num]
				if !ok {
					res, _, err := db.groups.pair(get, fr.Num)
					if err != nil {
						return err
					}
					d, err := db.dict.lookup(get, keys.KindResource, res)
					if err != nil {
						return err
					}
					svc = g.pairer.Intern(otlpwire.ServiceName(d.Raw))
					services[fr.Num] = svc
				}
				t := rc.traces[id]
				if t == nil {
					t = &replayTrace{}
					rc.traces[id] = t
				}
				for _, raw := range fr.Spans {
					t.add(raw, svc)
				}
				rc.spans += len(fr.Spans)
			}
		}
		if err := it.Error(); err != nil {
			return err
		}
	}
	return nil
}

// ServiceGraph returns the edges of the service graph whose calls started
// in the minutes that [from, to) overlaps, within the retention period, as
// stored with the blocks cut so far: sums of per-minute aggregates, nothing
// read from spans. They are ordered by parent, then child, an edge to a
// virtual node after the real one of the same names.
func (db *DB) ServiceGraph(ctx context.Context, from, to time.Time) ([]Edge, error) {
	return db.serviceGraph(ctx, from, to, true)
}

// Dependencies returns the edges ServiceGraph does with their calls and
// errors but not their latencies, whose histograms cost most of summing
// the edges' minutes: counted, not added up bucket by bucket, a workload
// of 12 services took a third of the time.
func (db *DB) Dependencies(ctx context.Context, from, to time.Time) ([]Edge, error) {
	return db.serviceGraph(ctx, from, to, false)
}

func (db *DB) serviceGraph(ctx context.Context, from, to time.Time, latency bool) ([]Edge, error) {
	// The window's last minute, rounded up, and its nanoseconds must not
	// wrap: a window to year 9999 would have no edges.
	last := min(unixNanos(to), math.MaxUint64/minuteNanos*minuteNanos)
	first, end := unixNanos(from)/minuteNanos, last/minuteNanos
	if last%minuteNanos != 0 {
		end++
	}
	// Edges are summed by their services' numbers, given in the order
	// met, and sorted by their names' ranks: by the names themselves, a
	// fleet of 300 services calling each other (90,000 edges, a few
	// records of each) spent most of a query looking edges up by name and
	// comparing names to sort them. A record's edges of one minute are
	// sorted by parent, so that a parent's number is looked up once for
	// all its children.
	numbers := map[string]uint32{}
	var names []string
	number := func(name []byte) uint32 {
		n, ok := numbers[string(name)]
		if !ok {
			n = uint32(len(names))
			names = append(names, string(name))
			numbers[names[n]] = n
		}
		return n
	}
	sums := map[uint64]*Edge{} // by pairKey
	var parentName []byte      // of parent, when known is true
	parent, known := uint32(0), false
	err := db.scanAggregates(ctx, first*minuteNanos, end*minuteNanos, codec.SectionServiceGraph, []aggregateKey{keys.Graph}, func(notBefore uint64, payload []byte) error {
		lo := max(first, (notBefore+minuteNanos-1)/minuteNanos)
		known = false
		return codec.DecodeServiceGraph(payload, func(e *codec.EdgeHeader) (*histogram.Histogram, *uint64) {
			if e.Minute < lo || e.Minute >= end {
				return nil, nil
			}
			if !known || !bytes.Equal(e.Parent, parentName) {
				parent, parentName, known = number(e.Parent), append(parentName[:0], e.Parent...), true
			}
			child := number(e.Child)
			k := pairKey(parent, child, e.Virtual)
			s := sums[k]
			if s == nil {
				s = &Edge{Parent: names[parent], Child: names[child], Virtual: e.Virtual}
				sums[k] = s
			}
			s.Errors += e.Errors
			if !latency {
				return nil, &s.Calls
			}
			return &s.Latency, &s.Calls
		})
	})
	if err != nil {
		return nil, err
	}
	rank := make([]uint32, len(names))
	for r, n := range slices.Sorted(maps.Keys(numbers)) {
		rank[numbers[n]] = uint32(r)
	}
	type ranked struct {
		key  uint64 // pairKey of the ranks: sorts as the names do
		edge *Edge
	}
	order := make([]ranked, 0, len(sums))
	for k, e := range sums {
		order = append(order, ranked{pairKey(rank[k>>33], rank[k>>1&(1<<32-1)], k&1 == 1), e})
	}
	order, _ = radix.Sort(order, nil)
	out := make([]Edge, len(order))
	for i, o := range order {
		out[i] = *o.edge
	}
	return out, nil
}

// pairKey orders edges by parent, then child, a virtual edge after the
// real one between the same two.
func pairKey(parent, child uint32, virtual bool) uint64 {
	return uint64(parent)<<33 | uint64(child)<<1 | uint64(boolByte(virtual))
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
