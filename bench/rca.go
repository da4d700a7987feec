package bench

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// RCAScenario is a fault injected into a checkout's call graph, and what a
// diagnosis of it should name: the operation first, the attribute among
// the first three where one sets the faulty traces apart.
type RCAScenario struct {
	Name        string
	Description string
	// Errors diagnoses a rise of the error rate rather than of latency.
	Errors bool
	// CulpritService and CulpritOperation name the operation at fault.
	CulpritService, CulpritOperation string
	// CulpritCall says the time is not the culprit's own but its callers'
	// wait on it outside its spans.
	CulpritCall bool
	// AttrService, AttrKey and AttrValue name the attribute the faulty
	// traces carry; AttrKey is empty if none sets them apart.
	AttrService, AttrKey, AttrValue string
	fault                           func(*checkout, *rand.Rand)
	// literalSQL names inventory's stock query, in both windows, by its
	// SQL with the SKU written in it, as some instrumentations name
	// database spans: a name a trace.
	literalSQL bool
}

// RCARoot is the service and operation of every trace's root span.
const (
	RCARootService   = "web"
	RCARootOperation = "POST /checkout"
)

// RCAScenarios returns the scenarios of `cairn bench --rca`.
func RCAScenarios() []RCAScenario {
	return []RCAScenario{
		{Name: "slow-db-version", Description: "inventory's stock query takes 80 ms more on the pod upgraded to 2.9.0",
			CulpritService: "inventory", CulpritOperation: "SELECT inventory.stock", AttrService: "inventory", AttrKey: "service.version", AttrValue: "2.9.0",
			fault: func(c *checkout, _ *rand.Rand) {
				if c.pod["inventory"] == 2 {
					c.version["inventory"] = "2.9.0"
					c.self["SELECT inventory.stock"] += 80
				}
			}},
		{Name: "slow-cache-pod", Description: "cart's cache reads take 60 ms more on one pod",
			CulpritService: "cart", CulpritOperation: "GET", AttrService: "cart", AttrKey: "host.name", AttrValue: "cart-1",
			fault: func(c *checkout, _ *rand.Rand) {
				if c.pod["cart"] == 1 {
					c.self["GET"] += 60
				}
			}},
		{Name: "errors-card-type", Description: "the bank fails every authorization of American Express cards, deep under payment", Errors: true,
			CulpritService: "bank", CulpritOperation: "Authorize", AttrService: "payment", AttrKey: "card.type", AttrValue: "amex",
			fault: func(c *checkout, _ *rand.Rand) {
				if c.card == "amex" {
					c.fail["Authorize"] = true
				}
			}},
		{Name: "feature-flag", Description: "a new scoring model behind a feature flag adds 50 ms to pricing",
			CulpritService: "pricing", CulpritOperation: "ScoreModel", AttrService: "web", AttrKey: "feature.new_pricing", AttrValue: "true",
			fault: func(c *checkout, _ *rand.Rand) {
				if c.newPricing {
					c.self["ScoreModel"] = 50
				}
			}},
		{Name: "mid-tier-host", Description: "payment's own work takes 40 ms more on one host",
			CulpritService: "payment", CulpritOperation: "Charge", AttrService: "payment", AttrKey: "host.name", AttrValue: "payment-0",
			fault: func(c *checkout, _ *rand.Rand) {
				if c.pod["payment"] == 0 {
					c.self["Charge"] += 40
				}
			}},
		{Name: "off-path-slowdown", Description: "recommendations, called beside the checkout's chain, takes 4 times as long; pricing 3.2.0 takes 15 ms more on it",
			CulpritService: "pricing", CulpritOperation: "Quote", AttrService: "pricing", AttrKey: "service.version", AttrValue: "3.2.0",
			fault: func(c *checkout, _ *rand.Rand) {
				c.self["Recommend"] *= 4
				if c.pod["pricing"] == 0 {
					c.version["pricing"] = "3.2.0"
					c.self["Quote"] += 15
				}
			}},
		{Name: "slow-async-consumer", Description: "the mailer, consuming the order event after the response, takes 800 ms more; auth takes 25 ms more on one host",
			CulpritService: "auth", CulpritOperation: "Check", AttrService: "auth", AttrKey: "host.name", AttrValue: "auth-2",
			fault: func(c *checkout, _ *rand.Rand) {
				c.self["SendConfirmation"] += 800
				if c.pod["auth"] == 2 {
					c.self["Check"] += 25
				}
			}},
		{Name: "no-attribute", Description: "every cache read takes 15 ms more, on every pod and version: no attribute sets slow traces apart",
			CulpritService: "cart", CulpritOperation: "GET",
			fault: func(c *checkout, _ *rand.Rand) { c.self["GET"] += 15 }},
		{Name: "retries", Description: "one bank host times out after 30 ms, and payment retries on another",
			CulpritService: "bank", CulpritOperation: "Authorize", AttrService: "bank", AttrKey: "host.name", AttrValue: "bank-1",
			fault: func(c *checkout, _ *rand.Rand) {
				if c.pod["bank"] == 1 {
					c.retried = true
				}
			}},
		{Name: "clock-skew", Description: "inventory's clocks fall 40 ms behind while pricing takes 30 ms more on one host",
			CulpritService: "pricing", CulpritOperation: "Quote", AttrService: "pricing", AttrKey: "host.name", AttrValue: "pricing-1",
			fault: func(c *checkout, _ *rand.Rand) {
				c.skew["inventory"] = -40
				if c.pod["pricing"] == 1 {
					c.self["Quote"] += 30
				}
			}},
		{Name: "network-delay", Description: "the network to one payment pod adds 30 ms to each call",
			CulpritService: "payment", CulpritOperation: "Charge", CulpritCall: true, AttrService: "payment", AttrKey: "host.name", AttrValue: "payment-1",
			fault: func(c *checkout, _ *rand.Rand) {
				if c.pod["payment"] == 1 {
					c.net["payment"] = 30
				}
			}},
		{Name: "literal-sql", Description: "inventory's stock query, each span named by its SQL with the SKU in it, takes 20 ms more on the pod upgraded to 2.9.0",
			CulpritService: "inventory", CulpritOperation: "SELECT stock FROM inventory WHERE sku = ?", AttrService: "inventory", AttrKey: "service.version", AttrValue: "2.9.0",
			literalSQL: true,
			fault: func(c *checkout, _ *rand.Rand) {
				if c.pod["inventory"] == 2 {
					c.version["inventory"] = "2.9.0"
					c.self["SELECT inventory.stock"] += 20
				}
			}},
		{Name: "errors-version", Description: "auth 5.0.0 on one pod rejects a third of its requests, which web reports as 500s", Errors: true,
			CulpritService: "auth", CulpritOperation: "Check", AttrService: "auth", AttrKey: "service.version", AttrValue: "5.0.0",
			fault: func(c *checkout, rng *rand.Rand) {
				if c.pod["auth"] == 0 {
					c.version["auth"] = "5.0.0"
					if rng.IntN(3) == 0 {
						c.fail["Check"] = true
					}
				}
			}},
	}
}

