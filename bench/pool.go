package bench

import (
	"encoding/binary"
	"fmt"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"cairn/internal/otlpjson"
)

// Pool is a workload encoded ahead of time and replayed in rounds, so that
// sending requests costs a copy and a few stores rather than encoding. Every
// round rewrites the trace and span IDs and shifts the timestamps past the
// previous round's, so each round is new data that compresses no better than
// the first.
type Pool struct {
	reqs     []poolRequest
	traces   []PoolTrace
	period   uint64 // nanoseconds between a round's first trace and the next round's
	start    time.Time
	services []Service
	json     bool // requests are OTLP/JSON rather than protobuf
}

// PoolTrace is a trace of the pool's first round.
type PoolTrace struct {
	ID    [16]byte
	Spans int // spans of the trace in the pool: all of it that is ever sent
	First int // index of the first request holding one of its spans
	Last  int // index of the last such request
}

// poolRequest is an encoded request and where its IDs and times lie: in
// protobuf, 16- and 8-byte IDs and fixed64 times; in OTLP/JSON, 32- and
// 16-digit hex IDs and 19-digit decimal times.
type poolRequest struct {
	bytes      []byte
	spans      int
	traceIDs   []int32 // offsets of trace IDs, links' included
	spanTraces []int32 // offsets of the spans' own trace IDs, while pooling
	spanIDs    []int32 // offsets of span IDs, parents included
	times      []int32 // offsets of timestamps
	probe      Probe   // the request's last span
}

// Probe names one span, to ask a store whether it is visible yet.
type Probe struct {
	TraceID [16]byte
	SpanID  [8]byte
}

// NewPool generates at least spans spans of cfg's workload in requests of
// cfg.BatchSpans spans.
func NewPool(cfg Config, spans int) (*Pool, error) {
	cfg = cfg.withDefaults()
	g := NewGenerator(cfg)
	p := &Pool{start: cfg.Start, services: g.Services()}
	byID := map[[16]byte]int{}
	for total := 0; total < spans || len(p.reqs) == 0; {
		r := g.Next()
		pr := poolRequest{bytes: r.Bytes, spans: r.Spans}
		if err := pr.locate(); err != nil {
			return nil, fmt.Errorf("index pool request %d: %w", len(p.reqs), err)
		}
		for _, off := range pr.spanTraces {
			id := [16]byte(r.Bytes[off : off+16])
			i, ok := byID[id]
			if !ok {
				i = len(p.traces)
				byID[id] = i
				p.traces = append(p.traces, PoolTrace{ID: id, First: len(p.reqs)})
			}
			p.traces[i].Last = len(p.reqs)
			p.traces[i].Spans++
		}
		pr.spanTraces = nil
		p.reqs = append(p.reqs, pr)
		total += r.Spans
	}
	// A round lasts as long as its trace starts plus a margin, so that
	// rounds follow each other in time as traces would.
	p.period = uint64(float64(g.traceN)/cfg.TracesPerSecond*float64(time.Second)) + uint64(time.Second)
	return p, nil
}

// Requests is the number of requests in one round.
func (p *Pool) Requests() int { return len(p.reqs) }

// Traces returns the traces of the first round.
func (p *Pool) Traces() []PoolTrace { return p.traces }

// Spans returns the number of spans in request seq.
func (p *Pool) Spans(seq uint64) int { return p.reqs[seq%uint64(len(p.reqs))].spans }

// Window returns the start times a run of n requests spans, with a minute's
// margin each side for clock skew and trace duration.
func (p *Pool) Window(n uint64) (time.Time, time.Time) {
	rounds := (n + uint64(len(p.reqs)) - 1) / uint64(len(p.reqs))
	end := p.start.Add(time.Duration(rounds * p.period))
	return p.start.Add(-time.Minute), end.Add(time.Minute)
}

// Request appends request seq (counting across rounds) to dst.
func (p *Pool) Request(dst []byte, seq uint64) []byte {
	round := seq / uint64(len(p.reqs))
	r := &p.reqs[seq%uint64(len(p.reqs))]
	dst = append(dst[:0], r.bytes...)
	if round == 0 {
		return dst
	}
	tmask, smask := roundMasks(round)
	shift := round * p.period
	if p.json {
		for _, off := range r.traceIDs {
			xorHex(dst[off+16:off+32], tmask)
		}
		for _, off := range r.spanIDs {
			xorHex(dst[off:off+16], smask)
		}
		digits, top := decimalDigits(shift)
		for _, off := range r.times {
			addDecimal(dst[off:off+jsonTimeDigits], &digits, top)
		}
		return dst
	}
	for _, off := range r.traceIDs {
		b := dst[off+8 : off+16]
		binary.BigEndian.PutUint64(b, binary.BigEndian.Uint64(b)^tmask)
	}
	for _, off := range r.spanIDs {
		b := dst[off : off+8]
		binary.BigEndian.PutUint64(b, binary.BigEndian.Uint64(b)^smask)
	}
	for _, off := range r.times {
		b := dst[off : off+8]
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)+shift)
	}
	return dst
}

