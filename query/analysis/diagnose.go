package analysis

import (
	"cmp"
	"math"
	"slices"
	"sort"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
)

// DiagnoseOptions say what to diagnose and how.
type DiagnoseOptions struct {
	// Service and Operation name the operation whose regression to
	// explain; in each trace, its longest span.
	Service, Operation string
	// Errors diagnoses a rise of failures rather than of latency.
	Errors bool
	// Exemplars is how many trace IDs each culprit carries. Default 3.
	Exemplars int
	// Correlation bounds which attribute values may rank.
	Correlation CorrelationOptions
	// Path tunes the critical paths.
	Path Options
}

// EnsureDefaults returns a copy of o (which may be nil) with every zero field
// set to its default.
func (o *DiagnoseOptions) EnsureDefaults() DiagnoseOptions {
	var c DiagnoseOptions
	if o != nil {
		c = *o
	}
	if c.Exemplars <= 0 {
		c.Exemplars = 3
	}
	c.Correlation = c.Correlation.EnsureDefaults()
	c.Path = c.Path.EnsureDefaults()
	return c
}

// Diagnosis explains a regression of an operation between a baseline and a
// window: the operations and the attribute values most likely to have
// caused it, the most likely first.
type Diagnosis struct {
	Window, Baseline WindowStats
	Operations       []Culprit
	// Attributes are the values that set the window's traces where the
	// first culprit was slow (failed ones, diagnosing errors) apart from
	// the baseline's, scored as Correlate scores them; only values seen
	// more often, that do not restate the failure.
	Attributes []Correlation
	// Symptoms are the values that restate the failure, such as status
	// codes and exceptions, scored alike but never ranked as causes.
	Symptoms []Correlation
	// WithinNoise says the first culprit's growth is no more than sampling
	// alone would give (see withinNoise): the ranking may be noise.
	WithinNoise bool
}

// WindowStats sums up the operation's spans in one window.
type WindowStats struct {
	Traces    int
	P50, P99  uint64 // nanoseconds
	ErrorRate float64
}

// Culprit is an operation ranked as a cause, with its evidence.
type Culprit struct {
	Service, Operation string
	// Call, diagnosing latency, says the time is not the operation's own
	// but its callers' wait on it outside its server spans: the own time
	// of each client span with one server span of the operation under it,
	// from any caller, and the wait between a producer span and the
	// operation's consumer span that its parent awaited (see
	// awaitReplies). That time is the network's, or a queue's; a delay in
	// the network to one pod, or in one partition, shows there, and the
	// pod or partition among the attributes.
	Call bool
	// Names is how many span names the operation stands for, if it is
	// many names of one shape, named by the shape with its literals as ?
	// (see Diagnose); 0 if it is one name.
	Names int
	// Score, diagnosing latency, is the growth of the operation's mean self
	// time on the critical path, counted no further than its own time (on
	// the path or off it) grew, as a part of the growth of the mean
	// duration. Diagnosing errors, it is WindowOrigin - BaselineOrigin.
	Score float64
	// Baseline and Window are its mean self time on the critical path per
	// trace, in nanoseconds.
	Baseline, Window float64
	// BaselineOnPath and WindowOnPath, diagnosing latency, are the shares
	// of traces with it on the critical path, so that Window/WindowOnPath
	// is its mean self time where it is on the path. A culprit whose share
	// grew while that time did not is reached by more requests, none of
	// them slower: the mix of requests shifted.
	BaselineOnPath, WindowOnPath float64
	// BaselineCalls and WindowCalls, diagnosing latency, are its spans
	// per trace: a count that grew while none of its spans got slower (a
	// query run in a loop, once per item) makes it slower all the same.
	BaselineCalls, WindowCalls float64
	// BaselineOrigin and WindowOrigin are the shares of traces that failed
	// with the failure originating in it (see tree.failureOrigin).
	BaselineOrigin, WindowOrigin float64
	// FallbackService and FallbackOperation, diagnosing latency, name the
	// operation requests fell back to when this one failed, or one under
	// it: the fallback grew in that more traces reached it, or is on the
	// critical path of no baseline trace, more than half of its spans lie
	// under a call that came right after a failed call of this operation
	// under the same parent, and this one failed in more traces,
	// BaselineFailed against WindowFailed, past the noise (see fellBack).
	// Score is the fallback's: its growth is what the failures cost.
	FallbackService, FallbackOperation string
	BaselineFailed, WindowFailed       float64
	// Exemplars are traces of the window that show it best: where its
	// self time is longest, or where the failure originates in it.
	Exemplars [][16]byte
}

// facts are what a diagnosis reads of one trace.
type facts struct {
	trace    *Trace
	duration uint64
	failed   bool
	self     []opTime // on the critical path
	origin   op       // of the failure; zero if the operation did not fail
	// tree is the tree the path was walked on; diagnosing errors only,
	// which reads it again once both windows are known (see setOrigins).
	tree *tree
	// waits are the client spans' own time on the path that counts for
	// calls (see opOf), by client span; diagnosing latency only.
	waits []callWait
	// failedCalls are the operations of the failed calls (see
	// tree.failedOp), each once, and fallbacks the spans under calls that
	// came right after one of them, the window's only; diagnosing latency
	// only.
	failedCalls []op
	fallbacks   []fallback
}

// fallback is a span under a call made right after a failed call of
// operation failedCalls[from] under the same parent.
type fallback struct{ span, from int32 }

// callWait is a client span's own time on the path, counted for the calls
// to its server's operation, with the resources of both sides.
type callWait struct {
	call           op // the calls to the server's operation
	client         op // the client span's own operation
	caller, callee string
	wait           uint64
}

// onPath is k's self time on the critical path, 0 if it is off the path.
func (f *facts) onPath(k op) uint64 {
	for _, o := range f.self {
		if o.op == k {
			return o.self
		}
	}
	return 0
}

// op is what time is counted for: an operation's own time, or with call,
// the time its callers' client spans waited on it outside its server
// spans.
type op struct {
	service, name string
	call          bool
}

type opTime struct {
	op
	self uint64
}

// opOf is what the own time of span i counts for: its operation, or for a
// client span with one server span under it, the calls to that server's
// operation. A client span's own time around the server's is the call's
// time on the wire and in queues, which the caller waits for but does not
// spend; counted for the client's operation, a delay in the network to
// one service named the client operation of each of its callers. Several
// server spans under one client span are attempts of a retry, whose time
// between them is the client's.
func (tr *tree) opOf(i int32) op {
	if tr.t.Spans[i].Kind == kindClient {
		if c := tr.onlyServerChild(i); c >= 0 {
			return tr.callsTo(c)
		}
	}
	return tr.plainOp(i)
}

// callsTo is what the time its callers wait on span i outside it counts
// for: the calls to its operation.
func (tr *tree) callsTo(i int32) op {
	k := tr.plainOp(i)
	k.call = true
	return k
}

// onlyServerChild returns the one server span among span i's children, -1
// if there is none or more than one.
func (tr *tree) onlyServerChild(i int32) int32 {
	only := int32(-1)
	for _, c := range tr.nodes[i].children {
		if tr.t.Spans[c].Kind != kindServer {
			continue
		}
		if only >= 0 {
			return -1
		}
		only = c
	}
	return only
}

// addWait records client span i's own time on the path, counted for the
// calls k.
func (tr *tree) addWait(k op, i int32, wait uint64) {
	if tr.resKeys == nil {
		tr.resKeys = make(map[int]string)
	}
	key := func(r int) string {
		rk, ok := tr.resKeys[r]
		if !ok {
			rk = resourceKey(tr.t.Resources[r])
			tr.resKeys[r] = rk
		}
		return rk
	}
	s := &tr.t.Spans[i]
	server := &tr.t.Spans[tr.onlyServerChild(i)]
	tr.waits = append(tr.waits, callWait{call: k, client: tr.plainOp(i),
		caller: key(s.Resource), callee: key(server.Resource), wait: wait})
}