// checkout is the plan of one checkout trace, which a fault changes before
// its spans are made.
type checkout struct {
	pod        map[string]int     // service: the pod serving this request
	version    map[string]string  // service: its version
	self       map[string]float64 // operation: its own time, ms
	fail       map[string]bool    // operation: it failed
	skew       map[string]float64 // service: how far its clock is off, ms
	net        map[string]float64 // service: what the network adds to each call to it, ms
	card       string
	region     string
	newPricing bool
	retried    bool // the first authorization times out, the second succeeds
	literalSQL bool // see RCAScenario
}

var rcaVersions = map[string]string{"web": "1.8.0", "auth": "4.2.1", "cart": "3.0.4", "inventory": "2.8.0",
	"recommendations": "0.9.7", "pricing": "3.1.0", "payment": "1.4.2", "fraud": "2.0.0", "bank": "7.1.0", "mailer": "1.1.0"}

// rcaSelf is the mean own time of each operation, ms.
var rcaSelf = map[string]float64{"POST /checkout": 2, "Check": 3, "Get": 2, "GET": 2, "Reserve": 2,
	"SELECT inventory.stock": 6, "Recommend": 5, "Quote": 5, "Charge": 4, "Authorize": 12, "Score": 6,
	"SendConfirmation": 40}

func newCheckout(rng *rand.Rand) *checkout {
	c := &checkout{pod: map[string]int{}, version: map[string]string{}, self: map[string]float64{},
		fail: map[string]bool{}, skew: map[string]float64{}, net: map[string]float64{}}
	// In a fixed order, so that a seed gives the same traces.
	for _, svc := range slices.Sorted(maps.Keys(rcaVersions)) {
		c.pod[svc] = rng.IntN(3)
		c.version[svc] = rcaVersions[svc]
	}
	c.card = []string{"visa", "mastercard", "amex", "visa"}[rng.IntN(4)]
	c.region = []string{"eu-west", "us-east", "ap-south"}[rng.IntN(3)]
	c.newPricing = rng.IntN(5) == 0
	jitter := func(ms float64) float64 { return ms * math.Exp(0.25*rng.NormFloat64()) }
	for _, op := range slices.Sorted(maps.Keys(rcaSelf)) {
		c.self[op] = jitter(rcaSelf[op])
	}
	// Rare failures, anywhere, in both windows.
	if rng.IntN(200) == 0 {
		c.fail[[]string{"GET", "SELECT inventory.stock", "Quote"}[rng.IntN(3)]] = true
	}
	return c
}

