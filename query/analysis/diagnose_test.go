package analysis

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// traceBuilder builds traces for the tests, one span at a time.
type traceBuilder struct {
	t         *Trace
	resources map[string]int
}

func newTrace(id int) *traceBuilder {
	b := &traceBuilder{t: &Trace{}, resources: map[string]int{}}
	b.t.ID[15] = byte(id)
	b.t.ID[14] = byte(id >> 8)
	return b
}

// span adds a span of service, on the resource its service and resAttrs
// name, from start to end milliseconds, under parent (0 for none).
func (b *traceBuilder) span(id, parent byte, service, name string, kind tracepb.Span_SpanKind, start, end float64, resAttrs []*commonpb.KeyValue, attrs ...*commonpb.KeyValue) {
	key := service + fmt.Sprint(resAttrs)
	res, ok := b.resources[key]
	if !ok {
		res = len(b.t.Resources)
		b.resources[key] = res
		b.t.Resources = append(b.t.Resources, append([]*commonpb.KeyValue{kv("service.name", service)}, resAttrs...))
	}
	s := Span{Service: service, Name: name, Kind: kind, Resource: res, Attrs: attrs,
		Start: 1e18 + uint64(start*1e6), End: 1e18 + uint64(end*1e6)}
	s.ID[7] = id
	s.Parent[7] = parent
	b.t.Spans = append(b.t.Spans, s)
}

// names says whether a ranked value is key=value (value as valueString
// writes it) or has it as an alias.
func names(a Correlation, key, value string) bool {
	if a.Key == key && valueString(a.Value) == value {
		return true
	}
	for _, alias := range a.Aliases {
		if alias.Key == key && valueString(alias.Value) == value {
			return true
		}
	}
	return false
}

func kv(k string, v any) *commonpb.KeyValue {
	switch x := v.(type) {
	case string:
		return &commonpb.KeyValue{Key: k, Value: str(x)}
	case int:
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(x)}}}
	case bool:
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: x}}}
	}
	panic(v)
}

const (
	server   = tracepb.Span_SPAN_KIND_SERVER
	client   = tracepb.Span_SPAN_KIND_CLIENT
	consumer = tracepb.Span_SPAN_KIND_CONSUMER
	producer = tracepb.Span_SPAN_KIND_PRODUCER
)

// checkout builds a checkout trace: web calls inventory's SELECT, then pay
// and, beside pay, a shorter fraud check; it publishes an event a mailer
// consumes after the request ended. slow says how long SELECT takes, fraud
// and mail how long those take; version and host are inventory's.
func checkout(id int, selectMS, fraudMS, mailMS float64, version, host string, userID int) *Trace {
	b := newTrace(id)
	inv := []*commonpb.KeyValue{kv("service.version", version), kv("host.name", host)}
	end := 10 + selectMS + 30
	b.span(1, 0, "web", "POST /checkout", server, 0, end, nil, kv("user.id", userID))
	b.span(2, 1, "inventory", "SELECT stock", client, 5, 5+selectMS, inv)
	b.span(3, 1, "pay", "Charge", server, 5+selectMS+2, 5+selectMS+22, nil)
	b.span(4, 1, "fraud", "Score", server, 5+selectMS+2, 5+selectMS+2+fraudMS, nil)
	b.span(5, 1, "web", "publish", producer, end-3, end-2, nil)
	b.span(6, 5, "mailer", "send", consumer, end+5, end+5+mailMS, nil)
	return b.t
}

// TestDiagnoseLatency diagnoses a window in which half the checkouts ran
// on inventory 2.9.0 and spent 100 ms more in SELECT, while the fraud check
// beside pay and the mailer after the request slowed down more, off the
// critical path. Every figure is worked out by hand.
func TestDiagnoseLatency(t *testing.T) {
	var baseline, window []*Trace
	for i := range 10 {
		baseline = append(baseline, checkout(i, 10, 5, 50, "2.8.0", fmt.Sprint("pod-", i%2), 100+i))
	}
	for i := range 10 {
		if i%2 == 0 {
			window = append(window, checkout(100+i, 110, 15, 900, "2.9.0", "pod-2", 200+i))
		} else {
			window = append(window, checkout(100+i, 10, 15, 900, "2.8.0", fmt.Sprint("pod-", i%2), 200+i))
		}
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})

	// Baseline: every checkout 50 ms. Window: five of 50 ms, five of 150.
	wantStats(t, "baseline", d.Baseline, WindowStats{Traces: 10, P50: 50e6, P99: 50e6})
	wantStats(t, "window", d.Window, WindowStats{Traces: 10, P50: 50e6, P99: 150e6})

	// SELECT's mean self time grew from 10 to 60 ms, all of the mean
	// duration's growth from 50 to 100 ms: score 1. Nothing else grew on
	// the path.
	if len(d.Operations) != 1 {
		t.Fatalf("culprits %+v, want SELECT alone", d.Operations)
	}
	c := d.Operations[0]
	if c.Service != "inventory" || c.Operation != "SELECT stock" || !near(c.Score, 1) || !near(c.Baseline, 10e6) || !near(c.Window, 60e6) {
		t.Errorf("culprit %+v, want inventory SELECT stock, score 1, 10 ms to 60 ms", c)
	}
	if len(c.Exemplars) != 3 || c.Exemplars[0][15] < 100 || c.Exemplars[0][15]%2 != 0 {
		t.Errorf("exemplars %v, want three slow window traces", c.Exemplars)
	}

	// The five slow traces, against the ten of the baseline: 2.9.0 and
	// pod-2 are on all of them and none before, score 1, one entry named by
	// the version; user IDs are on one trace each and do not rank; nothing
	// else is on more of them.
	if len(d.Attributes) != 1 {
		t.Fatalf("attributes %+v, want service.version, aliased host.name", d.Attributes)
	}
	if a := d.Attributes[0]; a.Key != "service.version" || !names(a, "host.name", "spod-2") || len(a.Aliases) != 1 ||
		a.Service != "inventory" || a.Score != 1 || a.Selected != 5 || a.Baseline != 0 {
		t.Errorf("attribute %+v, want service.version on inventory, aliased host.name, 5 of 5 against 0 of 10", a)
	}
}

// withWeb gives web's resource in a checkout trace service.version
// version: its spans come first, so it is the trace's first resource.
func withWeb(t *Trace, version string) *Trace {
	t.Resources[0] = append(t.Resources[0], kv("service.version", version))
	return t
}

// TestDiagnoseCanaryBesideRollout diagnoses a window in which web rolled
// 7.0 out to every pod while inventory's canary, 2.9.0 on pod-2, slowed
// SELECT in a quarter of the checkouts (and one more was slow on an old
// pod). Against the baseline, web 7.0 is on every slow trace and no
// earlier one, and scores higher than the canary, on 10 of the 11; within
// the window it is on the fast traces too, and the canary leads.
func TestDiagnoseCanaryBesideRollout(t *testing.T) {
	var baseline, window []*Trace
	for i := range 40 {
		baseline = append(baseline, withWeb(checkout(i, 10, 5, 50, "2.8.0", fmt.Sprint("pod-", i%2), 100+i), "6.0"))
		switch {
		case i%4 == 0:
			window = append(window, withWeb(checkout(100+i, 110, 5, 50, "2.9.0", "pod-2", 200+i), "7.0"))
		case i == 1: // slow once on an old pod too
			window = append(window, withWeb(checkout(100+i, 110, 5, 50, "2.8.0", "pod-1", 200+i), "7.0"))
		default:
			window = append(window, withWeb(checkout(100+i, 10, 5, 50, "2.8.0", fmt.Sprint("pod-", i%2), 200+i), "7.0"))
		}
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
	if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT stock" {
		t.Fatalf("culprits %+v, want SELECT stock first", d.Operations)
	}
	if len(d.Attributes) < 2 {
		t.Fatalf("attributes %+v, want inventory's 2.9.0 and web's 7.0", d.Attributes)
	}
	if a := d.Attributes[0]; a.Service != "inventory" || a.Key != "service.version" || valueString(a.Value) != "s2.9.0" {
		t.Errorf("first attribute %s %s=%s, want inventory's service.version 2.9.0; all: %+v", a.Service, a.Key, valueString(a.Value), d.Attributes)
	}
}