// selfTimes walks the path from the tree's root, once per tree, and sums
// its segments per op (see opOf), or if plain per span's own operation, as
// a diagnosis of errors reports self times. Not plain, a span's wait
// between a failed call and its retry counts for the operation that
// failed (see failedOp): the backoff is what the failure cost, and would
// otherwise read as the caller's own slowness.
func (tr *tree) selfTimes(plain bool) []opTime {
	if tr.root < 0 {
		return nil
	}
	tr.walk(int32(tr.root), tr.nodes[tr.root].end)
	var ts []opTime
	at := map[op]int{}
	for _, seg := range tr.segments {
		var k op
		switch {
		case plain:
			k = tr.plainOp(int32(seg.Span))
		case seg.retryOf > 0:
			k = tr.failedOp(seg.retryOf - 1)
		case seg.queuedFor > 0:
			k = tr.callsTo(seg.queuedFor - 1)
		default:
			k = tr.opOf(int32(seg.Span))
			if k.call {
				tr.addWait(k, int32(seg.Span), seg.End-seg.Start)
			}
		}
		i, ok := at[k]
		if !ok {
			i = len(ts)
			at[k] = i
			ts = append(ts, opTime{op: k})
		}
		ts[i].self += seg.End - seg.Start
	}
	return ts
}

// Diagnose explains the regression of opts.Service's opts.Operation from
// the baseline traces to the window's.
//
// Diagnosing latency, operations rank by how much their self time on the
// critical path grew per trace, counted no further than their own time
// grew, on the path or off it: work that slowed down off the path, beside
// slower work or in an asynchronous consumer, held nothing up and is not
// blamed, nor is an operation that joined the path without taking longer
// itself. A client span's own time around the server span under it is
// counted for the calls to the server's operation (see Culprit.Call).
// Diagnosing errors, operations rank by how much more often the failure
// originates in them (see tree.failureOrigin).
//
// Attribute values rank as Correlate ranks them. Diagnosing latency, the
// selection is the window's traces where the first culprit's self time on
// the path is longer than in 95% of the baseline's traces that have it,
// against those (see slowAt); without a culprit, or where that selects too
// few traces to rank a value, the window's traces slower than 95% of the
// baseline's, against all of them. Diagnosing
// errors, it is the window's failed traces against every baseline trace.
// Between values that score alike, one on a culprit's service comes
// first, then as legibility orders them. Values of a service on exactly the same traces are one entry (see
// Correlation.Aliases).
//
// Many span names of a service that differ in their literals alone may be
// one operation (see shapeNames): where they are, the traces are
// diagnosed again with each such family under its shape, and that
// diagnosis is taken if its first culprit is a family whose score is more
// than twice the first culprit's of the names as sent. A family of names
// each too rare to rank (SQL with its values) then ranks by its sum, while
// operations that only share a shape (partition-1 to partition-12, a fault
// in one) keep their names: the one at fault explains the growth alone.
func Diagnose(window, baseline []*Trace, opts *DiagnoseOptions) Diagnosis {
	o := opts.EnsureDefaults()
	d := o.diagnose(window, baseline)
	sw, sb, shapes := shapeNames(window, baseline, o.Service, o.Operation)
	if shapes == nil {
		return d
	}
	shaped := o.diagnose(sw, sb)
	if len(shaped.Operations) == 0 {
		return d
	}
	first := &shaped.Operations[0]
	if shapes.Names(first.Service, first.Operation) == 0 || len(d.Operations) > 0 && first.Score <= 2*d.Operations[0].Score {
		return d
	}
	for i := range shaped.Operations {
		c := &shaped.Operations[i]
		c.Names = shapes.Names(c.Service, c.Operation)
	}
	return shaped
}

func (o *DiagnoseOptions) diagnose(window, baseline []*Trace) Diagnosis {
	w, wMeans := o.facts(window, true)
	b, bMeans := o.facts(baseline, false)
	if o.Errors {
		handled := handledFailures(countFailures(w), countFailures(b))
		setOrigins(w, handled)
		setOrigins(b, handled)
	}
	d := Diagnosis{Window: stats(w), Baseline: stats(b)}
	if len(w) == 0 || len(b) == 0 {
		return d // nothing to compare: any ranking would be the other side's
	}
	if o.Errors {
		d.Operations = errorCulprits(w, b, o.Exemplars)
	} else {
		d.Operations = latencyCulprits(w, b, wMeans, bMeans, o.Exemplars)
	}
	if len(d.Operations) == 0 {
		d.Attributes, d.Symptoms = attributeCauses(w, b, *o, nil, nil, nil, true)
		d.WithinNoise = true
		return d
	}
	// The first culprit's time is counted under lead even where callerSide
	// names the caller's client operation instead, whose own time on the
	// path is the calls': its traces and its growth are the calls'.
	first := &d.Operations[0]
	var failed *op // whose failures requests fell back from
	if first.FallbackService != "" || first.FallbackOperation != "" {
		// The fallback's traces are the ones the failures slowed.
		if at := slices.IndexFunc(d.Operations, func(c Culprit) bool {
			return !c.Call && c.Service == first.FallbackService && c.Operation == first.FallbackOperation
		}); at >= 0 {
			failed = &op{service: first.Service, name: first.Operation}
			first = &d.Operations[at]
		}
	}
	lead := op{first.Service, first.Operation, first.Call}
	// A stalled caller waits longer on all its calls: each of the first
	// culprits that is calls is named by its caller where the wait grew
	// on one of its pods.
	for i := range d.Operations[:min(len(d.Operations), callerSideCulprits)] {
		if d.Operations[i].Call {
			callerSide(&d.Operations[i], w, b)
		}
	}
	d.WithinNoise = withinNoise(w, b, lead, o.Errors)
	d.Attributes, d.Symptoms = attributeCauses(w, b, *o, &lead, first, failed, d.WithinNoise)
	return d
}

// noiseErrors is how many standard errors of the difference between the
// windows the first culprit's growth must pass. The first culprit is the
// largest change of a score of operations, which chance alone takes past
// two standard errors about one time in five: two latency controls and
// an error control of 14 without a fault (four failures against none)
// named a culprit at two. At three, all 14 are within noise, and none of
// 42 faults of that probe, the bench's 13 (300 traces a window) or 600
// random topologies is.
const noiseErrors = 3

// withinNoise says whether the growth of k, what the first culprit's time
// is counted under, is less than noiseErrors standard errors of the
// difference between the windows: its self time on
// the critical path per trace (0 where it is off the path), or diagnosing
// errors, whether a trace's failure originates in it. Culprits are ranked
// by their share of the growth of the mean duration, and a growth of a
// fraction of a millisecond makes any operation's drift look like all of
// it. The anchor's own mean would not do: at a gateway serving requests of
// many kinds, a fault that doubled one query's time can stay within the
// noise of the mix.
func withinNoise(w, b []facts, k op, errors bool) bool {
	if len(w) < 2 || len(b) < 2 {
		return true
	}
	value := func(f *facts) float64 {
		if errors {
			if f.failed && f.origin == k {
				return 1
			}
			return 0
		}
		return float64(f.onPath(k))
	}
	moments := func(fs []facts) (mean, variance float64) {
		for i := range fs {
			mean += value(&fs[i])
		}
		mean /= float64(len(fs))
		for i := range fs {
			d := value(&fs[i]) - mean
			variance += d * d
		}
		return mean, variance / float64(len(fs)-1)
	}
	mw, vw := moments(w)
	mb, vb := moments(b)
	return mw-mb <= noiseErrors*math.Sqrt(vw/float64(len(w))+vb/float64(len(b)))
}

// perTrace are, diagnosing latency, each operation's means per trace of
// a window: own is its own time, on the paths or off them, in the tree the
// paths are walked on (see addOwnTimes), and calls its spans on that tree,
// by plain operation.
type perTrace struct {
	own, calls map[op]float64
}