// RCATraffic returns n checkout traces starting evenly over [from, to),
// with the scenario's fault if faulty, as OTLP resource spans, a resource
// per service and pod.
func (s RCAScenario) RCATraffic(seed uint64, n int, from, to time.Time, faulty bool) []*tracepb.ResourceSpans {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	e := &emitter{rng: rng, resources: map[string]*tracepb.ResourceSpans{}}
	step := to.Sub(from) / time.Duration(max(n, 1))
	for i := range n {
		c := newCheckout(rng)
		c.literalSQL = s.literalSQL
		if faulty && s.fault != nil {
			s.fault(c, rng)
		}
		e.trace(c, from.Add(time.Duration(i)*step))
	}
	return e.out
}

type emitter struct {
	rng       *rand.Rand
	resources map[string]*tracepb.ResourceSpans
	out       []*tracepb.ResourceSpans
	traceID   []byte
	c         *checkout
}

// spanOf is a span being made: its service, its start, and the time its
// work has reached, in ms from the trace's start.
type spanOf struct {
	s       *tracepb.Span
	service string
	at      float64
	origin  time.Time
}

func (e *emitter) trace(c *checkout, start time.Time) {
	e.c = c
	e.traceID = e.id(16)
	root := e.open(nil, "web", RCARootOperation, tracepb.Span_SPAN_KIND_SERVER, start, 0,
		kv("http.request.method", "POST"), kv("http.route", "/checkout"), kv("user.id", fmt.Sprint("u", e.rng.IntN(100_000))),
		kv("session.id", fmt.Sprintf("%016x", e.rng.Uint64())), kv("region", c.region), boolKV("feature.new_pricing", c.newPricing))
	root.work(c.self["POST /checkout"] / 2)
	root.call(e, "auth", "Check", nil)
	root.call(e, "cart", "Get", func(cart *spanOf) {
		cart.db(e, "GET", "", "redis", kv("db.operation.name", "GET"))
	})
	// Recommendations run beside the rest of the checkout.
	reco := root.at
	root.call(e, "inventory", "Reserve", func(inv *spanOf) {
		name, query := "", "SELECT stock FROM inventory WHERE sku = $1"
		if c.literalSQL {
			query = fmt.Sprintf("SELECT stock FROM inventory WHERE sku = 'SKU-%06d'", e.rng.IntN(1_000_000))
			name = query
		}
		inv.db(e, "SELECT inventory.stock", name, "postgresql", kv("db.query.text", query))
	})
	root.call(e, "pricing", "Quote", func(p *spanOf) {
		if ms, ok := c.self["ScoreModel"]; ok {
			m := e.open(p, "pricing", "ScoreModel", tracepb.Span_SPAN_KIND_INTERNAL, p.origin, p.at)
			m.work(ms)
			p.at = m.close(e)
		}
	})
	root.call(e, "payment", "Charge", func(p *spanOf) {
		p.s.Attributes = append(p.s.Attributes, kv("card.type", c.card), kv("order.id", fmt.Sprintf("o-%x", e.rng.Uint64())))
		// Fraud scoring runs beside the authorization.
		fraudAt := p.at
		attempts := 1
		if c.retried {
			attempts = 2
		}
		for a := range attempts {
			timeout := c.retried && a == 0
			p.call(e, "bank", "Authorize", func(b *spanOf) {
				if timeout {
					b.work(30 - c.self["Authorize"])
					b.s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "deadline exceeded"}
				}
			})
			if timeout {
				e.c.pod["bank"] = (e.c.pod["bank"] + 1) % 3
			}
		}
		end := p.at
		p.at = fraudAt
		p.call(e, "fraud", "Score", nil)
		p.at = max(end, p.at)
	})
	chainEnd := root.at
	root.at = reco
	root.call(e, "recommendations", "Recommend", nil)
	root.at = max(chainEnd, root.at)
	pub := e.open(root, "web", "publish order.placed", tracepb.Span_SPAN_KIND_PRODUCER, start, root.at)
	pub.work(0.3)
	mail := e.open(pub, "mailer", "SendConfirmation", tracepb.Span_SPAN_KIND_CONSUMER, start, pub.at+20)
	mail.work(c.self["SendConfirmation"])
	mail.close(e)
	root.at = pub.close(e)
	root.work(c.self["POST /checkout"] / 2)
	if root.failedBelow(e) {
		root.s.Attributes = append(root.s.Attributes, &commonpb.KeyValue{Key: "http.response.status_code", Value: intValue(500)})
	}
	root.close(e)
}