// xorHex applies mask to the 64-bit number the 16 lowercase hex digits of b
// spell, a digit at a time.
func xorHex(b []byte, mask uint64) {
	_ = b[15]
	for i := 15; i >= 0; i-- {
		b[i] = hexDigits[hexValues[b[i]]^byte(mask&15)]
		mask >>= 4
	}
}

const hexDigits = "0123456789abcdef"

// hexValues maps a hex digit to its value.
var hexValues = func() (v [256]byte) {
	for i := range hexDigits {
		v[hexDigits[i]] = byte(i)
	}
	return v
}()

// decimalDigits returns the digits of v, 0 to 9, right-aligned, and the
// index of the first that is not a leading zero.
func decimalDigits(v uint64) (d [jsonTimeDigits]byte, top int) {
	top = jsonTimeDigits
	for ; v > 0 && top > 0; v /= 10 {
		top--
		d[top] = byte(v % 10)
	}
	return d, top
}

// addDecimal adds the number of decimalDigits to the one b spells in ASCII.
// The sum keeps b's width: times of jsonTimeDigits digits span 2001 to
// 2286.
func addDecimal(b []byte, shift *[jsonTimeDigits]byte, top int) {
	carry := byte(0)
	for i := len(b) - 1; i >= 0 && (i >= top || carry != 0); i-- {
		d := b[i] - '0' + shift[i] + carry
		carry = 0
		if d >= 10 {
			d, carry = d-10, 1
		}
		b[i] = '0' + d
	}
}

// jsonTimeDigits is the width of every timestamp of an OTLP/JSON pool.
const jsonTimeDigits = 19

// EncodeJSON re-encodes the pool's requests as OTLP/JSON, once, so that
// Request returns OTLP/JSON for the same spans, IDs and times at the same
// cost as protobuf: a copy and a few patches, rather than an encoding per
// request.
func (p *Pool) EncodeJSON() error {
	for i := range p.reqs {
		r := &p.reqs[i]
		var req collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(r.bytes, &req); err != nil {
			return fmt.Errorf("decode pool request %d: %w", i, err)
		}
		doc, err := otlpjson.Marshal(&req)
		if err != nil {
			return err
		}
		jr := poolRequest{bytes: doc, spans: r.spans, probe: r.probe}
		if err := jr.locateJSON(); err != nil {
			return fmt.Errorf("index OTLP/JSON pool request %d: %w", i, err)
		}
		*r = jr
	}
	p.json = true
	return nil
}

// locateJSON records where the hex IDs and decimal times of r's spans lie.
func (r *poolRequest) locateJSON() error {
	return otlpjson.EachStringMember(r.bytes, func(key []byte, start, end int) error {
		at, width := int32(start+1), end-start-2
		want := 0
		switch string(key) {
		case "traceId":
			want, r.traceIDs = 32, append(r.traceIDs, at)
		case "spanId", "parentSpanId":
			want, r.spanIDs = 16, append(r.spanIDs, at)
		case "startTimeUnixNano", "endTimeUnixNano", "timeUnixNano":
			want, r.times = jsonTimeDigits, append(r.times, at)
		default:
			return nil
		}
		if width != want {
			return fmt.Errorf("%s %s is %d characters long, not %d", key, r.bytes[start:end], width, want)
		}
		return nil
	})
}

// dropRequests frees the encoded requests; Request must not be called after.
// Traces, probes and windows stay available.
func (p *Pool) dropRequests() {
	for i := range p.reqs {
		p.reqs[i].bytes, p.reqs[i].traceIDs, p.reqs[i].spanIDs, p.reqs[i].times = nil, nil, nil, nil
	}
}

// Probe returns the last span of request seq.
func (p *Pool) Probe(seq uint64) Probe {
	round := seq / uint64(len(p.reqs))
	pr := p.reqs[seq%uint64(len(p.reqs))].probe
	return Probe{TraceID: TraceIDIn(pr.TraceID, round), SpanID: spanIDIn(pr.SpanID, round)}
}

