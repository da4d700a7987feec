package analysis

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"cairn/internal/otlpwire"
)

// SpanID is a span's 8-byte ID; the zero ID means none.
type SpanID [8]byte

// Trace is the spans of one trace, flattened from their resources.
type Trace struct {
	ID    [16]byte
	Spans []Span
	// Resources holds the attributes of each distinct resource; spans refer
	// to them by index.
	Resources [][]*commonpb.KeyValue
}

// Span is one span as the analyses read it.
type Span struct {
	ID, Parent SpanID
	Service    string
	Name       string
	Kind       tracepb.Span_SpanKind
	Start, End uint64 // unix nanoseconds
	Failed     bool   // status ERROR
	// Resource indexes Trace.Resources. Spans of one resource were timed
	// by one clock; spans of two resources may be skewed.
	Resource int
	// Attrs are the span's attributes, then its events': a feature flag's
	// variant is often recorded only as an evaluation event
	// (feature_flag.evaluation), and search matches an event's attributes
	// as the span's.
	Attrs []*commonpb.KeyValue
}

// Duration is the span's length, 0 if it ends before it starts.
func (s *Span) Duration() uint64 {
	if s.End > s.Start {
		return s.End - s.Start
	}
	return 0
}

// FromOTLP flattens the spans of one trace. A resource split over several
// ResourceSpans, as chunked reads split it, is one resource: spans are
// grouped by the content of their resource's attributes, not by message.
func FromOTLP(td *tracepb.TracesData) Trace {
	var c Collector
	c.Add(td)
	if len(c.traces) == 0 {
		return Trace{}
	}
	return *c.traces[0]
}

// Collector sorts the spans of many traces into traces.
//
// It keeps one copy of each attribute, and of each resource's attributes,
// for all its traces: a diagnosis holds thousands of traces, whose spans
// mostly repeat a few values (methods, routes, pods, versions). Held as
// one decoded message per value, the two 3,000-trace windows of a gateway
// took 250 MB, which the garbage collector scanned over and over.
type Collector struct {
	traces []*Trace
	byID   map[[16]byte]int
	// resources numbers the resources of each trace by their key.
	resources []map[string]int

	// The attributes kept: decoded ones by their content, encoded ones by
	// their encoding, which AddEncoded then decodes once. (Keyed by their
	// content too, values that are unique, such as request IDs, would be
	// held twice over.)
	values        map[string]*commonpb.KeyValue
	encodedValues map[string]*commonpb.KeyValue
	// The resources kept, by their key and by their encoding.
	resourcesByKey      map[string]resource
	resourcesByEncoding map[string]resource
	names               map[string]string
	buf                 []byte
}

// resource is a resource's attributes, kept for every trace that has it.
type resource struct {
	attrs   []*commonpb.KeyValue
	key     string // see resourceKey
	service string
}

func (c *Collector) init() {
	if c.byID == nil {
		c.byID = map[[16]byte]int{}
		c.values = map[string]*commonpb.KeyValue{}
		c.encodedValues = map[string]*commonpb.KeyValue{}
		c.resourcesByKey = map[string]resource{}
		c.resourcesByEncoding = map[string]resource{}
		c.names = map[string]string{}
	}
}

// Add adds the spans of td to their traces. The traces keep td's attribute
// messages, and Add replaces some of td's spans' attributes with equal ones
// it kept before: td must not be modified afterwards.
func (c *Collector) Add(td *tracepb.TracesData) {
	c.init()
	for _, rs := range td.GetResourceSpans() {
		r := c.resource(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				t, res := c.trace(s.TraceId, r)
				sp := Span{
					Service:  r.service,
					Name:     s.Name,
					Kind:     s.Kind,
					Start:    s.StartTimeUnixNano,
					End:      s.EndTimeUnixNano,
					Failed:   s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					Resource: res,
					Attrs:    c.keep(c.withEvents(s)),
				}
				copy(sp.ID[:], s.SpanId)
				copy(sp.Parent[:], s.ParentSpanId)
				t.Spans = append(t.Spans, sp)
			}
		}
	}
}

