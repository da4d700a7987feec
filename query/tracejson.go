package query

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// traceJSONLimit bounds the spans of one trace answered as JSON over HTTP,
// which are held in memory until the answer is complete; past it the answer
// says it is truncated. OTLP/JSON streams, and has no such bound.
const traceJSONLimit = 64 << 20

// traceJSON is a trace as the HTTP API answers it: spans flattened, each
// naming its resource and scope by index. Times are unix nanoseconds in
// decimal strings, which JavaScript numbers cannot hold exactly.
type traceJSON struct {
	TraceID   string         `json:"trace_id"`
	Start     string         `json:"start_unix_nano"`
	End       string         `json:"end_unix_nano"`
	SpanCount int            `json:"span_count"`
	Truncated bool           `json:"truncated"`
	Resources []resourceJSON `json:"resources"`
	Scopes    []scopeJSON    `json:"scopes"`

	start, end uint64
	spans      []byte // encoded spans, comma-separated
	resources  map[string]int
	scopes     map[string]int
}

type resourceJSON struct {
	Service    string     `json:"service"`
	Attributes []attrJSON `json:"attributes"`
	SchemaURL  string     `json:"schema_url,omitempty"`
}

type scopeJSON struct {
	Name       string     `json:"name"`
	Version    string     `json:"version,omitempty"`
	Attributes []attrJSON `json:"attributes"`
	SchemaURL  string     `json:"schema_url,omitempty"`
}

type spanJSON struct {
	SpanID       string       `json:"span_id"`
	ParentSpanID string       `json:"parent_span_id"`
	Name         string       `json:"name"`
	Kind         string       `json:"kind"`
	Service      string       `json:"service"`
	Resource     int          `json:"resource"`
	Scope        int          `json:"scope"`
	Start        string       `json:"start_unix_nano"`
	End          string       `json:"end_unix_nano"`
	DurationNS   uint64       `json:"duration_ns"`
	Status       statusJSON   `json:"status"`
	TraceState   string       `json:"trace_state,omitempty"`
	Flags        uint32       `json:"flags,omitempty"`
	Attributes   []attrJSON   `json:"attributes"`
	Events       []eventJSON  `json:"events"`
	Links        []linkJSON   `json:"links"`
	Dropped      *droppedJSON `json:"dropped,omitempty"`
}

type statusJSON struct {
	Code    string `json:"code"` // unset, ok or error
	Message string `json:"message,omitempty"`
}

type eventJSON struct {
	Name       string     `json:"name"`
	Time       string     `json:"time_unix_nano"`
	Attributes []attrJSON `json:"attributes"`
}

type linkJSON struct {
	TraceID    string     `json:"trace_id"`
	SpanID     string     `json:"span_id"`
	TraceState string     `json:"trace_state,omitempty"`
	Attributes []attrJSON `json:"attributes"`
}

// droppedJSON counts what the sender dropped from a span.
type droppedJSON struct {
	Attributes uint32 `json:"attributes"`
	Events     uint32 `json:"events"`
	Links      uint32 `json:"links"`
}

// attrJSON is an attribute with its value typed: string, bool, int (a
// decimal string, exact), double (a number, or "NaN", "Infinity",
// "-Infinity"), bytes (base64), array (a list of valueJSON), kvlist (a list
// of attrJSON), or empty (null).
type attrJSON struct {
	Key string `json:"key"`
	valueJSON
}

type valueJSON struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

func newTraceJSON(id string) *traceJSON {
	return &traceJSON{TraceID: id, start: math.MaxUint64, resources: map[string]int{}, scopes: map[string]int{}}
}

// add takes a chunk of the trace; it fails with errTraceJSONFull once the
// spans are over traceJSONLimit.
func (t *traceJSON) add(td *tracepb.TracesData) error {
	for _, rs := range td.ResourceSpans {
		res := t.resource(rs)
		for _, ss := range rs.ScopeSpans {
			scope := t.scope(ss)
			for _, sp := range ss.Spans {
				if len(t.spans) > traceJSONLimit {
					return errTraceJSONFull
				}
				b, err := json.Marshal(t.span(sp, res, scope))
				if err != nil {
					return err
				}
				if len(t.spans) > 0 {
					t.spans = append(t.spans, ',')
				}
				t.spans = append(t.spans, b...)
			}
		}
	}
	return nil
}

// resource returns the index of a chunk's resource, listing it if it is
// new: a resource whose spans fill several chunks is repeated in each.
func (t *traceJSON) resource(rs *tracepb.ResourceSpans) int {
	key := string(deterministic(rs.Resource)) + "\x00" + rs.SchemaUrl
	if i, ok := t.resources[key]; ok {
		return i
	}
	r := resourceJSON{Attributes: attrsJSON(rs.GetResource().GetAttributes()), SchemaURL: rs.SchemaUrl}
	for _, kv := range rs.GetResource().GetAttributes() {
		if kv.Key == "service.name" {
			r.Service = kv.GetValue().GetStringValue()
		}
	}
	t.resources[key] = len(t.Resources)
	t.Resources = append(t.Resources, r)
	return len(t.Resources) - 1
}

