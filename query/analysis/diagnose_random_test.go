package analysis

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// TestDiagnoseRandomTopologies injects one fault into call graphs drawn at
// random (services calling services in sequence and in parallel, or over
// a queue awaiting the reply, database and in-process steps, consumers of
// events after the request, pods,
// versions, request attributes and span attributes) and checks that Diagnose names the
// faulty operation first and the attribute that sets the faulty traces
// apart among its first three, as `cairn bench --rca` checks for its fixed
// call graph. A quarter of the latency faults in an operation called from
// another service are in the network to it instead, or for a request over
// a queue, in the queue before its consumer takes it, which the diagnosis
// must name as the calls to that operation. Beside the fault, a service's
// clock may be skewed, the window's operations all take up to 5% longer,
// an asynchronous consumer off the critical path takes six times as long,
// and one request in a hundred fails at a random place, in both windows.
//
// A fault that does not account for most of the window's slowdown (it
// struck a call beside a longer one, or too few requests) is no scenario:
// the window is drawn again without it, from the same seed, to tell.
func TestDiagnoseRandomTopologies(t *testing.T) {
	n := 150
	if testing.Short() {
		n = 20
	}
	failed, skipped := 0, 0
	for seed := range uint64(n) {
		sc := newRandomScenario(seed)
		window := sc.traffic(400, true, true, 2*seed+1)
		healthy := sc.traffic(400, true, false, 2*seed+1) // the same requests without the fault
		baseline := sc.traffic(400, false, false, 2*seed+2)
		if !sc.regressed(window, healthy, baseline) {
			skipped++ // the fault fell off the critical path, or too few requests met it
			continue
		}
		d := Diagnose(window, baseline, &DiagnoseOptions{Service: sc.root.service, Operation: sc.root.op, Errors: sc.errors})
		opRank, attrRank := sc.ranks(d)
		if opRank != 1 || sc.attrKey != "" && (attrRank < 1 || attrRank > 3) {
			failed++
			t.Errorf("seed %d: %s: operation rank %d, attribute rank %d\n%s", seed, sc, opRank, attrRank, describe(d))
		}
	}
	t.Logf("%d of %d scenarios misdiagnosed, %d without a regression to diagnose", failed, n, skipped)
}

// regressed reports whether the fault made the root operation measurably
// slower, and accounts for most of its slowdown from the baseline, or made
// it fail measurably more often.
func (sc *randomScenario) regressed(window, healthy, baseline []*Trace) bool {
	mean := func(ts []*Trace) (dur, failed float64) {
		for _, t := range ts {
			dur += float64(t.Spans[0].Duration()) / float64(len(ts))
			if t.Spans[0].Failed {
				failed += 1 / float64(len(ts))
			}
		}
		return dur, failed
	}
	wd, wf := mean(window)
	hd, _ := mean(healthy)
	bd, bf := mean(baseline)
	if sc.errors {
		return wf-bf >= 0.05
	}
	return wd-hd >= 0.02*bd && wd-hd >= 0.5*(wd-bd)
}

// rNode is an operation of the drawn call graph.
type rNode struct {
	service, op string
	kind        tracepb.Span_SpanKind
	self        float64 // mean own time, ms
	calls       []rCall
	async       bool // a consumer of an event, run after its parent ends
}

type rCall struct {
	n *rNode
	// parallel: the call starts with the one before it instead of after.
	parallel bool
	// repeat: how many times in a row the call is made, as in a loop.
	repeat int
}

type randomScenario struct {
	rng      *rand.Rand
	seed     uint64
	services []string
	pods     map[string]int
	root     *rNode
	nodes    []*rNode

	culprit *rNode
	errors  bool
	// wide: every operation of the culprit's service slows down, as when
	// its CPU is starved, and the diagnosis must name one of them first.
	wide   bool
	factor float64
	// network: the delta is in the network to the culprit, a server
	// operation, half each way, or in the queue before the culprit, a
	// consumer whose clock is the caller's, takes the request; and the
	// diagnosis must name the calls to it.
	network bool
	// The fault strikes traces whose cond holds.
	condKind         string // "pod", "version", "request", "span", "all"
	condService      string
	condPod          int
	condValue        string
	delta, failShare float64
	// The attribute the fault's traces carry, on attrService's spans or
	// resources.
	attrService, attrKey, attrValue string
	slowConsumer                    *rNode
	// skewService's clock is off by skew ms, in both windows.
	skewService string
	skew        float64
	// drift scales every operation's own time in the window.
	drift float64
	// cancels: a failure cancels the calls running beside it.
	cancels bool
}

