package analysis

import (
	"cmp"
	"slices"
	"sort"
)

// Options tune the analyses. The zero value is ready to use.
type Options struct {
	// SkewFraction bounds what is taken for clock skew rather than
	// concurrency, as a fraction of a span's duration: how far two siblings
	// timed by different clocks may overlap (of the shorter) and still be
	// taken as one after the other, and how far a child may outlast its
	// parent (of the child) and still be taken as awaited by it. Default
	// 0.05.
	SkewFraction float64
}

// EnsureDefaults returns a copy of o (which may be nil) with every zero field
// set to its default.
func (o *Options) EnsureDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.SkewFraction <= 0 {
		c.SkewFraction = 0.05
	}
	return c
}

// Path is the critical path of a trace: the intervals on which the end of
// its root span waits, each attributed to the span doing the work then.
type Path struct {
	// Root indexes the root span in Trace.Spans; -1 for a trace without
	// spans.
	Root       int
	Start, End uint64 // the root's interval, which Segments tile exactly
	Segments   []Segment
	// Operations sums the segments per operation, the most time first.
	Operations []OperationTime
}

// Segment is an interval of the critical path and the span working in it.
type Segment struct {
	Span       int // index in Trace.Spans
	Start, End uint64
	// retryOf, where not 0, is one more than the index of the failed child
	// whose retry, a later child of the same operation, Span waited for in
	// this segment: a retry's backoff, which a diagnosis counts for the
	// failed operation (see tree.selfTimes).
	retryOf int32
	// queuedFor, where not 0, is one more than the index of the consumer
	// whose message Span waited for in a queue in this segment, between
	// the producer span's end and the consumer's start (see awaitReplies),
	// which a diagnosis counts for the calls to the consumer's operation.
	queuedFor int32
}

// OperationTime is an operation's self time on a critical path.
type OperationTime struct {
	Service, Operation string
	Self               uint64  // nanoseconds
	Share              float64 // of the root's duration
}

// CriticalPath returns the critical path of t.
//
// The root is the longest span without a parent, unless a longer span
// whose parent is missing holds it; failing both, the longest span whose
// parent is missing. Other spans without a parent, and spans
// whose parent is missing (orphans), are adopted by the deepest span whose
// interval holds theirs, as the nearest account of where their lost parent
// ran. Spans in a cycle of parent IDs are left out.
//
// Times are first made consistent. A synchronous call into another process
// (a server span, or any child of a client span, on another resource) that
// lies partly outside its caller was timed by a skewed clock: it is moved,
// with its subtree, by the least that puts it inside, if it fits. A child
// that outlasts its parent by more than the skew allowance was not awaited
// (a message consumer, a fire-and-forget task) and is off the path, unless
// it consumed a request whose reply the producer's parent waited for (see
// awaitReplies); any other child is clipped to its parent.
//
// The path then runs backward from the root's end: the child that finished
// last is on it, then, from that child's start, the sibling that finished
// latest before it, and so on; the parent's own time fills what its
// children on the path leave. A sibling that overlaps the one after it on
// the path is off the path, unless the overlap is within the skew allowance
// and a clock other than the parent's timed one of the two. Each child on
// the path is walked the same way over its part of the path.
func CriticalPath(t *Trace, opts *Options) Path {
	return criticalPath(t, opts.EnsureDefaults(), -1)
}

// CriticalPathFrom returns the critical path below span root of t, as
// CriticalPath would if root were the root: the time root's end waits on.
func CriticalPathFrom(t *Trace, root int, opts *Options) Path {
	return criticalPath(t, opts.EnsureDefaults(), int32(root))
}

// criticalPath walks the path from root, or from the root CriticalPath
// chooses if root is negative.
func criticalPath(t *Trace, opts Options, root int32) Path {
	return buildTree(t, opts, root).path()
}

func (tr *tree) path() Path {
	t := tr.t
	p := Path{Root: tr.root}
	if tr.root < 0 {
		return p
	}
	rn := &tr.nodes[tr.root]
	p.Start, p.End = rn.start, rn.end
	tr.walk(int32(tr.root), rn.end)
	p.Segments = slices.Clone(tr.segments)
	slices.Reverse(p.Segments)
	p.Operations = operationTimes(t, p)
	return p
}