// facts reads the traces that have the diagnosed operation, and returns
// with them, diagnosing latency, their means per trace.
func (o *DiagnoseOptions) facts(traces []*Trace, window bool) ([]facts, perTrace) {
	fs := make([]facts, 0, len(traces))
	own, calls := map[op]uint64{}, map[op]uint64{}
	for _, t := range traces {
		anchor := anchorOf(t, o.Service, o.Operation)
		if anchor < 0 {
			continue
		}
		tr := buildTree(t, o.Path, int32(anchor))
		f := facts{trace: t, duration: t.Spans[anchor].Duration(), failed: t.Spans[anchor].Failed, self: tr.selfTimes(o.Errors), waits: tr.waits}
		if o.Errors {
			f.tree = tr
		} else { // only latency culprits read the means and fallbacks
			f.failedCalls = tr.failedCalls()
			if window { // only the window's are read
				f.fallbacks = tr.fallbacks(f.failedCalls)
			}
			tr.addOwnTimes(own)
			for i := range tr.nodes {
				if tr.nodes[i].placed {
					calls[tr.plainOp(int32(i))]++
				}
			}
		}
		fs = append(fs, f)
	}
	mean := func(sums map[op]uint64) map[op]float64 {
		m := make(map[op]float64, len(sums))
		for k, d := range sums {
			m[k] = float64(d) / float64(len(fs))
		}
		return m
	}
	return fs, perTrace{own: mean(own), calls: mean(calls)}
}

// anchorOf returns the index of the longest span of service's operation in
// t, -1 if it has none.
func anchorOf(t *Trace, service, operation string) int {
	anchor := -1
	for i := range t.Spans {
		s := &t.Spans[i]
		if s.Service == service && s.Name == operation && (anchor < 0 || s.Duration() > t.Spans[anchor].Duration()) {
			anchor = i
		}
	}
	return anchor
}

// CriticalPaths returns, for each trace with a span of service's
// operation, the critical path from its longest such span.
func CriticalPaths(traces []*Trace, service, operation string, opts *Options) []Path {
	o := opts.EnsureDefaults()
	var paths []Path
	for _, t := range traces {
		if anchor := anchorOf(t, service, operation); anchor >= 0 {
			paths = append(paths, criticalPath(t, o, int32(anchor)))
		}
	}
	return paths
}

// failureOrigin returns the span a failed trace's failure started in, the
// root if nothing below it failed. A failed span passed on the failure of
// a failed child, unless it went on past that child (another failed child
// started after it ended: a retry, a fallback, an error it handled), or
// went on to any other call after it and the baseline shows it handling
// that child's failures (see handledFailures). The
// failure started in a failed span that passed on none; of several, in
// the first to end, by the tree's times, corrected for skew: once its
// failure came back, the calls still running beside it were often
// canceled and ended failed after it, however deep they lie. A client
// span that gave up on a server span that had not failed, and ran at least
// as long as the call, timed out: the failure started in the server's
// slowness. Only spans placed on the tree count, and the failed replies
// of a span that passed on none (see failedReply).
func (tr *tree) failureOrigin(handled map[[2]op]bool) int {
	best := int32(tr.root)
	bestDepth, bestEnd := -1, uint64(0)
	var visit func(n int32, depth int)
	visit = func(n int32, depth int) {
		lastStart, lastAnyStart := uint64(0), uint64(0)
		for _, c := range tr.nodes[n].children {
			lastAnyStart = max(lastAnyStart, tr.nodes[c].start)
			if tr.t.Spans[c].Failed {
				lastStart = max(lastStart, tr.nodes[c].start)
			}
		}
		passedOn := false
		for _, c := range tr.nodes[n].children {
			cn := &tr.nodes[c]
			if !tr.t.Spans[c].Failed || cn.end <= lastStart && cn.start < lastStart {
				continue
			}
			// A failure the baseline shows n handling, after which n went
			// on to other calls, is not what n failed of.
			if lastAnyStart > cn.end && handled[[2]op{tr.plainOp(n), tr.plainOp(c)}] {
				continue
			}
			passedOn = true
			visit(c, depth+1)
		}
		if passedOn {
			return
		}
		origin, end := n, tr.nodes[n].end
		if c := tr.failedReply(n); c >= 0 {
			origin, depth = c, depth+1
		}
		if depth == 0 {
			return
		}
		if bestDepth < 0 || end < bestEnd || end == bestEnd && depth > bestDepth {
			best, bestDepth, bestEnd = origin, depth, end
		}
	}
	visit(best, 0)
	if tr.timedOut(best) {
		return int(tr.onlyServerChild(best))
	}
	return int(best)
}

// failedReply returns the consumer, off the tree, of a message that span n
// produced, which failed and ended before n did, by their own times: a
// request over a queue whose reply n got while it went on working, which
// the critical path could not tell from an event; -1 if there is none.
// Of several, the first to end.
func (tr *tree) failedReply(n int32) int32 {
	ns := &tr.t.Spans[n]
	nend := ns.Start + ns.Duration() + uint64(tr.opts.SkewFraction*float64(ns.Duration()))
	first, firstEnd := int32(-1), uint64(0)
	for _, p := range tr.nodes[n].children {
		for _, c := range tr.failedReplies[p] {
			cs := &tr.t.Spans[c]
			if end := cs.Start + cs.Duration(); end <= nend && (first < 0 || end < firstEnd) {
				first, firstEnd = c, end
			}
		}
	}
	return first
}

// failedCall says whether span i failed, or is a client span whose one
// server span failed.
func (tr *tree) failedCall(i int32) bool {
	if tr.t.Spans[i].Failed {
		return true
	}
	c := int32(-1)
	if tr.t.Spans[i].Kind == kindClient {
		c = tr.onlyServerChild(i)
	}
	return c >= 0 && tr.t.Spans[c].Failed
}

// failedOp is the operation that failed in span i (see failedCall): the
// server's, for a client span with one server span under it.
func (tr *tree) failedOp(i int32) op {
	k := tr.opOf(i)
	k.call = false
	return k
}

// retries says whether span next, a later child of the same parent,
// retried span prev: a call of the same operation after prev failed (see
// failedCall).
func (tr *tree) retries(next, prev int32) bool {
	return tr.failedCall(prev) && tr.plainOp(prev) == tr.plainOp(next)
}

// fallbacks returns the spans placed on the tree under a call that
// started right after a failed call of another operation ended (see
// fellAfter), the call's own included, each span once, with the failed
// call's operation as its index in failed. A backup that is a service of
// its own spends its time in what it calls.
func (tr *tree) fallbacks(failed []op) (fbs []fallback) {
	var under []bool
	for n := range tr.nodes {
		if !tr.nodes[n].placed {
			continue
		}
		for _, c := range tr.nodes[n].children {
			prev := tr.fellAfter(int32(n), c)
			if prev < 0 {
				continue
			}
			from := int32(slices.Index(failed, tr.failedOp(prev)))
			if from < 0 { // failedCalls lists every failed call; see failedCalls
				continue
			}
			if under == nil {
				under = make([]bool, len(tr.nodes))
			}
			for stack := []int32{c}; len(stack) > 0; {
				m := stack[len(stack)-1]
				stack = append(stack[:len(stack)-1], tr.nodes[m].children...)
				if !under[m] {
					under[m] = true
					fbs = append(fbs, fallback{span: m, from: from})
				}
			}
		}
	}
	return fbs
}

// fellAfter returns the call under n that c came right after, the sibling
// that ended last before c started, if that call failed (and did not time
// out waiting on a server that had not failed: that failure is the
// server's slowness, see timedOut) and is of another operation than c's;
// -1 otherwise.
func (tr *tree) fellAfter(n, c int32) int32 {
	kids := tr.nodes[n].children // the last to end first
	at := sort.Search(len(kids), func(i int) bool { return tr.nodes[kids[i]].end <= tr.nodes[c].start })
	if at < len(kids) && kids[at] == c { // c has no length
		at++
	}
	if at == len(kids) {
		return -1
	}
	prev := kids[at]
	if !tr.failedCall(prev) || tr.timedOut(prev) || tr.failedOp(prev) == tr.failedOp(c) {
		return -1
	}
	return prev
}

// failedCalls returns the operations of the calls placed on the tree that
// failed, each once (see failedOp), but those that timed out.
func (tr *tree) failedCalls() (failed []op) {
	for n := range tr.nodes {
		if tr.nodes[n].placed && tr.failedCall(int32(n)) && !tr.timedOut(int32(n)) {
			if k := tr.failedOp(int32(n)); !slices.Contains(failed, k) {
				failed = append(failed, k)
			}
		}
	}
	return failed
}