func newRandomScenario(seed uint64) *randomScenario {
	rng := rand.New(rand.NewPCG(seed, 0xd1a9))
	sc := &randomScenario{rng: rng, seed: seed, pods: map[string]int{}}
	for i := range 4 + rng.IntN(7) {
		s := fmt.Sprint("svc", i)
		sc.services = append(sc.services, s)
		sc.pods[s] = 2 + rng.IntN(5)
	}
	sc.root = sc.node(sc.services[0], "GET /api/"+fmt.Sprint(rng.IntN(100)), tracepb.Span_SPAN_KIND_SERVER)
	sc.grow(sc.root, []string{sc.services[0]}, 0)
	consumer := sc.node(sc.services[1+rng.IntN(len(sc.services)-1)], "consume event", tracepb.Span_SPAN_KIND_CONSUMER)
	consumer.async, consumer.self = true, 20
	sc.root.calls = append(sc.root.calls, rCall{n: consumer})
	sc.slowConsumer = consumer

	var candidates []*rNode
	var walk func(n *rNode)
	walk = func(n *rNode) {
		if n.async {
			return
		}
		if n != sc.root {
			candidates = append(candidates, n)
		}
		for _, c := range n.calls {
			walk(c.n)
		}
	}
	walk(sc.root)
	sc.queueRequests(seed)
	sc.culprit = candidates[rng.IntN(len(candidates))]
	sc.errors = rng.IntN(3) == 0
	sc.delta = 5 + 35*rng.Float64()
	sc.drift = 1 + 0.05*rng.Float64()
	if rng.IntN(10) < 3 {
		sc.skewService = sc.services[1+rng.IntN(len(sc.services)-1)]
		sc.skew = (5 + 35*rng.Float64()) * float64(1-2*rng.IntN(2))
	}
	sc.failShare = 0.3 + 0.7*rng.Float64()
	sc.cancels = sc.errors && rng.IntN(2) == 0
	sc.wide = !sc.errors && rng.IntN(4) == 0
	sc.factor = 1.5 + 1.5*rng.Float64()
	// Drawn apart, so that the other draws of a seed stay what they were.
	called := sc.culprit.kind == tracepb.Span_SPAN_KIND_SERVER ||
		sc.culprit.kind == tracepb.Span_SPAN_KIND_CONSUMER && sc.skewService != sc.culprit.service
	sc.network = !sc.errors && !sc.wide && called && rand.New(rand.NewPCG(seed, 0x4e7)).IntN(4) == 0
	switch rng.IntN(5) {
	case 0:
		sc.condKind, sc.condService, sc.condPod = "pod", sc.culprit.service, rng.IntN(sc.pods[sc.culprit.service])
		sc.attrService, sc.attrKey, sc.attrValue = sc.condService, "host.name", fmt.Sprintf("%s-%d", sc.condService, sc.condPod)
	case 1:
		sc.condKind, sc.condService, sc.condPod = "version", sc.culprit.service, rng.IntN(sc.pods[sc.culprit.service])
		sc.attrService, sc.attrKey, sc.attrValue = sc.condService, "service.version", "9.9.9"
	case 2:
		sc.condKind, sc.condValue = "request", []string{"free", "pro", "enterprise"}[rng.IntN(3)]
		sc.attrService, sc.attrKey, sc.attrValue = sc.root.service, "user.tier", sc.condValue
	case 3:
		sc.condKind = "span"
		sc.attrService, sc.attrKey, sc.attrValue = sc.culprit.service, "cache.hit", "false"
	default:
		sc.condKind = "all"
	}
	return sc
}

