package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
	"unsafe"

	kgzip "github.com/klauspost/compress/gzip"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"cairn/internal/access"
	"cairn/internal/rawcodec"
)

// OverloadOptions configures Overload. The zero value is valid except for
// Target and Reader.
type OverloadOptions struct {
	// Target is the OTLP/gRPC endpoint, HOST:PORT.
	Target string
	// Reader is the jaeger.storage.v2 endpoint of Target's store, from
	// which every acknowledged request is read back.
	Reader string

	TargetAccess, ReaderAccess access.Client

	// Conns is the number of gRPC connections, each with Inflight requests
	// in flight. The defaults are 64 and 8.
	Conns, Inflight int

	// MinBytes and MaxBytes bound the size of each request, uniformly
	// spread between them. The defaults are 8 MiB and 60 MiB.
	MinBytes, MaxBytes int

	// Gzip compresses every request; their bodies compress some thousand
	// times, so that each inflates at the receiver.
	Gzip bool

	// Duration is how long requests are sent. The default is 30s.
	Duration time.Duration

	// Timeout is each request's deadline, an OTLP exporter's default. The
	// default is 10s.
	Timeout time.Duration

	// Seed makes trace IDs differ between runs against one store. The
	// default is the time.
	Seed uint64
}

func (o *OverloadOptions) withDefaults() OverloadOptions {
	c := *o
	c.Conns = cmp.Or(c.Conns, 64)
	c.Inflight = cmp.Or(c.Inflight, 8)
	c.MinBytes = cmp.Or(c.MinBytes, 8<<20)
	c.MaxBytes = max(cmp.Or(c.MaxBytes, 60<<20), c.MinBytes)
	c.Duration = cmp.Or(c.Duration, 30*time.Second)
	c.Timeout = cmp.Or(c.Timeout, 10*time.Second)
	c.Seed = cmp.Or(c.Seed, uint64(time.Now().UnixNano()))
	return c
}

// OverloadReport is what an overload run saw. Every request ends one of
// three ways: acknowledged, refused with a code clients retry on
// (RESOURCE_EXHAUSTED, UNAVAILABLE), or failed otherwise (a deadline
// exceeded, most often, where a receiver takes in more than it can store
// in time).
type OverloadReport struct {
	Started  time.Time `json:"started"`
	Version  string    `json:"cairn_version,omitempty"`
	Args     []string  `json:"args,omitempty"`
	Host     Host      `json:"host"`
	Target   string    `json:"target"`
	Embedded bool      `json:"embedded"`
	Conns    int       `json:"conns"`
	Inflight int       `json:"inflight"`
	MinBytes int       `json:"min_bytes"`
	MaxBytes int       `json:"max_bytes"`
	Gzip     bool      `json:"gzip"`
	Seconds  float64   `json:"elapsed_sec"`

	Acknowledged      int64            `json:"acknowledged"`
	AcknowledgedBytes int64            `json:"acknowledged_bytes"`
	Refused           int64            `json:"refused_retryable"`
	Failed            map[string]int64 `json:"failed,omitempty"` // by gRPC code
	FirstFailure      string           `json:"first_failure,omitempty"`
	AckP50Ms          float64          `json:"ack_p50_ms"`
	AckP99Ms          float64          `json:"ack_p99_ms"`
	RefusedP50Ms      float64          `json:"refused_p50_ms"`

	// TracesChecked are the acknowledged requests read back; TracesMissing
	// those of them not stored whole.
	TracesChecked int `json:"traces_checked"`
	TracesMissing int `json:"traces_missing"`

	PeakRSSMB float64 `json:"peak_rss_mb,omitempty"`
}

// overloadSpans is the number of spans of the trace each request carries;
// the rest of the request is padding.
const overloadSpans = 4

// paddingSpanBytes is about the size of each padding span.
const paddingSpanBytes = 64 << 10

// overloadTemplates is the number of distinct paddings, of sizes spread
// from MinBytes to MaxBytes.
const overloadTemplates = 8

