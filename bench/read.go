package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/access"
	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
)

// visibilityTimeout is how long a probe waits for an acknowledged span to
// become readable before it is counted as lost.
const visibilityTimeout = 30 * time.Second

// sizeClasses group traces by span count for trace-read latencies, with
// cairn's goal for the p99 of each, where it has one.
var sizeClasses = []struct {
	name        string
	lo, hi      int
	targetP99Ms float64
}{
	{"1-10 spans", 1, 10, 2},
	{"11-200 spans", 11, 200, 2},
	{"201-9999 spans", 201, 9999, 0},
	{"10000+ spans", 10000, int(^uint(0) >> 1), 50},
}

// searchTargetP99Ms is cairn's goal for the p99 of every search shape.
const searchTargetP99Ms = 20

// reader times reads from a jaeger.storage.v2 endpoint. Responses are
// received encoded, so that the timings are the server's and the network's,
// not the client's decoding.
type reader struct {
	conn *grpc.ClientConn
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
	return &reader{conn: conn}, nil
}

func (r *reader) close() { r.conn.Close() }

// services calls GetServices, which every reader answers cheaply.
func (r *reader) services(ctx context.Context) error {
	var resp rawcodec.Message
	return r.conn.Invoke(ctx, jaegerpb.TraceReader_GetServices_FullMethodName, &jaegerpb.GetServicesRequest{}, &resp)
}

// stream calls a server-streaming method and returns every message.
func (r *reader) stream(ctx context.Context, method string, req proto.Message) ([][]byte, error) {
	st, err := r.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(req); err != nil {
		return nil, err
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	var out [][]byte
	for {
		var m rawcodec.Message
		err := st.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
}

func (r *reader) getTrace(ctx context.Context, id [16]byte) ([][]byte, error) {
	return r.stream(ctx, jaegerpb.TraceReader_GetTraces_FullMethodName,
		&jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: id[:]}}})
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

// measure times trace reads by size class, checks that the traces read are
// complete, and times searches.
//
// While it times reads, it lets its process's heap grow to nine times what is
// live (GOGC 800): the live heap is then a few MiB, and the default would
// collect every few reads and time the client's collector along with the
// server.
func (r *reader) measure(ctx context.Context, o Options, pool *Pool, sent uint64, rep *Report) error {
	defer debug.SetGCPercent(debug.SetGCPercent(800))
	rng := rand.New(rand.NewPCG(o.Seed, 0xbe7c4))
	perRound := uint64(pool.Requests())
	rounds := (sent + perRound - 1) / perRound
	// sentRound returns a random round in which the trace was sent whole.
	sentRound := func(t PoolTrace) (uint64, bool) {
		full := rounds
		if full > 0 && (full-1)*perRound+uint64(t.Last) >= sent {
			full--
		}
		if full == 0 {
			return 0, false
		}
		return rng.Uint64N(full), true
	}

	largest := pick{}
	var largestTimes []time.Duration
	for _, c := range sizeClasses {
		var picks []pick
		for _, i := range rng.Perm(len(pool.traces)) {
			t := pool.traces[i]
			if t.Spans < c.lo || t.Spans > c.hi {
				continue
			}
			round, ok := sentRound(t)
			if !ok {
				continue
			}
			picks = append(picks, pick{TraceIDIn(t.ID, round), t.Spans})
			if len(picks) == 100 {
				break
			}
		}
		if len(picks) == 0 {
			continue
		}
		n := o.Queries
		if c.lo >= 10000 {
			n = min(n, 10*len(picks))
		}
		// Classes ascend, so the largest pick of the last class read is the
		// largest trace.
		biggest := slices.MaxFunc(picks, func(a, b pick) int { return cmp.Compare(a.spans, b.spans) })
		var biggestTimes []time.Duration
		var times []time.Duration
		for q := range n {
			p := picks[q%len(picks)]
			t := time.Now()
			chunks, err := r.getTrace(ctx, p.id)
			d := time.Since(t)
			if err != nil {
				return fmt.Errorf("get trace %x: %w", p.id, err)
			}
			times = append(times, d)
			if q < len(picks) {
				ids, err := spansOf(chunks, p.id)
				if err != nil {
					return err
				}
				rep.TracesChecked++
				if len(ids) == p.spans {
					rep.TracesComplete++
				}
			}
			if p.id == biggest.id {
				biggestTimes = append(biggestTimes, d)
			}
		}
		largest, largestTimes = biggest, biggestTimes
		cr := TraceReadReport{Class: c.name, Traces: len(picks), Queries: len(times), TargetP99Ms: c.targetP99Ms}
		cr.P50Ms, cr.P99Ms, cr.MaxMs = percentiles(times)
		rep.GetTraces = append(rep.GetTraces, cr)
		rep.readLatencies = append(rep.readLatencies, times...)
	}
	if rep.TracesChecked > 0 {
		rep.CompleteFraction = float64(rep.TracesComplete) / float64(rep.TracesChecked)
	}
	if largest.spans > 0 {
		rep.LargestTraceSpans = largest.spans
		rep.LargestTraceMs, _, _ = percentiles(largestTimes)
	}
	return r.search(ctx, o, pool, sent, rep, rng)
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
	from, to := pool.Window(sent)
	for _, shape := range searchShapes {
		var times []time.Duration
		found := 0
		for range o.Queries {
			q := shape.query(rng, pool.services)
			q.StartTimeMin, q.StartTimeMax, q.SearchDepth = timestamppb.New(from), timestamppb.New(to), 20
			t := time.Now()
			chunks, err := r.stream(ctx, jaegerpb.TraceReader_FindTraces_FullMethodName, &jaegerpb.FindTracesRequest{Query: q})
			d := time.Since(t)
			if err != nil {
				return fmt.Errorf("search %s: %w", shape.name, err)
			}
			times = append(times, d)
			found += tracesIn(chunks)
		}
		sr := SearchReport{Shape: shape.name, Queries: len(times), MeanTraces: float64(found) / float64(len(times)),
			TargetP99Ms: searchTargetP99Ms}
		sr.P50Ms, sr.P99Ms, sr.MaxMs = percentiles(times)
		rep.Searches = append(rep.Searches, sr)
	}
	return nil
}

// tracesIn counts the distinct traces in FindTraces chunks; a chunk never
// mixes traces, so counting changes of trace is enough.
func tracesIn(chunks [][]byte) int {
	n := 0
	var last []byte
	for _, c := range chunks {
		var td tracepb.TracesData
		if proto.Unmarshal(c, &td) != nil || len(td.ResourceSpans) == 0 ||
			len(td.ResourceSpans[0].ScopeSpans) == 0 || len(td.ResourceSpans[0].ScopeSpans[0].Spans) == 0 {
			continue
		}
		id := td.ResourceSpans[0].ScopeSpans[0].Spans[0].TraceId
		if string(id) != string(last) {
			n++
			last = id
		}
	}
	return n
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
