package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/access"
	"cairn/internal/freelist"
	"cairn/internal/rawcodec"
	"cairn/query/analysispb"
	"cairn/query/jaegerpb"
)

// visibilityTimeout is how long a probe waits for an acknowledged span to
// become readable before it is counted as lost.
const visibilityTimeout = 30 * time.Second

// sizeClasses group traces by span count for trace-read latencies, with
// cairn's goal for the p99 of each, where it has one, and how often a
// trace of the class is read while the target is busy: in all, with a
// search of each shape every searchEvery, the reads take the target about
// a tenth of a CPU, as a few people browsing traces would. Large traces
// and searches, which take milliseconds and megabytes each, are read the
// least often.
var sizeClasses = []struct {
	name        string
	lo, hi      int
	targetP99Ms float64
	every       time.Duration
}{
	{"1-10 spans", 1, 10, 2, 20 * time.Millisecond},
	{"11-200 spans", 11, 200, 2, 20 * time.Millisecond},
	{"201-9999 spans", 201, 9999, 0, 50 * time.Millisecond},
	{"10000+ spans", 10000, int(^uint(0) >> 1), 50, time.Second},
}

// searchTargetP99Ms is cairn's goal for the p99 of every search shape.
const searchTargetP99Ms = 20

// searchEvery is how often a search of each shape is made while the target
// is busy.
const searchEvery = 500 * time.Millisecond

// reader times reads from a jaeger.storage.v2 endpoint. Responses are
// received encoded, so that the timings are the server's and the network's,
// not the client's decoding, and the timed reads that keep none of them
// receive them into buffers kept from one read to the next; a search's
// timing includes finding the trace ID at the head of each chunk.
type reader struct {
	conn *grpc.ClientConn
	bufs *freelist.List[*rawcodec.Reused]
}

func newReader(addr string, c access.Client) (*reader, error) {
	opts, err := c.DialOptions()
	if err != nil {
		return nil, fmt.Errorf("reader: %w", err)
	}
	conn, err := grpc.NewClient(addr, append(opts,
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawcodec.Codec{}), grpc.MaxCallRecvMsgSize(64<<20)))...)
	if err != nil {
		return nil, fmt.Errorf("dial reader %s: %w", addr, err)
	}
	return &reader{conn: conn, bufs: freelist.New[*rawcodec.Reused](2, func(b *rawcodec.Reused) bool { return cap(b.B) <= maxKeptMessage })}, nil
}

func (r *reader) close() { r.conn.Close() }

// services calls GetServices, which every reader answers cheaply.
func (r *reader) services(ctx context.Context) error {
	var resp rawcodec.Message
	return r.conn.Invoke(ctx, jaegerpb.TraceReader_GetServices_FullMethodName, &jaegerpb.GetServicesRequest{}, &resp)
}

// stream calls a server-streaming method and returns every message.
func (r *reader) stream(ctx context.Context, method string, req proto.Message) ([][]byte, error) {
	var (
		out [][]byte
		m   rawcodec.Message // each message received is a copy of its own
	)
	if err := r.recv(ctx, method, req, &m, func() { out = append(out, m) }); err != nil {
		return nil, err
	}
	return out, nil
}

// maxKeptMessage bounds the receive buffers a reader keeps.
const maxKeptMessage = 8 << 20

// each calls a server-streaming method and passes every message to fn, if
// not nil; a message is valid only until fn returns.
func (r *reader) each(ctx context.Context, method string, req proto.Message, fn func([]byte)) error {
	buf, ok := r.bufs.Get()
	if !ok {
		buf = new(rawcodec.Reused)
	}
	defer r.bufs.Put(buf)
	return r.recv(ctx, method, req, buf, func() {
		if fn != nil {
			fn(buf.B)
		}
	})
}

// recv calls a server-streaming method, receiving each message into m and
// then calling got, until the stream ends.
func (r *reader) recv(ctx context.Context, method string, req proto.Message, m any, got func()) error {
	st, err := r.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
	if err != nil {
		return err
	}
	if err := st.SendMsg(req); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	for {
		err := st.RecvMsg(m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		got()
	}
}

func getTraceRequest(id [16]byte) *jaegerpb.GetTracesRequest {
	return &jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: id[:]}}}
}

func (r *reader) getTrace(ctx context.Context, id [16]byte) ([][]byte, error) {
	return r.stream(ctx, jaegerpb.TraceReader_GetTraces_FullMethodName, getTraceRequest(id))
}