// TestDiagnoseRetryBackoff diagnoses checkouts in which half the charges
// fail at once and web retries them after 50 ms: the wait is what pay's
// failures cost, not web's own time, and pay is named first.
func TestDiagnoseRetryBackoff(t *testing.T) {
	trace := func(id int, retried bool) *Trace {
		b := newTrace(id)
		if !retried {
			b.span(1, 0, "web", "POST /checkout", server, 0, 30, nil)
			b.span(2, 1, "web", "call pay", client, 5, 25, nil)
			b.span(3, 2, "pay", "Charge", server, 6, 24, nil)
			return b.t
		}
		b.span(1, 0, "web", "POST /checkout", server, 0, 83, nil)
		b.span(2, 1, "web", "call pay", client, 5, 8, nil)
		b.span(3, 2, "pay", "Charge", server, 6, 7, nil)
		b.span(4, 1, "web", "call pay", client, 58, 78, nil)
		b.span(5, 4, "pay", "Charge", server, 59, 77, nil)
		b.t.Spans[1].Failed, b.t.Spans[2].Failed = true, true
		return b.t
	}
	var baseline, window []*Trace
	for i := range 20 {
		baseline = append(baseline, trace(i, false))
		window = append(window, trace(100+i, i%2 == 0))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
	if len(d.Operations) == 0 || d.Operations[0].Service != "pay" || d.Operations[0].Operation != "Charge" || d.Operations[0].Call {
		t.Fatalf("culprits %+v, want pay's Charge first", d.Operations)
	}
	// On the path, the retried checkouts spend 1 + 50 + 18 ms in Charge,
	// the others 18: a mean of 43.5 ms against 18.
	if c := d.Operations[0]; !near(c.Baseline, 18e6) || !near(c.Window, 43.5e6) {
		t.Errorf("Charge %v ms to %v ms, want 18 to 43.5", c.Baseline/1e6, c.Window/1e6)
	}
	// The critical path itself still shows the wait as web's.
	p := CriticalPath(trace(1, true), nil)
	if ops := p.Operations; len(ops) == 0 || ops[0].Service != "web" || ops[0].Operation != "POST /checkout" {
		t.Errorf("critical path operations %+v, want web's own time first", ops)
	}
}

// TestDiagnoseStreamingBody diagnoses checkouts whose mail call returns
// its headers at once and streams the body, so its client span ends
// before the server span: in the window, mail takes 50 ms more, all of it
// after the headers, which web waits for. The time is mail's.
func TestDiagnoseStreamingBody(t *testing.T) {
	trace := func(id int, slow bool) *Trace {
		mail := 20.0
		if slow {
			mail += 50
		}
		b := newTrace(id)
		b.span(1, 0, "web", "POST /checkout", server, 0, 10+mail+5, nil)
		b.span(2, 1, "web", "call mail", client, 5, 7, nil)
		b.span(3, 2, "mail", "Send", server, 5.5, 5.5+mail, nil)
		return b.t
	}
	var baseline, window []*Trace
	for i := range 20 {
		baseline = append(baseline, trace(i, false))
		window = append(window, trace(100+i, i%2 == 0))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
	if len(d.Operations) == 0 || d.Operations[0].Service != "mail" || d.Operations[0].Operation != "Send" {
		t.Fatalf("culprits %+v, want mail's Send first", d.Operations)
	}
}

// TestDiagnoseStalledCaller diagnoses checkouts on three web pods calling
// pay, then stock, on three pods each, each web pod calling every pod
// alike; in the window, web-0 stalls after each reply before its client
// span ends, 30 ms after pay's and 20 after stock's. The waits are the
// calls', but they grew on one caller pod, whichever pod answered: web's
// client operations are named, not the calls to pay and stock.
// A third of the checkouts, of large carts, render for 60–200 ms in both
// windows: the slowest traces are theirs, and the stall, named by the
// client operation, still selects the traces it slowed and is beyond noise.
func TestDiagnoseStalledCaller(t *testing.T) {
	trace := func(id, webPod, payPod int, stall float64) *Trace {
		b := newTrace(id)
		web := []*commonpb.KeyValue{kv("host.name", fmt.Sprint("web-", webPod))}
		pay := []*commonpb.KeyValue{kv("host.name", fmt.Sprint("pay-", payPod))}
		stock := []*commonpb.KeyValue{kv("host.name", fmt.Sprint("stock-", (payPod+1)%3))}
		render := 0.0
		cart := kv("cart.size", "small")
		if id%3 == 1 {
			render, cart = float64(60+id*37%141), kv("cart.size", "large")
		}
		paid := 25 + stall
		checked := paid + 13 + stall*2/3
		b.span(1, 0, "web", "POST /checkout", server, 0, checked+2+render, web, cart)
		b.span(2, 1, "web", "call pay", client, 5, paid, web)
		b.span(3, 2, "pay", "Charge", server, 6, 24, pay)
		b.span(5, 1, "web", "call stock", client, paid+1, checked, web)
		b.span(6, 5, "stock", "Check", server, paid+2, paid+12, stock)
		if render > 0 {
			b.span(4, 1, "web", "render", tracepb.Span_SPAN_KIND_INTERNAL, checked+2, checked+2+render, web)
		}
		return b.t
	}
	var baseline, window []*Trace
	for i := range 90 {
		baseline = append(baseline, trace(i, i/3%3, i/9%3, 0))
		stall := 0.0
		if i/3%3 == 0 {
			stall = 30
		}
		window = append(window, trace(100+i, i/3%3, i/9%3, stall))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
	if len(d.Operations) < 2 || d.Operations[0].Service != "web" || d.Operations[0].Operation != "call pay" || d.Operations[0].Call ||
		d.Operations[1].Service != "web" || d.Operations[1].Operation != "call stock" || d.Operations[1].Call {
		t.Fatalf("culprits %+v, want web's call pay first, then its call stock", d.Operations)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "host.name", "sweb-0") {
		t.Errorf("attributes %+v, want host.name web-0 first", d.Attributes)
	}
	if d.WithinNoise {
		t.Error("within noise: want the calls' growth beyond it")
	}
}

// TestDiagnoseCanaryUnderSymptom is TestDiagnoseCanaryBesideRollout with
// a symptom on every slow SELECT (error.type=timeout), scoring above every
// cause, and web 7.0 on a sixth of the baseline already: the causes are
// ordered among themselves, below the symptom, and the canary leads.
func TestDiagnoseCanaryUnderSymptom(t *testing.T) {
	timedOut := func(t *Trace) *Trace {
		t.Spans[1].Attrs = append(t.Spans[1].Attrs, kv("error.type", "timeout"))
		return t
	}
	var baseline, window []*Trace
	for i := range 42 {
		web := "6.0"
		if i%6 == 0 {
			web = "7.0"
		}
		baseline = append(baseline, withWeb(checkout(i, 10, 5, 50, "2.8.0", fmt.Sprint("pod-", i%2), 100+i), web))
		switch {
		case i%5 == 0:
			window = append(window, timedOut(withWeb(checkout(100+i, 110, 5, 50, "2.9.0", "pod-2", 200+i), "7.0")))
		case i == 1 || i == 3: // slow twice on old pods too
			window = append(window, timedOut(withWeb(checkout(100+i, 110, 5, 50, "2.8.0", "pod-1", 200+i), "7.0")))
		default:
			window = append(window, withWeb(checkout(100+i, 10, 5, 50, "2.8.0", fmt.Sprint("pod-", i%2), 200+i), "7.0"))
		}
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
	if len(d.Symptoms) == 0 || d.Symptoms[0].Key != "error.type" {
		t.Errorf("symptoms %+v, want error.type first", d.Symptoms)
	}
	if len(d.Attributes) == 0 {
		t.Fatal("no attribute ranked")
	}
	if a := d.Attributes[0]; a.Service != "inventory" || a.Key != "service.version" || valueString(a.Value) != "s2.9.0" {
		t.Errorf("first attribute %s %s=%s, want inventory's service.version 2.9.0; all: %+v", a.Service, a.Key, valueString(a.Value), d.Attributes)
	}
}

// TestDiagnoseQueueWait diagnoses orders whose web service asks pay for
// a charge over a queue and waits, idle, for the reply: published at 2 ms,
// consumed for 3 ms, the reply 1 ms after. In the window, the requests on
// partition 4 wait 40 ms in the queue before pay takes them; pay itself
// is no slower. The wait is the queue's, not web's: the calls to pay's
// consumer are named, and the partition.
func TestDiagnoseQueueWait(t *testing.T) {
	trace := func(id int, lag float64) *Trace {
		b := newTrace(id)
		part := kv("messaging.destination.partition.id", fmt.Sprint(id%5))
		consumed := 3 + 1 + lag
		b.span(1, 0, "web", "POST /order", server, 0, consumed+3+1+5, nil)
		b.span(2, 1, "web", "charges publish", producer, 2, 3, nil, part)
		b.span(3, 2, "pay", "charges process", consumer, consumed, consumed+3, nil, part)
		b.span(4, 1, "web", "render", tracepb.Span_SPAN_KIND_INTERNAL, consumed+3+1, consumed+3+1+4, nil)
		return b.t
	}
	var baseline, window []*Trace
	for i := range 50 {
		baseline = append(baseline, trace(i, 0))
		lag := 0.0
		if i%5 == 4 {
			lag = 40
		}
		window = append(window, trace(100+i, lag))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /order"})
	if len(d.Operations) == 0 || d.Operations[0].Service != "pay" || d.Operations[0].Operation != "charges process" || !d.Operations[0].Call {
		t.Fatalf("culprits %+v, want the calls to pay's charges process first", d.Operations)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "messaging.destination.partition.id", "s4") {
		t.Errorf("attributes %+v, want partition 4 first", d.Attributes)
	}
	if d.WithinNoise {
		t.Error("within noise: want the queue's growth beyond it")
	}
}

// TestDiagnoseErrors diagnoses failures that originate in a card check
// deep under pay, for one card type, and are reported by every span above
// it with a status code.
func TestDiagnoseErrors(t *testing.T) {
	trace := func(id int, card string, fail bool) *Trace {
		b := newTrace(id)
		b.span(1, 0, "web", "POST /checkout", server, 0, 100, nil)
		b.span(2, 1, "pay", "Charge", server, 10, 90, nil, kv("card.type", card))
		b.span(3, 2, "bank", "CheckCard", client, 20, 80, nil)
		b.span(4, 3, "bank", "lookup", client, 30, 40, nil)
		if fail {
			for i := range 3 {
				b.t.Spans[i].Failed = true
			}
			b.t.Spans[0].Attrs = append(b.t.Spans[0].Attrs, kv("http.status_code", 500))
		}
		return b.t
	}
	var baseline, window []*Trace
	cards := []string{"visa", "amex", "mc", "visa"}
	for i := range 20 {
		baseline = append(baseline, trace(i, cards[i%4], false))
		// Amex fails in the window, on every fourth trace.
		window = append(window, trace(100+i, cards[i%4], cards[i%4] == "amex"))
	}
	// One failure in the baseline originated in web itself.
	baseline[0].Spans[0].Failed = true
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout", Errors: true})
	if !near(d.Window.ErrorRate, 0.25) || !near(d.Baseline.ErrorRate, 0.05) {
		t.Errorf("error rates %v, %v, want 0.25, 0.05", d.Window.ErrorRate, d.Baseline.ErrorRate)
	}
	// CheckCard is the deepest failed span of five of 20 window traces.
	if len(d.Operations) != 1 {
		t.Fatalf("culprits %+v, want CheckCard alone", d.Operations)
	}
	if c := d.Operations[0]; c.Operation != "CheckCard" || !near(c.Score, 0.25) || !near(c.WindowOrigin, 0.25) || c.BaselineOrigin != 0 || len(c.Exemplars) != 3 {
		t.Errorf("culprit %+v, want CheckCard, score 0.25", c)
	}
	// Amex: on all five failed traces, 5 of 20 before: 1 - 0.25.
	if len(d.Attributes) != 1 || d.Attributes[0].Key != "card.type" || !near(d.Attributes[0].Score, 0.75) {
		t.Errorf("attributes %+v, want card.type=amex, 0.75", d.Attributes)
	}
	if len(d.Symptoms) != 1 || d.Symptoms[0].Key != "http.status_code" || !near(d.Symptoms[0].Score, 1) {
		t.Errorf("symptoms %+v, want http.status_code=500, 1", d.Symptoms)
	}
}

func wantStats(t *testing.T, name string, got, want WindowStats) {
	t.Helper()
	if got != want {
		t.Errorf("%s %+v, want %+v", name, got, want)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }

// TestDiagnoseBranchTakesOverPath diagnoses a slowdown of a call made
// beside a longer one: its own time grows by 20 ms, which makes its branch
// outlast the other, and the critical path moves into it, through a step
// under it that did not change. The step joins the path with all its 30
// ms, more than the slow call's own growth, and is not to blame for it.
func TestDiagnoseBranchTakesOverPath(t *testing.T) {
	// web calls quote (50 ms) and, beside it, rank, whose own 4 ms (in
	// the window 24) surround a 30 ms score step.
	trace := func(id int, rankOwn float64) *Trace {
		b := newTrace(id)
		rankEnd := 5 + rankOwn + 30
		end := max(55, rankEnd) + 5
		b.span(1, 0, "web", "GET /offers", server, 0, end, nil)
		b.span(2, 1, "quote", "Quote", server, 5, 55, nil)
		b.span(3, 1, "rank", "Rank", server, 5, rankEnd, nil)
		b.span(4, 3, "rank", "score", client, 5+rankOwn/2, 5+rankOwn/2+30, nil)
		return b.t
	}
	var baseline, window []*Trace
	for i := range 10 {
		baseline = append(baseline, trace(i, 4))
		window = append(window, trace(100+i, 24))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "GET /offers"})

	// Baseline 60 ms, window 64: rank's branch ends at 59 against quote's
	// 55. On the path, Rank's self time went from 0 to 24 ms and score's
	// from 0 to 30, Quote's from 50 to 0 and web's from 10 to 10. Rank's
	// own time grew by 20 ms, score's not at all: Rank alone is blamed, for
	// 20 ms of the 4 ms growth, score 5.
	if len(d.Operations) != 1 {
		t.Fatalf("culprits %+v, want Rank alone", d.Operations)
	}
	if c := d.Operations[0]; c.Operation != "Rank" || !near(c.Score, 5) || !near(c.Baseline, 0) || !near(c.Window, 24e6) {
		t.Errorf("culprit %+v, want Rank, score 5, 0 to 24 ms on the path", c)
	}
}

// TestDiagnoseNetworkDelay diagnoses calls to one inventory pod that take
// 40 ms longer on the network, 20 ms each way, from web and from cart,
// while inventory's own span does not change: the time is the callers'
// wait outside it, one entry for the calls to inventory's Stock from both.
// A client span whose time is not a call's keeps it: one with no server
// span under it (a database), one with two (a retry, whose backoff grew),
// one with an in-process step under it.
func TestDiagnoseNetworkDelay(t *testing.T) {
	type shape struct{ wire, backoff, step, db float64 }
	trace := func(id int, host string, s shape) *Trace {
		b := newTrace(id)
		inv := []*commonpb.KeyValue{kv("host.name", host)}
		// web calls inventory, then cart, which calls inventory too.
		c1 := 5 + 2*s.wire + 10
		b.span(2, 1, "web", "GET /stock", client, 5, c1, nil)
		b.span(3, 2, "inventory", "Stock", server, 5+s.wire, 5+s.wire+10, inv)
		c2 := c1 + 1 + 2*s.wire + 10
		b.span(4, 1, "web", "cart.Get", client, c1, c2+1, nil)
		b.span(5, 4, "cart", "Get", server, c1+0.5, c2+0.5, nil)
		b.span(6, 5, "cart", "GET /stock", client, c1+1, c2, nil)
		b.span(7, 6, "inventory", "Stock", server, c1+1+s.wire, c1+1+s.wire+10, inv)
		// Two attempts at pricing under one client span.
		r := c2 + 1 + 2 + 5 + s.backoff + 5
		b.span(8, 1, "web", "pricing.Quote", client, c2+1, r, nil)
		b.span(9, 8, "pricing", "Quote", server, c2+2, c2+7, nil)
		b.span(10, 8, "pricing", "Quote", server, r-6, r-1, nil)
		// A client span around an in-process step, and a database call.
		e := r + 2 + s.step
		b.span(11, 1, "web", "encode", client, r, e, nil)
		b.span(12, 11, "web", "marshal", tracepb.Span_SPAN_KIND_INTERNAL, r+1, r+2, nil)
		b.span(13, 1, "web", "SELECT orders", client, e, e+s.db, nil)
		b.span(1, 0, "web", "POST /checkout", server, 0, e+s.db+5, nil)
		return b.t
	}
	base := shape{wire: 1, backoff: 2, step: 1, db: 3}
	var baseline []*Trace
	for i := range 10 {
		baseline = append(baseline, trace(i, fmt.Sprint("pod-", i%2+1), base))
	}
	window := func(pod2 shape) []*Trace {
		var w []*Trace
		for i := range 10 {
			s := base
			if i%2 == 1 {
				s = pod2
			}
			w = append(w, trace(100+i, fmt.Sprint("pod-", i%2+1), s))
		}
		return w
	}
	diagnose := func(w []*Trace) Culprit {
		t.Helper()
		d := Diagnose(w, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
		if len(d.Operations) != 1 {
			t.Fatalf("culprits %+v, want one", d.Operations)
		}
		return d.Operations[0]
	}

	// The network: the calls' time outside Stock went from 4 ms (1 ms each
	// way, two calls) to 84 ms on half the traces, 44 on average: all of
	// the 40 ms growth of the mean duration.
	d := Diagnose(window(shape{wire: 21, backoff: 2, step: 1, db: 3}), baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
	if len(d.Operations) != 1 {
		t.Fatalf("culprits %+v, want the calls to Stock alone", d.Operations)
	}
	if c := d.Operations[0]; c.Service != "inventory" || c.Operation != "Stock" || !c.Call || !near(c.Score, 1) || !near(c.Baseline, 4e6) || !near(c.Window, 44e6) {
		t.Errorf("culprit %+v, want the calls to inventory's Stock, score 1, 4 ms to 44 ms", c)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "host.name", "spod-2") {
		t.Errorf("attributes %+v, want host.name=pod-2 first", d.Attributes)
	}

	for _, c := range []struct {
		name string
		s    shape
		want string
	}{
		{"a retry's backoff", shape{wire: 1, backoff: 42, step: 1, db: 3}, "pricing.Quote"},
		{"an in-process step's wait", shape{wire: 1, backoff: 2, step: 41, db: 3}, "encode"},
		{"a database", shape{wire: 1, backoff: 2, step: 1, db: 43}, "SELECT orders"},
	} {
		if got := diagnose(window(c.s)); got.Service != "web" || got.Operation != c.want || got.Call || !near(got.Score, 1) {
			t.Errorf("%s: culprit %+v, want web's %s, score 1", c.name, got, c.want)
		}
	}
}

// TestDiagnoseErrorsCancelBeside diagnoses failures of a stock check that
// cancel the price lookup running beside it: the lookup's database query,
// deeper in the tree than the check, ends failed 0.6 ms after the check
// failed, once the failure has come back to web and the cancellation gone
// down. The failure started in the check, the first to end of the failed
// spans that no failed child explains.
func TestDiagnoseErrorsCancelBeside(t *testing.T) {
	trace := func(id int, fail bool) *Trace {
		b := newTrace(id)
		b.span(1, 0, "web", "GET /item", server, 0, 40, nil)
		b.span(2, 1, "stock", "Check", server, 2, 20, nil)
		b.span(3, 1, "price", "Lookup", server, 2, 30, nil)
		b.span(4, 3, "price", "call db", client, 5, 28, nil)
		b.span(5, 4, "db", "SELECT price", server, 6, 27, nil)
		if fail {
			// Check fails at 20 ms; web ends at 21 and cancels Lookup,
			// whose spans all end failed at 20.6.
			b.t.Spans[0].End = b.t.Spans[0].Start + 21e6
			for _, i := range []int{2, 3, 4} {
				b.t.Spans[i].End = b.t.Spans[0].Start + 20.6e6
			}
			for i := range b.t.Spans {
				b.t.Spans[i].Failed = true
			}
		}
		return b.t
	}
	wantErrorCulprit(t, trace, 4, "GET /item", "stock", "Check")
}

// TestDiagnoseErrorsAfterRetriedFailure diagnoses failures of a payment's
// INSERT in checkouts whose first inventory call always fails and is
// retried: web went on past that failure, so it is not where the
// checkouts' failures started, though it is the first failure to end.
func TestDiagnoseErrorsAfterRetriedFailure(t *testing.T) {
	trace := func(id int, fail bool) *Trace {
		b := newTrace(id)
		b.span(1, 0, "web", "POST /order", server, 0, 40, nil)
		b.span(2, 1, "web", "call inventory", client, 1, 3, nil)
		b.span(3, 2, "inventory", "Get", server, 1.3, 2.7, nil)
		b.span(4, 1, "web", "call inventory", client, 4, 8, nil)
		b.span(5, 4, "inventory", "Get", server, 4.3, 7.7, nil)
		b.span(6, 1, "web", "call pay", client, 10, 35, nil)
		b.span(7, 6, "pay", "Charge", server, 10.3, 34.7, nil)
		b.span(8, 7, "pay", "INSERT", client, 12, 30, nil)
		b.t.Spans[1].Failed, b.t.Spans[2].Failed = true, true // the first attempt, retried
		if fail {
			for _, i := range []int{0, 5, 6, 7} {
				b.t.Spans[i].Failed = true
			}
		}
		return b.t
	}
	wantErrorCulprit(t, trace, 2, "POST /order", "pay", "INSERT")
}

// TestDiagnoseErrorsPastHandledFailure diagnoses checkouts whose flag
// lookup always fails, in both windows, and that checkout handles with a
// default before calling pay; in the window, every other checkout fails in
// checkout's own code after pay. The flag lookup's failure is the deepest
// and first to end, but the baseline shows it handled, and no more often.
func TestDiagnoseErrorsPastHandledFailure(t *testing.T) {
	trace := func(id int, fail bool) *Trace {
		b := newTrace(id)
		b.span(1, 0, "web", "POST /order", server, 0, 40, nil)
		b.span(2, 1, "checkout", "PlaceOrder", server, 1, 39, nil)
		b.span(3, 2, "flags", "Resolve", server, 2, 3, nil)
		b.span(4, 2, "pay", "Charge", server, 5, 30, nil)
		b.t.Spans[2].Failed = true
		if fail {
			b.t.Spans[0].Failed, b.t.Spans[1].Failed = true, true
		}
		return b.t
	}
	wantErrorCulprit(t, trace, 2, "POST /order", "checkout", "PlaceOrder")
}

// TestDiagnoseErrorsOfTimeout diagnoses checkouts whose call to quote
// times out on the client's side while quote, which records no error,
// runs on: the failure started in quote's slowness, not in the client
// that gave up on it.
func TestDiagnoseErrorsOfTimeout(t *testing.T) {
	trace := func(id int, fail bool) *Trace {
		b := newTrace(id)
		b.span(1, 0, "web", "POST /order", server, 0, 40, nil)
		b.span(2, 1, "shipping", "POST", client, 2, 22, nil)
		b.span(3, 2, "quote", "POST /getquote", server, 3, 20, nil)
		if fail {
			b.t.Spans[2].End = b.t.Spans[2].Start + 45e6 // still running at the timeout
			b.t.Spans[0].Failed, b.t.Spans[1].Failed = true, true
		}
		return b.t
	}
	wantErrorCulprit(t, trace, 4, "POST /order", "quote", "POST /getquote")
}

// TestDiagnoseErrorsOfReplyOverQueue diagnoses orders that publish a
// message and fail, its consumer failing too. Asking quote for a price
// over a queue and working on once the reply is back, the request's
// consumer, short beside the order's work after it, is not on the
// critical path, which cannot tell it from an event's: the failure
// started in quote, whose consumer span failed and ended before the order
// did. Failing in its own code while an event's consumer fails after the
// order ended, the order did not fail of it.
func TestDiagnoseErrorsOfReplyOverQueue(t *testing.T) {
	for _, c := range []struct {
		consumer            string
		from, to            float64
		wantService, wantOp string
	}{
		{"quote", 4, 6, "quote", "message process"},
		{"mail", 45, 47, "web", "POST /order"},
	} {
		trace := func(id int, fail bool) *Trace {
			b := newTrace(id)
			b.span(1, 0, "web", "POST /order", server, 0, 40, nil)
			b.span(2, 1, "web", "message publish", producer, 2, 3, nil)
			b.span(3, 2, c.consumer, "message process", consumer, c.from, c.to, nil)
			if fail {
				b.t.Spans[0].Failed, b.t.Spans[2].Failed = true, true
			}
			return b.t
		}
		wantErrorCulprit(t, trace, 4, "POST /order", c.wantService, c.wantOp)
	}
}

// wantErrorCulprit diagnoses the failures of web's operation in a window
// of 20 traces, every nth of which failed, against 20 that did not, and
// wants service's operation op as the only culprit, with the window's
// whole error rate as its score.
func wantErrorCulprit(t *testing.T, trace func(id int, fail bool) *Trace, nth int, operation, service, op string) {
	t.Helper()
	var baseline, window []*Trace
	for i := range 20 {
		baseline = append(baseline, trace(i, false))
		window = append(window, trace(100+i, i%nth == 0))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: operation, Errors: true})
	if len(d.Operations) != 1 {
		t.Fatalf("culprits %+v, want %s %s alone", d.Operations, service, op)
	}
	if c := d.Operations[0]; c.Service != service || c.Operation != op || !near(c.Score, 1/float64(nth)) {
		t.Errorf("culprit %+v, want %s %s, score %v", c, service, op, 1/float64(nth))
	}
}

// TestDiagnoseGatewayOfManyKinds diagnoses a gateway operation that serves
// reports, always slow, beside checkouts, whose queries of one table slowed
// down by 40 ms: still far faster than any report. The traces slowest
// overall are reports in either window, and their route would top the
// attributes; the traces where the culprit was slow are the checkouts
// that read the table.
func TestDiagnoseGatewayOfManyKinds(t *testing.T) {
	request := func(id int, report bool, table string, selectMS float64) *Trace {
		b := newTrace(id)
		if report {
			ms := 200 + float64(id%100)/5 // 200-219 ms
			b.span(1, 0, "gateway", "ingress", server, 0, ms+10, nil, kv("http.route", "/api/report"))
			b.span(2, 1, "reporting", "SELECT", client, 5, ms+5, nil, kv("db.sql.table", "orders"))
			return b.t
		}
		b.span(1, 0, "gateway", "ingress", server, 0, 10+selectMS, nil, kv("http.route", "/api/checkout"))
		b.span(2, 1, "inventory", "SELECT", client, 5, 5+selectMS, nil, kv("db.sql.table", table))
		return b.t
	}
	traffic := func(first int, slowMS float64) []*Trace {
		var ts []*Trace
		for i := range 100 {
			switch {
			case i%5 == 0:
				ts = append(ts, request(first+i, true, "", 0))
			case i%2 == 0:
				ts = append(ts, request(first+i, false, "warehouses", slowMS))
			default:
				ts = append(ts, request(first+i, false, "stock", 10))
			}
		}
		return ts
	}
	d := Diagnose(traffic(1000, 50), traffic(0, 10), &DiagnoseOptions{Service: "gateway", Operation: "ingress"})
	if len(d.Operations) == 0 || d.Operations[0].Service != "inventory" || d.Operations[0].Operation != "SELECT" {
		t.Fatalf("culprits %+v, want inventory SELECT first", d.Operations)
	}
	// 40 checkouts read warehouses in each window, of 80: all of those
	// where SELECT was slow, half of the baseline's with SELECT.
	if len(d.Attributes) == 0 {
		t.Fatal("no attributes, want db.sql.table=warehouses")
	}
	if a := d.Attributes[0]; !names(a, "db.sql.table", "swarehouses") || a.Selected != 40 || a.Baseline != 40 || !near(a.Score, 0.5) {
		t.Errorf("attributes %+v, want db.sql.table=warehouses first, 40 of 40 against 40 of 80", d.Attributes)
	}
	for _, a := range d.Attributes {
		if names(a, "http.route", "s/api/report") {
			t.Errorf("attribute %+v ranks: reports are as slow as before", a)
		}
	}
}

// TestDiagnoseCulpritThatRanMoreOften diagnoses a window in which a flag
// sent five times as many requests through a query that takes as long as
// before: the query is the culprit, but took no longer where it ran, so
// the traces slowest overall are the selection.
func TestDiagnoseCulpritThatRanMoreOften(t *testing.T) {
	request := func(id int, query bool, flag string) *Trace {
		b := newTrace(id)
		if !query {
			b.span(1, 0, "web", "GET /", server, 0, 10, nil, kv("flag", flag))
			return b.t
		}
		ms := 20 + float64(id%7)
		b.span(1, 0, "web", "GET /", server, 0, ms+10, nil, kv("flag", flag))
		b.span(2, 1, "db", "SELECT", client, 5, ms+5, nil)
		return b.t
	}
	var baseline, window []*Trace
	for i := range 200 {
		baseline = append(baseline, request(i, i%10 == 0, "old"))
		if i%2 == 0 {
			window = append(window, request(1000+i, true, "new"))
		} else {
			window = append(window, request(1000+i, false, "old"))
		}
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "GET /"})
	if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT" {
		t.Fatalf("culprits %+v, want SELECT first", d.Operations)
	}
	// More requests reach it, none slower: its share of critical paths
	// says so.
	if c := d.Operations[0]; !near(c.BaselineOnPath, 0.1) || !near(c.WindowOnPath, 0.5) ||
		math.Abs(c.Window/c.WindowOnPath-c.Baseline/c.BaselineOnPath) > 0.1*c.Baseline/c.BaselineOnPath {
		t.Errorf("SELECT on the path of %.3f then %.3f of traces, %.1f then %.1f ms each; want 0.1 then 0.5, alike",
			c.BaselineOnPath, c.WindowOnPath, c.Baseline/c.BaselineOnPath/1e6, c.Window/c.WindowOnPath/1e6)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "flag", "snew") {
		t.Errorf("attributes %+v, want flag=new first", d.Attributes)
	}
}

// TestDiagnoseSlowBrokerAck diagnoses checkouts whose order event's
// producer span lasts until the broker acknowledges it, 1 ms, then 7 ms
// in the window; two consumers take the event 1-40 s later, for 3 ms and
// 10 ms, long after the checkout ended. The wait for the broker is the
// producer's, not the consumers', which were not awaited: they are
// longer than the gap after the producer, and ran after the request.
func TestDiagnoseSlowBrokerAck(t *testing.T) {
	trace := func(id int, ack float64) *Trace {
		b := newTrace(id)
		b.span(2, 1, "checkout", "charge", client, 1, 20, nil)
		b.span(3, 1, "checkout", "orders publish", producer, 21, 21+ack, nil)
		later := 1000 + float64(id%40)*1000
		b.span(4, 3, "fraud", "orders process", consumer, later, later+3, nil)
		b.span(5, 3, "accounting", "orders process", consumer, later+5, later+15, nil)
		b.span(1, 0, "checkout", "PlaceOrder", server, 0, 21+ack+0.5, nil)
		return b.t
	}
	var baseline, window []*Trace
	for i := range 40 {
		baseline = append(baseline, trace(i, 1))
		window = append(window, trace(100+i, 7))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "checkout", Operation: "PlaceOrder"})
	if len(d.Operations) == 0 || d.Operations[0].Service != "checkout" || d.Operations[0].Operation != "orders publish" {
		t.Fatalf("culprits %+v, want checkout's orders publish first", d.Operations)
	}
}

// TestDiagnoseQueryInALoop diagnoses orders whose handler, on version
// 2.0 in the window, runs its items' query once per item, 10 items, rather
// than 3 times: each query takes as long as before. The query is the
// culprit, and its spans per trace say why.
func TestDiagnoseQueryInALoop(t *testing.T) {
	order := func(id, queries int, version string) *Trace {
		b := newTrace(id)
		web := []*commonpb.KeyValue{kv("service.version", version)}
		at := 1.0
		for q := range queries {
			b.span(byte(2+q), 1, "web", "SELECT items", client, at, at+2, web)
			at += 2.2
		}
		b.span(1, 0, "web", "GET /order", server, 0, at+1, web)
		return b.t
	}
	var baseline, window []*Trace
	for i := range 40 {
		baseline = append(baseline, order(i, 3, "1.0"))
		if i%2 == 0 {
			window = append(window, order(100+i, 10, "2.0"))
		} else {
			window = append(window, order(100+i, 3, "1.0"))
		}
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "GET /order"})
	if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT items" {
		t.Fatalf("culprits %+v, want SELECT items first", d.Operations)
	}
	if c := d.Operations[0]; !near(c.BaselineCalls, 3) || !near(c.WindowCalls, 6.5) {
		t.Errorf("SELECT items %.2f then %.2f times a trace, want 3 then 6.5", c.BaselineCalls, c.WindowCalls)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "service.version", "s2.0") {
		t.Errorf("attributes %+v, want service.version 2.0 first", d.Attributes)
	}
}

// TestDiagnoseCacheMisses diagnoses accounts whose cache, in the window,
// misses half of its reads rather than one in twenty, each miss then
// querying the database as fast as before. The query is the culprit, for
// running in more requests, and the cache's misses set its traces apart:
// among the traces where it was slowest, a miss is as common as before.
func TestDiagnoseCacheMisses(t *testing.T) {
	read := func(id int, miss bool) *Trace {
		b := newTrace(id)
		hit := kv("cache.hit", "true")
		end := 2.0
		if miss {
			hit = kv("cache.hit", "false")
			end = 3 + 8 + float64(id%5)
			b.span(3, 1, "accounts", "SELECT accounts", client, 3, end, nil)
		}
		b.span(2, 1, "accounts", "GET", client, 0.5, 1.5, nil, hit)
		b.span(1, 0, "accounts", "GetBalance", server, 0, end+1, nil, kv("user.id", fmt.Sprint("u", id)))
		return b.t
	}
	var baseline, window []*Trace
	for i := range 400 {
		baseline = append(baseline, read(i, i%20 == 0))
		window = append(window, read(1000+i, i%2 == 0))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "accounts", Operation: "GetBalance"})
	if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT accounts" {
		t.Fatalf("culprits %+v, want SELECT accounts first", d.Operations)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "cache.hit", "sfalse") {
		t.Errorf("attributes %+v, want cache.hit=false first", d.Attributes)
	}
}

