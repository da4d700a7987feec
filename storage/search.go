package storage

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// Query selects the traces that have at least one span satisfying every
// condition given; zero fields set no condition.
type Query struct {
	Service   string
	Operation string // the span name
	// Attributes must all hold on the span, as its own attributes, its
	// events' or its resource's. The attribute error=true selects spans
	// with status ERROR instead.
	Attributes []Attribute
	// StartMin and StartMax bound the span's start time, inclusive.
	StartMin, StartMax time.Time
	// DurationMin and DurationMax bound the span's duration, inclusive.
	DurationMin, DurationMax time.Duration
	// Limit is the number of traces wanted, the most recent first.
	Limit int
}

// Attribute is an attribute condition. It holds for a scalar attribute of
// the key whose value, in otlpwire.AppendText's form, is Value, whatever its
// type: "404" holds for the int 404, the double 404.0 and the string "404",
// as in Jaeger's own stores. Arrays and key-value lists never match.
type Attribute struct {
	Key   string
	Value string
}

// Found is a trace that matched a query, with the extent of the spans seen
// while searching: hints for reading it, not necessarily the whole trace.
type Found struct {
	ID    TraceID
	Start uint64 // unix nanoseconds
	End   uint64 // unix nanoseconds
}

// compiled is a query prepared for evaluation.
type compiled struct {
	svc, op            []byte     // nil when not a condition
	svcTerm            index.Term // the Service term of svc
	errors             bool
	attrs              []Attribute
	startMin, startMax uint64
	durMin, durMax     uint64
	groups             [][]index.Term // all groups must hold; a group holds if any of its terms does; each sorted
	exact              bool           // the terms alone decide a match, given the time window
	// A duration bucket that lies wholly within the duration bounds decides
	// the duration condition: with exactInside, a row found through one of
	// the inside terms is a match without looking at its spans.
	exactInside bool
	inside      []index.Term // sorted
	limit       int
	value       []byte // scratch for values' text
	// attrGroups is the index of the attribute conditions' groups, one per
	// condition in order, in groups.
	attrGroups int
	// resourceAttrs are the attribute conditions that resources of blocks
	// may satisfy, which addStoredResources adds to their groups.
	resourceAttrs []resourceAttr
}

// resourceAttr is an attribute condition as resources answer it.
type resourceAttr struct {
	group   int        // its index in compiled.groups
	term    index.Term // its service-less attribute term
	service index.Term // the Service term the resources must have; 0 for any
}

// addStoredResources adds to the attribute conditions' groups the Resource
// terms of the stored resources that may satisfy them, read through it: an
// iterator of the same view as the live buffers compile saw, so that a
// resource a cut has just persisted is found here if it had left them.
func (c *compiled) addStoredResources(it *pebble.Iterator) error {
	var h index.Hasher
	for _, ra := range c.resourceAttrs {
		g, err := storedWith(c.groups[ra.group], it, &h, ra.term, ra.service)
		if err != nil {
			return fmt.Errorf("look up resources: %w", err)
		}
		slices.Sort(g)
		c.groups[ra.group] = slices.Compact(g)
	}
	return nil
}

