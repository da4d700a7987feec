package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Config describes a workload. The zero value is valid.
type Config struct {
	// Seed makes the workload reproducible. The default is 1.
	Seed uint64
	// BatchSpans is the number of spans per Export request. The default is
	// 1024.
	BatchSpans int
	// Start is the start time of the first trace. The default is the time
	// NewGenerator is called, so that stores with a retention period accept
	// the spans; with the same Start, a seed gives the same requests.
	Start time.Time
	// TracesPerSecond spaces trace start times. The default is 1000.
	TracesPerSecond float64
	// LargeTraceEvery makes every n-th trace a large one of 10,000+ spans;
	// 0 means never.
	LargeTraceEvery int
	// Exporters sends spans as each service instance's OpenTelemetry SDK
	// exporter would: a request holds BatchSpans spans of one instance, so
	// a trace's spans arrive in many requests, as many as the instances
	// it passed through or more, and those of its first services long
	// before its last ones'. By default a request holds whole traces of
	// every service.
	Exporters bool
}

func (c Config) withDefaults() Config {
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.BatchSpans <= 0 {
		c.BatchSpans = 1024
	}
	if c.Start.IsZero() {
		c.Start = time.Now()
	}
	if c.TracesPerSecond <= 0 {
		c.TracesPerSecond = 1000
	}
	return c
}

// Request is one encoded ExportTraceServiceRequest.
type Request struct {
	Bytes  []byte
	Spans  int
	Traces [][16]byte // every trace with at least one span in the request
}

// Generator produces a workload's requests in order. It is not safe for
// concurrent use.
type Generator struct {
	cfg      Config
	rng      *rand.Rand
	services []*service
	traceN   int
	pending  []genSpan // generated, not yet put in a request
	// With Config.Exporters: each instance's spans not yet sent, and the
	// instances in the order they were first seen, in which full queues
	// are sent.
	queues map[*instance][]genSpan
	order  []*instance
}

type genSpan struct {
	inst *instance
	span *tracepb.Span
}

// NewGenerator returns a generator for cfg.
func NewGenerator(cfg Config) *Generator {
	cfg = cfg.withDefaults()
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	g.services = newServices(g.rng)
	return g
}

// Next returns the next request.
func (g *Generator) Next() Request {
	if g.cfg.Exporters {
		return g.nextExporter()
	}
	for len(g.pending) < g.cfg.BatchSpans {
		g.generateTrace()
	}
	req := newRequest(g.pending[:g.cfg.BatchSpans])
	g.pending = append(g.pending[:0:0], g.pending[g.cfg.BatchSpans:]...)
	return req
}

// nextExporter returns the next request of one instance's exporter: the
// first instance, in the order they were first seen, whose queue holds a
// batch once a trace has been generated.
func (g *Generator) nextExporter() Request {
	if g.queues == nil {
		g.queues = map[*instance][]genSpan{}
	}
	for {
		for _, inst := range g.order {
			if q := g.queues[inst]; len(q) >= g.cfg.BatchSpans {
				req := newRequest(q[:g.cfg.BatchSpans])
				g.queues[inst] = append(q[:0:0], q[g.cfg.BatchSpans:]...)
				return req
			}
		}
		g.generateTrace()
		for _, s := range g.pending {
			if _, ok := g.queues[s.inst]; !ok {
				g.order = append(g.order, s.inst)
			}
			g.queues[s.inst] = append(g.queues[s.inst], s)
		}
		g.pending = g.pending[:0]
	}
}

// newRequest encodes spans as a request.
func newRequest(batch []genSpan) Request {
	seen := map[[16]byte]bool{}
	var traces [][16]byte
	for _, s := range batch {
		id := [16]byte(s.span.TraceId)
		if !seen[id] {
			seen[id] = true
			traces = append(traces, id)
		}
	}
	return Request{Bytes: encode(batch), Spans: len(batch), Traces: traces}
}