// queueRequests makes some calls to other services requests over a
// queue, whose reply the caller waits for: a producer span of the caller,
// the callee's consumer span under it, the reply 1 ms after it ends. Only
// calls that run alone, so that the caller is idle while it waits; drawn
// apart, so that the other draws of a seed stay what they were.
func (sc *randomScenario) queueRequests(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3))
	for _, n := range sc.nodes {
		for i, c := range n.calls {
			alone := !c.parallel && (i+1 == len(n.calls) || !n.calls[i+1].parallel)
			if c.n.kind == tracepb.Span_SPAN_KIND_SERVER && alone && rng.IntN(6) == 0 {
				c.n.kind = tracepb.Span_SPAN_KIND_CONSUMER
			}
		}
	}
}

func (sc *randomScenario) node(service, op string, kind tracepb.Span_SpanKind) *rNode {
	n := &rNode{service: service, op: op, kind: kind, self: 1 + 9*sc.rng.Float64()}
	sc.nodes = append(sc.nodes, n)
	return n
}

// grow gives a service's operation its calls: other services not on its
// path, databases, in-process steps.
func (sc *randomScenario) grow(n *rNode, path []string, depth int) {
	if depth >= 4 {
		return
	}
	calls := sc.rng.IntN(4)
	if depth == 0 {
		calls = 2 + sc.rng.IntN(3)
	}
	for i := range calls {
		var c *rNode
		switch k := sc.rng.IntN(5); {
		case k < 3:
			var callees []string
			for _, s := range sc.services {
				if !slices.Contains(path, s) {
					callees = append(callees, s)
				}
			}
			if len(callees) == 0 {
				continue
			}
			s := callees[sc.rng.IntN(len(callees))]
			c = sc.node(s, fmt.Sprintf("%s.Op%d", s, len(sc.nodes)), tracepb.Span_SPAN_KIND_SERVER)
			sc.grow(c, append(slices.Clone(path), s), depth+1)
		case k == 3:
			c = sc.node(n.service, fmt.Sprintf("SELECT t%d", len(sc.nodes)), tracepb.Span_SPAN_KIND_CLIENT)
		default:
			c = sc.node(n.service, fmt.Sprintf("step%d", len(sc.nodes)), tracepb.Span_SPAN_KIND_INTERNAL)
		}
		repeat := 1
		if c.kind != tracepb.Span_SPAN_KIND_SERVER && sc.rng.IntN(4) == 0 {
			repeat = 2 + sc.rng.IntN(4)
		}
		n.calls = append(n.calls, rCall{n: c, parallel: i > 0 && sc.rng.IntN(3) == 0, repeat: repeat})
	}
}

func (sc *randomScenario) String() string {
	kind := "latency +" + fmt.Sprint(math.Round(sc.delta), " ms")
	if sc.wide {
		kind = fmt.Sprintf("every operation of the service ×%.1f, as", sc.factor)
	}
	if sc.network {
		kind = fmt.Sprintf("the network +%.0f ms to", sc.delta)
		if sc.culprit.kind == tracepb.Span_SPAN_KIND_CONSUMER {
			kind = fmt.Sprintf("the queue +%.0f ms to", sc.delta)
		}
	}
	if sc.errors {
		kind = fmt.Sprintf("errors %.0f%%", 100*sc.failShare)
	}
	return fmt.Sprintf("%d services, %d operations; %s in %s %q when %s %s%d%s; want %s=%s on %s; %s skewed %.0f ms",
		len(sc.services), len(sc.nodes), kind, sc.culprit.service, sc.culprit.op, sc.condKind, sc.condService, sc.condPod, sc.condValue,
		sc.attrKey, sc.attrValue, sc.attrService, sc.skewService, sc.skew)
}

// request is one request's draws.
type request struct {
	pod  map[string]int
	tier string
	// miss: the faulty operation's spans say cache.hit=false, as three
	// requests in ten do, in both windows.
	miss  bool
	fault bool
}