// node is a span placed on the tree the path is walked on.
type node struct {
	start, end uint64 // corrected for skew, clipped to the parent
	placed     bool
	// children are the children placed under this span, the last to end
	// first once the tree is built.
	children []int32
	parent   int32 // placed over this span; -1 for the root
	height   int32 // of the subtree under this span: 0 for a leaf
	// inner are the children with children of their own, in the order
	// they were placed, and order is this span's place among its parent's
	// children, as placed: what adoption searches (see deepestHolding).
	inner []int32
	order int32
	// byStart are the children by start, and longest the longest of them,
	// kept once adoption has asked which of them holds a span (see
	// holdingChild); adopted are those placed after, by start too.
	byStart, adopted []int32
	longest          uint64
}

type tree struct {
	t        *Trace
	opts     Options
	nodes    []node
	root     int
	segments []Segment // in reverse while walking
	// waits and resKeys are what selfTimes records for a diagnosis: see
	// addWait.
	waits   []callWait
	resKeys map[int]string
	// failedReplies are, by producer span on the tree, its consumers that
	// failed and are not on it (see failedReply).
	failedReplies map[int32][]int32
	// runs are the runs innerRun found, by the span they start under,
	// as of innerVersion, which counts the changes to any span's inner.
	runs         map[int32]innerRun
	innerVersion uint64
}

type innerRun struct {
	spans   []int32
	version uint64
}

// spanIDs indexes t's spans by ID, a duplicate ID by its first copy.
func spanIDs(t *Trace) map[SpanID]int32 {
	ids := make(map[SpanID]int32, len(t.Spans))
	for i := range t.Spans {
		if _, dup := ids[t.Spans[i].ID]; !dup {
			ids[t.Spans[i].ID] = int32(i)
		}
	}
	return ids
}

// buildTree places the spans under root, or under the root it chooses if
// root is negative.
func buildTree(t *Trace, opts Options, root int32) *tree {
	tr := &tree{t: t, opts: opts, nodes: make([]node, len(t.Spans)), root: -1}
	ids := spanIDs(t)
	children := make([][]int32, len(t.Spans))
	var parentless, orphans []int32
	for i := range t.Spans {
		s := &t.Spans[i]
		if ids[s.ID] != int32(i) {
			// A span ID twice is one span: the second copy of a root
			// would otherwise be adopted as a child spanning all of it.
			continue
		}
		p, ok := ids[s.Parent]
		switch {
		case s.Parent == SpanID{}:
			parentless = append(parentless, int32(i))
		case ok && p != int32(i):
			children[p] = append(children[p], int32(i))
		default:
			orphans = append(orphans, int32(i))
		}
	}
	above := root // the top of the tree root is in: not to adopt
	if root < 0 {
		longest := func(a, b int32) int {
			sa, sb := &t.Spans[a], &t.Spans[b]
			return cmp.Or(cmp.Compare(sb.Duration(), sa.Duration()), cmp.Compare(sa.Start, sb.Start), cmp.Compare(a, b))
		}
		switch {
		case len(parentless) > 0:
			root = slices.MinFunc(parentless, longest)
			// A trace continued from elsewhere (a proxy or a browser
			// that exports elsewhere) has its request as a span whose
			// parent is missing; a short span without a parent inside it
			// (a library's, started without context) is not its root.
			rs := &t.Spans[root]
			for _, o := range orphans {
				if os := &t.Spans[o]; os.Start <= rs.Start && rs.Start+rs.Duration() <= os.Start+os.Duration() && os.Duration() > rs.Duration() {
					root, rs = o, os // the longest of them, as they grow
				}
			}
		case len(orphans) > 0:
			root = slices.MinFunc(orphans, longest)
		default:
			return tr // every span is in a cycle, or there are none
		}
		above = root
	} else {
		for range t.Spans { // at most as many steps, in case of a cycle
			p, ok := ids[t.Spans[above].Parent]
			if !ok || p == above {
				break
			}
			above = p
		}
	}
	tr.root = int(root)
	s := &t.Spans[root]
	tr.nodes[root].parent = -1
	tr.place(root, children, 0, s.Start, s.Start+s.Duration(), s.Start+s.Duration())
	for _, top := range slices.Concat(parentless, orphans) {
		if top != above && !tr.nodes[top].placed {
			tr.adopt(top, children)
		}
	}
	tr.awaitReplies(children)
	for c := range t.Spans {
		cs := &t.Spans[c]
		if !cs.Failed || !tr.unplacedConsumer(int32(c)) {
			continue
		}
		if p, ok := ids[cs.Parent]; ok && tr.nodes[p].placed && t.Spans[p].Kind == kindProducer {
			if tr.failedReplies == nil {
				tr.failedReplies = map[int32][]int32{}
			}
			tr.failedReplies[p] = append(tr.failedReplies[p], int32(c))
		}
	}
	for i := range tr.nodes {
		n := &tr.nodes[i]
		slices.SortFunc(n.children, func(a, b int32) int {
			na, nb := &tr.nodes[a], &tr.nodes[b]
			return cmp.Or(cmp.Compare(nb.end, na.end), cmp.Compare(na.start, nb.start), cmp.Compare(a, b))
		})
	}
	return tr
}