// Overload sends requests of o's sizes on o's connections for o.Duration,
// as fast as they are answered, and then reads back the trace of every
// acknowledged request. Each request is a trace of its own, of a few
// spans, and padding: spans with no trace ID, which a receiver must take
// in and decode, and then rejects one by one. Paddings are shared between
// requests in flight, so that the load generator's memory stays small
// whatever the load.
func Overload(ctx context.Context, o OverloadOptions) (*OverloadReport, error) {
	if o.Target == "" || o.Reader == "" {
		return nil, errors.New("bench: overload needs a target and its reader")
	}
	o = o.withDefaults()
	opts, err := o.TargetAccess.DialOptions()
	if err != nil {
		return nil, err
	}
	paddings := make([][]byte, overloadTemplates)
	for i := range paddings {
		size := o.MinBytes + (o.MaxBytes-o.MinBytes)*i/max(overloadTemplates-1, 1)
		paddings[i] = padding(size)
	}
	call := []grpc.CallOption{grpc.ForceCodecV2(partsCodec{})}
	if o.Gzip {
		gz, err := newPrecompressed(paddings)
		if err != nil {
			return nil, err
		}
		encoding.RegisterCompressor(gz)
		call = append(call, grpc.UseCompressor(gz.Name()))
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range o.Conns {
		c, err := grpc.NewClient(o.Target, append(opts, grpc.WithDefaultCallOptions(call...))...)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", o.Target, err)
		}
		conns = append(conns, c)
	}
	rd, err := newReader(o.Reader, o.ReaderAccess)
	if err != nil {
		return nil, err
	}
	defer rd.close()
	if err := probe(ctx, "reader "+o.Reader, o.Reader, "GetServices", rd.services); err != nil {
		return nil, err
	}

	rep := &OverloadReport{Started: time.Now().UTC().Truncate(time.Second), Host: thisHost(), Target: o.Target,
		Conns: o.Conns, Inflight: o.Inflight, MinBytes: o.MinBytes, MaxBytes: o.MaxBytes, Gzip: o.Gzip, Failed: map[string]int64{}}
	l := &overloadLoad{o: o, paddings: paddings, rep: rep}
	start := time.Now()
	sendCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := range o.Conns * o.Inflight {
		wg.Go(func() { l.worker(sendCtx, ctx, conns[i%len(conns)], uint64(i)) })
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.AckP50Ms, rep.AckP99Ms, _ = percentiles(l.ackLatencies)
	rep.RefusedP50Ms, _, _ = percentiles(l.refusedLatencies)
	return rep, l.verify(ctx, rd)
}

// overloadLoad is what an overload run's workers share.
type overloadLoad struct {
	o        OverloadOptions
	paddings [][]byte
	next     atomic.Uint64

	mu               sync.Mutex
	rep              *OverloadReport
	acked            [][16]byte
	ackLatencies     []time.Duration
	refusedLatencies []time.Duration
}

// worker sends requests on conn until sendCtx ends; a request in flight
// then has its own deadline to finish. ctx is the run's.
func (l *overloadLoad) worker(sendCtx, ctx context.Context, conn *grpc.ClientConn, n uint64) {
	rng := rand.New(rand.NewPCG(l.o.Seed, n))
	for sendCtx.Err() == nil {
		seq := l.next.Add(1)
		id := overloadTraceID(l.o.Seed, seq)
		req := requestParts{head: overloadHead(id), padding: l.paddings[rng.IntN(len(l.paddings))]}
		attempt, cancel := context.WithTimeout(ctx, l.o.Timeout)
		t := time.Now()
		var resp rawcodec.Message
		err := conn.Invoke(attempt, exportMethod, req, &resp)
		cancel()
		l.record(id, req, err, time.Since(t))
	}
}

func (l *overloadLoad) record(id [16]byte, req requestParts, err error, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	code := status.Code(err)
	switch {
	case err == nil:
		l.rep.Acknowledged++
		l.rep.AcknowledgedBytes += int64(len(req.head) + len(req.padding))
		l.acked = append(l.acked, id)
		l.ackLatencies = append(l.ackLatencies, took)
	case code == codes.Unavailable || code == codes.ResourceExhausted && retryInfo(err):
		l.rep.Refused++
		l.refusedLatencies = append(l.refusedLatencies, took)
	default:
		l.rep.Failed[code.String()]++
		if l.rep.FirstFailure == "" {
			l.rep.FirstFailure = err.Error()
		}
	}
}

// retryInfo reports whether err carries the RetryInfo that OTLP clients
// need to retry RESOURCE_EXHAUSTED.
func retryInfo(err error) bool {
	for _, d := range status.Convert(err).Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// verify reads back the trace of every acknowledged request.
func (l *overloadLoad) verify(ctx context.Context, rd *reader) error {
	for _, id := range l.acked {
		chunks, err := rd.getTrace(ctx, id)
		if err != nil {
			return fmt.Errorf("read back trace %x: %w", id, err)
		}
		spans, err := spansOf(chunks, id)
		if err != nil {
			return err
		}
		l.rep.TracesChecked++
		if len(spans) != overloadSpans {
			l.rep.TracesMissing++
		}
	}
	return nil
}

func overloadTraceID(seed, seq uint64) [16]byte {
	var id [16]byte
	binary.BigEndian.PutUint64(id[:8], seed|1) // never all zero
	binary.BigEndian.PutUint64(id[8:], seq)
	return id
}

// overloadHead is the encoded ResourceSpans of one request's own trace.
func overloadHead(id [16]byte) []byte {
	now := uint64(time.Now().UnixNano())
	ss := &tracepb.ScopeSpans{}
	for i := range overloadSpans {
		ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: id[:], SpanId: []byte{0: 1, 7: byte(i + 1)},
			Name: "overload", StartTimeUnixNano: now, EndTimeUnixNano: now + 1000})
	}
	return resourceSpans(&tracepb.ResourceSpans{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "overload")}},
		ScopeSpans: []*tracepb.ScopeSpans{ss},
	})
}