// encode groups spans by resource instance and scope into an Export request.
func encode(spans []genSpan) []byte {
	req := &collectorpb.ExportTraceServiceRequest{}
	byInst := map[*instance]*tracepb.ResourceSpans{}
	byScope := map[*tracepb.ResourceSpans]map[string]*tracepb.ScopeSpans{}
	for _, s := range spans {
		rs := byInst[s.inst]
		if rs == nil {
			rs = &tracepb.ResourceSpans{Resource: s.inst.resource, SchemaUrl: "https://opentelemetry.io/schemas/1.26.0"}
			byInst[s.inst] = rs
			byScope[rs] = map[string]*tracepb.ScopeSpans{}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		scopeName := scopeFor(s.span)
		ss := byScope[rs][scopeName]
		if ss == nil {
			ss = &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: scopeName, Version: "0.52.0"}}
			byScope[rs][scopeName] = ss
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		ss.Spans = append(ss.Spans, s.span)
	}
	b, err := proto.Marshal(req)
	if err != nil {
		panic(fmt.Sprintf("encode workload request: %v", err))
	}
	return b
}

func scopeFor(s *tracepb.Span) string {
	switch {
	case hasAttr(s, "db.system"):
		return "go.opentelemetry.io/contrib/instrumentation/database/sql"
	case hasAttr(s, "messaging.system"):
		return "go.opentelemetry.io/contrib/instrumentation/github.com/IBM/sarama"
	case hasAttr(s, "rpc.system"):
		return "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	case hasAttr(s, "http.request.method"):
		return "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	}
	return "app"
}

func hasAttr(s *tracepb.Span, key string) bool {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return true
		}
	}
	return false
}

// trace generation

type traceBuilder struct {
	g      *Generator
	id     []byte
	spans  []genSpan
	budget int
	err    bool
}

func (g *Generator) generateTrace() {
	n := g.traceN
	g.traceN++
	start := g.cfg.Start.Add(time.Duration(float64(n) / g.cfg.TracesPerSecond * float64(time.Second)))
	tb := &traceBuilder{g: g, id: make([]byte, 16)}
	binary.BigEndian.PutUint64(tb.id[:8], g.rng.Uint64()|1)
	binary.BigEndian.PutUint64(tb.id[8:], g.rng.Uint64())
	// Long-tailed size: most traces are tens of spans, a few are hundreds.
	tb.budget = int(math.Min(2000, math.Exp(g.rng.NormFloat64()*0.9+3.0)))
	if g.cfg.LargeTraceEvery > 0 && n%g.cfg.LargeTraceEvery == g.cfg.LargeTraceEvery-1 {
		tb.budget = 10000 + g.rng.IntN(2000)
	}
	tb.err = g.rng.Float64() < 0.02
	entry := g.services[0]
	dur := time.Duration(math.Exp(g.rng.NormFloat64()*1.0+17.0)) + time.Millisecond // ~25ms median, long tail
	tb.serve(entry, nil, start.UnixNano(), dur.Nanoseconds(), 0)
	g.pending = append(g.pending, tb.spans...)
}

func (tb *traceBuilder) newSpanID() []byte {
	id := make([]byte, 8)
	binary.BigEndian.PutUint64(id, tb.g.rng.Uint64()|1)
	return id
}