// place puts span i and its subtree on the tree with its times shifted by
// offset and clipped to [from, to], its parent's interval. A client span
// i may be lengthened to its server's length as far as until (see
// outlastingServer).
func (tr *tree) place(i int32, children [][]int32, offset int64, from, to, until uint64) {
	s := &tr.t.Spans[i]
	n := &tr.nodes[i]
	n.placed = true
	n.start = max(shift(s.Start, offset), from)
	n.end = max(min(shift(s.Start+s.Duration(), offset), to), n.start)
	for _, c := range children[i] {
		if !tr.nodes[c].placed {
			tr.outlastingServer(i, c, until)
		}
	}
	var buf [4]clockGroup
	clocks := tr.clockGroups(i, children[i], offset, buf[:0])
	var next *nextStarts // made for the first client child
	for _, c := range children[i] {
		if tr.nodes[c].placed {
			continue // a duplicate span ID's children, placed already
		}
		if off, ok := tr.fit(i, c, offset, false, clocks); ok {
			cuntil := n.end
			if tr.outlasted(c, children[c]) {
				if next == nil {
					next = tr.newNextStarts(children[i])
				}
				cuntil = min(cuntil, next.after(c, off))
			}
			tr.place(c, children, off, n.start, n.end, cuntil)
			tr.link(i, c)
			n.height = max(n.height, tr.nodes[c].height+1)
		}
	}
}

// nextStarts finds, for a child, when its parent went on after it: the
// start of the first other child on its clock that starts once it ended.
type nextStarts struct {
	tr      *tree
	byClock map[int][]uint64 // starts of the children, by resource, in order
}

func (tr *tree) newNextStarts(kids []int32) *nextStarts {
	n := &nextStarts{tr: tr, byClock: map[int][]uint64{}}
	for _, c := range kids {
		cs := &tr.t.Spans[c]
		n.byClock[cs.Resource] = append(n.byClock[cs.Resource], cs.Start)
	}
	for _, starts := range n.byClock {
		slices.Sort(starts)
	}
	return n
}

// after returns when c's parent went on after c ended, shifted by offset,
// c's: the greatest time if it did not. A sibling that starts as c ends
// counts.
func (n *nextStarts) after(c int32, offset int64) uint64 {
	cs := &n.tr.t.Spans[c]
	starts := n.byClock[cs.Resource]
	k, _ := slices.BinarySearch(starts, cs.Start+cs.Duration())
	if cs.Duration() == 0 {
		k++ // past c itself, which starts where it ends
	}
	if k >= len(starts) {
		return ^uint64(0)
	}
	return shift(starts[k], offset)
}

// link records placed span c, its subtree placed, as the last child of p.
func (tr *tree) link(p, c int32) {
	pn, cn := &tr.nodes[p], &tr.nodes[c]
	cn.parent, cn.order = p, int32(len(pn.children))
	pn.children = append(pn.children, c)
	if cn.height > 0 {
		pn.inner = append(pn.inner, c)
		tr.innerVersion++
	}
	if pn.byStart != nil {
		// At the end, where spans come in order of start.
		pn.adopted = slices.Insert(pn.adopted, tr.startsAfter(pn.adopted, cn.start), c)
		pn.longest = max(pn.longest, cn.end-cn.start)
	}
}

// startsAfter returns the index of the first of spans, by start, that
// starts after t.
func (tr *tree) startsAfter(spans []int32, t uint64) int {
	k, _ := slices.BinarySearchFunc(spans, t, func(x int32, t uint64) int {
		if tr.nodes[x].start <= t {
			return -1
		}
		return 1
	})
	return k
}