// padding is an encoded ResourceSpans of about size bytes: spans with no
// trace ID, each with one long, highly compressible attribute.
func padding(size int) []byte {
	value := strings.Repeat("overload ", paddingSpanBytes/9)
	ss := &tracepb.ScopeSpans{}
	for n := 0; n < size; n += paddingSpanBytes {
		ss.Spans = append(ss.Spans, &tracepb.Span{SpanId: []byte{7: 1}, Name: "padding",
			Attributes: []*commonpb.KeyValue{str("padding", value)}})
	}
	return resourceSpans(&tracepb.ResourceSpans{ScopeSpans: []*tracepb.ScopeSpans{ss}})
}

// resourceSpans encodes rs as field 1 of an ExportTraceServiceRequest: the
// concatenation of such fields is a request.
func resourceSpans(rs *tracepb.ResourceSpans) []byte {
	b, err := proto.Marshal(&collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{rs}})
	if err != nil {
		panic(err) // a message built here always encodes
	}
	return b
}

// requestParts is an Export request as the concatenation of its two
// parts; partsCodec sends it without copying them together.
type requestParts struct{ head, padding []byte }

// partsCodec is rawcodec for requests sent as requestParts.
type partsCodec struct{}

func (partsCodec) Name() string { return "proto" }

func (partsCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(requestParts); ok {
		return mem.BufferSlice{mem.SliceBuffer(p.head), mem.SliceBuffer(p.padding)}, nil
	}
	return rawcodec.Codec{}.Marshal(v)
}

func (partsCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return rawcodec.Codec{}.Unmarshal(data, v)
}