// spansOf decodes chunks and returns the span IDs of trace id in them.
func spansOf(chunks [][]byte, id [16]byte) (map[[8]byte]bool, error) {
	ids := map[[8]byte]bool{}
	for _, c := range chunks {
		var td tracepb.TracesData
		if err := proto.Unmarshal(c, &td); err != nil {
			return nil, fmt.Errorf("decode trace chunk: %w", err)
		}
		for _, rs := range td.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					if [16]byte(s.TraceId) == id && len(s.SpanId) == 8 {
						ids[[8]byte(s.SpanId)] = true
					}
				}
			}
		}
	}
	return ids, nil
}

// probeVisibility, every 200 ms until stop closes, takes the latest
// acknowledged request and measures how long after its acknowledgement its
// last span can be read.
func (r *reader) probeVisibility(ctx context.Context, s *sender, stop <-chan struct{}) []time.Duration {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lags []time.Duration
	last := int64(-1)
	for {
		select {
		case <-stop:
			return lags
		case <-ctx.Done():
			return lags
		case <-tick.C:
		}
		seq, at := s.latestAck()
		if seq <= last {
			continue
		}
		last = seq
		p := s.pool.Probe(uint64(seq))
		for ctx.Err() == nil {
			chunks, err := r.getTrace(ctx, p.TraceID)
			if err == nil {
				ids, err := spansOf(chunks, p.TraceID)
				if err == nil && ids[p.SpanID] {
					lags = append(lags, time.Since(at))
					break
				}
			}
			if time.Since(at) > visibilityTimeout {
				lags = append(lags, time.Since(at))
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// pick is a trace of some round that was sent whole.
type pick struct {
	id    [16]byte
	spans int
}

// sampler draws traces of a size class at random from those sent whole:
// any pool trace of the class, in any round that was sent whole, so that
// reads reach back into blocks cut long ago as well as into the live
// buffer. A trace any of whose requests was not acknowledged whole is
// never drawn: reading it back would measure what the target refused.
type sampler struct {
	pool     *Pool
	perRound uint64
	byClass  [][]int // indices into pool.traces, by size class, by Last
	unacked  *unacked
}

func newSampler(pool *Pool, u *unacked) *sampler {
	s := &sampler{pool: pool, perRound: uint64(pool.Requests()), byClass: make([][]int, len(sizeClasses)), unacked: u}
	for i, t := range pool.traces {
		for c, class := range sizeClasses {
			if t.Spans >= class.lo && t.Spans <= class.hi {
				s.byClass[c] = append(s.byClass[c], i)
			}
		}
	}
	for _, traces := range s.byClass {
		slices.SortStableFunc(traces, func(a, b int) int { return pool.traces[a].Last - pool.traces[b].Last })
	}
	return s
}

// unacked records the requests that were sent but not acknowledged whole:
// refused, cut short by the end of the run, or acknowledged with spans
// rejected.
type unacked struct {
	mu   sync.Mutex
	seqs map[uint64]bool
}

func (u *unacked) add(seq uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seqs == nil {
		u.seqs = map[uint64]bool{}
	}
	u.seqs[seq] = true
}

// any reports whether a request from lo to hi was not acknowledged whole.
// A nil unacked holds none.
func (u *unacked) any(lo, hi uint64) bool {
	if u == nil {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seqs) == 0 {
		return false
	}
	for seq := lo; seq <= hi; seq++ {
		if u.seqs[seq] {
			return true
		}
	}
	return false
}

// fullRounds returns how many rounds of t were sent whole when the first
// sent requests were.
func (s *sampler) fullRounds(t PoolTrace, sent uint64) uint64 {
	full := (sent + s.perRound - 1) / s.perRound
	if full > 0 && (full-1)*s.perRound+uint64(t.Last) >= sent {
		full--
	}
	return full
}

// pick returns a random trace of class c among those the first sent
// requests held whole, or false if it finds none.
func (s *sampler) pick(rng *rand.Rand, c int, sent uint64) (pick, bool) {
	traces := s.byClass[c]
	if sent < s.perRound {
		// In the first round only the traces whose last request was sent
		// are whole: those first in Last order.
		traces = traces[:sort.Search(len(traces), func(i int) bool { return uint64(s.pool.traces[traces[i]].Last) >= sent })]
	}
	if len(traces) == 0 {
		return pick{}, false
	}
	// Late in a round, the traces of its last requests are whole one round
	// fewer times, and some requests may not have been acknowledged: a few
	// tries find a trace often enough.
	for range 8 {
		t := s.pool.traces[traces[rng.IntN(len(traces))]]
		full := s.fullRounds(t, sent)
		if full == 0 {
			continue
		}
		round := rng.Uint64N(full)
		if s.unacked.any(round*s.perRound+uint64(t.First), round*s.perRound+uint64(t.Last)) {
			continue
		}
		return pick{TraceIDIn(t.ID, round), t.Spans}, true
	}
	return pick{}, false
}

// count returns how many traces of class c the first sent requests held
// whole.
func (s *sampler) count(c int, sent uint64) uint64 {
	n := uint64(0)
	for _, i := range s.byClass[c] {
		n += s.fullRounds(s.pool.traces[i], sent)
	}
	return n
}

// measure times trace reads by size class, each of a trace drawn at random,
// checks that the traces read are complete, and times searches: the
// settled phase, with nothing else running.
//
// While it times reads, it lets its process's heap grow to nine times what is
// live (GOGC 800): the live heap is then a few MiB, and the default would
// collect every few reads and time the client's collector along with the
// server.
func (r *reader) measure(ctx context.Context, o Options, pool *Pool, sent uint64, u *unacked, rep *Report) error {
	defer debug.SetGCPercent(debug.SetGCPercent(800))
	rng := rand.New(rand.NewPCG(o.Seed, 0xbe7c4))
	s := newSampler(pool, u)
	var (
		largest      pick
		largestTimes []time.Duration
	)
	for c, class := range sizeClasses {
		n := o.Queries
		if class.lo >= 10000 {
			n = int(min(uint64(n), 10*s.count(c, sent)))
		}
		var times []time.Duration
		read := map[[16]byte]bool{}
		for q := range n {
			p, ok := s.pick(rng, c, sent)
			if !ok {
				continue // none whole, or a few draws met unacknowledged requests
			}
			t := time.Now()
			chunks, err := r.getTrace(ctx, p.id)
			d := time.Since(t)
			if err != nil {
				return fmt.Errorf("get trace %x: %w", p.id, err)
			}
			times = append(times, d)
			read[p.id] = true
			if q < completenessChecks {
				ids, err := spansOf(chunks, p.id)
				if err != nil {
					return err
				}
				rep.TracesChecked++
				if len(ids) == p.spans {
					rep.TracesComplete++
				}
			}
			if p.spans > largest.spans {
				largest, largestTimes = p, nil
			}
			if p.id == largest.id {
				largestTimes = append(largestTimes, d)
			}
		}
		if len(times) == 0 {
			continue
		}
		rep.GetTraces = append(rep.GetTraces, traceReads(c, len(read), times))
		rep.readLatencies = append(rep.readLatencies, times...)
	}
	if rep.TracesChecked > 0 {
		rep.CompleteFraction = float64(rep.TracesComplete) / float64(rep.TracesChecked)
	}
	if largest.spans > 0 {
		rep.LargestTraceSpans = largest.spans
		rep.LargestTraceMs, _, _ = percentiles(largestTimes)
	}
	if err := r.search(ctx, o, pool, sent, rep, rng); err != nil {
		return err
	}
	if err := r.spanMetrics(ctx, o, pool, sent, rep, rng); err != nil {
		return err
	}
	return r.dependencies(ctx, o, pool, sent, rep)
}

// dependencies times jaeger.storage.v2 GetDependencies over the day up to
// the end of the run's window, as the Jaeger UI's System Architecture page
// asks by default. A reader that does not serve it is passed over.
func (r *reader) dependencies(ctx context.Context, o Options, pool *Pool, sent uint64, rep *Report) error {
	_, to := pool.Window(sent)
	req := &jaegerpb.GetDependenciesRequest{StartTime: timestamppb.New(to.Add(-24 * time.Hour)), EndTime: timestamppb.New(to)}
	var err error
	rep.Dependencies, err = r.timeCalls(ctx, o.Queries, jaegerpb.DependencyReader_GetDependencies_FullMethodName, "dependencies", "dependencies, 24 h",
		func() proto.Message { return req })
	return err
}

// spanMetrics times cairn.analysis.v1 GetSpanMetrics over the hour up to
// the end of the run's window, at one-minute steps: of a random service,
// and of every service's servers and consumers by service, as the web UI's
// services page asks. A reader that does not serve it, not being cairn, is
// passed over.
func (r *reader) spanMetrics(ctx context.Context, o Options, pool *Pool, sent uint64, rep *Report, rng *rand.Rand) error {
	_, to := pool.Window(sent)
	window := func(req *analysispb.GetSpanMetricsRequest) *analysispb.GetSpanMetricsRequest {
		req.StartTime, req.EndTime, req.Step = timestamppb.New(to.Add(-time.Hour)), timestamppb.New(to), durationpb.New(time.Minute)
		return req
	}
	var err error
	rep.SpanMetrics, err = r.timeCalls(ctx, o.Queries, analysispb.Analysis_GetSpanMetrics_FullMethodName, "span metrics", "one service, 1 h at 1 min",
		func() proto.Message {
			return window(&analysispb.GetSpanMetricsRequest{Service: pool.services[rng.IntN(len(pool.services))].Name})
		})
	if err != nil || rep.SpanMetrics == nil {
		return err
	}
	byService := window(&analysispb.GetSpanMetricsRequest{ByService: true,
		SpanKinds: []analysispb.SpanKind{analysispb.SpanKind_SPAN_KIND_SERVER, analysispb.SpanKind_SPAN_KIND_CONSUMER}})
	rep.SpanMetricsByService, err = r.timeCalls(ctx, o.Queries, analysispb.Analysis_GetSpanMetrics_FullMethodName, "span metrics", "by service, 1 h at 1 min",
		func() proto.Message { return byService })
	return err
}

// timeCalls times n calls of a unary method, each with the request next
// returns, and reports them under shape; nil if the reader does not serve
// the method. what names the method in an error.
func (r *reader) timeCalls(ctx context.Context, n int, method, what, shape string, next func() proto.Message) (*SearchReport, error) {
	var times []time.Duration
	for range n {
		req := next()
		var resp rawcodec.Message
		t := time.Now()
		err := r.conn.Invoke(ctx, method, req, &resp)
		d := time.Since(t)
		if status.Code(err) == codes.Unimplemented {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		times = append(times, d)
	}
	sr := SearchReport{Shape: shape, Queries: len(times), TargetP99Ms: searchTargetP99Ms}
	sr.P50Ms, sr.P99Ms, sr.MaxMs = percentiles(times)
	return &sr, nil
}

// completenessChecks is how many of the settled reads of each size class
// are checked for every span of their trace.
const completenessChecks = 100

func traceReads(class, traces int, times []time.Duration) TraceReadReport {
	c := sizeClasses[class]
	tr := TraceReadReport{Class: c.name, Traces: traces, Queries: len(times), TargetP99Ms: c.targetP99Ms}
	tr.P50Ms, tr.P99Ms, tr.MaxMs = percentiles(times)
	return tr
}

// searchShapes are the searches timed, each drawing its parameters from the
// workload.
var searchShapes = []struct {
	name  string
	query func(rng *rand.Rand, svcs []Service) *jaegerpb.TraceQueryParameters
}{
	{"service", func(rng *rand.Rand, svcs []Service) *jaegerpb.TraceQueryParameters {
		return &jaegerpb.TraceQueryParameters{ServiceName: svcs[rng.IntN(len(svcs))].Name}
	}},
	{"service+operation", func(rng *rand.Rand, svcs []Service) *jaegerpb.TraceQueryParameters {
		s := svcs[rng.IntN(len(svcs))]
		return &jaegerpb.TraceQueryParameters{ServiceName: s.Name, OperationName: s.Operations[rng.IntN(len(s.Operations))]}
	}},
	{"service+attribute", func(rng *rand.Rand, svcs []Service) *jaegerpb.TraceQueryParameters {
		s := svcs[rng.IntN(len(svcs))]
		if s.Name == "frontend" {
			return &jaegerpb.TraceQueryParameters{ServiceName: s.Name, Attributes: []*jaegerpb.KeyValue{
				{Key: "http.response.status_code", Value: &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_IntValue{IntValue: 404}}}}}
		}
		return &jaegerpb.TraceQueryParameters{ServiceName: s.Name, Attributes: []*jaegerpb.KeyValue{
			{Key: "app.cache.hit", Value: &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_BoolValue{BoolValue: true}}}}}
	}},
	{"service+min-duration", func(rng *rand.Rand, svcs []Service) *jaegerpb.TraceQueryParameters {
		return &jaegerpb.TraceQueryParameters{ServiceName: svcs[rng.IntN(len(svcs))].Name,
			DurationMin: durationpb.New(20 * time.Millisecond)}
	}},
}

// search times FindTraces, which returns whole traces as the Jaeger UI asks
// for them, 20 at most, over the run's time window.
func (r *reader) search(ctx context.Context, o Options, pool *Pool, sent uint64, rep *Report, rng *rand.Rand) error {
	for i := range searchShapes {
		var times []time.Duration
		found := 0
		for range o.Queries {
			d, n, err := r.searchOnce(ctx, i, pool, sent, rng)
			if err != nil {
				return err
			}
			times = append(times, d)
			found += n
		}
		rep.Searches = append(rep.Searches, searchReads(i, found, times))
	}
	return nil
}

// searchOnce times a search of shape i over the time window of the first
// sent requests, and returns how many traces it found.
func (r *reader) searchOnce(ctx context.Context, i int, pool *Pool, sent uint64, rng *rand.Rand) (time.Duration, int, error) {
	from, to := pool.Window(sent)
	q := searchShapes[i].query(rng, pool.services)
	q.StartTimeMin, q.StartTimeMax, q.SearchDepth = timestamppb.New(from), timestamppb.New(to), 20
	var traces traceCounter
	t := time.Now()
	err := r.each(ctx, jaegerpb.TraceReader_FindTraces_FullMethodName, &jaegerpb.FindTracesRequest{Query: q}, traces.add)
	d := time.Since(t)
	if err != nil {
		return 0, 0, fmt.Errorf("search %s: %w", searchShapes[i].name, err)
	}
	return d, traces.n, nil
}

func searchReads(shape, found int, times []time.Duration) SearchReport {
	sr := SearchReport{Shape: searchShapes[shape].name, Queries: len(times), TargetP99Ms: searchTargetP99Ms}
	if len(times) > 0 {
		sr.MeanTraces = float64(found) / float64(len(times))
	}
	sr.P50Ms, sr.P99Ms, sr.MaxMs = percentiles(times)
	return sr
}

// traceCounter counts the distinct traces in FindTraces chunks; a chunk
// never mixes traces, so counting changes of trace is enough. Only the
// first span of each chunk is looked at: decoding whole chunks took a
// quarter of the bench's CPU while it timed reads beside the target.
type traceCounter struct {
	n    int
	last []byte // the trace ID of the chunk before
}

func (c *traceCounter) add(chunk []byte) {
	id := firstTraceID(chunk)
	if id == nil || bytes.Equal(id, c.last) {
		return
	}
	c.n++
	c.last = append(c.last[:0], id...)
}

// firstTraceID returns the trace ID of the first span of an encoded
// TracesData, or nil if it has none. Unlike a protobuf decoder it takes the
// first of repeated fields and ignores what follows them; cairn's chunks
// repeat none.
func firstTraceID(b []byte) []byte {
	// TracesData.resource_spans, ResourceSpans.scope_spans, ScopeSpans.spans,
	// Span.trace_id.
	for _, field := range []protowire.Number{1, 2, 2, 1} {
		if b = firstField(b, field); b == nil {
			return nil
		}
	}
	return b
}

// firstField returns the first length-delimited field numbered num of an
// encoded message, or nil if there is none or the message is malformed
// before it.
func firstField(msg []byte, num protowire.Number) []byte {
	var v []byte
	err := eachField(msg, 0, len(msg), func(n protowire.Number, typ protowire.Type, start, end int) error {
		if n == num && typ == protowire.BytesType {
			v = msg[start:end]
			return errFieldFound
		}
		return nil
	})
	if err != errFieldFound {
		return nil
	}
	return v
}

// errFieldFound stops eachField at the field firstField looks for.
var errFieldFound = errors.New("field found")

// timedRead is a read made while the target was busy.
type timedRead struct {
	at    time.Time
	d     time.Duration
	id    [16]byte // of the trace read; zero for a search
	found int      // traces a search found
}

// background reads traces and searches while the target does other work:
// each size class and search shape at its own pace, with exponentially
// distributed gaps, so that reads arrive at any moment of what the target
// does, as users' do, rather than in step with it. One goroutine makes
// them all, one at a time, as one person browsing would: reads made
// at once would each hold their trace's megabytes at the same moment.
type background struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	traces   [][]timedRead // by size class
	searches [][]timedRead // by search shape
	failed   int
	firstErr error
}

// readKind is one size class or search shape that background reads: it
// reads one, or reports false if there is none to read yet.
type readKind struct {
	every time.Duration
	out   *[]timedRead
	read  func(*rand.Rand) (timedRead, bool, error)
}

// readInBackground starts reading what the first sent() requests held,
// until finish is called.
func (r *reader) readInBackground(ctx context.Context, seed uint64, pool *Pool, sent func() uint64, u *unacked) *background {
	b := &background{stop: make(chan struct{}), traces: make([][]timedRead, len(sizeClasses)),
		searches: make([][]timedRead, len(searchShapes))}
	s := newSampler(pool, u)
	var kinds []readKind
	for c, class := range sizeClasses {
		kinds = append(kinds, readKind{class.every, &b.traces[c], func(rng *rand.Rand) (timedRead, bool, error) {
			p, ok := s.pick(rng, c, sent())
			if !ok {
				return timedRead{}, false, nil
			}
			t := time.Now()
			err := r.each(ctx, jaegerpb.TraceReader_GetTraces_FullMethodName, getTraceRequest(p.id), nil)
			return timedRead{at: t, d: time.Since(t), id: p.id}, true, err
		}})
	}
	for i := range searchShapes {
		kinds = append(kinds, readKind{searchEvery, &b.searches[i], func(rng *rand.Rand) (timedRead, bool, error) {
			n := sent()
			if n == 0 {
				return timedRead{}, false, nil
			}
			t := time.Now()
			d, found, err := r.searchOnce(ctx, i, pool, n, rng)
			return timedRead{at: t, d: d, found: found}, true, err
		}})
	}
	rng := rand.New(rand.NewPCG(seed, 0xb5ead))
	b.wg.Go(func() { b.loop(rng, kinds) })
	return b
}

// loop makes the reads of every kind, each due after a random gap of
// every on average, until stop.
func (b *background) loop(rng *rand.Rand, kinds []readKind) {
	gap := func(k readKind) time.Duration { return time.Duration(rng.ExpFloat64() * float64(k.every)) }
	next := make([]time.Time, len(kinds))
	for i, k := range kinds {
		next[i] = time.Now().Add(gap(k))
	}
	for {
		i := 0
		for j := range next {
			if next[j].Before(next[i]) {
				i = j
			}
		}
		select {
		case <-b.stop:
			return
		case <-time.After(time.Until(next[i])):
		}
		tr, ok, err := kinds[i].read(rng)
		switch {
		case err != nil:
			b.failed++
			if b.firstErr == nil {
				b.firstErr = err
			}
		case ok:
			*kinds[i].out = append(*kinds[i].out, tr)
		}
		// A read that took longer than the gap delays the next of its kind,
		// rather than piling reads up behind it.
		next[i] = next[i].Add(gap(kinds[i]))
		if now := time.Now(); next[i].Before(now) {
			next[i] = now
		}
	}
}

// finish stops reading and reports the reads that started in [from,
// to); start is when sending started, which the phase's bounds count from.
func (b *background) finish(start, from, to time.Time) *PhaseReads {
	close(b.stop)
	b.wg.Wait()
	ph := &PhaseReads{FromSec: from.Sub(start).Seconds(), ToSec: to.Sub(start).Seconds(), Failed: b.failed}
	if b.firstErr != nil {
		ph.FirstError = b.firstErr.Error()
	}
	within := func(reads []timedRead) ([]time.Duration, map[[16]byte]bool, int) {
		var times []time.Duration
		ids := map[[16]byte]bool{}
		found := 0
		for _, r := range reads {
			if !r.at.Before(from) && r.at.Before(to) {
				times = append(times, r.d)
				ids[r.id] = true
				found += r.found
			}
		}
		return times, ids, found
	}
	for c, reads := range b.traces {
		if times, ids, _ := within(reads); len(times) > 0 {
			ph.GetTraces = append(ph.GetTraces, traceReads(c, len(ids), times))
		}
	}
	for i, reads := range b.searches {
		if times, _, found := within(reads); len(times) > 0 {
			ph.Searches = append(ph.Searches, searchReads(i, found, times))
		}
	}
	return ph
}

// percentiles returns the 50th and 99th percentiles and the maximum, in
// milliseconds.
func percentiles(ds []time.Duration) (p50, p99, max float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Sorted(slices.Values(ds))
	at := func(q float64) float64 {
		return float64(s[min(len(s)-1, int(q*float64(len(s))))]) / 1e6
	}
	return at(0.50), at(0.99), float64(s[len(s)-1]) / 1e6
}