// holdingChild returns a child of n whose interval holds [start, end], the
// latest to start of those adopted, else of the others, or -1. Only the
// children that start from end less the longest child's length to start
// can: a thousand orphans one after the other under one span, the
// children of a span that was never sent, cost a search of a few of
// their siblings each, not of all of them.
func (tr *tree) holdingChild(n int32, start, end uint64) int32 {
	nd := &tr.nodes[n]
	if nd.byStart == nil {
		nd.byStart = slices.Clone(nd.children)
		slices.SortStableFunc(nd.byStart, func(a, b int32) int { return cmp.Compare(tr.nodes[a].start, tr.nodes[b].start) })
		for _, c := range nd.children {
			nd.longest = max(nd.longest, tr.nodes[c].end-tr.nodes[c].start)
		}
	}
	from := end - min(end, nd.longest)
	for _, kids := range [2][]int32{nd.adopted, nd.byStart} {
		for k := tr.startsAfter(kids, start) - 1; k >= 0; k-- {
			cn := &tr.nodes[kids[k]]
			if cn.start < from {
				break
			}
			if end <= cn.end {
				return kids[k]
			}
		}
	}
	return -1
}

// attach places span c, with its subtree, its times shifted by offset,
// under placed span p, whose interval it lies in, once the tree is built.
func (tr *tree) attach(p, c int32, children [][]int32, offset int64) {
	pn := &tr.nodes[p]
	tr.place(c, children, offset, pn.start, pn.end, pn.end)
	tr.link(p, c)
	// Heights up the tree; a leaf that gets a child becomes an inner
	// child of its parent.
	for h := tr.nodes[c].height + 1; p >= 0 && tr.nodes[p].height < h; h++ {
		n := &tr.nodes[p]
		if n.height == 0 && n.parent >= 0 {
			up := &tr.nodes[n.parent]
			at, _ := slices.BinarySearchFunc(up.inner, n.order, func(x int32, order int32) int { return cmp.Compare(tr.nodes[x].order, order) })
			up.inner = slices.Insert(up.inner, at, p)
			tr.innerVersion++
		}
		n.height = h
		p = n.parent
	}
}

// outlasted says whether client span p has a server span under it that
// took longer, which outlastingServer extends it to.
func (tr *tree) outlasted(p int32, kids []int32) bool {
	return slices.ContainsFunc(kids, func(c int32) bool {
		return tr.awaitedServer(p, c) && tr.t.Spans[c].Duration() > tr.t.Spans[p].Duration()
	})
}

// awaitedServer says whether c is the server span of client span p's call
// that p waited for to the end: a client that failed gave up on the call
// instead (see failureOrigin), and its caller went on.
func (tr *tree) awaitedServer(p, c int32) bool {
	ps := &tr.t.Spans[p]
	return ps.Kind == kindClient && !ps.Failed && tr.synchronousRemote(ps, &tr.t.Spans[c])
}

// outlastingServer extends client span p, placed, to the length of the
// server span c under it where c took longer, as far as limit: p's
// parent's end, or where p's parent went on with another child after p
// ended. Durations need no clock in common, and a call's server span
// within its client span is how every synchronous call is timed; a
// client span that ends first ended at the response's headers (a
// streaming body, as HTTP clients that end the span then time it), and
// its caller waited for the rest, unless it went on: a server that
// answers at once and works on (a webhook that answers 202, a
// fire-and-forget call) is not waited for (see awaitedServer).
func (tr *tree) outlastingServer(p, c int32, limit uint64) {
	if !tr.awaitedServer(p, c) {
		return
	}
	if pn, d := &tr.nodes[p], tr.t.Spans[c].Duration(); d > pn.end-pn.start {
		pn.end = max(pn.end, min(pn.start+d, limit))
	}
}

// clockGroup is the calls of one span into one other process, timed by
// that process's clock: their hull [lo, hi], in the caller's time, and the
// shift that puts it inside the caller, if there are several and it fits.
type clockGroup struct {
	res    int
	lo, hi uint64
	n      int // the calls; 0 if they are moved one by one
	shift  int64
}

// maxClockGroups bounds the processes whose calls clockGroups moves
// together; past it, each call is moved by itself.
const maxClockGroups = 64