// open starts a span of service under parent at ms from origin.
func (e *emitter) open(parent *spanOf, service, name string, kind tracepb.Span_SpanKind, origin time.Time, ms float64, attrs ...*commonpb.KeyValue) *spanOf {
	s := &tracepb.Span{TraceId: e.traceID, SpanId: e.id(8), Name: name, Kind: kind, Attributes: attrs}
	if parent != nil {
		s.ParentSpanId = parent.s.SpanId
	}
	sp := &spanOf{s: s, service: service, at: ms, origin: origin}
	s.StartTimeUnixNano = e.nanos(service, origin, ms)
	return sp
}

func (sp *spanOf) work(ms float64) { sp.at += max(ms, 0) }

// close ends the span where its work reached, adds it to its resource, and
// returns its end.
func (sp *spanOf) close(e *emitter) float64 {
	sp.s.EndTimeUnixNano = e.nanos(sp.service, sp.origin, sp.at)
	if e.c.fail[sp.s.Name] {
		sp.s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: sp.s.Name + " failed"}
		sp.s.Attributes = append(sp.s.Attributes, kv("exception.type", "Error"), kv("exception.message", sp.s.Name+" failed"))
	}
	rs := e.resource(sp.service)
	rs.ScopeSpans[0].Spans = append(rs.ScopeSpans[0].Spans, sp.s)
	return sp.at
}

// call makes a client span of sp's service and the server span of name in
// service under it, with body for the server's calls, and moves sp past it.
// A failure of the server fails the client and sp too.
func (sp *spanOf) call(e *emitter, service, name string, body func(*spanOf)) {
	cl := e.open(sp, sp.service, service+"."+name, tracepb.Span_SPAN_KIND_CLIENT, sp.origin, sp.at,
		kv("rpc.service", service), kv("server.address", service))
	cl.work(0.4 + e.c.net[service]/2)
	srv := e.open(cl, service, name, tracepb.Span_SPAN_KIND_SERVER, sp.origin, cl.at)
	srv.work(e.c.self[name] / 2)
	if body != nil {
		body(srv)
	}
	srv.work(e.c.self[name] / 2)
	cl.at = srv.close(e)
	cl.work(0.4 + e.c.net[service]/2)
	if srv.s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		cl.s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: srv.s.Status.Message}
		if srv.s.Status.Message != "deadline exceeded" {
			sp.s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: srv.s.Status.Message}
		}
	}
	sp.at = cl.close(e)
}

// db makes a database client span of sp's service, of operation op,
// named name if not empty.
func (sp *spanOf) db(e *emitter, op, name, system string, attrs ...*commonpb.KeyValue) {
	d := e.open(sp, sp.service, cmp.Or(name, op), tracepb.Span_SPAN_KIND_CLIENT, sp.origin, sp.at, append(attrs, kv("db.system.name", system))...)
	d.work(e.c.self[op])
	sp.at = d.close(e)
	if d.s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		sp.s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: d.s.Status.Message}
	}
}

func (sp *spanOf) failedBelow(e *emitter) bool {
	for _, f := range e.c.fail {
		if f {
			sp.s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "checkout failed"}
			return true
		}
	}
	return false
}

// nanos is the time ms after origin as service's clock reads it.
func (e *emitter) nanos(service string, origin time.Time, ms float64) uint64 {
	return uint64(origin.UnixNano() + int64((ms+e.c.skew[service])*1e6))
}