// TestDiagnoseWithinNoise checks that a window as slow as its baseline, or
// failing as often, is said to be within noise, and one clearly worse is
// not.
func TestDiagnoseWithinNoise(t *testing.T) {
	traffic := func(first, n int, slowEvery int, jitter float64) []*Trace {
		var ts []*Trace
		for i := range n {
			selectMS := 10 + jitter*float64((first+i)%7)
			if slowEvery > 0 && i%slowEvery == 0 {
				selectMS += 100
			}
			ts = append(ts, checkout(first+i, selectMS, 5, 50, "2.8.0", "pod-0", i))
		}
		return ts
	}
	opts := &DiagnoseOptions{Service: "web", Operation: "POST /checkout"}
	baseline := traffic(0, 200, 0, 1)
	if d := Diagnose(traffic(1000, 200, 0, 1.1), baseline, opts); !d.WithinNoise {
		t.Errorf("a window as slow as the baseline, but for 0.3 ms of drift: not within noise; culprits %+v", d.Operations)
	}
	if d := Diagnose(traffic(1000, 200, 10, 1), baseline, opts); d.WithinNoise {
		t.Error("a window with a tenth of its checkouts 100 ms slower: within noise")
	}
	if d := Diagnose(traffic(1000, 200, 0, 0), baseline, opts); !d.WithinNoise {
		t.Error("a window faster than the baseline: not within noise")
	}
	// Failures: one trace in 20 in both windows, then one in 4.
	failing := func(first, every int) []*Trace {
		ts := traffic(first, 200, 0, 1)
		for i, tr := range ts {
			if i%every == 0 {
				tr.Spans[0].Failed = true
			}
		}
		return ts
	}
	errs := &DiagnoseOptions{Service: "web", Operation: "POST /checkout", Errors: true}
	if d := Diagnose(failing(1000, 20), failing(0, 20), errs); !d.WithinNoise {
		t.Error("failing as often as the baseline: not within noise")
	}
	if d := Diagnose(failing(1000, 4), failing(0, 20), errs); d.WithinNoise {
		t.Error("failing five times as often: within noise")
	}
	// Four failures in 200 against none is two standard errors: the first
	// culprit is the largest change of many, which chance alone takes
	// that far about one time in five.
	if d := Diagnose(failing(1000, 50), traffic(0, 200, 0, 1), errs); !d.WithinNoise {
		t.Error("four failures against none: not within noise")
	}
}