// clockGroups returns, appended to groups, the calls of placed span p among
// kids (see remoteCall) by the process that timed them, with the shift that
// corrects each process's clock. One skew moves all of a clock's calls: a
// retry's second attempt that sticks out of the call is moved back with
// the failed first, not into it.
func (tr *tree) clockGroups(p int32, kids []int32, offset int64, groups []clockGroup) []clockGroup {
	for _, c := range kids {
		if tr.nodes[c].placed || !tr.remoteCall(p, c, offset) {
			continue
		}
		cs := &tr.t.Spans[c]
		lo, hi := shift(cs.Start, offset), shift(cs.Start+cs.Duration(), offset)
		k := slices.IndexFunc(groups, func(g clockGroup) bool { return g.res == cs.Resource })
		if k < 0 {
			if len(groups) == maxClockGroups {
				return groups[:0]
			}
			groups = append(groups, clockGroup{res: cs.Resource, lo: lo, hi: hi})
			k = len(groups) - 1
		}
		g := &groups[k]
		g.lo, g.hi, g.n = min(g.lo, lo), max(g.hi, hi), g.n+1
	}
	pn := &tr.nodes[p]
	for k := range groups {
		switch g := &groups[k]; {
		case g.n < 2 || g.hi-g.lo > pn.end-pn.start:
			g.n = 0 // one call, or calls that no one shift fits: one by one
		case g.lo < pn.start:
			g.shift = int64(pn.start - g.lo)
		case g.hi > pn.end:
			g.shift = -int64(g.hi - pn.end)
		}
	}
	return groups
}

// remoteCall says whether child c of placed span p, its times shifted by
// offset, is a synchronous call into another process, whose times are
// its clock's, to be moved inside p. A server span that starts after its
// parent ended, with no client span between them, is work the parent set
// off and did not wait for (a callback, a webhook): skew would have to be
// more than the time between them. Under a client span it is the call's
// own server, whatever the clocks say.
func (tr *tree) remoteCall(p, c int32, offset int64) bool {
	ps, cs := &tr.t.Spans[p], &tr.t.Spans[c]
	return tr.synchronousRemote(ps, cs) && (ps.Kind == kindClient || shift(cs.Start, offset) < tr.ownEnd(p, offset))
}

// ownEnd is placed span p's end by its own times, not the one its parent
// clipped it to, shifted by offset, p's.
func (tr *tree) ownEnd(p int32, offset int64) uint64 {
	ps := &tr.t.Spans[p]
	return max(tr.nodes[p].end, shift(ps.Start+ps.Duration(), offset))
}

// fit returns the offset that corrects child c of placed span p for skew,
// given the offset of p's clock and the shifts of p's calls' clocks, and
// whether c can be on the path at all. A child adopted by p, its parent
// being unknown, is never taken for a remote call.
func (tr *tree) fit(p, c int32, offset int64, adopted bool, clocks []clockGroup) (int64, bool) {
	cs := &tr.t.Spans[c]
	pn := &tr.nodes[p]
	start, end := shift(cs.Start, offset), shift(cs.Start+cs.Duration(), offset)
	if !adopted && tr.remoteCall(p, c, offset) {
		if k := slices.IndexFunc(clocks, func(g clockGroup) bool { return g.res == cs.Resource }); k >= 0 && clocks[k].n > 0 {
			return offset + clocks[k].shift, true
		}
		switch {
		case cs.Duration() > pn.end-pn.start: // no shift fits it: clip it
			offset += int64(pn.start) - int64(start)
		case start < pn.start:
			offset += int64(pn.start - start)
		case end > pn.end:
			offset -= int64(end - pn.end)
		}
		return offset, true
	}
	// Whether p waited for c is judged by p's own end, not the one its
	// parent clipped it to: p's last child ends with p.
	pend := pn.end
	if !adopted {
		pend = tr.ownEnd(p, offset)
	}
	awaited := end <= pend || float64(end-pend) <= tr.opts.SkewFraction*float64(cs.Duration())
	return offset, awaited && end > pn.start && start < pn.end
}