// compile turns a query into term groups. services lists the services in the
// store, for attribute conditions of queries that name no service; resources
// names the resources that may have an attribute.
func compile(q Query, notBefore uint64, services []string, resources *resourceIndex) *compiled {
	c := &compiled{startMin: notBefore, startMax: math.MaxUint64, durMax: math.MaxUint64, limit: q.Limit}
	if q.Service != "" {
		c.svc = []byte(q.Service)
	}
	if q.Operation != "" {
		c.op = []byte(q.Operation)
	}
	for _, a := range q.Attributes {
		if a.Key == "error" && a.Value == "true" {
			c.errors = true
			continue
		}
		c.attrs = append(c.attrs, a)
	}
	if !q.StartMin.IsZero() {
		c.startMin = max(c.startMin, unixNanos(q.StartMin))
	}
	if !q.StartMax.IsZero() {
		c.startMax = unixNanos(q.StartMax)
	}
	if q.DurationMin > 0 {
		c.durMin = uint64(q.DurationMin)
	}
	if q.DurationMax > 0 {
		c.durMax = uint64(q.DurationMax)
	}

	var h index.Hasher
	if c.svc != nil {
		c.svcTerm = h.Service(c.svc)
	}
	spanConds := 0 // conditions on the span beyond its service
	switch {
	case c.svc != nil && c.op != nil:
		c.groups = append(c.groups, []index.Term{h.Operation(c.svc, c.op)})
		spanConds++
	case c.svc != nil:
		c.groups = append(c.groups, []index.Term{c.svcTerm})
	case c.op != nil:
		spanConds += 2 // no term: only verification can tell
	}
	if c.errors {
		c.groups = append(c.groups, []index.Term{h.Error(c.svc)})
		spanConds++
	}
	c.attrGroups = len(c.groups)
	for _, a := range c.attrs {
		// Attribute terms name the service: without one, any service will do.
		key, value := []byte(a.Key), []byte(a.Value)
		var g []index.Term
		if c.svc != nil {
			g = append(g, h.Attribute(c.svc, key, value))
		}
		for _, svc := range services {
			g = append(g, h.Attribute([]byte(svc), key, value))
		}
		// A resource attribute is found through the resources that have
		// it: here those of the live buffers, in addStoredResources those
		// of blocks.
		ra := resourceAttr{group: len(c.groups), term: h.Attribute(nil, key, value)}
		if c.svc != nil {
			ra.service = c.svcTerm
		}
		g = resources.pendingWith(g, &h, ra.term, ra.service)
		c.resourceAttrs = append(c.resourceAttrs, ra)
		c.groups = append(c.groups, g)
		spanConds += 2 // attribute terms are bucketed
	}
	if c.durMin > 0 || c.durMax < math.MaxUint64 {
		// A duration term names the service too, so with no other
		// condition on the span, an inside bucket decides.
		c.exactInside = c.svc != nil && spanConds == 0
		spanConds += 2 // boundary buckets are coarser than the bounds
		if c.svc != nil {
			var g []index.Term
			for b := index.DurationBucket(c.durMin); b <= index.DurationBucket(c.durMax); b++ {
				lo, hi := index.DurationRange(b)
				if lo > hi {
					continue
				}
				t := h.Duration(c.svc, b)
				g = append(g, t)
				if lo >= c.durMin && hi <= c.durMax {
					c.inside = append(c.inside, t)
				}
			}
			c.groups = append(c.groups, g)
			slices.Sort(c.inside)
		}
	}
	c.exact = spanConds <= 1
	// Sorted, a group meets a live trace's sorted terms by merging (see
	// traceState.hasAny), and the terms of one postings shard come together.
	for _, g := range c.groups {
		slices.Sort(g)
	}
	return c
}

// decides reports whether the terms alone decide that a row (or a live
// trace's spans in one partition) matches, given whether it was found
// through an inside duration term.
func (c *compiled) decides(inside, split bool, minStart, maxStart uint64) bool {
	return (c.exact || c.exactInside && inside) && !split && c.within(minStart, maxStart)
}

// within reports whether every span start in [lo, hi] lies in the window.
func (c *compiled) within(lo, hi uint64) bool { return lo >= c.startMin && hi <= c.startMax }

// overlaps reports whether some span start in [lo, hi] may lie in the window.
func (c *compiled) overlaps(lo, hi uint64) bool { return hi >= c.startMin && lo <= c.startMax }

// matchSpan evaluates every condition on one span of a service and resource.
func (c *compiled) matchSpan(svc, resource, raw []byte) bool {
	if c.svc != nil && !bytes.Equal(svc, c.svc) {
		return false
	}
	f := otlpwire.Facts(raw)
	if c.op != nil && !bytes.Equal(f.Name, c.op) {
		return false
	}
	if f.Start < c.startMin || f.Start > c.startMax || (c.errors && !f.Error) {
		return false
	}
	d := uint64(0)
	if f.End > f.Start {
		d = f.End - f.Start
	}
	if d < c.durMin || d > c.durMax {
		return false
	}
	if len(c.attrs) == 0 {
		return true
	}
	var held uint64 // bit i: attribute condition i holds
	check := func(key []byte, t otlpwire.ValueType, b []byte, num uint64) {
		for i, a := range c.attrs {
			if string(key) == a.Key {
				c.value = otlpwire.AppendText(c.value[:0], t, b, num)
				if string(c.value) == a.Value {
					held |= 1 << i
				}
			}
		}
	}
	otlpwire.SpanAndEventAttributes(raw, check)
	otlpwire.Attributes(resource, otlpwire.ResourceAttributes, check)
	return held == 1<<len(c.attrs)-1
}