// timedOut says whether span i is a client span that gave up on its one
// server span, which had not failed and ran at least as long as the call.
func (tr *tree) timedOut(i int32) bool {
	s := &tr.t.Spans[i]
	if s.Kind != kindClient {
		return false
	}
	c := tr.onlyServerChild(i)
	return c >= 0 && !tr.t.Spans[c].Failed && tr.t.Spans[c].Duration() >= s.Duration()
}

// plainOp is span i's own operation.
func (tr *tree) plainOp(i int32) op {
	s := &tr.t.Spans[i]
	return op{service: s.Service, name: s.Name}
}

// failures counts, by pair of operations (parent, child), the child's
// spans under the parent on the trees of a window's facts, those that
// failed, and of those, the ones whose parent did not fail.
type failures map[[2]op]*failureCount

type failureCount struct{ calls, failed, survived int }

func countFailures(fs []facts) failures {
	fc := failures{}
	for _, f := range fs {
		tr := f.tree
		for n := range tr.nodes {
			for _, c := range tr.nodes[n].children {
				k := [2]op{tr.plainOp(int32(n)), tr.plainOp(c)}
				ct := fc[k]
				if ct == nil {
					ct = &failureCount{}
					fc[k] = ct
				}
				ct.calls++
				if tr.t.Spans[c].Failed {
					ct.failed++
					if !tr.t.Spans[n].Failed {
						ct.survived++
					}
				}
			}
		}
	}
	return fc
}

// setOrigins sets the origin of every failed trace's failure (see
// failureOrigin).
func setOrigins(fs []facts, handled map[[2]op]bool) {
	for i := range fs {
		if f := &fs[i]; f.failed {
			f.origin = f.tree.plainOp(int32(f.tree.failureOrigin(handled)))
		}
	}
}

// handledFailures returns the pairs of operations (parent, child) whose
// failures are old and handled: in the baseline, the parent did not fail in at least
// half of the child's failures under it, and in the window the child fails
// no more often than in the baseline (a tenth more, or a percentage point,
// for sampling). A window's new failure that passes through such a child
// started elsewhere: a dependency that failed as often before without
// failing the request did not start what is new.
func handledFailures(window, baseline failures) map[[2]op]bool {
	h := map[[2]op]bool{}
	for k, b := range baseline {
		w := window[k]
		if b.failed == 0 || 2*b.survived < b.failed || w == nil || w.calls == 0 {
			continue
		}
		rb, rw := float64(b.failed)/float64(b.calls), float64(w.failed)/float64(w.calls)
		if rw <= rb*1.1+0.01 {
			h[k] = true
		}
	}
	return h
}

func stats(fs []facts) WindowStats {
	s := WindowStats{Traces: len(fs)}
	if len(fs) == 0 {
		return s
	}
	durations := make([]uint64, len(fs))
	failed := 0
	for i, f := range fs {
		durations[i] = f.duration
		if f.failed {
			failed++
		}
	}
	slices.Sort(durations)
	s.P50, s.P99 = quantile(durations, 0.5), quantile(durations, 0.99)
	s.ErrorRate = float64(failed) / float64(len(fs))
	return s
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []uint64, q float64) uint64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(math.Ceil(q*float64(len(sorted))))-1)]
}

// meanSelf returns each operation's mean self time per trace on the paths.
func meanSelf(fs []facts) map[op]float64 {
	m := map[op]float64{}
	for _, f := range fs {
		for _, o := range f.self {
			m[o.op] += float64(o.self) / float64(len(fs))
		}
	}
	return m
}

// onPathShare is the share of traces with each operation on the critical
// path.
func onPathShare(fs []facts) map[op]float64 {
	m := map[op]float64{}
	for _, f := range fs {
		for _, o := range f.self {
			if o.self > 0 {
				m[o.op] += 1 / float64(len(fs))
			}
		}
	}
	return m
}

func meanDuration(fs []facts) float64 {
	var sum float64
	for _, f := range fs {
		sum += float64(f.duration)
	}
	return sum / float64(max(len(fs), 1))
}

// latencyCulprits ranks operations by how much their self time on the
// critical path grew, counted only as far as their own time grew too: when
// one branch of parallel calls slows down past the others, the path moves
// into it, and the operations under the slow one that did not slow down
// join the path with all of their time. Their own time did not grow, so
// they are not blamed.
func latencyCulprits(w, b []facts, pw, pb perTrace, exemplars int) []Culprit {
	ow, ob := pw.own, pb.own
	mw, mb := meanSelf(w), meanSelf(b)
	sw, sb := onPathShare(w), onPathShare(b)
	growth := meanDuration(w) - meanDuration(b)
	if growth <= 0 { // no regression: scores say growth against the baseline
		growth = max(meanDuration(b), 1)
	}
	var cs []Culprit
	for k, win := range mw {
		base := mb[k]
		grew := min(win-base, ow[k]-ob[k])
		if grew <= 0 {
			continue
		}
		spans := op{service: k.service, name: k.name}
		c := Culprit{Service: k.service, Operation: k.name, Call: k.call, Score: grew / growth, Baseline: base, Window: win,
			BaselineOnPath: sb[k], WindowOnPath: sw[k], BaselineCalls: pb.calls[spans], WindowCalls: pw.calls[spans]}
		c.Exemplars = topTraces(w, exemplars, func(f *facts) float64 { return float64(f.onPath(k)) })
		cs = append(cs, c)
	}
	cs = rank(cs)
	// A fallback past the noise leads before the rules below reorder
	// (see fellBack); one within it, after them.
	if fb := fellBack(slices.Clone(cs), w, b, pw, pb, exemplars); len(fb) > 0 && fb[0].FallbackOperation != "" &&
		!withinNoise(w, b, op{service: fb[0].FallbackService, name: fb[0].FallbackOperation}, false) {
		return fb
	}
	// The first culprit grew mostly in that more requests reach it, none
	// of them slower: the mix of requests shifted, which is not how the
	// operation ran. One beside it that did get slower, by a real part of
	// the regression and past the noise, is what went wrong, and leads.
	if len(cs) > 1 && reached(&cs[0]) {
		lead(cs, func(c *Culprit) bool {
			return !reached(c) && !withinNoise(w, b, op{c.Service, c.Operation, c.Call}, false)
		})
	}
	// A first culprit whose growth is within the noise yields to one that
	// is past it, as above: two shifts in the mix of requests, one by
	// chance, the other a cache that missed more, compete by how much
	// time they added, and chance may add more.
	if len(cs) > 1 && withinNoise(w, b, op{cs[0].Service, cs[0].Operation, cs[0].Call}, false) {
		lead(cs, func(c *Culprit) bool { return !withinNoise(w, b, op{c.Service, c.Operation, c.Call}, false) })
	}
	return fellBack(cs, w, b, pw, pb, exemplars)
}

// lead moves to the front of cs the first culprit after the first, of
// those that take slowerBesideShift of the growth or more, for which
// better holds.
func lead(cs []Culprit, better func(*Culprit) bool) {
	for i := 1; i < len(cs) && cs[i].Score >= slowerBesideShift; i++ {
		if better(&cs[i]) {
			c := cs[i]
			copy(cs[1:i+1], cs[:i])
			cs[0] = c
			return
		}
	}
}