// precompressed is gRPC's gzip compressor, for a process that sends the
// overload's requests: it writes each part of a message as a gzip member of
// its own, and a padding as the member it was compressed into once, before
// the run. Compressing each request whole would take the generator more CPU
// than the receiver takes to inflate it. Concatenated members are one gzip
// stream, which a receiver inflates whole. Messages of other kinds, and
// decompression, are gzip as usual.
type precompressed struct {
	members map[*byte][]byte // by a padding's first byte
	lengths map[*byte]int    // the padding's length
}

func newPrecompressed(paddings [][]byte) (*precompressed, error) {
	p := &precompressed{members: map[*byte][]byte{}, lengths: map[*byte]int{}}
	for _, pad := range paddings {
		var b bytes.Buffer
		if err := gzipMember(&b, pad); err != nil {
			return nil, err
		}
		p.members[unsafe.SliceData(pad)], p.lengths[unsafe.SliceData(pad)] = b.Bytes(), len(pad)
	}
	return p, nil
}

func gzipMember(w io.Writer, b []byte) error {
	zw := kgzip.NewWriter(w)
	if _, err := zw.Write(b); err != nil {
		return err
	}
	return zw.Close()
}

func (*precompressed) Name() string { return "gzip" }

func (p *precompressed) Compress(w io.Writer) (io.WriteCloser, error) { return memberWriter{p, w}, nil }

func (*precompressed) Decompress(r io.Reader) (io.Reader, error) { return kgzip.NewReader(r) }

// memberWriter writes each Write as a gzip member.
type memberWriter struct {
	p *precompressed
	w io.Writer
}

func (m memberWriter) Write(b []byte) (int, error) {
	if member, ok := m.p.members[unsafe.SliceData(b)]; ok && m.p.lengths[unsafe.SliceData(b)] == len(b) {
		_, err := m.w.Write(member)
		return len(b), err
	}
	return len(b), gzipMember(m.w, b)
}

func (memberWriter) Close() error { return nil }

// WriteJSON writes the report as indented JSON.
func (r *OverloadReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for people.
func (r *OverloadReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	target := r.Target + " over grpc"
	if r.Embedded {
		target = "embedded cairn at " + target
	}
	compression := ""
	if r.Gzip {
		compression = ", gzip"
	}
	var failed []string
	for code, n := range r.Failed {
		failed = append(failed, fmt.Sprintf("%d %s", n, code))
	}
	slices.Sort(failed)
	rows := [][2]string{
		{"run", fmt.Sprintf("%s, cairn %s", r.Started.Format("2006-01-02 15:04:05 MST"), cmp.Or(r.Version, "(unknown version)"))},
		{"host", r.Host.String()},
		{"target", target},
		{"overload", fmt.Sprintf("%d conns × %d in flight, %d–%d MiB requests%s, %.1fs", r.Conns, r.Inflight, r.MinBytes>>20, r.MaxBytes>>20, compression, r.Seconds)},
		{"", ""},
		{"acknowledged", fmt.Sprintf("%d requests, %.0f MiB\tp50 %.0f ms, p99 %.0f ms", r.Acknowledged, float64(r.AcknowledgedBytes)/(1<<20), r.AckP50Ms, r.AckP99Ms)},
		{"refused, retryable", fmt.Sprintf("%d requests\tp50 %.0f ms", r.Refused, r.RefusedP50Ms)},
		{"failed otherwise", cmp.Or(strings.Join(failed, ", "), "none")},
	}
	if r.FirstFailure != "" {
		rows = append(rows, [2]string{"first failure", r.FirstFailure})
	}
	rows = append(rows, [2]string{"acknowledged, read back", fmt.Sprintf("%d of %d traces whole", r.TracesChecked-r.TracesMissing, r.TracesChecked)})
	if r.Embedded {
		rows = append(rows, [2]string{"peak RSS", fmt.Sprintf("%.0f MiB", r.PeakRSSMB)})
	}
	for _, row := range rows {
		if row[0] == "" {
			fmt.Fprint(tw, "\t\n")
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}