// traffic returns n requests drawn from seed: the window's, slowed by its
// drift and its slow consumer, with the fault or without it, or the
// baseline's.
func (sc *randomScenario) traffic(n int, window, fault bool, seed uint64) []*Trace {
	rng := rand.New(rand.NewPCG(seed, 7))
	frng := rand.New(rand.NewPCG(seed, 11)) // the fault's own draws, so that the rest are the same without it
	traces := make([]*Trace, n)
	for i := range traces {
		r := request{pod: map[string]int{}, tier: []string{"free", "pro", "enterprise"}[rng.IntN(3)]}
		for _, s := range sc.services {
			r.pod[s] = rng.IntN(sc.pods[s])
		}
		r.miss = rng.IntN(10) < 3
		if fault {
			switch sc.condKind {
			case "pod", "version":
				r.fault = r.pod[sc.condService] == sc.condPod
			case "request":
				r.fault = r.tier == sc.condValue
			case "span":
				r.fault = r.miss
			default:
				r.fault = true
			}
		}
		m := &traceMaker{sc: sc, rng: rng, frng: frng, r: r, window: window, t: &Trace{}, resources: map[resKey]int{}}
		traces[i] = m.trace(i)
	}
	return traces
}

type traceMaker struct {
	sc        *randomScenario
	rng, frng *rand.Rand
	r         request
	window    bool
	t         *Trace
	resources map[resKey]int
}

type resKey struct {
	service, version string
	pod              int
}

func (m *traceMaker) trace(i int) *Trace {
	sc, r := m.sc, m.r
	m.t.ID[0] = byte(sc.seed)
	m.t.ID[14], m.t.ID[15] = byte(i>>8), byte(i)
	if m.window {
		m.t.ID[13] = 1
	}
	root, _ := m.span(sc.root, SpanID{}, 0)
	m.t.Spans[root].Attrs = append(m.t.Spans[root].Attrs,
		kv("user.tier", r.tier), kv("request.id", fmt.Sprintf("%x", m.rng.Uint64())))
	if sc.cancels {
		m.cancelInFlight()
	}
	for j := range m.t.Spans {
		if s := &m.t.Spans[j]; s.Service == sc.skewService {
			s.Start, s.End = uint64(float64(s.Start)+sc.skew*1e6), uint64(float64(s.End)+sc.skew*1e6)
		}
	}
	// A few requests fail anywhere, in both windows.
	if m.rng.IntN(100) == 0 {
		s := &m.t.Spans[m.rng.IntN(len(m.t.Spans))]
		s.Failed = true
	}
	return m.t
}

// cancelInFlight ends, failed, every span still running when the fault's
// failure came back, but those it failed into: the request's context is
// canceled once the error comes back, and calls made beside the failed one
// stop with an error of their own, some deeper in the tree than it. A
// faulty call made in a loop, which goes on past a failed call, comes back
// with the failure of its last failed call.
func (m *traceMaker) cancelInFlight() {
	spans := m.t.Spans
	first := -1 // the failed call whose failure came back
	for i := range spans {
		s := &spans[i]
		if s.Failed && s.Service == m.sc.culprit.service && s.Name == m.sc.culprit.op && (first < 0 || s.End > spans[first].End) {
			first = i
		}
	}
	if first < 0 {
		return
	}
	byID := map[SpanID]int{}
	for i := range spans {
		byID[spans[i].ID] = i
	}
	failedInto := map[int]bool{}
	for i, ok := first, true; ok && !failedInto[i]; i, ok = byID[spans[i].Parent] {
		failedInto[i] = true
	}
	at := spans[first].End
	for i := range spans {
		s := &spans[i]
		if failedInto[i] || s.Kind == tracepb.Span_SPAN_KIND_CONSUMER || s.Kind == tracepb.Span_SPAN_KIND_PRODUCER || s.Start >= at || at >= s.End {
			continue
		}
		// The failure goes back up to where the two calls meet, and the
		// cancellation down: 0.05 ms, and 0.3 ms more for each call
		// between processes on the way.
		lca := i
		for !failedInto[lca] {
			lca = byID[spans[lca].Parent]
		}
		after := uint64(50_000 + 300_000*(remoteHops(spans, byID, i, lca)+remoteHops(spans, byID, first, lca)))
		if s.End > at+after {
			s.End, s.Failed = at+after, true
		}
	}
}