// serve emits the server span of svc handling a request, then its downstream
// work, and returns the span.
func (tb *traceBuilder) serve(svc *service, parent []byte, start, dur int64, depth int) {
	rng := tb.g.rng
	inst := svc.instances[rng.IntN(len(svc.instances))]
	skew := inst.skew
	op := svc.ops[rng.IntN(len(svc.ops))]
	server := &tracepb.Span{
		TraceId:           tb.id,
		SpanId:            tb.newSpanID(),
		ParentSpanId:      parent,
		Name:              op.name,
		Kind:              op.kind,
		StartTimeUnixNano: uint64(start + skew),
		EndTimeUnixNano:   uint64(start + skew + dur),
		Attributes:        op.attrs(rng),
		Flags:             0x101,
	}
	if depth == 0 && rng.IntN(4) == 0 {
		server.TraceState = "vendor=" + fmt.Sprint(rng.IntN(100))
	}
	tb.spans = append(tb.spans, genSpan{inst, server})
	tb.budget--

	if rng.IntN(3) == 0 {
		tb.internal(inst, server.SpanId, start+dur/50, dur/10+1)
	}
	// Downstream calls, sequential within the parent's duration.
	calls := len(svc.calls)
	if calls == 0 || tb.budget <= 0 || depth > 8 {
		tb.finish(server, depth)
		return
	}
	cursor := start + dur/20
	for i := 0; tb.budget > 0 && i < 1+rng.IntN(2*calls+1); i++ {
		remaining := start + dur - cursor
		if remaining <= 1000 {
			break
		}
		callDur := remaining / int64(2+rng.IntN(3))
		down := svc.calls[rng.IntN(calls)]
		if down.db {
			tb.dbCall(inst, server.SpanId, cursor, callDur)
		} else if down.async {
			tb.produce(inst, server.SpanId, down.svc, cursor, callDur, depth)
		} else {
			client := &tracepb.Span{
				TraceId:           tb.id,
				SpanId:            tb.newSpanID(),
				ParentSpanId:      server.SpanId,
				Name:              down.svc.ops[0].name,
				Kind:              tracepb.Span_SPAN_KIND_CLIENT,
				StartTimeUnixNano: uint64(cursor + skew),
				EndTimeUnixNano:   uint64(cursor + skew + callDur),
				Attributes: []*commonpb.KeyValue{
					str("rpc.system", "grpc"), str("rpc.service", down.svc.name), str("rpc.method", down.svc.ops[0].name),
					str("server.address", down.svc.name), integer("server.port", 8080),
				},
			}
			tb.spans = append(tb.spans, genSpan{inst, client})
			tb.budget--
			tb.serve(down.svc, client.SpanId, cursor+callDur/20, callDur*9/10, depth+1)
		}
		cursor += callDur + callDur/10
	}
	// Huge traces fan out wide at the root until their budget is spent.
	for depth == 0 && tb.budget > 0 {
		tb.dbCall(inst, server.SpanId, start+int64(rng.IntN(int(max(dur, 1)))), int64(rng.IntN(1_000_000)+1000))
	}
	tb.finish(server, depth)
}

func (tb *traceBuilder) finish(s *tracepb.Span, depth int) {
	if tb.err && depth == 0 {
		s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "upstream request failed"}
		s.Events = append(s.Events, &tracepb.Span_Event{
			TimeUnixNano: s.EndTimeUnixNano - 1000,
			Name:         "exception",
			Attributes: []*commonpb.KeyValue{
				str("exception.type", "*errors.errorString"),
				str("exception.message", "context deadline exceeded"),
				str("exception.stacktrace", "goroutine 1 [running]:\nmain.handle()\n\t/app/main.go:42 +0x1d"),
			},
		})
		return
	}
	if tb.g.rng.IntN(10) == 0 {
		s.Events = append(s.Events, &tracepb.Span_Event{
			TimeUnixNano: s.StartTimeUnixNano + (s.EndTimeUnixNano-s.StartTimeUnixNano)/2,
			Name:         "cache.miss",
			Attributes:   []*commonpb.KeyValue{str("cache.key", fmt.Sprintf("product:%d", tb.g.rng.IntN(50000)))},
		})
	}
}

// internal emits in-process work of a handler, such as validation.
func (tb *traceBuilder) internal(inst *instance, parent []byte, start, dur int64) {
	fn := internalFuncs[tb.g.rng.IntN(len(internalFuncs))]
	s := &tracepb.Span{
		TraceId:           tb.id,
		SpanId:            tb.newSpanID(),
		ParentSpanId:      parent,
		Name:              fn,
		Kind:              tracepb.Span_SPAN_KIND_INTERNAL,
		StartTimeUnixNano: uint64(start + inst.skew),
		EndTimeUnixNano:   uint64(start + inst.skew + dur),
		Attributes:        []*commonpb.KeyValue{str("code.function", fn), str("code.namespace", "main")},
	}
	tb.spans = append(tb.spans, genSpan{inst, s})
	tb.budget--
}