// awaitReplies places under a span the consumers of a message it produced
// and then waited for, idle, until they ended: a request over a queue
// whose reply the span awaits. Such a consumer outlasts the producer span
// it is a child of, as every asynchronous consumer does, and is not
// placed under it; left off the tree, the wait would read as the caller's
// own time. The wait is the gap after the producer ends, to the parent's
// next child or its end, with no other child of the parent running in it:
// a consumer counts as awaited where it is no longer than the gap, and
// what it leaves of the gap, the messages' transit, is no longer than
// itself, or than replyTransit; or, however long the
// request waited in its queue, where its own times put it in the gap
// (from the producer's start) and its reply's transit, what it leaves of
// the gap after it, is that short. Its times, by another clock, are moved
// into the gap by the least that fits them. One consumed while the parent
// went on with other work, or after it ended, or much shorter than the
// gap and ended long before the parent went on, was not awaited; nor was
// one longer than the gap, such as the consumer of an event whose producer
// span lasted until the broker acknowledged it, seconds before it ran.
func (tr *tree) awaitReplies(children [][]int32) {
	// A request's and its reply's time in a queue, which a consumer of a
	// millisecond or two leaves as most of the wait.
	const replyTransit = 5_000_000
	type reply struct {
		c     int32
		start uint64 // in the parent's time
	}
	for w := range tr.nodes {
		wn := &tr.nodes[w]
		if !wn.placed {
			continue
		}
		var gaps *childGaps // made for the first producer with a consumer to place
		var replies []reply
		for _, p := range wn.children {
			if tr.t.Spans[p].Kind != kindProducer || !slices.ContainsFunc(children[p], tr.unplacedConsumer) {
				continue
			}
			if gaps == nil {
				gaps = tr.newChildGaps(int32(w))
			}
			pn := &tr.nodes[p]
			gapEnd, idle := gaps.after(p)
			if !idle {
				continue
			}
			for _, c := range children[p] {
				cs := &tr.t.Spans[c]
				d := cs.Duration()
				if !tr.unplacedConsumer(c) || d > gapEnd-pn.end {
					continue
				}
				transit := max(d, replyTransit)
				queued := cs.Start >= pn.start && cs.End <= gapEnd && gapEnd-cs.End <= transit
				if !queued && gapEnd-pn.end-min(d, gapEnd-pn.end) > transit {
					continue
				}
				replies = append(replies, reply{c, min(max(cs.Start, pn.end), gapEnd-d)})
			}
		}
		// Placed once every gap is known: a consumer lies in its gap, and
		// changes no other.
		for _, r := range replies {
			tr.attach(int32(w), r.c, children, int64(r.start)-int64(tr.t.Spans[r.c].Start))
		}
	}
}

func (tr *tree) unplacedConsumer(c int32) bool {
	return !tr.nodes[c].placed && tr.t.Spans[c].Kind == kindConsumer
}

// childGaps finds the gaps after a span's children end without a
// walk over every child for each: a trace that publishes thousands of
// messages from one span has thousands of producers under it.
type childGaps struct {
	tr      *tree
	end     uint64  // the parent's
	byStart []int32 // the children by start
	// lastEnd[i] is the latest end of the children in byStart[:i+1]. A
	// child among them need not be left out when asking whether another
	// runs past its end: one that does ends later than it.
	lastEnd []uint64
}

func (tr *tree) newChildGaps(w int32) *childGaps {
	wn := &tr.nodes[w]
	g := &childGaps{tr: tr, end: wn.end, byStart: slices.Clone(wn.children)}
	slices.SortFunc(g.byStart, func(a, b int32) int { return cmp.Compare(tr.nodes[a].start, tr.nodes[b].start) })
	g.lastEnd = make([]uint64, len(g.byStart))
	last := uint64(0)
	for i, x := range g.byStart {
		last = max(last, tr.nodes[x].end)
		g.lastEnd[i] = last
	}
	return g
}

// after returns where the gap after child p ends, at the start of the
// first other child that starts once p ended or at the parent's end, and
// whether no other child runs across p's end into it.
func (g *childGaps) after(p int32) (gapEnd uint64, idle bool) {
	pend := g.tr.nodes[p].end
	k, _ := slices.BinarySearchFunc(g.byStart, pend, func(x int32, t uint64) int { return cmp.Compare(g.tr.nodes[x].start, t) })
	idle = k == 0 || g.lastEnd[k-1] <= pend
	for ; k < len(g.byStart) && g.byStart[k] == p; k++ {
	}
	gapEnd = g.end
	if k < len(g.byStart) {
		gapEnd = min(gapEnd, g.tr.nodes[g.byStart[k]].start)
	}
	return gapEnd, idle
}