// resource returns the resource spans of service's pod serving this trace.
func (e *emitter) resource(service string) *tracepb.ResourceSpans {
	pod := e.c.pod[service]
	key := fmt.Sprint(service, pod, e.c.version[service])
	rs, ok := e.resources[key]
	if !ok {
		rs = &tracepb.ResourceSpans{
			Resource:   &resourcepb.Resource{Attributes: podAttributes(service, e.c.version[service], pod)},
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "cairn/bench/rca"}}},
		}
		e.resources[key] = rs
		e.out = append(e.out, rs)
	}
	return rs
}

// podAttributes describes a service's pod as OpenTelemetry's SDKs and the
// Kubernetes attributes processor do. Its name changes with its version, as
// a Deployment's pods' names change with their ReplicaSet; its pod UID,
// instance, container and process IDs are new for every version too. All of
// them are on exactly the same traces, and a diagnosis should name them as
// one finding.
func podAttributes(service, version string, pod int) []*commonpb.KeyValue {
	h := fnv.New64a()
	fmt.Fprint(h, service, "/", version, "/", pod)
	seed := rand.New(rand.NewPCG(h.Sum64(), 0))
	hex := func(n int) string {
		var out []byte
		for len(out) < n {
			out = fmt.Appendf(out, "%016x", seed.Uint64())
		}
		return string(out[:n])
	}
	replicaSet := hex(10)
	uid := func() string { return hex(8) + "-" + hex(4) + "-" + hex(4) + "-" + hex(4) + "-" + hex(12) }
	return []*commonpb.KeyValue{
		kv("service.name", service), kv("service.version", version), kv("service.namespace", "shop"),
		kv("host.name", fmt.Sprintf("%s-%d", service, pod)), kv("deployment.environment.name", "production"),
		kv("k8s.namespace.name", "shop"), kv("k8s.deployment.name", service),
		kv("k8s.pod.name", fmt.Sprintf("%s-%s-%d", service, replicaSet, pod)), kv("k8s.pod.uid", uid()),
		kv("service.instance.id", uid()), kv("container.id", hex(64)),
		{Key: "process.pid", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 1 + int64(seed.IntN(32767))}}},
		kv("telemetry.sdk.language", "go"), kv("telemetry.sdk.name", "opentelemetry"),
	}
}

func (e *emitter) id(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(e.rng.Uint32())
	}
	b[0] |= 1 // never all zero
	return b
}

func kv(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func boolKV(k string, v bool) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v}}}
}

func intValue(i int64) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: i}}
}

// RCAResult is how well a diagnosis named a scenario's fault.
type RCAResult struct {
	Scenario string
	// OperationRank is where the culprit operation ranked, from 1; 0 if
	// it did not.
	OperationRank int
	// AttributeRank is where the faulty traces' attribute ranked, from 1;
	// 0 if it did not, -1 if the scenario has none.
	AttributeRank int
	// FalseAttribute is the first attribute that scored above
	// MinCauseScore where the scenario has none, empty if none did.
	FalseAttribute string
	Duration       time.Duration
}

// MinCauseScore is the score above which an attribute is taken as named a
// cause, where a scenario has none.
const MinCauseScore = 0.1

// RCAOperation and RCAAttribute are a diagnosis as Evaluate reads it.
type (
	RCAOperation struct {
		Service, Operation string
		// Call: the time is its callers' wait on it outside its spans.
		Call bool
	}
	RCAAttribute struct {
		Service, Key, Value string
		Score               float64
		// Aliases are the key=value pairs folded into this one.
		Aliases []string
	}
)

// Evaluate ranks a diagnosis of s: its operations and attributes, the
// most likely cause first.
func (s RCAScenario) Evaluate(ops []RCAOperation, attrs []RCAAttribute) RCAResult {
	r := RCAResult{Scenario: s.Name, AttributeRank: -1}
	for i, o := range ops {
		if o.Service == s.CulpritService && o.Operation == s.CulpritOperation && o.Call == s.CulpritCall {
			r.OperationRank = i + 1
			break
		}
	}
	if s.AttrKey != "" {
		r.AttributeRank = 0
		for i, a := range attrs {
			if a.Service == s.AttrService && (a.Key == s.AttrKey && a.Value == s.AttrValue || slices.Contains(a.Aliases, s.AttrKey+"="+s.AttrValue)) {
				r.AttributeRank = i + 1
				break
			}
		}
		return r
	}
	for _, a := range attrs {
		if a.Score > MinCauseScore {
			r.FalseAttribute = fmt.Sprintf("%s=%s on %s (%.2f)", a.Key, a.Value, a.Service, a.Score)
			break
		}
	}
	return r
}