var internalFuncs = []string{"validateRequest", "loadConfig", "renderResponse", "computePrice"}

func (tb *traceBuilder) dbCall(inst *instance, parent []byte, start, dur int64) {
	rng := tb.g.rng
	table := tables[rng.IntN(len(tables))]
	stmt := fmt.Sprintf("SELECT id, name, price, stock FROM %s WHERE id = %d AND tenant_id = %d", table, rng.IntN(1_000_000), rng.IntN(500))
	s := &tracepb.Span{
		TraceId:           tb.id,
		SpanId:            tb.newSpanID(),
		ParentSpanId:      parent,
		Name:              "SELECT " + table,
		Kind:              tracepb.Span_SPAN_KIND_CLIENT,
		StartTimeUnixNano: uint64(start + inst.skew),
		EndTimeUnixNano:   uint64(start + inst.skew + dur),
		Attributes: []*commonpb.KeyValue{
			str("db.system", "postgresql"), str("db.name", "shop"), str("db.statement", stmt),
			str("db.operation", "SELECT"), str("server.address", "postgres.shop.svc"), integer("server.port", 5432),
		},
	}
	tb.spans = append(tb.spans, genSpan{inst, s})
	tb.budget--
}

func (tb *traceBuilder) produce(inst *instance, parent []byte, consumer *service, start, dur int64, depth int) {
	rng := tb.g.rng
	p := &tracepb.Span{
		TraceId:           tb.id,
		SpanId:            tb.newSpanID(),
		ParentSpanId:      parent,
		Name:              "orders publish",
		Kind:              tracepb.Span_SPAN_KIND_PRODUCER,
		StartTimeUnixNano: uint64(start + inst.skew),
		EndTimeUnixNano:   uint64(start + inst.skew + dur/10 + 1),
		Attributes: []*commonpb.KeyValue{
			str("messaging.system", "kafka"), str("messaging.destination.name", "orders"),
			str("messaging.operation", "publish"), integer("messaging.kafka.destination.partition", int64(rng.IntN(12))),
		},
	}
	tb.spans = append(tb.spans, genSpan{inst, p})
	tb.budget--
	cinst := consumer.instances[rng.IntN(len(consumer.instances))]
	c := &tracepb.Span{
		TraceId:           tb.id,
		SpanId:            tb.newSpanID(),
		ParentSpanId:      p.SpanId,
		Name:              "orders process",
		Kind:              tracepb.Span_SPAN_KIND_CONSUMER,
		StartTimeUnixNano: uint64(start + dur/5 + cinst.skew),
		EndTimeUnixNano:   uint64(start + dur + cinst.skew),
		Attributes: []*commonpb.KeyValue{
			str("messaging.system", "kafka"), str("messaging.destination.name", "orders"),
			str("messaging.operation", "process"), str("messaging.kafka.consumer.group", consumer.name),
		},
		Links: []*tracepb.Span_Link{{TraceId: tb.id, SpanId: p.SpanId, Flags: 0x101}},
	}
	tb.spans = append(tb.spans, genSpan{cinst, c})
	tb.budget--
	if tb.budget > 0 && depth < 8 {
		tb.dbCall(cinst, c.SpanId, start+dur/4, dur/2)
	}
}

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func integer(k string, v int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
}

var tables = []string{"products", "orders", "users", "carts", "payments", "inventory", "shipments"}

// Service is a service of the workload and the names of its server
// operations, from which benchmarks draw search queries.
type Service struct {
	Name       string
	Operations []string
}

// Services lists the workload's services.
func (g *Generator) Services() []Service {
	out := make([]Service, 0, len(g.services))
	for _, s := range g.services {
		svc := Service{Name: s.name}
		for _, op := range s.ops {
			svc.Operations = append(svc.Operations, op.name)
		}
		out = append(out, svc)
	}
	return out
}