// fellBack puts first, before cs's first culprit, the operation whose
// failures sent requests to it, if it is a fallback (see
// Culprit.FallbackService): a primary that fails fast and a backup that
// answers in 90 ms read as the backup's growth, reached by more requests
// and none slower, while what changed is the primary. Its figures are its
// own; the attributes are still ranked on the fallback's traces, which
// the failures slowed. It runs before the rules that let a culprit that
// got slower, or one past the noise, lead: a refusal that takes longer
// than an answer makes the primary slower too, and it had led without
// its fallback said.
func fellBack(cs []Culprit, w, b []facts, pw, pb perTrace, exemplars int) []Culprit {
	if len(cs) == 0 || cs[0].Call || cs[0].BaselineOnPath > 0 && !reached(&cs[0]) {
		return cs
	}
	to := op{service: cs[0].Service, name: cs[0].Operation}
	after := map[op]int{}
	for _, f := range w {
		for _, fb := range f.fallbacks {
			if s := &f.trace.Spans[fb.span]; s.Service == to.service && s.Name == to.name && f.failedCalls[fb.from] != to {
				after[f.failedCalls[fb.from]]++
			}
		}
	}
	calls := pw.calls[to] * float64(len(w))
	var from op
	most := 0
	for k, n := range after {
		if n > most || n == most && k.service+"\x00"+k.name < from.service+"\x00"+from.name {
			from, most = k, n
		}
	}
	if float64(2*most) <= calls {
		return cs
	}
	fw, fb := failedShare(w, from), failedShare(b, from)
	nw, nb := float64(len(w)), float64(len(b))
	pooled := (fw*nw + fb*nb) / (nw + nb)
	if fw-fb <= noiseErrors*math.Sqrt(pooled*(1-pooled)*(1/nw+1/nb)) {
		return cs
	}
	mw, mb := meanSelf(w), meanSelf(b)
	sw, sb := onPathShare(w), onPathShare(b)
	c := Culprit{Service: from.service, Operation: from.name, Score: cs[0].Score, Baseline: mb[from], Window: mw[from],
		BaselineOnPath: sb[from], WindowOnPath: sw[from], BaselineCalls: pb.calls[from], WindowCalls: pw.calls[from],
		FallbackService: to.service, FallbackOperation: to.name, BaselineFailed: fb, WindowFailed: fw}
	c.Exemplars = topTraces(w, exemplars, func(f *facts) float64 {
		if slices.Contains(f.failedCalls, from) {
			return float64(f.onPath(to))
		}
		return 0
	})
	cs = slices.DeleteFunc(cs, func(x Culprit) bool { return !x.Call && x.Service == from.service && x.Operation == from.name })
	return slices.Insert(cs, 0, c)
}

// failedShare is the share of traces with a failed call of k.
func failedShare(fs []facts, k op) float64 {
	n := 0
	for _, f := range fs {
		if slices.Contains(f.failedCalls, k) {
			n++
		}
	}
	return float64(n) / float64(max(len(fs), 1))
}

// slowerBesideShift is the least share of the regression an operation
// that got slower must take to lead one that only more requests reach.
const slowerBesideShift = 0.1

// reached says whether culprit c grew mostly in its reach (MostlyReach).
func reached(c *Culprit) bool {
	return MostlyReach(c.Baseline, c.Window, c.BaselineOnPath, c.WindowOnPath, c.BaselineCalls, c.WindowCalls)
}

// moreCalls says whether culprit c ran at least half as many times again a
// trace, each call taking no more than a quarter longer on the critical
// path: its growth is the calls, not how they ran. One that did not run in
// the baseline is new, not more.
func moreCalls(c *Culprit) bool {
	cb, cw := c.BaselineCalls, c.WindowCalls
	if cb <= 0 || cw < cb*1.5 || c.Baseline <= 0 {
		return false
	}
	return c.Window/cw <= 1.25*c.Baseline/cb
}

// MostlyReach reports whether most of the growth of an operation's self
// time on the critical path per trace, from base to win, is that it is on
// the path of more traces, each time for about as long as before (a shift
// in the mix of requests, more of them reaching it, none slower): sb and
// sw are the shares of traces with it on the path, cb and cw its spans per
// trace, negative where not known. One that ran no more often, a tenth
// more or less, is on the path of more traces because it got slower and
// outlasted what ran beside it, a pool it waits on saturated: no shift.
func MostlyReach(base, win, sb, sw, cb, cw float64) bool {
	growth := win - base
	if sb <= 0 || sw <= sb || growth <= 0 || cb >= 0 && cw >= 0 && cw < cb*1.1 {
		return false
	}
	return base/sb*(sw-sb) >= growth/2
}

// callerSide names the caller in c, a culprit that is the calls to an
// operation, where the wait grew on one pod of the callers rather than of
// the server: a caller whose every call waits longer, for whatever its
// callee, is itself stalled (a starved CPU, a collector's pauses, a pool
// it queues on), and the fault is the caller's. Where the server's pods
// wait unevenly (the network to one of them), or neither side's do, the
// calls stay the culprit. c is then the client operation of the caller's
// spans that waited longest on that pod; its figures are unchanged, being
// that client's own time.
func callerSide(c *Culprit, w, b []facts) {
	k := op{service: c.Service, name: c.Operation, call: true}
	type mean struct {
		sum uint64
		n   int
	}
	var base mean
	for _, f := range b {
		for _, cw := range f.waits {
			if cw.call == k {
				base.sum += cw.wait
				base.n++
			}
		}
	}
	callers, callees := map[string]*mean{}, map[string]*mean{}
	clients := map[string]map[op]uint64{} // by caller
	add := func(m map[string]*mean, key string, wait uint64) {
		if m[key] == nil {
			m[key] = &mean{}
		}
		m[key].sum += wait
		m[key].n++
	}
	for _, f := range w {
		for _, cw := range f.waits {
			if cw.call != k {
				continue
			}
			add(callers, cw.caller, cw.wait)
			add(callees, cw.callee, cw.wait)
			if clients[cw.caller] == nil {
				clients[cw.caller] = map[op]uint64{}
			}
			clients[cw.caller][cw.client] += cw.wait
		}
	}
	if base.n == 0 {
		return
	}
	baseMean := float64(base.sum) / float64(base.n)
	// The most that calls from one resource, or to one, grew on average.
	most := func(m map[string]*mean) (string, float64) {
		bestKey, best := "", 0.0
		for key, mn := range m {
			if mn.n < minSideCalls {
				continue
			}
			if g := float64(mn.sum)/float64(mn.n) - baseMean; g > best || g == best && key < bestKey {
				bestKey, best = key, g
			}
		}
		return bestKey, best
	}
	caller, callerGrew := most(callers)
	_, calleeGrew := most(callees)
	if callerGrew <= 0 || callerGrew < sideMargin*calleeGrew {
		return
	}
	var client op
	var longest uint64
	for o, wait := range clients[caller] {
		if wait > longest || wait == longest && (o.service+o.name) < (client.service+client.name) {
			client, longest = o, wait
		}
	}
	c.Service, c.Operation, c.Call = client.service, client.name, false
}

// callerSideCulprits is how many of the first culprits callerSide looks
// at: a pod that stalls slows every call it makes, and the calls to each
// of its callees then rank near the first.
const callerSideCulprits = 5

// minSideCalls is the fewest calls from or to one resource whose wait
// callerSide weighs, and sideMargin how many times the most one side's
// resources grew it must be of the other's.
const (
	minSideCalls = 5
	sideMargin   = 1.5
)

func errorCulprits(w, b []facts, exemplars int) []Culprit {
	rate := func(fs []facts) map[op]float64 {
		m := map[op]float64{}
		for _, f := range fs {
			if f.failed {
				m[f.origin] += 1 / float64(len(fs))
			}
		}
		return m
	}
	rw, rb := rate(w), rate(b)
	mw, mb := meanSelf(w), meanSelf(b)
	var cs []Culprit
	for k, win := range rw {
		if win <= rb[k] {
			continue
		}
		c := Culprit{Service: k.service, Operation: k.name, Score: win - rb[k], Baseline: mb[k], Window: mw[k],
			BaselineOrigin: rb[k], WindowOrigin: win}
		c.Exemplars = topTraces(w, exemplars, func(f *facts) float64 {
			if f.failed && f.origin == k {
				return float64(f.duration)
			}
			return 0
		})
		cs = append(cs, c)
	}
	return rank(cs)
}

func rank(cs []Culprit) []Culprit {
	slices.SortFunc(cs, func(a, b Culprit) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Operation, b.Operation),
			compareBool(a.Call, b.Call))
	})
	return cs
}