func (t *traceJSON) scope(ss *tracepb.ScopeSpans) int {
	key := string(deterministic(ss.Scope)) + "\x00" + ss.SchemaUrl
	if i, ok := t.scopes[key]; ok {
		return i
	}
	sc := ss.GetScope()
	t.scopes[key] = len(t.Scopes)
	t.Scopes = append(t.Scopes, scopeJSON{Name: sc.GetName(), Version: sc.GetVersion(), Attributes: attrsJSON(sc.GetAttributes()), SchemaURL: ss.SchemaUrl})
	return len(t.Scopes) - 1
}

func deterministic(m proto.Message) []byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m) // only keys a map; a message read from the store encodes
	return b
}

var statusNames = map[tracepb.Status_StatusCode]string{
	tracepb.Status_STATUS_CODE_UNSET: "unset",
	tracepb.Status_STATUS_CODE_OK:    "ok",
	tracepb.Status_STATUS_CODE_ERROR: "error",
}

func (t *traceJSON) span(sp *tracepb.Span, res, scope int) spanJSON {
	t.SpanCount++
	t.start = min(t.start, sp.StartTimeUnixNano)
	t.end = max(t.end, sp.EndTimeUnixNano)
	s := spanJSON{
		SpanID:       hex.EncodeToString(sp.SpanId),
		ParentSpanID: hex.EncodeToString(sp.ParentSpanId),
		Name:         sp.Name,
		Kind:         kindName(int32(sp.Kind)),
		Service:      t.Resources[res].Service,
		Resource:     res,
		Scope:        scope,
		Start:        strconv.FormatUint(sp.StartTimeUnixNano, 10),
		End:          strconv.FormatUint(sp.EndTimeUnixNano, 10),
		Status:       statusJSON{Code: statusNames[sp.GetStatus().GetCode()], Message: sp.GetStatus().GetMessage()},
		TraceState:   sp.TraceState,
		Flags:        sp.Flags,
		Attributes:   attrsJSON(sp.Attributes),
		Events:       []eventJSON{},
		Links:        []linkJSON{},
	}
	if s.Status.Code == "" {
		s.Status.Code = strconv.Itoa(int(sp.GetStatus().GetCode()))
	}
	if sp.EndTimeUnixNano > sp.StartTimeUnixNano {
		s.DurationNS = sp.EndTimeUnixNano - sp.StartTimeUnixNano
	}
	for _, e := range sp.Events {
		s.Events = append(s.Events, eventJSON{Name: e.Name, Time: strconv.FormatUint(e.TimeUnixNano, 10), Attributes: attrsJSON(e.Attributes)})
	}
	for _, l := range sp.Links {
		s.Links = append(s.Links, linkJSON{TraceID: hex.EncodeToString(l.TraceId), SpanID: hex.EncodeToString(l.SpanId), TraceState: l.TraceState, Attributes: attrsJSON(l.Attributes)})
	}
	if sp.DroppedAttributesCount+sp.DroppedEventsCount+sp.DroppedLinksCount > 0 {
		s.Dropped = &droppedJSON{sp.DroppedAttributesCount, sp.DroppedEventsCount, sp.DroppedLinksCount}
	}
	return s
}

func attrsJSON(kvs []*commonpb.KeyValue) []attrJSON {
	out := make([]attrJSON, len(kvs))
	for i, kv := range kvs {
		out[i] = attrJSON{Key: kv.Key, valueJSON: anyJSON(kv.Value)}
	}
	return out
}

func anyJSON(v *commonpb.AnyValue) valueJSON {
	switch v := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return valueJSON{"string", v.StringValue}
	case *commonpb.AnyValue_BoolValue:
		return valueJSON{"bool", v.BoolValue}
	case *commonpb.AnyValue_IntValue:
		return valueJSON{"int", strconv.FormatInt(v.IntValue, 10)}
	case *commonpb.AnyValue_DoubleValue:
		switch f := v.DoubleValue; {
		case math.IsNaN(f):
			return valueJSON{"double", "NaN"}
		case math.IsInf(f, 1):
			return valueJSON{"double", "Infinity"}
		case math.IsInf(f, -1):
			return valueJSON{"double", "-Infinity"}
		default:
			return valueJSON{"double", f}
		}
	case *commonpb.AnyValue_BytesValue:
		return valueJSON{"bytes", base64.StdEncoding.EncodeToString(v.BytesValue)}
	case *commonpb.AnyValue_ArrayValue:
		vals := make([]valueJSON, len(v.ArrayValue.GetValues()))
		for i, e := range v.ArrayValue.GetValues() {
			vals[i] = anyJSON(e)
		}
		return valueJSON{"array", vals}
	case *commonpb.AnyValue_KvlistValue:
		return valueJSON{"kvlist", attrsJSON(v.KvlistValue.GetValues())}
	}
	return valueJSON{"empty", nil}
}

// marshal encodes the trace, its spans last.
func (t *traceJSON) marshal() ([]byte, error) {
	if t.SpanCount > 0 {
		t.Start, t.End = strconv.FormatUint(t.start, 10), strconv.FormatUint(t.end, 10)
	}
	head, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(head)+len(t.spans)+16)
	out = append(out, head[:len(head)-1]...)
	out = append(out, `,"spans":[`...)
	out = append(out, t.spans...)
	return append(out, "]}\n"...), nil
}