// TestDiagnosePodBesideReleaseElsewhere diagnoses a window in which one of
// inventory's three pods got slow, while fraud, on a branch beside the
// path, was released on every pod. Against the baseline, fraud's new
// version is on every window trace and none before, and scored 1, beyond
// the pod, which the baseline's traces went to a third of the time; within
// the window it sets nothing apart, and it is not the culprit's service
// nor above it, so the pod comes first.
func TestDiagnosePodBesideReleaseElsewhere(t *testing.T) {
	trace := func(id int, pod int, selectMS float64, fraudVersion string) *Trace {
		b := newTrace(id)
		end := 10 + selectMS + 30
		b.span(1, 0, "web", "POST /checkout", server, 0, end, nil)
		b.span(2, 1, "inventory", "SELECT stock", client, 5, 5+selectMS, []*commonpb.KeyValue{kv("host.name", fmt.Sprint("inventory-", pod))})
		b.span(3, 1, "pay", "Charge", server, 5+selectMS+2, 5+selectMS+22, nil)
		b.span(4, 1, "fraud", "Score", server, 5+selectMS+2, 5+selectMS+7, []*commonpb.KeyValue{kv("service.version", fraudVersion)})
		return b.t
	}
	var baseline, window []*Trace
	for i := range 90 {
		baseline = append(baseline, trace(i, i%3, 10+float64(i%5), "3.1"))
		ms := 10 + float64(i%5)
		if i%3 == 1 {
			ms += 40
		}
		window = append(window, trace(100+i, i%3, ms, "4.0"))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "web", Operation: "POST /checkout"})
	if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT stock" {
		t.Fatalf("culprits %+v, want SELECT stock first", d.Operations)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "host.name", "sinventory-1") {
		t.Errorf("attributes %+v, want inventory-1 first", d.Attributes)
	}
}