// topTraces returns the IDs of the n traces that weigh most, leaving out
// those that weigh nothing.
func topTraces(fs []facts, n int, weight func(*facts) float64) [][16]byte {
	type weighed struct {
		id [16]byte
		w  float64
	}
	var top []weighed
	for i := range fs {
		wt := weight(&fs[i])
		if wt <= 0 {
			continue
		}
		if len(top) == n && wt <= top[n-1].w {
			continue
		}
		at, _ := slices.BinarySearchFunc(top, wt, func(x weighed, w float64) int { return cmp.Compare(w, x.w) })
		top = slices.Insert(top, at, weighed{fs[i].trace.ID, wt})
		if len(top) > n {
			top = top[:n]
		}
	}
	ids := make([][16]byte, len(top))
	for i, t := range top {
		ids[i] = t.id
	}
	return ids
}

// attributeCauses scores the attribute values of the window's slow or
// failed traces against the baseline's, and splits them into causes and
// symptoms, both only those seen more often in the selection.
//
// Diagnosing latency, the traces are those where the first culprit took
// long on the path, against the baseline's traces that have it there: an
// operation such as a gateway's serves requests of many kinds, some
// always slower than the rest, and among the traces slowest overall those
// kinds' values stand out in any window, changed or not, while the
// requests the fault slowed may not be among them at all. Where too few
// traces are selected so to rank any value, the selection is the
// window's traces slowest overall, against the whole baseline. Where most
// of the culprit's growth is that it is on the path of more traces (see
// MostlyReach), none slower, it is the window's traces with it on the
// path, against the whole baseline: what sets them apart is what sent
// them its way, such as a cache that missed. Where it ran more times a
// trace, each call as long (moreCalls), its slow traces are taken against
// the whole baseline for the same reason. Where the culprit slowed alike
// in every trace it ran in, so that among the baseline's traces that have
// it no value sets the slow traces apart (setApart), they are taken
// against the whole baseline too: what sets them apart is then what sends
// requests its way, such as a flag that gates it; not where the culprit
// is within the noise (noise), whose slow traces may be chance and whose
// values are not named.
func attributeCauses(w, b []facts, o DiagnoseOptions, lead *op, first *Culprit, failed *op, noise bool) (causes, symptoms []Correlation) {
	var selected, base []*Trace
	againstItsOwn, reachedIt := false, false
	switch {
	case o.Errors:
		for _, f := range w {
			if f.failed {
				selected = append(selected, f.trace)
			}
		}
		base = tracesOf(b)
	case lead != nil && (reached(first) || failed != nil):
		// What sets its traces apart is what sends requests its way (a
		// cache that misses, a flag, a primary that fails): among the
		// traces it is on the path of, it took no longer than before, or
		// none had it.
		for _, f := range w {
			if f.onPath(*lead) > 0 {
				selected = append(selected, f.trace)
			}
		}
		base, reachedIt = tracesOf(b), true
	case lead != nil && moreCalls(first):
		// It ran more times a request, each call as long as before (an
		// N+1 query whose cache misses more): what sets its slow traces
		// apart is what sent the calls its way, which the baseline's
		// traces that ran it at all carry too. Against the whole
		// baseline, the value that rose with the calls stands out.
		selected, _ = slowAt(w, b, *lead)
		base = tracesOf(b)
	case lead != nil:
		selected, base = slowAt(w, b, *lead)
		againstItsOwn = len(base) < len(b)
	}
	if !o.Errors && len(selected) < o.Correlation.MinTraces {
		// No culprit, or one that took no longer where it ran but ran in
		// more requests (more cache misses, traffic a flag sent its way).
		selected, base = slowOverall(w, b), tracesOf(b)
		againstItsOwn, reachedIt = false, false
	}
	if len(selected) == 0 {
		return nil, nil
	}
	causes, symptoms = rankAttributes(w, selected, base, o.Correlation, lead, first)
	if reachedIt {
		causes = choices(causes, selected, base, *lead, fellBackSpans(w, failed))
	}
	if againstItsOwn && !noise && !setApart(causes, len(selected), len(base)) {
		all := tracesOf(b)
		c, s := rankAttributes(w, selected, all, o.Correlation, lead, first)
		if c = choices(c, selected, all, *lead, nil); setApart(c, len(selected), len(all)) {
			return c, s
		}
	}
	return causes, symptoms
}

// choices keeps of causes, the selected traces' values against the whole
// baseline, those that tell which requests reach operation k rather than
// restate that they did: a value its service has in at most
// choiceShare of the baseline's traces it is in (a flag's variant, an
// operation's name, one version of several), on a resource or on a span
// other than k's, the client spans that called them and the spans of
// fellBack (under the calls made after a failure the culprit's requests
// fell back from, which say only that the backup answered). A service's
// constants (its one version, its region, the call it always makes) are on
// every trace it is in, and k's own attributes (its query's text) on every
// trace k is in; either would lead where k runs only in some requests. Where a cause's first value is not
// such a choice but one of its aliases is, that alias leads. Of values on
// the same number of traces with the same score, which are most often on
// the same traces (the request's kind, and what only that kind sends its
// callees), those of the service the requests entered first: what sends a
// request one way is decided where it comes in.
func choices(causes []Correlation, selected, base []*Trace, k op, fellBack map[*Trace][]*Span) []Correlation {
	type serviceKey struct{ service, key string }
	type count struct {
		elsewhere bool
		carry     int    // baseline traces the value is on
		last      uint64 // the last of them
	}
	// Only the causes' values and their aliases are counted, each by its
	// service and key, then its value.
	counts := map[serviceKey]map[string]*count{}
	add := func(service string, kv *commonpb.KeyValue) {
		sk := serviceKey{service, kv.GetKey()}
		if counts[sk] == nil {
			counts[sk] = map[string]*count{}
		}
		counts[sk][valueString(kv.GetValue())] = &count{}
	}
	for _, c := range causes {
		add(c.Service, &commonpb.KeyValue{Key: c.Key, Value: c.Value})
		for _, al := range c.Aliases {
			add(c.Service, al)
		}
	}
	var buf []byte
	lookup := func(service string, kv *commonpb.KeyValue) *count {
		vs := counts[serviceKey{service, kv.GetKey()}]
		if vs == nil {
			return nil
		}
		buf = appendValue(buf[:0], kv.GetValue())
		return vs[string(buf)]
	}
	for _, t := range selected {
		// k's spans, the client spans that called them, and the spans
		// under fallback calls.
		own := map[*Span]bool{}
		ids := spanIDs(t)
		for i := range t.Spans {
			if s := &t.Spans[i]; s.Service == k.service && s.Name == k.name {
				own[s] = true
				if p, ok := ids[s.Parent]; ok && t.Spans[p].Kind == kindClient {
					own[&t.Spans[p]] = true
				}
			}
		}
		for _, sp := range fellBack[t] {
			own[sp] = true
		}
		forEachValue(t, func(service string, kv *commonpb.KeyValue, s *Span) {
			if !own[s] {
				if c := lookup(service, kv); c != nil {
					c.elsewhere = true
				}
			}
		})
	}
	in := map[string]int{}      // baseline traces a service is in
	last := map[string]uint64{} // the last of them
	for i, t := range base {
		mark := uint64(i) + 1
		for j := range t.Spans {
			if sv := t.Spans[j].Service; last[sv] != mark {
				last[sv] = mark
				in[sv]++
			}
		}
		forEachValue(t, func(service string, kv *commonpb.KeyValue, _ *Span) {
			if c := lookup(service, kv); c != nil && c.elsewhere && c.last != mark {
				c.last = mark
				c.carry++
			}
		})
	}
	isChoice := func(service string, kv *commonpb.KeyValue) bool {
		c := counts[serviceKey{service, kv.GetKey()}][valueString(kv.GetValue())]
		return c != nil && c.elsewhere && float64(c.carry) <= choiceShare*float64(in[service])
	}
	var out []Correlation
	for _, c := range causes {
		if isChoice(c.Service, &commonpb.KeyValue{Key: c.Key, Value: c.Value}) {
			out = append(out, c)
			continue
		}
		for i, al := range c.Aliases {
			if isChoice(c.Service, al) {
				aliases := slices.Concat(c.Aliases[:i], []*commonpb.KeyValue{{Key: c.Key, Value: c.Value}}, c.Aliases[i+1:])
				c.Key, c.Value, c.Aliases = al.Key, al.Value, aliases
				out = append(out, c)
				break
			}
		}
	}
	entered := map[string]int{} // selected traces whose root is of a service
	for _, t := range selected {
		ids := spanIDs(t)
		for i := range t.Spans {
			if _, ok := ids[t.Spans[i].Parent]; !ok {
				entered[t.Spans[i].Service]++
				break
			}
		}
	}
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && out[j].Score == out[i].Score && out[j].Selected == out[i].Selected {
			j++
		}
		slices.SortStableFunc(out[i:j], func(a, b Correlation) int { return cmp.Compare(entered[b.Service], entered[a.Service]) })
		i = j
	}
	return out
}