// deepestHolding returns the deepest placed span under n, n included,
// whose interval holds [start, end]: of two as deep, the first found,
// depth first, the latest to start among siblings. Only the children
// with children of their own can hold a span deeper than the one below
// n, which is the first child that holds it, and a subtree no deeper
// than the deepest found is not searched: a
// root with thousands of children, as many of them orphans adopted one
// after the other, would otherwise have them all searched for each orphan.
//
// Under a span with one child of its own children, a search goes on into
// that child, and the spans the run of such children leads through hold
// a span down to a depth: placed spans lie within their parents. That
// depth is searched for, not walked to: a recursion 10,000 deep, holding
// as many spans whose parent was never sent, was walked down once per
// span and took seconds.
func (tr *tree) deepestHolding(n int32, start, end uint64) int32 {
	best, bestDepth := n, 0
	holds := func(c int32) bool { cn := &tr.nodes[c]; return cn.start <= start && end <= cn.end }
	var search func(n int32, depth int)
	search = func(n int32, depth int) {
		nd := &tr.nodes[n]
		if len(nd.inner) == 1 && depth+int(nd.height) > bestDepth && holds(nd.inner[0]) {
			// above is the parent of bottom, the deepest holding span of
			// the run found, j deeper than n.
			above, bottom, j := n, nd.inner[0], 1
			for ; j < shortRun; j++ {
				bn := &tr.nodes[bottom]
				if len(bn.inner) != 1 || !holds(bn.inner[0]) {
					break
				}
				above, bottom = bottom, bn.inner[0]
			}
			if j == shortRun {
				run := tr.innerRun(n)
				j = sort.Search(len(run), func(i int) bool { return !holds(run[i]) })
				above, bottom = n, run[j-1]
				if j > 1 {
					above = run[j-2]
				}
			}
			search(bottom, depth+j)
			// What the spans above bottom would have found, had they been
			// walked back up: the first of them, the deepest, finds the
			// child it holds, unless a deeper span was found.
			if depth+j > bestDepth {
				best, bestDepth = tr.holdingChild(above, start, end), depth+j
			}
			return
		}
		for _, c := range nd.inner {
			if depth+int(nd.height) <= bestDepth {
				return
			}
			if depth+1+int(tr.nodes[c].height) > bestDepth && holds(c) {
				search(c, depth+1)
			}
		}
		if depth+1 <= bestDepth {
			return
		}
		if c := tr.holdingChild(n, start, end); c >= 0 {
			best, bestDepth = c, depth+1
		}
	}
	search(n, 0)
	return best
}

// shortRun is how deep a run of spans with one child of their own
// children is walked before it is searched.
const shortRun = 16

// innerRun returns the run of spans from n down that each are the one
// child with children of their own of the span before: n's, then its,
// and so on. Runs are kept until a span gains such a child.
func (tr *tree) innerRun(n int32) []int32 {
	r, ok := tr.runs[n]
	if ok && r.version == tr.innerVersion {
		return r.spans
	}
	run := r.spans[:0]
	for x := n; len(tr.nodes[x].inner) == 1; {
		x = tr.nodes[x].inner[0]
		run = append(run, x)
	}
	if tr.runs == nil {
		tr.runs = map[int32]innerRun{}
	}
	tr.runs[n] = innerRun{run, tr.innerVersion}
	return run
}

// synchronousRemote says whether c is a call that p waits on, timed by
// another clock than p's. A consumer is not, under whatever span: it
// takes a message when its queue lets it.
func (tr *tree) synchronousRemote(p, c *Span) bool {
	return p.Resource != c.Resource && (c.Kind == kindServer || p.Kind == kindClient && c.Kind != kindConsumer)
}

// adopt places span i, whose parent is unknown, under the deepest placed
// span whose interval holds its own, or under the root if none does. A span
// that the root would not await stays off the tree.
func (tr *tree) adopt(i int32, children [][]int32) {
	s := &tr.t.Spans[i]
	start, end := s.Start, s.Start+s.Duration()
	host := tr.deepestHolding(int32(tr.root), start, end)
	if _, ok := tr.fit(host, i, 0, true, nil); !ok {
		return
	}
	tr.attach(host, i, children, 0)
}

// walk emits, in reverse, the segments of the path through placed span n
// over [n.start, to], to being at most n's end.
func (tr *tree) walk(n int32, to uint64) {
	nd := &tr.nodes[n]
	cursor := to
	prev := int32(-1)
	for _, c := range nd.children {
		if cursor <= nd.start {
			break
		}
		cn := &tr.nodes[c]
		if cn.end <= cn.start || cn.start >= cursor || cn.end > cursor+tr.allowance(n, c, prev, nd.end-to) {
			continue
		}
		end := min(cn.end, cursor)
		var retryOf, queuedFor int32
		switch {
		case prev < 0:
		case tr.retries(prev, c):
			retryOf = c + 1
		case tr.consumes(prev, c):
			queuedFor = prev + 1
		}
		tr.emit(Segment{Span: int(n), Start: end, End: cursor, retryOf: retryOf, queuedFor: queuedFor})
		tr.walk(c, end)
		cursor = cn.start
		prev = c
	}
	tr.emit(Segment{Span: int(n), Start: nd.start, End: cursor})
}

// consumes reports whether span c is a consumer of the message that
// producer span p published.
func (tr *tree) consumes(c, p int32) bool {
	cs, ps := &tr.t.Spans[c], &tr.t.Spans[p]
	return cs.Kind == kindConsumer && ps.Kind == kindProducer && cs.Parent == ps.ID
}