// TestDiagnoseSlowNodeAmongHeavyQueries diagnoses a window in which one
// of three search nodes answers each query 25 ms later, among queries a
// tenth of which are heavy and always take 120 ms. Past the baseline's
// 95th percentile are the heavy queries, slow before too, on every node:
// the node is set apart past the middle, where the window has the most
// more of its queries than the baseline.
func TestDiagnoseSlowNodeAmongHeavyQueries(t *testing.T) {
	trace := func(id, node int, ms float64, heavy bool) *Trace {
		b := newTrace(id)
		if heavy {
			ms = 120
		}
		b.span(1, 0, "gateway", "POST /graphql", server, 0, ms+10, nil)
		b.span(2, 1, "search", "Search", server, 2, ms+8, nil)
		b.span(3, 2, "search", "POST /_search", client, 3, 3+ms, nil, kv("server.address", fmt.Sprint("es-", node)), kv("heavy", heavy))
		return b.t
	}
	var baseline, window []*Trace
	for i := range 300 {
		node, heavy, ms := i%3, i%10 == 0, 40+float64(i%7)
		baseline = append(baseline, trace(i, node, ms, heavy))
		if node == 2 {
			ms += 25
		}
		window = append(window, trace(1000+i, node, ms, heavy))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "gateway", Operation: "POST /graphql"})
	if len(d.Operations) == 0 || d.Operations[0].Operation != "POST /_search" {
		t.Fatalf("culprits %+v, want POST /_search first", d.Operations)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "server.address", "ses-2") {
		t.Errorf("attributes %+v, want es-2 first", d.Attributes)
	}
}