// TraceIDIn returns the ID a first-round trace has in the given round.
func TraceIDIn(id [16]byte, round uint64) [16]byte {
	if round == 0 {
		return id
	}
	tmask, _ := roundMasks(round)
	binary.BigEndian.PutUint64(id[8:], binary.BigEndian.Uint64(id[8:])^tmask)
	return id
}

func spanIDIn(id [8]byte, round uint64) [8]byte {
	if round == 0 {
		return id
	}
	_, smask := roundMasks(round)
	binary.BigEndian.PutUint64(id[:], binary.BigEndian.Uint64(id[:])^smask)
	return id
}

// roundMasks derives the ID masks of a round with splitmix64, so that IDs of
// different rounds share no structure a compressor could find.
func roundMasks(round uint64) (trace, span uint64) {
	mix := func(x uint64) uint64 {
		x += 0x9e3779b97f4a7c15
		x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
		x = (x ^ (x >> 27)) * 0x94d049bb133111eb
		return x ^ (x >> 31)
	}
	return mix(round), mix(round ^ 0x5bd1e995)
}

// locate records where the IDs and timestamps of r's spans lie.
func (r *poolRequest) locate() error {
	b := r.bytes
	return eachField(b, 0, len(b), func(num protowire.Number, typ protowire.Type, start, end int) error {
		if num != 1 || typ != protowire.BytesType { // resource_spans
			return nil
		}
		return eachField(b, start, end, func(num protowire.Number, typ protowire.Type, start, end int) error {
			if num != 2 || typ != protowire.BytesType { // scope_spans
				return nil
			}
			return eachField(b, start, end, func(num protowire.Number, typ protowire.Type, start, end int) error {
				if num != 2 || typ != protowire.BytesType { // spans
					return nil
				}
				return r.locateSpan(start, end)
			})
		})
	})
}

func (r *poolRequest) locateSpan(start, end int) error {
	b := r.bytes
	return eachField(b, start, end, func(num protowire.Number, typ protowire.Type, s, e int) error {
		switch {
		case num == 1 && e-s == 16: // trace_id
			r.traceIDs = append(r.traceIDs, int32(s))
			r.spanTraces = append(r.spanTraces, int32(s))
			r.probe.TraceID = [16]byte(b[s:e])
		case num == 2 && e-s == 8: // span_id
			r.spanIDs = append(r.spanIDs, int32(s))
			r.probe.SpanID = [8]byte(b[s:e])
		case num == 4 && e-s == 8: // parent_span_id
			r.spanIDs = append(r.spanIDs, int32(s))
		case (num == 7 || num == 8) && typ == protowire.Fixed64Type: // start, end
			r.times = append(r.times, int32(s))
		case num == 11 && typ == protowire.BytesType: // events
			return eachField(b, s, e, func(num protowire.Number, typ protowire.Type, s, e int) error {
				if num == 1 && typ == protowire.Fixed64Type {
					r.times = append(r.times, int32(s))
				}
				return nil
			})
		case num == 13 && typ == protowire.BytesType: // links
			return eachField(b, s, e, func(num protowire.Number, typ protowire.Type, s, e int) error {
				switch {
				case num == 1 && e-s == 16:
					r.traceIDs = append(r.traceIDs, int32(s))
				case num == 2 && e-s == 8:
					r.spanIDs = append(r.spanIDs, int32(s))
				}
				return nil
			})
		}
		return nil
	})
}

// eachField calls fn with the number, type and value bounds of every field of
// the message b[start:end]. Fixed-width values are bounded like bytes.
func eachField(b []byte, start, end int, fn func(num protowire.Number, typ protowire.Type, start, end int) error) error {
	for i := start; i < end; {
		num, typ, n := protowire.ConsumeTag(b[i:end])
		if n < 0 {
			return protowire.ParseError(n)
		}
		i += n
		var vs, ve int
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b[i:end])
			if n < 0 {
				return protowire.ParseError(n)
			}
			vs, ve = i+n-len(v), i+n
			i += n
		default:
			n := protowire.ConsumeFieldValue(num, typ, b[i:end])
			if n < 0 {
				return protowire.ParseError(n)
			}
			vs, ve = i, i+n
			i += n
		}
		if err := fn(num, typ, vs, ve); err != nil {
			return err
		}
	}
	return nil
}
