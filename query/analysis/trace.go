package analysis

import (
	"slices"
	"strings"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
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
	Attrs    []*commonpb.KeyValue
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
type Collector struct {
	traces []*Trace
	byID   map[[16]byte]int
	// resources numbers the resources of each trace by their key.
	resources []map[string]int
}

// Add adds the spans of td to their traces.
func (c *Collector) Add(td *tracepb.TracesData) {
	if c.byID == nil {
		c.byID = map[[16]byte]int{}
	}
	for _, rs := range td.GetResourceSpans() {
		attrs := rs.GetResource().GetAttributes()
		key := resourceKey(attrs)
		service := "unknown_service"
		for _, kv := range attrs {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				t, resources := c.trace(s.TraceId)
				res, ok := resources[key]
				if !ok {
					res = len(t.Resources)
					resources[key] = res
					t.Resources = append(t.Resources, attrs)
				}
				sp := Span{
					Service:  service,
					Name:     s.Name,
					Kind:     s.Kind,
					Start:    s.StartTimeUnixNano,
					End:      s.EndTimeUnixNano,
					Failed:   s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					Resource: res,
					Attrs:    s.Attributes,
				}
				copy(sp.ID[:], s.SpanId)
				copy(sp.Parent[:], s.ParentSpanId)
				t.Spans = append(t.Spans, sp)
			}
		}
	}
}

func (c *Collector) trace(id []byte) (*Trace, map[string]int) {
	var key [16]byte
	copy(key[:], id)
	i, ok := c.byID[key]
	if !ok {
		i = len(c.traces)
		c.byID[key] = i
		c.traces = append(c.traces, &Trace{ID: key})
		c.resources = append(c.resources, map[string]int{})
	}
	return c.traces[i], c.resources[i]
}

// Traces returns the traces added, in the order their first spans came.
func (c *Collector) Traces() []*Trace { return c.traces }

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
	kindServer = tracepb.Span_SPAN_KIND_SERVER
	kindClient = tracepb.Span_SPAN_KIND_CLIENT
)