// TestInvolved checks that the services involved in an operation are its
// own and its callers', not those beside it or below it, through a
// recursion of the operation and a cycle of parents alike.
func TestInvolved(t *testing.T) {
	b := newTrace(1)
	b.span(1, 0, "gateway", "POST", server, 0, 100, nil)
	b.span(2, 1, "search", "Search", server, 1, 90, nil)
	b.span(3, 2, "search", "query", client, 2, 80, nil)
	b.span(4, 3, "search", "query", client, 3, 70, nil) // a recursion
	b.span(5, 4, "es", "_search", server, 4, 60, nil)
	b.span(6, 1, "reviews", "List", server, 1, 50, nil)
	b.span(8, 9, "search", "query", client, 5, 6, nil) // a cycle of parents
	b.span(9, 8, "cycle", "x", server, 5, 6, nil)
	got := involved([]*Trace{b.t}, op{service: "search", name: "query"})
	want := map[string]bool{"search": true, "gateway": true, "cycle": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("involved %v, want %v", got, want)
	}
}

// TestDiagnoseFaultBesideMixShift checks that an operation that got
// slower on one pod leads one that only more requests reach, each time
// as long as before: pool rides, which call the matcher, went from a
// tenth of the requests to four tenths, and geo's third pod took 25 ms
// longer. The shift takes most of the growth, the pod the rest.
func TestDiagnoseFaultBesideMixShift(t *testing.T) {
	trace := func(id int, pool bool, pod int, geoMS float64) *Trace {
		b := newTrace(id)
		end := 4 + geoMS
		if pool {
			end += 100
		}
		b.span(1, 0, "gateway", "POST /v1/rides", server, 0, end+2, nil, kv("ride.type", map[bool]string{true: "pool", false: "standard"}[pool]))
		b.span(2, 1, "dispatch", "Dispatch", server, 1, end+1, nil)
		b.span(3, 2, "dispatch", "QueryCell", client, 2, 3+geoMS, nil)
		b.span(4, 3, "geo", "QueryCell", server, 2.2, 2.8+geoMS, []*commonpb.KeyValue{kv("k8s.pod.name", fmt.Sprint("geo-", pod))})
		if pool {
			b.span(5, 2, "pool-matcher", "Match", server, 4+geoMS, end, nil)
		}
		return b.t
	}
	var baseline, window []*Trace
	for i := range 400 {
		pod, ms := i%3, 6+float64(i%5)
		baseline = append(baseline, trace(i, i%10 == 0, pod, ms))
		if pod == 2 {
			ms += 25
		}
		window = append(window, trace(1000+i, i%10 < 4, pod, ms))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "gateway", Operation: "POST /v1/rides"})
	if len(d.Operations) < 2 || d.Operations[0].Service != "geo" || d.Operations[1].Service != "pool-matcher" {
		t.Fatalf("culprits %+v, want geo's QueryCell, then pool-matcher's Match", d.Operations)
	}
	if !slices.ContainsFunc(d.Attributes[:min(3, len(d.Attributes))], func(a Correlation) bool { return names(a, "k8s.pod.name", "sgeo-2") }) {
		t.Errorf("attributes %+v, want geo-2 in the first three", d.Attributes)
	}
}