// withEvents returns the attributes of s and of its events (see
// eventAttributes), s's own slice where its events have none.
func (c *Collector) withEvents(s *tracepb.Span) []*commonpb.KeyValue {
	attrs := s.Attributes
	for i, e := range s.Events {
		if len(e.Attributes) == 0 {
			continue
		}
		if len(attrs) == len(s.Attributes) { // a slice of its own, once
			n := len(attrs)
			for _, e := range s.Events[i:] {
				n += len(e.Attributes)
			}
			attrs = append(make([]*commonpb.KeyValue, 0, n), attrs...)
		}
		attrs = c.eventAttributes(attrs, e.Attributes)
	}
	return attrs
}

// eventAttributes appends to attrs the attributes of one event but a
// stack trace, which no two failures may share and which would only be
// held; and of a feature flag's evaluation (feature_flag.key), its
// variant and value again keyed by the flag,
// feature_flag.result.variant[new_checkout]: a span that evaluates
// several flags carries several variants, which their key alone does not
// tell apart. Where one flag is evaluated, both are on the same traces
// and rank as one (see Correlation.Aliases).
func (c *Collector) eventAttributes(attrs, event []*commonpb.KeyValue) []*commonpb.KeyValue {
	flag := ""
	for _, kv := range event {
		if kv.Key == "feature_flag.key" {
			flag = kv.GetValue().GetStringValue()
		}
	}
	for _, kv := range event {
		switch kv.Key {
		case "exception.stacktrace":
			continue
		case "feature_flag.result.variant", "feature_flag.variant", "feature_flag.result.value":
			if flag != "" {
				attrs = append(attrs, c.keep([]*commonpb.KeyValue{{Key: kv.Key + "[" + flag + "]", Value: kv.Value}})[0])
			}
		}
		attrs = append(attrs, kv)
	}
	return attrs
}

// AddEncoded adds spans of trace id, encoded as OTLP Span messages, whose
// resource is encoded as an OTLP Resource message. It decodes only what
// the analyses read: a span's links, its events' names and other fields
// are skipped, and an attribute or a resource encoded as one before is
// not decoded again.
func (c *Collector) AddEncoded(id [16]byte, encodedResource []byte, spans [][]byte) error {
	c.init()
	r, ok := c.resourcesByEncoding[string(encodedResource)]
	if !ok {
		res := &resourcepb.Resource{}
		if err := proto.Unmarshal(encodedResource, res); err != nil {
			return fmt.Errorf("resource: %w", err)
		}
		r = c.resource(res.Attributes)
		c.resourcesByEncoding[string(encodedResource)] = r
	}
	t, res := c.trace(id[:], r)
	for _, raw := range spans {
		f := otlpwire.Facts(raw)
		sp := Span{ID: f.ID, Service: r.service, Kind: tracepb.Span_SpanKind(f.Kind), Start: f.Start, End: f.End,
			Failed: f.Error, Resource: res}
		copy(sp.Parent[:], f.Parent)
		name, ok := c.names[string(f.Name)]
		if !ok {
			name = string(f.Name)
			c.names[name] = name
		}
		sp.Name = name
		var err error
		if sp.Attrs, err = c.encodedAttributes(raw); err != nil {
			return fmt.Errorf("span %x: %w", sp.ID, err)
		}
		t.Spans = append(t.Spans, sp)
	}
	return nil
}