// remoteHops counts the calls between processes from span i up to its
// ancestor a.
func remoteHops(spans []Span, byID map[SpanID]int, i, a int) int {
	n := 0
	for i != a {
		p := byID[spans[i].Parent]
		if spans[p].Resource != spans[i].Resource {
			n++
		}
		i = p
	}
	return n
}

func (m *traceMaker) resource(service string) int {
	pod := m.r.pod[service]
	version := "1.0.0"
	if m.r.fault && m.sc.condKind == "version" && service == m.sc.condService {
		version = "9.9.9"
	}
	key := resKey{service, version, pod}
	res, ok := m.resources[key]
	if !ok {
		res = len(m.t.Resources)
		m.resources[key] = res
		m.t.Resources = append(m.t.Resources, podResource(service, version, pod))
	}
	return res
}

// podResource is the resource of a service's pod as the OpenTelemetry SDKs
// and the Kubernetes attributes processor describe it: besides its host
// and version, the pod's name, which changes with its version, and the
// identifiers of its pod, instance, container and process, all new for a
// new version.
func podResource(service, version string, pod int) []*commonpb.KeyValue {
	h := fnv.New64a()
	fmt.Fprint(h, service, version, pod)
	id := h.Sum64()
	uuid := func(salt uint64) string {
		x, y := id*0x9e3779b97f4a7c15^salt, id^salt*0xc2b2ae3d27d4eb4f
		return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", uint32(x), uint16(x>>32), uint16(x>>48), uint16(y), y>>16)
	}
	return []*commonpb.KeyValue{kv("service.name", service), kv("host.name", fmt.Sprintf("%s-%d", service, pod)),
		kv("service.version", version), kv("k8s.namespace.name", "shop"), kv("telemetry.sdk.language", "go"),
		kv("k8s.pod.name", fmt.Sprintf("%s-%04x-%d", service, uint16(id), pod)), kv("k8s.pod.uid", uuid(1)),
		kv("service.instance.id", uuid(2)), kv("container.id", fmt.Sprintf("%016x%016x%016x%016x", id, id^3, id^5, id^7)),
		kv("process.pid", int(1+id%32768))}
}