// TestDiagnoseSlowZone slows both pods of one zone of a store that every
// request calls three times in parallel, and four times more off its path
// (an asynchronous job), over six pods in three zones: the zone is on
// nearly every trace of either window, and scored below either pod. It
// must be named first; with one of its pods slow, the pod is.
func TestDiagnoseSlowZone(t *testing.T) {
	zone := func(pod int) string { return fmt.Sprint("us-east-1", string(rune('a'+pod/2))) }
	trace := func(id int, slow func(pod int) bool) *Trace {
		b := newTrace(id)
		r := rand.New(rand.NewPCG(uint64(id), 1))
		write := func(span, parent byte, start float64, async bool) float64 {
			pod := r.IntN(6)
			ms := 3 + float64(r.IntN(4))
			if slow(pod) && !async {
				ms += 20
			}
			b.span(span, parent, "store", "disk.write", server, start, start+ms, []*commonpb.KeyValue{
				kv("k8s.pod.name", fmt.Sprint("store-", pod)), kv("cloud.availability_zone", zone(pod))})
			return start + ms
		}
		end := 0.0
		for lane := range 3 {
			done := write(byte(10+lane), 2+byte(lane), 1.1, false)
			b.span(2+byte(lane), 1, "api", "PutObject", client, 1, done+0.1, nil)
			end = max(end, done+0.1)
		}
		b.span(1, 0, "api", "POST /upload", server, 0, end+1, nil)
		b.span(20, 1, "worker", "transcode", consumer, end+5, end+50, nil)
		for c := range 4 {
			write(21+byte(c), 20, end+6+float64(10*c), true)
		}
		return b.t
	}
	for _, tc := range []struct {
		name     string
		slow     func(pod int) bool
		key, val string
	}{
		{"zone", func(pod int) bool { return zone(pod) == "us-east-1c" }, "cloud.availability_zone", "sus-east-1c"},
		{"one pod of the zone", func(pod int) bool { return pod == 5 }, "k8s.pod.name", "sstore-5"},
	} {
		var baseline, window []*Trace
		for i := range 600 {
			baseline = append(baseline, trace(i, func(int) bool { return false }))
			window = append(window, trace(1000+i, tc.slow))
		}
		d := Diagnose(window, baseline, &DiagnoseOptions{Service: "api", Operation: "POST /upload"})
		if len(d.Operations) == 0 || d.Operations[0].Service != "store" {
			t.Fatalf("%s: culprits %+v, want store's disk.write", tc.name, d.Operations)
		}
		if len(d.Attributes) == 0 || !names(d.Attributes[0], tc.key, tc.val) {
			t.Errorf("%s: attributes %+v, want %s=%s first", tc.name, d.Attributes, tc.key, tc.val)
		}
	}
}

// TestDiagnoseLoopOfCacheMisses diagnoses overviews that look up five
// merchants each, through a cache that missed one read in ten and in the
// window seven in ten, each miss querying the database as fast as before.
// The query is the culprit, for running more times a trace, and the
// cache's misses set its slow traces apart; against the baseline's traces
// that ran the query at all, every one of which had a miss too, they did
// not, and went unnamed.
func TestDiagnoseLoopOfCacheMisses(t *testing.T) {
	overview := func(id int, missOneIn float64) *Trace {
		b := newTrace(id)
		at := 1.0
		for i := range 5 {
			// A fixed scatter of reads, so that each window misses its
			// share.
			miss := math.Mod(float64(id*5+i)*0.618034, 1) < missOneIn
			b.span(byte(2+2*i), 1, "tx", "cache GET", client, at, at+0.3, nil, kv("cache.hit", fmt.Sprint(!miss)))
			at += 0.4
			if miss {
				b.span(byte(3+2*i), 1, "tx", "SELECT merchants", client, at, at+3, nil)
				at += 3.1
			}
		}
		b.span(1, 0, "tx", "Overview", server, 0, at+1, nil, kv("tenant", fmt.Sprint("t", id%7)))
		return b.t
	}
	var baseline, window []*Trace
	for i := range 400 {
		baseline = append(baseline, overview(i, 0.1))
		window = append(window, overview(1000+i, 0.7))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "tx", Operation: "Overview"})
	if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT merchants" {
		t.Fatalf("culprits %+v, want SELECT merchants first", d.Operations)
	}
	if c := d.Operations[0]; c.WindowCalls < 3*c.BaselineCalls {
		t.Errorf("SELECT merchants %.2f then %.2f times a trace, want many more", c.BaselineCalls, c.WindowCalls)
	}
	if len(d.Attributes) == 0 || !names(d.Attributes[0], "cache.hit", "sfalse") {
		t.Errorf("attributes %+v, want cache.hit=false first", d.Attributes)
	}
}

// TestDiagnoseFlagGatesTheSlowOperation slows a query that only requests
// with a flag on run, in every one of them alike: among the traces that
// run it nothing sets the slow ones apart, and against the whole baseline
// the flag does, not the query's own text nor its service's version,
// which are on the same traces. Where every request of a kind runs it,
// the kind leads, as its gateway names it, rather than the currency pair
// only that kind asks a service deeper down for.
func TestDiagnoseFlagGatesTheSlowOperation(t *testing.T) {
	request := func(id int, slow, gated bool) *Trace {
		b := newTrace(id)
		kind, flag := "Overview", id%10 < 3
		if id%20 >= 13 {
			kind = "Transfer"
		}
		gw := []*commonpb.KeyValue{kv("service.version", "7.4.2")}
		tx := []*commonpb.KeyValue{kv("service.version", "3.8.0"), kv("k8s.pod.name", fmt.Sprint("tx-", id%3))}
		at := 1.0
		if kind == "Overview" {
			b.span(3, 2, "tx", "SELECT transactions", client, at+0.5, at+4, tx, kv("db.query.text", "SELECT * FROM transactions"))
			end := at + 4.2
			if !gated || flag {
				d := 3.0 + float64(id%5)*0.2
				if slow {
					d += 30
				}
				b.span(4, 2, "tx", "SELECT ledger_view", client, end, end+d, tx, kv("db.query.text", "SELECT * FROM ledger_view"))
				end += d + 0.2
			}
			b.span(2, 1, "tx", "Recent", server, at, end+0.3, tx, kv("feature.new_ledger", flag), kv("tenant", fmt.Sprint("t", id%7)))
			at = end + 0.5
		} else {
			b.span(2, 1, "pay", "Transfer", server, at, at+8, nil, kv("tenant", fmt.Sprint("t", id%7)))
			at += 8.5
		}
		pair := map[string]string{"Overview": "EURGBP", "Transfer": "USDEUR"}[kind]
		b.span(5, 1, "fx", "rates.lookup", server, at, at+0.5, nil, kv("fx.pair", pair))
		b.span(1, 0, "gw", "POST /graphql", server, 0, at+1.5, gw, kv("graphql.operation.name", kind), kv("feature.new_ledger", flag))
		return b.t
	}
	for _, tc := range []struct {
		name  string
		gated bool
		key   string
		value string
	}{
		{"gated", true, "feature.new_ledger", "btrue"},
		{"every overview", false, "graphql.operation.name", "sOverview"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var baseline, window []*Trace
			for i := range 600 {
				baseline = append(baseline, request(i, false, tc.gated))
				window = append(window, request(1000+i, true, tc.gated))
			}
			d := Diagnose(window, baseline, &DiagnoseOptions{Service: "gw", Operation: "POST /graphql"})
			if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT ledger_view" {
				t.Fatalf("culprits %+v, want SELECT ledger_view first", d.Operations)
			}
			if len(d.Attributes) == 0 || d.Attributes[0].Key != tc.key || valueString(d.Attributes[0].Value) != tc.value {
				t.Fatalf("attributes %+v, want %s=%s first", d.Attributes, tc.key, tc.value[1:])
			}
		})
	}
}