// encodedAttributes decodes the attributes of an encoded span, then those
// of its events.
func (c *Collector) encodedAttributes(span []byte) ([]*commonpb.KeyValue, error) {
	var attrs, events []*commonpb.KeyValue
	err := eachBytesField(span, func(num protowire.Number, field []byte) error {
		switch num {
		case spanAttributes:
			kv, err := c.encodedAttribute(field)
			attrs = append(attrs, kv)
			return err
		case spanEvents:
			var event []*commonpb.KeyValue
			err := eachBytesField(field, func(num protowire.Number, field []byte) error {
				if num != eventAttributes || bytes.HasPrefix(field, encodedStackTrace) {
					return nil
				}
				kv, err := c.encodedAttribute(field)
				event = append(event, kv)
				return err
			})
			if err != nil {
				return err
			}
			events = c.eventAttributes(events, event)
			return nil
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append(attrs, events...), nil
}

// encodedAttribute returns the KeyValue encoded as enc, decoded once for
// every span that has it.
func (c *Collector) encodedAttribute(enc []byte) (*commonpb.KeyValue, error) {
	if kv, ok := c.encodedValues[string(enc)]; ok {
		return kv, nil
	}
	kv := &commonpb.KeyValue{}
	if err := proto.Unmarshal(enc, kv); err != nil {
		return nil, fmt.Errorf("attribute: %w", err)
	}
	c.encodedValues[string(enc)] = kv
	return kv, nil
}

// eachBytesField calls fn with the content of each length-delimited field
// of the message msg, stopping at fn's first error.
func eachBytesField(msg []byte, fn func(num protowire.Number, field []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
			return protowire.ParseError(n)
		}
		field := msg[:n]
		msg = msg[n:]
		if typ != protowire.BytesType {
			continue
		}
		content, _ := protowire.ConsumeBytes(field)
		if err := fn(num, content); err != nil {
			return err
		}
	}
	return nil
}

// encodedStackTrace starts a KeyValue whose key, written first as
// encoders write it, is exception.stacktrace: such a value is skipped
// before it is decoded (see eventAttributes).
var encodedStackTrace = []byte("\x0a\x14exception.stacktrace")

// Field numbers of opentelemetry.proto.trace.v1.Span.attributes, .events
// and Span.Event.attributes.
const (
	spanAttributes  = 9
	spanEvents      = 11
	eventAttributes = 3
)

// resource returns the resource kept with the attributes attrs.
func (c *Collector) resource(attrs []*commonpb.KeyValue) resource {
	key := resourceKey(attrs)
	if r, ok := c.resourcesByKey[key]; ok {
		return r
	}
	r := resource{attrs: attrs, key: key, service: "unknown_service"}
	for _, kv := range attrs {
		if kv.Key == "service.name" {
			r.service = kv.GetValue().GetStringValue()
		}
	}
	c.resourcesByKey[key] = r
	return r
}

// keep replaces each attribute with the copy kept of it, if there is one.
func (c *Collector) keep(attrs []*commonpb.KeyValue) []*commonpb.KeyValue {
	for i, kv := range attrs {
		// The key's length first, so that no key and value run into
		// another's.
		c.buf = binary.AppendUvarint(c.buf[:0], uint64(len(kv.Key)))
		c.buf = appendValue(append(c.buf, kv.Key...), kv.GetValue())
		if kept, ok := c.values[string(c.buf)]; ok {
			attrs[i] = kept
		} else {
			c.values[string(c.buf)] = kv
		}
	}
	return attrs
}

// trace returns the trace id, and the index of resource r in it.
func (c *Collector) trace(id []byte, r resource) (*Trace, int) {
	var key [16]byte
	copy(key[:], id)
	i, ok := c.byID[key]
	if !ok {
		i = len(c.traces)
		c.byID[key] = i
		c.traces = append(c.traces, &Trace{ID: key})
		c.resources = append(c.resources, map[string]int{})
	}
	t, resources := c.traces[i], c.resources[i]
	res, ok := resources[r.key]
	if !ok {
		res = len(t.Resources)
		resources[r.key] = res
		t.Resources = append(t.Resources, r.attrs)
	}
	return t, res
}

// Traces returns the traces added, in the order their first spans came.
func (c *Collector) Traces() []*Trace { return c.traces }

// Drop removes a trace and whatever of its spans were added, for a trace
// that could be read only in part. The attributes kept for it stay.
func (c *Collector) Drop(id [16]byte) {
	i, ok := c.byID[id]
	if !ok {
		return
	}
	delete(c.byID, id)
	c.traces = slices.Delete(c.traces, i, i+1)
	c.resources = slices.Delete(c.resources, i, i+1)
	for _, t := range c.traces[i:] {
		c.byID[t.ID]--
	}
}

// resourceKey is the same for resources with the same attributes in any
// order.
func resourceKey(attrs []*commonpb.KeyValue) string {
	parts := make([]string, len(attrs))
	for i, kv := range attrs {
		parts[i] = kv.Key + "\x00" + valueString(kv.GetValue())
	}
	slices.Sort(parts)
	return strings.Join(parts, "\x01")
}

const (
	kindServer   = tracepb.Span_SPAN_KIND_SERVER
	kindClient   = tracepb.Span_SPAN_KIND_CLIENT
	kindProducer = tracepb.Span_SPAN_KIND_PRODUCER
	kindConsumer = tracepb.Span_SPAN_KIND_CONSUMER
)