// fellBackSpans returns, by trace of w, the spans under calls made right
// after a failed call of operation failed (see tree.fallbacks); none if
// failed is nil.
func fellBackSpans(w []facts, failed *op) map[*Trace][]*Span {
	if failed == nil {
		return nil
	}
	spans := map[*Trace][]*Span{}
	for _, f := range w {
		for _, fb := range f.fallbacks {
			if f.failedCalls[fb.from] == *failed {
				spans[f.trace] = append(spans[f.trace], &f.trace.Spans[fb.span])
			}
		}
	}
	return spans
}

// choiceShare is the largest share of the baseline's traces a service is
// in that a value of it may be on and still tell requests apart (see
// choices): one on more would score under NamedScore against them.
const choiceShare = 0.9

// forEachValue calls fn with each attribute value of t's spans (s) and of
// the resources its spans are on (s nil), by service.
func forEachValue(t *Trace, fn func(service string, kv *commonpb.KeyValue, s *Span)) {
	onResource := make([]string, len(t.Resources))
	for i := range t.Spans {
		s := &t.Spans[i]
		onResource[s.Resource] = s.Service
		for _, kv := range s.Attrs {
			fn(s.Service, kv, s)
		}
	}
	for r, attrs := range t.Resources {
		if onResource[r] == "" {
			continue
		}
		for _, kv := range attrs {
			fn(onResource[r], kv, nil)
		}
	}
}

// rankAttributes scores the attribute values of the selected traces
// against those of base and splits them into causes and symptoms (see
// attributeCauses).
func rankAttributes(w []facts, selected, base []*Trace, opts CorrelationOptions, lead *op, first *Culprit) (causes, symptoms []Correlation) {
	attrs, _ := Correlate(selected, base, &opts)
	onLead := func(c *Correlation) bool { return first != nil && c.Service == first.Service }
	slices.SortStableFunc(attrs, func(a, b Correlation) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(b.Selected, a.Selected), compareBool(onLead(&b), onLead(&a)))
	})
	for _, a := range attrs {
		switch {
		case a.Score <= 0:
		case a.Symptom:
			symptoms = append(symptoms, a)
		default:
			causes = append(causes, a)
		}
	}
	others := rest(w, selected)
	within := withinScores(selected, others, opts)
	var ranks []float64
	if lead != nil {
		ranks = offPathWithin(causes, involved(selected, *lead), within)
	} else {
		for _, c := range causes {
			ranks = append(ranks, c.Score)
		}
	}
	// The lead is the first cause's: a symptom scoring above every cause
	// would otherwise set the band, and leave the causes unordered.
	leadAmongWindow(causes, ranks, within)
	placeOfLeadingInstances(causes, selected)
	return causes, symptoms
}

// NamedScore is the score one of the first NamedLead causes must pass to
// be named as setting the selected traces apart: below it, every value is
// about as common before as in the selection, and naming one would read
// as evidence. The first may score less than those after it: a zone that
// holds exactly the pods that lead is ranked before them, and its pods are
// its evidence.
const (
	NamedScore = 0.1
	NamedLead  = 3
)

// setApart reports whether one of the first NamedLead causes, scored on
// nSelected traces against nBase, passes NamedScore and is more than
// apartErrors standard errors of the difference of its shares above 0:
// on a selection of a few hundred traces, some of the 50 or so values of
// a fleet pass NamedScore by chance.
func setApart(causes []Correlation, nSelected, nBase int) bool {
	for _, c := range causes[:min(len(causes), NamedLead)] {
		pooled := float64(c.Selected+c.Baseline) / float64(nSelected+nBase)
		se := math.Sqrt(pooled * (1 - pooled) * (1/float64(nSelected) + 1/float64(max(nBase, 1))))
		if c.Score > NamedScore && c.Score > apartErrors*se {
			return true
		}
	}
	return false
}

// apartErrors is how many standard errors a cause's score must pass for
// setApart, as culprits' growth must pass the noise (see withinNoise).
const apartErrors = noiseErrors

// instanceKeys name one instance of a service, and placeKeys where
// instances run, narrowest first.
var (
	instanceKeys = []string{"k8s.pod.name", "service.instance.id"}
	placeKeys    = []string{"k8s.node.name", "cloud.availability_zone", "cloud.region"}
)

// placeOfLeadingInstances puts first the place (node, zone, region) whose
// instances of a service are exactly those that lead the causes, two or
// more of them, as the selected traces show them. Values are scored by the
// traces that carry them, and a service called many times a request has
// most of its places on most traces of either set: the zone of a slow
// zone's two pods scored a third of either pod and ranked fourth behind
// them. A place that holds other instances of the service as well, or a
// lead of one instance, leaves the order as it is.
func placeOfLeadingInstances(causes []Correlation, selected []*Trace) {
	lead := map[string]bool{}
	for i := range causes {
		c := &causes[i]
		inst := firstValue(instanceKeys, []*commonpb.KeyValue{{Key: c.Key, Value: c.Value}}, c.Aliases)
		if inst == "" || c.Service != causes[0].Service {
			break
		}
		lead[inst] = true
	}
	if len(lead) < 2 {
		return
	}
	service := causes[0].Service
	// Where each of the service's instances runs, by place key.
	places := map[string]map[string]string{} // instance → key → value
	for _, t := range selected[:min(len(selected), involvedTraces)] {
		for i := range t.Spans {
			s := &t.Spans[i]
			if s.Service != service || s.Resource >= len(t.Resources) {
				continue
			}
			res := t.Resources[s.Resource]
			inst := firstValue(instanceKeys, res, s.Attrs)
			if inst == "" {
				continue
			}
			if places[inst] == nil {
				places[inst] = map[string]string{}
			}
			for _, k := range placeKeys {
				if v := firstValue([]string{k}, res, s.Attrs); v != "" {
					places[inst][k] = v
				}
			}
		}
	}
	for _, k := range placeKeys {
		place, same := "", true
		for inst := range lead {
			v := places[inst][k]
			if v == "" || place != "" && v != place {
				same = false
				break
			}
			place = v
		}
		if !same {
			continue
		}
		holds := 0 // instances the place holds
		for _, p := range places {
			if p[k] == place {
				holds++
			}
		}
		if holds != len(lead) {
			continue
		}
		for i := range causes {
			if c := &causes[i]; c.Service == service && c.Key == k && valueString(c.Value) == place {
				moved := *c
				copy(causes[1:i+1], causes[:i])
				causes[0] = moved
				return
			}
		}
	}
}

// firstValue is the string value of the first of keys that lists hold,
// "" if none.
func firstValue(keys []string, lists ...[]*commonpb.KeyValue) string {
	for _, k := range keys {
		for _, l := range lists {
			for _, a := range l {
				if a.GetKey() == k {
					return valueString(a.GetValue())
				}
			}
		}
	}
	return ""
}

// offPathWithin orders the causes by their scores, those of a service
// that is neither the culprit's nor above it in the selected traces (see
// involved) by their score within the window where it is lower: how much
// more often the selected traces carry them than the window's others.
// Against the baseline, a release of a service on another branch of
// every request scores near 1, as every new value the whole window has
// does, and beat the one pod of the culprit's that the slow traces went
// to, which the baseline's traces carried too; within the window, the
// release sets little apart. A change of the culprit's own service, or of
// a caller's (a new version sending it larger requests), keeps its score,
// on every trace of the window or not. Scores are left as they are; the
// ranks are returned, in the causes' new order.
func offPathWithin(causes []Correlation, involved map[string]bool, within func(*Correlation) (float64, bool)) []float64 {
	rank := func(c *Correlation) float64 {
		if involved[c.Service] {
			return c.Score
		}
		w, ok := within(c)
		if !ok {
			return c.Score // too few of the window's other traces to tell
		}
		return min(c.Score, max(w, 0))
	}
	type ranked struct {
		Correlation
		rank float64
	}
	rs := make([]ranked, len(causes))
	for i := range causes {
		rs[i] = ranked{causes[i], rank(&causes[i])}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int { return cmp.Compare(b.rank, a.rank) })
	ranks := make([]float64, len(rs))
	for i := range rs {
		causes[i], ranks[i] = rs[i].Correlation, rs[i].rank
	}
	return ranks
}