// TestDiagnoseFallbackFromAFailedPrimary fails a primary acquirer fast for
// most European charges, each failure followed by a 90 ms call to a
// backup: the backup's growth is that more traces reach it, and the
// primary, which failed in more traces and whose failures every backup
// call followed, leads with the backup's score; the charges' region
// leads the attributes, not the backup's own address. So too where both
// acquirers send spans of their own, and the operations are theirs; where
// the backup is a service whose time is in its own call to a provider;
// and where a refusal takes longer than an answer, so that the primary
// also got slower. Where the primary's own query slowed past its caller's
// timeout, the query leads: a call that gave up on a server that had not
// failed did not fail of the primary. Where
// the backup itself slowed and the primary failed as often as before, or
// more requests went to the backup without a failure (a routing change),
// or the primary failed a little more, within noise, the backup leads and
// no operation is said to have a fallback; and where the fallbacks' time
// is within the noise (a backup that answers in 10 ms or 3 s) while a
// query got slower in every request, the query leads.
func TestDiagnoseFallbackFromAFailedPrimary(t *testing.T) {
	type change struct {
		primaryFails, backupSlow, routed, moreFail, fewMore, instrumented bool
		slowerFailing, backupService, timesOut, backupVaries, ledgerSlow  bool
	}
	charge := func(id int, ch change) *Trace {
		b := newTrace(id)
		region := []string{"eu", "us", "ap"}[id%3]
		at := 1.0
		fails := id%50 == 0 || ch.primaryFails && region == "eu" && id%5 < 3 || ch.moreFail && id%20 == 5 || ch.fewMore && id%90 == 1
		call := func(sid byte, service, name, address string, failed bool, d float64) {
			b.span(sid, 2, "pay", name, client, at, at+d, nil, kv("server.address", address))
			b.t.Spans[len(b.t.Spans)-1].Failed = failed
			if ch.instrumented {
				b.span(sid+10, sid, service, name, server, at+0.1, at+d-0.1, nil)
				b.t.Spans[len(b.t.Spans)-1].Failed = failed
			}
			at += d + 0.1
		}
		routed := ch.routed && id%10 < 3
		switch {
		case ch.timesOut && region == "eu" && id%5 < 3:
			// The acquirer's query slowed past the caller's timeout: the
			// call failed, the acquirer did not.
			fails = true
			b.span(3, 2, "pay", "POST /v1/charges", client, at, at+20, nil, kv("server.address", "api."+region+".acq.com"))
			b.t.Spans[len(b.t.Spans)-1].Failed = true
			b.span(13, 3, "acq", "POST /v1/charges", server, at+0.1, at+41, nil)
			b.span(23, 13, "acq", "SELECT merchant", client, at+0.5, at+40.5, nil)
			at += 20.1
		case !routed:
			d := 2.0
			if fails && ch.slowerFailing {
				d = 20 // a refusal that takes longer than an answer
			}
			call(3, "acq", "POST /v1/charges", "api."+region+".acq.com", fails, d)
			if ch.instrumented { // the acquirer's query, in time
				b.span(23, 13, "acq", "SELECT merchant", client, at-d+0.4, at-d+1.2, nil)
			}
		}
		if fails || routed {
			d := 90.0
			switch {
			case ch.backupSlow:
				d = 150
			case ch.backupVaries:
				d = 10
				if id/20%10 == 0 {
					d = 3000
				}
			}
			if ch.backupService { // a service of its own, whose time is in its call out
				b.span(4, 2, "pay", "POST /internal/charge", client, at, at+d+2, nil, kv("server.address", "backup"))
				b.span(14, 4, "backup", "POST /internal/charge", server, at+0.5, at+d+1.5, nil)
				b.span(24, 14, "backup", "POST /v2/payments", client, at+1, at+d+1, nil, kv("server.address", "api.backup.com"))
				at += d + 2.1
			} else {
				call(4, "backup", "POST /v2/payments", "api.backup.com", false, d)
			}
		}
		if ch.ledgerSlow || ch.backupVaries {
			d := 3.0
			if ch.ledgerSlow {
				d = 6
			}
			b.span(5, 2, "pay", "SELECT ledger", client, at, at+d, nil)
			at += d + 0.1
		}
		b.span(2, 1, "pay", "Charge", server, 0.5, at+0.5, nil, kv("customer.region", region))
		b.span(1, 0, "gw", "POST /checkout", server, 0, at+1, nil)
		return b.t
	}
	for _, tc := range []struct {
		name            string
		change          change
		first, fallback string
	}{
		{"primary fails", change{primaryFails: true}, "pay: POST /v1/charges", "pay: POST /v2/payments"},
		{"primary fails, both instrumented", change{primaryFails: true, instrumented: true}, "acq: POST /v1/charges", "backup: POST /v2/payments"},
		{"primary fails, backup a service calling out", change{primaryFails: true, backupService: true}, "pay: POST /v1/charges", "backup: POST /v2/payments"},
		{"primary fails slower than it answers", change{primaryFails: true, slowerFailing: true}, "pay: POST /v1/charges", "pay: POST /v2/payments"},
		{"backup slower", change{backupSlow: true}, "pay: POST /v2/payments", ""},
		{"primary's query past the timeout", change{timesOut: true, instrumented: true}, "acq: SELECT merchant", ""},
		{"routed to the backup", change{routed: true, moreFail: true}, "pay: POST /v2/payments", ""},
		{"a query slower beside fallbacks within noise", change{moreFail: true, backupVaries: true, ledgerSlow: true}, "pay: SELECT ledger", ""},
		{"a few more failures", change{fewMore: true}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var baseline, window []*Trace
			for i := range 900 {
				baseline = append(baseline, charge(i, change{instrumented: tc.change.instrumented, backupService: tc.change.backupService,
					backupVaries: tc.change.backupVaries}))
				window = append(window, charge(1000+i, tc.change))
			}
			d := Diagnose(window, baseline, &DiagnoseOptions{Service: "gw", Operation: "POST /checkout"})
			for _, c := range d.Operations {
				if fb := c.FallbackService + ": " + c.FallbackOperation; fb != ": " && (c.Service+": "+c.Operation != tc.first || fb != tc.fallback) {
					t.Fatalf("culprits %+v: %s: %s falls back to %s", d.Operations, c.Service, c.Operation, fb)
				}
			}
			if tc.first == "" {
				return
			}
			if len(d.Operations) == 0 || d.Operations[0].Service+": "+d.Operations[0].Operation != tc.first {
				t.Fatalf("culprits %+v, want %s first", d.Operations, tc.first)
			}
			if tc.fallback == "" {
				if d.Operations[0].FallbackOperation != "" {
					t.Fatalf("culprit %+v, want no fallback", d.Operations[0])
				}
				return
			}
			c := d.Operations[0]
			if c.FallbackService+": "+c.FallbackOperation != tc.fallback || c.WindowFailed < 5*c.BaselineFailed || c.Score != d.Operations[1].Score {
				t.Errorf("culprit %+v, want it failing more, with its fallback %s's score", c, tc.fallback)
			}
			if len(d.Attributes) == 0 || !names(d.Attributes[0], "customer.region", "seu") {
				t.Errorf("attributes %+v, want customer.region=eu first", d.Attributes)
			}
		})
	}
}

// TestDiagnoseChanceShiftYieldsToARealOne shifts the mix of requests
// twice: a little more traffic, by chance, to a 40 ms call, and a real
// shift (a cache missing more) sending a fifth more requests to a 7 ms
// query. The chance shift adds more time but within the noise, the query
// past it, and the query leads.
func TestDiagnoseChanceShiftYieldsToARealOne(t *testing.T) {
	request := func(id int, costly, query bool) *Trace {
		b := newTrace(id)
		at := 1.0
		if costly {
			b.span(2, 1, "api", "POST /charge", client, at, at+40, nil)
			at += 40.1
		}
		if query {
			b.span(3, 1, "db", "SELECT accounts", client, at, at+7, nil)
			at += 7.1
		}
		b.span(4, 1, "api", "render", client, at, at+2, nil)
		b.span(1, 0, "api", "GET /account", server, 0, at+3, nil)
		return b.t
	}
	var baseline, window []*Trace
	for i := range 400 {
		baseline = append(baseline, request(i, i%10 == 0, i%10 < 3))
		window = append(window, request(1000+i, i%20 < 3, i%2 == 0))
	}
	d := Diagnose(window, baseline, &DiagnoseOptions{Service: "api", Operation: "GET /account"})
	if len(d.Operations) < 2 || d.Operations[0].Operation != "SELECT accounts" || d.WithinNoise {
		t.Fatalf("culprits %+v (within noise %v), want SELECT accounts first, past the noise", d.Operations, d.WithinNoise)
	}
}