// maxAttributeConditions bounds a query's attribute conditions (one bit each
// in matchSpan).
const maxAttributeConditions = 64

// ErrBadQuery is wrapped by errors about queries that cannot be run.
var ErrBadQuery = errors.New("bad query")

// results collects matches by trace, keeping the extent seen.
type results struct {
	byID map[TraceID]int
	list []Found
}

func (r *results) add(id TraceID, start, end uint64) {
	if i, ok := r.byID[id]; ok {
		f := &r.list[i]
		f.Start, f.End = min(f.Start, start), max(f.End, end)
		return
	}
	r.byID[id] = len(r.list)
	r.list = append(r.list, Found{ID: id, Start: start, End: end})
}

// Find returns up to q.Limit traces matching q, the most recent first.
//
// Live buffers are searched first, then, newest partition first and newest
// block first within it, each segment's index narrows the candidates, which
// are checked against their spans unless the index alone decides. The search
// stops once it has q.Limit traces, so its cost depends on how many matches
// the newest data holds, not on the size of the store; a selective query pays
// for the segments in its time window.
func (db *DB) Find(ctx context.Context, q Query) ([]Found, error) {
	if q.Limit <= 0 {
		return nil, fmt.Errorf("%w: limit must be positive", ErrBadQuery)
	}
	if len(q.Attributes) > maxAttributeConditions {
		return nil, fmt.Errorf("%w: at most %d attribute conditions", ErrBadQuery, maxAttributeConditions)
	}
	if q.Operation != "" && q.Service == "" {
		return nil, fmt.Errorf("%w: an operation needs a service", ErrBadQuery)
	}
	res := &results{byID: map[TraceID]int{}}

	lo, hi := uint32(0), ^uint32(0)
	if !q.StartMin.IsZero() {
		lo = partitionOf(unixNanos(q.StartMin))
	}
	if !q.StartMax.IsZero() {
		hi = partitionOf(unixNanos(q.StartMax))
	}
	// Compiled before the view is taken, the query names the resources of
	// every buffer the view will hold: a cut forgets a buffer's resources
	// only once it has stored them, where the view's iterators find them.
	notBefore := db.NotBefore()
	var services []string
	if q.Service == "" && len(q.Attributes) > 0 {
		db.mu.Lock()
		services = db.catalog.listServices(partitionOf(notBefore))
		db.mu.Unlock()
	}
	c := compile(q, notBefore, services, db.resources)
	v, err := db.openView(lo, hi)
	if err != nil {
		return nil, err
	}
	defer db.release(v)
	if err := c.addStoredResources(v.index); err != nil {
		return nil, err
	}
	c.searchLive(v.bufs, v.notBefore, res)

	s := &segmentSearch{db: db, c: c, it: v.index, data: v.data, res: res}
	defer s.close()
	for i := len(v.parts) - 1; i >= 0 && len(res.list) < c.limit; i-- {
		if err := s.partition(ctx, v.parts[i], v.minBlock); err != nil {
			return nil, err
		}
	}
	if len(s.damaged) > 0 {
		// Once at warning level: every search that meets the damage skips
		// it, and the corruption fault already says it is there.
		level := slog.LevelDebug
		if db.searchSkipped.CompareAndSwap(false, true) {
			level = slog.LevelWarn
		}
		db.opts.Logger.Log(ctx, level, "search skipped what damaged files hold", "skipped", len(s.damaged), "first", s.damaged[0])
	}
	slices.SortFunc(res.list, func(a, b Found) int {
		if c := cmp.Compare(b.Start, a.Start); c != 0 {
			return c
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
	if len(res.list) > c.limit {
		res.list = res.list[:c.limit]
	}
	return res.list, nil
}

// liveCandidate is a live trace's spans in one partition, which the index
// terms did not rule out.
type liveCandidate struct {
	id                   TraceID
	spans                runs[liveSpan] // the trace's spans when the candidate was taken
	p                    uint32
	start, maxStart, end uint64
	single               bool // the trace's spans all fall in this partition, none aged out
	inside               bool // the trace has an inside duration term
}

// searchLive adds the newest matching traces of the live buffers, up to the
// limit: the first matches in newest-first order (see newestFirst), as a
// look at every trace would find them. It reads the buffers' arrival chunks
// (see traceTable), the one whose traces may start latest first, and stops
// at a chunk that can hold nothing in the time window, or nothing newer than
// the limit-th trace found. Traces arrive roughly in start order, so a
// search for what many traces have reads a few chunks, whatever the buffers
// hold.
func (c *compiled) searchLive(bufs []*buffer, notBefore uint64, res *results) {
	var chunks []arrivals
	for _, buf := range bufs {
		chunks = buf.byID.appendArrivals(chunks)
	}
	slices.SortFunc(chunks, func(a, b arrivals) int { return cmp.Compare(b.bound, a.bound) })
	m := liveMatches{limit: c.limit}
	var cands []liveCandidate
	for _, ch := range chunks {
		if ch.bound < c.startMin || (m.full && ch.bound < m.last.start) {
			break
		}
		for i := range ch.states {
			t := ch.states[i].Load()
			if m.full && t.maxStart < m.last.start {
				continue // every candidate of it starts after the limit-th trace's
			}
			cands = c.candidates(cands[:0], t, notBefore)
			for j := range cands {
				cd := &cands[j]
				if m.full && newestFirst(cd, &m.last) >= 0 {
					continue // after the limit-th trace
				}
				if c.overlaps(cd.start, cd.maxStart) && c.verifyLive(cd, notBefore) {
					m.list = append(m.list, *cd)
				}
			}
		}
		m.trim(false)
	}
	m.trim(true)
	for i := range m.list {
		if len(res.list) >= c.limit {
			return
		}
		res.add(m.list[i].id, m.list[i].start, m.list[i].end)
	}
}

// candidates appends the candidates of a live trace: none if its terms rule
// it out, else one per partition its spans fall in.
func (c *compiled) candidates(cands []liveCandidate, t *traceState, notBefore uint64) []liveCandidate {
	for _, g := range c.groups {
		if !t.hasAny(g) {
			return cands
		}
	}
	inside := len(c.inside) > 0 && t.hasAny(c.inside)
	if !t.multiPartition && t.minStart >= notBefore {
		return append(cands, liveCandidate{id: t.id, spans: t.spans, p: t.partition,
			start: t.minStart, maxStart: t.maxStart, end: t.maxEnd, single: true, inside: inside})
	}
	// As on disk, a match is reported with the extent of the trace's
	// spans in the partition where it matched.
	first := len(cands)
	for s := range t.spans.each {
		if s.start < notBefore {
			continue
		}
		p := partitionOf(s.start)
		k := first
		for k < len(cands) && cands[k].p != p {
			k++
		}
		if k == len(cands) {
			cands = append(cands, liveCandidate{id: t.id, spans: t.spans, p: p, start: math.MaxUint64})
		}
		cd := &cands[k]
		cd.start, cd.maxStart, cd.end = min(cd.start, s.start), max(cd.maxStart, s.start), max(cd.end, s.end)
	}
	// The trace's terms are those of spans in other partitions, or aged
	// out, too: the index alone never decides these candidates.
	for k := first; k < len(cands); k++ {
		cands[k].inside = inside
	}
	return cands
}

// verifyLive reports whether a candidate within the time window matches.
func (c *compiled) verifyLive(cd *liveCandidate, notBefore uint64) bool {
	// Within one partition and the time window, terms that decide alone
	// need no look at the spans, as for a segment row.
	if c.decides(cd.inside, !cd.single, cd.start, cd.maxStart) {
		return true
	}
	for s := range cd.spans.each {
		if s.start >= notBefore && partitionOf(s.start) == cd.p && c.matchSpan(s.group.service, s.group.res.Raw, s.raw) {
			return true
		}
	}
	return false
}

// newestFirst orders live candidates by start, newest first. Buffers are
// read in no particular order: ties are broken by ID, partition and end, so
// that the answer does not depend on it (a trace that two buffers hold has
// a candidate in each, which may differ in their end alone).
func newestFirst(a, b *liveCandidate) int {
	return cmp.Or(cmp.Compare(b.start, a.start), bytes.Compare(a.id[:], b.id[:]), cmp.Compare(a.p, b.p), cmp.Compare(b.end, a.end))
}

// liveMatches collects a search's matching live candidates, keeping those up
// to the one that brings the limit-th distinct trace: a search answers no
// later ones.
type liveMatches struct {
	limit int
	list  []liveCandidate
	kept  int           // len(list) after the last trim
	full  bool          // list holds limit traces
	last  liveCandidate // if full, the one that brought the limit-th
}

// trim sorts the matches and drops those after the limit-th trace: always
// if final, else once the list has doubled since the last trim, so that
// sorting costs a logarithm per match.
func (m *liveMatches) trim(final bool) {
	if !final && len(m.list) < max(m.limit, 2*m.kept) {
		return
	}
	slices.SortFunc(m.list, func(a, b liveCandidate) int { return newestFirst(&a, &b) })
	seen := make(map[TraceID]bool, min(m.limit, len(m.list)))
	for i := range m.list {
		seen[m.list[i].id] = true
		if len(seen) == m.limit {
			m.list = m.list[:i+1]
			m.full, m.last = true, m.list[i]
			break
		}
	}
	m.kept = len(m.list)
}

// segmentSearch searches the segments of partitions on disk.
type segmentSearch struct {
	db   *DB
	c    *compiled
	it   *pebble.Iterator // index store
	data *pebble.Iterator // spans store
	res  *results

	services map[dictID][]byte // service names of resources, by resource ID
	// dictIt reads the dictionary as of it's view; cloned from it on the
	// first cache miss, since verify runs while it holds a rows value.
	dictIt *pebble.Iterator
	// traceIt reads the trace index as of it's view, for verify; cloned
	// on first use, like dictIt.
	traceIt *pebble.Iterator
	damaged []error // what was skipped because damaged files hold it
	frags   []codec.Group
	spanBuf []byte // spans of frags, rebuilt
}

// dictGet reads a dictionary or group key as of the search's view.
func (s *segmentSearch) dictGet(k []byte) ([]byte, bool, error) {
	if s.dictIt == nil {
		it, err := s.it.Clone(pebble.CloneOptions{})
		if err != nil {
			return nil, false, err
		}
		s.dictIt = it
	}
	return iterGetter(s.dictIt)(k)
}

func (s *segmentSearch) close() {
	if s.dictIt != nil {
		s.dictIt.Close()
	}
	if s.traceIt != nil {
		s.traceIt.Close()
	}
}

// partition searches a partition's segments, newest block first, skipping
// blocks at or above minBlock, which live buffers hold. A segment that a
// damaged file holds is skipped, and noted in s.damaged: search serves what
// it can read.
func (s *segmentSearch) partition(ctx context.Context, p uint32, minBlock uint64) error {
	prefix := keys.PartitionPrefix(keys.KindRows, p)
	upper := keys.Rows(p, minBlock)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if b := s.db.damage.below("index", upper); b != nil {
			// The seek would meet a damaged block of rows.
			s.note(b.err("search index of partition " + partitionName(p)))
			if bytes.Compare(b.lo, prefix) <= 0 {
				return nil
			}
			upper = b.lo
			continue
		}
		if !s.it.SeekLT(upper) {
			err := s.it.Error()
			if err == nil || !IsCorruption(err) {
				return err
			}
			// The rows of some segment below upper are unreadable; which
			// one is unknown, so the damaged file's keys are passed over.
			s.note(contain(err, "search index of partition "+partitionName(p)))
			info := pebble.ExtractDataCorruptionInfo(err)
			if info == nil || bytes.Compare(info.Bounds.Start, prefix) <= 0 {
				return nil
			}
			upper = bytes.Clone(info.Bounds.Start)
			continue
		}
		if !bytes.HasPrefix(s.it.Key(), prefix) {
			return nil
		}
		_, block, err := keys.ParseRows(s.it.Key())
		if err != nil {
			return err
		}
		if err := s.segment(p, block); err != nil {
			if !IsCorruption(err) {
				return err
			}
			s.note(contain(err, fmt.Sprintf("search index of partition %s, block %d", partitionName(p), block)))
		}
		if len(s.res.list) >= s.c.limit {
			return nil
		}
		upper = keys.Rows(p, block)
	}
}

// note records a part of the store that search could not read.
func (s *segmentSearch) note(err error) { s.damaged = append(s.damaged, err) }

// segment searches one segment; the iterator is at its rows key. Postings
// come first, so that a segment without candidates costs a few seeks, and
// rows are decoded only as far as the candidates examined.
func (s *segmentSearch) segment(p uint32, block uint64) error {
	rr, err := index.NewRowReader(s.it.Value())
	if err != nil {
		return fmt.Errorf("rows of partition %d block %d: %w", p, block, err)
	}
	// A match needs a span of the service in this segment at least durMin
	// long: without one, candidates of the bucket that holds durMin would
	// each be read only to be refused.
	if s.c.svc != nil && s.c.durMin > 0 {
		if longest, _ := rr.MaxDuration(s.c.svcTerm); longest < s.c.durMin {
			return nil
		}
	}
	cands, inside, err := s.candidates(p, block, rr.Len(), rr.TextAttributes())
	if err != nil || len(cands) == 0 {
		return err
	}
	k := keys.Rows(p, block)
	if !s.it.SeekGE(k) || !bytes.Equal(s.it.Key(), k) {
		return fmt.Errorf("rows of partition %d block %d vanished: %w", p, block, s.it.Error())
	}
	// verify reads spans through the other iterator, so this value stays
	// valid.
	if rr, err = index.NewRowReader(s.it.Value()); err != nil {
		return err
	}
	for _, i := range cands {
		r, err := rr.Row(int(i))
		if err != nil {
			return fmt.Errorf("rows of partition %d block %d: %w", p, block, err)
		}
		if !s.c.overlaps(r.MinStart, r.MaxStart) {
			continue
		}
		_, in := slices.BinarySearch(inside, i)
		ok := s.c.decides(in, r.Split, r.MinStart, r.MaxStart)
		if !ok {
			if ok, err = s.verify(p, block, r.TraceID); IsCorruption(err) {
				// Its spans are unreadable, and so is the trace.
				s.note(err)
				continue
			} else if err != nil {
				return err
			}
		}
		if ok {
			s.res.add(r.TraceID, r.MinStart, r.MaxEnd)
			if len(s.res.list) >= s.c.limit {
				return nil
			}
		}
	}
	return nil
}

// candidates intersects the postings of the query's term groups: the rows,
// newest first, that may match. Without terms every row is a candidate.
// inside lists, sorted, the rows found through inside duration terms. A
// segment without textAttributes has no terms the attribute conditions can
// look up, so they narrow nothing there.
func (s *segmentSearch) candidates(p uint32, block uint64, nrows int, textAttributes bool) (out, inside []uint32, err error) {
	// Consecutive terms in one shard, such as a service's duration buckets,
	// share a seek.
	shard, found := -1, false
	narrowed := false
	for gi, g := range s.c.groups {
		if !textAttributes && gi >= s.c.attrGroups && gi < s.c.attrGroups+len(s.c.attrs) {
			continue
		}
		var union []uint32
		for _, t := range g {
			if int(index.Shard(t)) != shard {
				shard = int(index.Shard(t))
				k := keys.Postings(p, block, index.Shard(t))
				if b := s.db.damage.covering("index", k); b != nil {
					return nil, nil, b.err("postings")
				}
				found = s.it.SeekGE(k) && bytes.Equal(s.it.Key(), k)
				if err := s.it.Error(); err != nil {
					return nil, nil, err
				}
			}
			if !found {
				continue // no term of the segment is in this shard
			}
			rows, err := index.Postings(s.it.Value(), t, nrows)
			if err != nil {
				return nil, nil, fmt.Errorf("postings of partition %d block %d: %w", p, block, err)
			}
			union = append(union, rows...)
			if _, in := slices.BinarySearch(s.c.inside, t); in {
				inside = append(inside, rows...)
			}
		}
		slices.Sort(union)
		union = slices.Compact(union)
		if !narrowed {
			out, narrowed = union, true
		} else {
			out = intersect(out, union)
		}
		if len(out) == 0 {
			return nil, nil, nil
		}
	}
	if !narrowed {
		out = make([]uint32, nrows)
		for i := range out {
			out[i] = uint32(i)
		}
	}
	slices.Sort(inside)
	return out, slices.Compact(inside), nil
}

func intersect(a, b []uint32) []uint32 {
	var out []uint32
	for len(a) > 0 && len(b) > 0 {
		switch {
		case a[0] < b[0]:
			a = a[1:]
		case a[0] > b[0]:
			b = b[1:]
		default:
			out = append(out, a[0])
			a, b = a[1:], b[1:]
		}
	}
	return out
}

// laterFragment positions s.data on the trace's first fragment in partition
// p after block, which the trace index names, and returns its block.
func (s *segmentSearch) laterFragment(p uint32, block uint64, id TraceID) (uint64, bool, error) {
	if s.traceIt == nil {
		it, err := s.it.Clone(pebble.CloneOptions{})
		if err != nil {
			return 0, false, err
		}
		s.traceIt = it
	}
	blocks, err := s.db.fragmentBlocks(s.traceIt, p, id, math.MaxUint64)
	if err != nil {
		return 0, false, err
	}
	for _, b := range blocks {
		if b <= block {
			continue
		}
		found, err := s.db.seekFragment(s.data, p, b, id)
		if found || err != nil {
			return b, found, err
		}
	}
	return 0, false, nil
}

// verify checks the trace's spans in the segment against the query.
func (s *segmentSearch) verify(p uint32, block uint64, id TraceID) (bool, error) {
	found, err := s.db.seekFragment(s.data, p, block, id)
	if !found && err == nil {
		// Recompression merged the fragment into the trace's fragment of a
		// later block (or cairn repair dropped it, which could not be read).
		block, found, err = s.laterFragment(p, block, id)
	}
	if !found {
		return false, err
	}
	for found {
		match, err := s.matchFragment(block, id)
		if match || err != nil {
			return match, err
		}
		if found, err = s.db.nextPart(s.data, p, block, id); err != nil {
			return false, err
		}
	}
	return false, nil
}

// matchFragment reports whether a span of the fragment (or part of one)
// that s.data is at matches the query.
func (s *segmentSearch) matchFragment(block uint64, id TraceID) (bool, error) {
	var err error
	if s.frags, s.spanBuf, err = codec.DecodeFragment(s.frags[:0], s.spanBuf[:0], s.data.Value(), id); err != nil {
		return false, fmt.Errorf("fragment of trace %x in block %d: %w", id, block, err)
	}
	for _, g := range s.frags {
		resID, _, err := s.db.groups.pair(s.dictGet, g.Num)
		if err != nil {
			return false, err
		}
		res, err := s.db.dict.lookup(s.dictGet, keys.KindResource, resID)
		if err != nil {
			return false, err
		}
		svc, ok := s.services[resID]
		if !ok {
			if s.services == nil {
				s.services = map[dictID][]byte{}
			}
			svc = otlpwire.ServiceName(res.Raw)
			s.services[resID] = svc
		}
		for _, raw := range g.Spans {
			if s.c.matchSpan(svc, res.Raw, raw) {
				return true, nil
			}
		}
	}
	return false, nil
}