// span adds the spans of n started at start ms, and returns its index and
// its end. A call to another service is a client span around the callee's
// server span.
func (m *traceMaker) span(n *rNode, parent SpanID, start float64) (int, float64) {
	sc := m.sc
	self := n.self * math.Exp(0.25*m.rng.NormFloat64())
	fails := false
	switch {
	case !m.r.fault:
	case sc.wide && n.service == sc.culprit.service:
		self *= sc.factor
	case sc.wide:
	case n == sc.culprit && sc.errors:
		fails = m.frng.Float64() < sc.failShare
	case n == sc.culprit && !sc.network:
		self += sc.delta
	}
	if m.window && n == sc.slowConsumer {
		self *= 6
	}
	if m.window {
		self *= sc.drift
	}
	idx := len(m.t.Spans)
	id := spanIDOf(idx)
	m.t.Spans = append(m.t.Spans, Span{ID: id, Parent: parent, Service: n.service, Name: n.op, Kind: n.kind,
		Resource: m.resource(n.service)})
	if n == sc.culprit {
		m.t.Spans[idx].Attrs = []*commonpb.KeyValue{kv("cache.hit", fmt.Sprint(!m.r.miss))}
	}
	at := start + self/2
	prevStart, end := at, at
	failed := fails
	for _, c := range n.calls {
		for k := range max(c.repeat, 1) {
			if c.n.async {
				continue
			}
			callStart := end
			if c.parallel && k == 0 {
				callStart = prevStart
			}
			prevStart = callStart
			var cEnd float64
			var cFailed bool
			if c.n.kind == tracepb.Span_SPAN_KIND_SERVER {
				// The caller's client span, 0.3 ms each way around the
				// callee, more when the network to it is at fault.
				wire := 0.3
				if m.r.fault && sc.network && c.n == sc.culprit {
					wire += sc.delta / 2
				}
				ci := len(m.t.Spans)
				cid := spanIDOf(ci)
				m.t.Spans = append(m.t.Spans, Span{ID: cid, Parent: id, Service: n.service, Name: "call " + c.n.op,
					Kind: tracepb.Span_SPAN_KIND_CLIENT, Resource: m.resource(n.service)})
				si, sEnd := m.span(c.n, cid, callStart+wire)
				cEnd = sEnd + wire
				cFailed = m.t.Spans[si].Failed
				m.t.Spans[ci].Start, m.t.Spans[ci].End = ms(callStart), ms(cEnd)
				m.t.Spans[ci].Failed = cFailed
			} else if c.n.kind == tracepb.Span_SPAN_KIND_CONSUMER {
				// A request over a queue: published, consumed 1 ms
				// later, more when the queue is at fault, replied to
				// 1 ms after that.
				queued := 1.0
				if m.r.fault && sc.network && c.n == sc.culprit {
					queued += sc.delta
				}
				pi := len(m.t.Spans)
				m.t.Spans = append(m.t.Spans, Span{ID: spanIDOf(pi), Parent: id, Service: n.service, Name: "publish " + c.n.op,
					Kind: tracepb.Span_SPAN_KIND_PRODUCER, Start: ms(callStart), End: ms(callStart + 0.3), Resource: m.resource(n.service)})
				ci, e := m.span(c.n, spanIDOf(pi), callStart+0.3+queued)
				cEnd, cFailed = e+1, m.t.Spans[ci].Failed
			} else {
				ci, e := m.span(c.n, id, callStart)
				cEnd, cFailed = e, m.t.Spans[ci].Failed
			}
			end = max(end, cEnd)
			failed = failed || cFailed
		}
	}
	end += self / 2
	m.t.Spans[idx].Start, m.t.Spans[idx].End, m.t.Spans[idx].Failed = ms(start), ms(end), failed
	for _, c := range n.calls {
		if c.n.async {
			// Published at the end, consumed 5 ms later.
			pi := len(m.t.Spans)
			pid := spanIDOf(pi)
			m.t.Spans = append(m.t.Spans, Span{ID: pid, Parent: id, Service: n.service, Name: "publish", Kind: tracepb.Span_SPAN_KIND_PRODUCER,
				Start: ms(end - 0.5), End: ms(end - 0.2), Resource: m.resource(n.service)})
			m.span(c.n, pid, end+5)
		}
	}
	return idx, end
}

func ms(v float64) uint64 { return 1e18 + uint64(v*1e6) }

// spanIDOf is the ID of the i-th span of a trace, never the zero ID, which
// means none.
func spanIDOf(i int) SpanID {
	var id SpanID
	binary.BigEndian.PutUint64(id[:], uint64(i)+1)
	return id
}

func (sc *randomScenario) ranks(d Diagnosis) (op, attr int) {
	for i, c := range d.Operations {
		if c.Service == sc.culprit.service && (c.Operation == sc.culprit.op || sc.wide) && c.Call == sc.network {
			op = i + 1
			break
		}
	}
	for i, a := range d.Attributes {
		if a.Service == sc.attrService && names(a, sc.attrKey, "s"+sc.attrValue) {
			attr = i + 1
			break
		}
	}
	return op, attr
}

func describe(d Diagnosis) string {
	s := fmt.Sprintf("  window %+v baseline %+v\n", d.Window, d.Baseline)
	for _, c := range d.Operations[:min(4, len(d.Operations))] {
		s += fmt.Sprintf("  op %s %q call %v score %.3f base %.2f win %.2f origin %.3f→%.3f\n", c.Service, c.Operation, c.Call, c.Score, c.Baseline/1e6, c.Window/1e6, c.BaselineOrigin, c.WindowOrigin)
	}
	for _, a := range d.Attributes[:min(5, len(d.Attributes))] {
		s += fmt.Sprintf("  attr %s %s=%s score %.3f (%d/%d) aliases %v\n", a.Service, a.Key, valueString(a.Value), a.Score, a.Selected, a.Baseline, a.Aliases)
	}
	return s
}