// involvedTraces bounds the selected traces involved reads.
const involvedTraces = 200

// involved returns the services of k's spans in the traces, and of every
// span above them: the culprit's service and its callers.
func involved(traces []*Trace, k op) map[string]bool {
	out := map[string]bool{k.service: true}
	for _, t := range traces[:min(len(traces), involvedTraces)] {
		ids := spanIDs(t)
		// A span walked up from once has had its callers added: a chain
		// of k's spans, a recursion, is walked once, not once a span.
		walked := make([]bool, len(t.Spans))
		for i := range t.Spans {
			if s := &t.Spans[i]; s.Service != k.service || s.Name != k.name {
				continue
			}
			for at := int32(i); !walked[at]; { // walked also ends a cycle
				walked[at] = true
				p, ok := ids[t.Spans[at].Parent]
				if !ok {
					break
				}
				out[t.Spans[p].Service] = true
				at = p
			}
		}
	}
	return out
}

// withinScores returns what scores a value, or the best of its aliases,
// within the window: how much more often the selected traces carry it
// than the window's others; and whether those are enough to tell and
// the value is scored. Within the window, values may fold into other
// aliases: each is looked up by its own and its aliases' values.
func withinScores(selected, others []*Trace, opts CorrelationOptions) func(*Correlation) (float64, bool) {
	if len(others) < opts.EnsureDefaults().MinTraces {
		return func(*Correlation) (float64, bool) { return 0, false }
	}
	within, _ := Correlate(selected, others, &opts)
	type attrKey struct{ service, key, value string }
	score := make(map[attrKey]float64, len(within))
	for _, a := range within {
		score[attrKey{a.Service, a.Key, valueString(a.Value)}] = a.Score
		for _, al := range a.Aliases { // on the same traces, so as scored
			score[attrKey{a.Service, al.Key, valueString(al.Value)}] = a.Score
		}
	}
	return func(a *Correlation) (float64, bool) {
		best, ok := score[attrKey{a.Service, a.Key, valueString(a.Value)}]
		for _, al := range a.Aliases {
			if sc, found := score[attrKey{a.Service, al.Key, valueString(al.Value)}]; found && (!ok || sc > best) {
				best, ok = sc, true
			}
		}
		return best, ok
	}
}

// attributeLead is how far below the first attribute's score others still
// contend for the lead (see leadAmongWindow).
const attributeLead = 0.1

// leadAmongWindow reorders the attributes whose ranks (their scores, or
// what offPathWithin ranks them by) are within attributeLead of the
// first's by how much more often the selected traces carry them than the
// window's other traces (within); where those are too few to tell, all
// score 0 and the order stays. Against the baseline, every value the
// whole window has and the baseline has not scores alike, near 1: a
// release rolled out to every pod of a service beside the one at fault
// scores as high as the canary at fault, which only the traces it slowed
// carry. Where the cause is on every trace of the window too, nothing
// sets it apart within the window, and the order stays.
func leadAmongWindow(attrs []Correlation, ranks []float64, within func(*Correlation) (float64, bool)) {
	if len(attrs) < 2 {
		return
	}
	n := 1
	for n < len(attrs) && ranks[n] >= ranks[0]-attributeLead {
		n++
	}
	if n < 2 {
		return
	}
	type scored struct {
		Correlation
		within float64
	}
	lead := make([]scored, n)
	for i := range lead {
		w, _ := within(&attrs[i])
		lead[i] = scored{attrs[i], w}
	}
	slices.SortStableFunc(lead, func(a, b scored) int { return cmp.Compare(b.within, a.within) })
	for i := range lead {
		attrs[i] = lead[i].Correlation
	}
}

// rest returns the window's traces that are not among selected.
func rest(w []facts, selected []*Trace) []*Trace {
	in := make(map[*Trace]bool, len(selected))
	for _, t := range selected {
		in[t] = true
	}
	var out []*Trace
	for _, f := range w {
		if !in[f.trace] {
			out = append(out, f.trace)
		}
	}
	return out
}

func tracesOf(fs []facts) []*Trace {
	ts := make([]*Trace, len(fs))
	for i, f := range fs {
		ts[i] = f.trace
	}
	return ts
}

// slowAt returns the window's traces that have k and where its self time
// on the path is longer than in 95% of the baseline's traces that have k,
// and those baseline traces; a trace whose path k is off counts 0. A call
// beside a longer one is mostly off the path, and where the fault slowed
// it past the other, any time on the path sets its traces apart. If no
// baseline trace has k, every window trace that has it on the path is
// selected, against the whole baseline.
func slowAt(w, b []facts, k op) (selected, base []*Trace) {
	// A call's time counts for the calls to the server's operation, whose
	// server span the trace then has.
	has := func(t *Trace) bool {
		for i := range t.Spans {
			if s := &t.Spans[i]; s.Service == k.service && s.Name == k.name {
				return true
			}
		}
		return false
	}
	var times []uint64
	for i := range b {
		if has(b[i].trace) {
			times = append(times, b[i].onPath(k))
			base = append(base, b[i].trace)
		}
	}
	if len(base) == 0 {
		base = tracesOf(b)
	}
	slices.Sort(times)
	type timed struct {
		trace *Trace
		time  uint64
	}
	var with []timed // the window's traces that have k
	for i := range w {
		if has(w[i].trace) {
			with = append(with, timed{w[i].trace, w[i].onPath(k)})
		}
	}
	wtimes := make([]uint64, len(with))
	for i, x := range with {
		wtimes[i] = x.time
	}
	slices.Sort(wtimes)
	slow := slowFrom(times, wtimes)
	for _, x := range with {
		if x.time > slow {
			selected = append(selected, x.trace)
		}
	}
	return selected, base
}

// slowFrom returns the time past which the window's times, sorted, are
// most often slower than the baseline's, sorted: of the baseline's
// quantiles from the 50th to the 95th, the one past which the window has
// the largest share of its times more than the baseline has, the higher
// of two alike. A fault that slowed a few requests by much stands out
// past the 95th; one that slowed a third of them by a little (one slow
// node of three, among requests some of which are always slower) past
// the middle, where past the 95th the slowest requests, slow before too,
// would be most of the selection.
func slowFrom(base, win []uint64) uint64 {
	above := func(sorted []uint64, t uint64) float64 {
		k, found := slices.BinarySearch(sorted, t)
		for found && k < len(sorted) && sorted[k] == t {
			k++
		}
		return float64(len(sorted)-k) / float64(len(sorted))
	}
	best, bestExcess := quantile(base, 0.95), math.Inf(-1)
	if len(base) == 0 || len(win) == 0 {
		return best
	}
	for q := 0.95; q >= 0.5-1e-9; q -= 0.05 {
		t := quantile(base, q)
		// A twentieth more, so that a lower quantile wins only by as much.
		if excess := above(win, t) - above(base, t); excess > bestExcess*1.05 || bestExcess < 0 && excess > bestExcess {
			best, bestExcess = t, excess
		}
	}
	return best
}

// slowOverall returns the window's traces slower than 95% of the
// baseline's (of the window's, if the baseline has none).
func slowOverall(w, b []facts) []*Trace {
	ref := b
	if len(ref) == 0 {
		ref = w
	}
	durations := make([]uint64, len(ref))
	for i, f := range ref {
		durations[i] = f.duration
	}
	slices.Sort(durations)
	slow := quantile(durations, 0.95)
	var selected []*Trace
	for _, f := range w {
		if f.duration > slow {
			selected = append(selected, f.trace)
		}
	}
	return selected
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}