// allowance is how far child c of n may end past the start of prev, the
// child after it on the path, and still be taken to end before it. Before
// the first child on the path it is cut, what of n's end lies past the part
// of the path n is walked over.
func (tr *tree) allowance(n, c, prev int32, cut uint64) uint64 {
	if prev < 0 {
		return cut
	}
	res := tr.t.Spans[n].Resource
	if tr.t.Spans[c].Resource == res && tr.t.Spans[prev].Resource == res {
		return 0 // one clock timed all three: an overlap is real
	}
	cn, pn := &tr.nodes[c], &tr.nodes[prev]
	return uint64(tr.opts.SkewFraction * float64(min(cn.end-cn.start, pn.end-pn.start)))
}

// emit adds seg, a span's own time, joined to the segment emitted before
// it if that is the same span's, waiting for the same.
func (tr *tree) emit(seg Segment) {
	if seg.End <= seg.Start {
		return
	}
	if k := len(tr.segments) - 1; k >= 0 {
		last := &tr.segments[k]
		if last.Span == seg.Span && last.Start == seg.End && last.retryOf == seg.retryOf && last.queuedFor == seg.queuedFor {
			last.Start = seg.Start
			return
		}
	}
	tr.segments = append(tr.segments, seg)
}

func operationTimes(t *Trace, p Path) []OperationTime {
	type op struct{ service, name string }
	self := map[op]uint64{}
	for _, s := range p.Segments {
		sp := &t.Spans[s.Span]
		self[op{sp.Service, sp.Name}] += s.End - s.Start
	}
	ops := make([]OperationTime, 0, len(self))
	for o, d := range self {
		ops = append(ops, OperationTime{Service: o.service, Operation: o.name, Self: d, Share: float64(d) / float64(p.End-p.Start)})
	}
	slices.SortFunc(ops, func(a, b OperationTime) int {
		return cmp.Or(cmp.Compare(b.Self, a.Self), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Operation, b.Operation))
	})
	return ops
}

// shift adds a signed offset to a time, saturating at the ends of uint64.
func shift(t uint64, offset int64) uint64 {
	if offset >= 0 {
		if t+uint64(offset) < t {
			return ^uint64(0)
		}
		return t + uint64(offset)
	}
	if uint64(-offset) > t {
		return 0
	}
	return t - uint64(-offset)
}

// addOwnTimes adds to own, per op (see opOf), the time each placed span spends
// on its own, on the path or off it: its interval less what its children's
// cover. Children come last to end first, so one pass joins their
// intervals from the right.
func (tr *tree) addOwnTimes(own map[op]uint64) {
	for i := range tr.nodes {
		n := &tr.nodes[i]
		if !n.placed {
			continue
		}
		covered, from := uint64(0), n.end // from: where the intervals joined so far start
		for _, c := range n.children {
			cn := &tr.nodes[c]
			switch {
			case cn.end <= cn.start:
			case cn.end <= from:
				covered += cn.end - cn.start
				from = cn.start
			case cn.start < from:
				covered += from - cn.start
				from = cn.start
			}
		}
		waits := tr.childWaits(int32(i), own)
		own[tr.opOf(int32(i))] += n.end - n.start - covered - waits
	}
}

// childWaits adds to own the time span n waited between two of its
// children with no other child running, where that time is not n's own,
// as on the path (see selfTimes), and returns the sum: between a failed
// call and the call of the same operation that retried it, for the
// operation that failed (see failedOp); between a producer span and the
// consumer of its message that n awaited, for the calls to the consumer's
// operation.
func (tr *tree) childWaits(n int32, own map[op]uint64) (sum uint64) {
	kids := tr.nodes[n].children
	if len(kids) < 2 {
		return 0
	}
	byStart := slices.Clone(kids)
	slices.SortFunc(byStart, func(a, b int32) int { return cmp.Compare(tr.nodes[a].start, tr.nodes[b].start) })
	last := int32(-1) // the child that ends last of those started so far
	for _, c := range byStart {
		cn := &tr.nodes[c]
		if last >= 0 {
			ln := &tr.nodes[last]
			if ln.end < cn.start {
				gap := cn.start - ln.end
				switch {
				case tr.retries(c, last):
					own[tr.failedOp(last)] += gap
				case tr.consumes(c, last):
					own[tr.callsTo(c)] += gap
				default:
					gap = 0
				}
				sum += gap
			}
		}
		if last < 0 || cn.end > tr.nodes[last].end {
			last = c
		}
	}
	return sum
}
