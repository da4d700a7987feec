package query

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

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
//
// Spans are written with append functions rather than encoding/json: on a
// trace of 10,000 spans, reflection took half the time of the answer.
type traceJSON struct {
	TraceID   string            `json:"trace_id"`
	Start     string            `json:"start_unix_nano"`
	End       string            `json:"end_unix_nano"`
	SpanCount int               `json:"span_count"`
	Truncated bool              `json:"truncated"`
	Resources []json.RawMessage `json:"resources"`
	Scopes    []json.RawMessage `json:"scopes"`

	start, end uint64
	spans      []byte // encoded spans, comma-separated
	services   []string
	resources  map[string]int
	scopes     map[string]int
}

func newTraceJSON(id string) *traceJSON {
	return &traceJSON{TraceID: id, start: math.MaxUint64, Resources: []json.RawMessage{}, Scopes: []json.RawMessage{},
		resources: map[string]int{}, scopes: map[string]int{}}
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
				if len(t.spans) > 0 {
					t.spans = append(t.spans, ',')
				}
				t.spans = t.appendSpan(t.spans, sp, res, scope)
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
	service := ""
	for _, kv := range rs.GetResource().GetAttributes() {
		if kv.Key == "service.name" {
			service = kv.GetValue().GetStringValue()
		}
	}
	b := appendString(append([]byte(nil), `{"service":`...), service)
	b = appendAttrs(append(b, `,"attributes":`...), rs.GetResource().GetAttributes())
	b = appendOptional(b, "schema_url", rs.SchemaUrl)
	b = appendDropped(b, rs.GetResource().GetDroppedAttributesCount())
	t.resources[key] = len(t.Resources)
	t.Resources = append(t.Resources, append(b, '}'))
	t.services = append(t.services, service)
	return len(t.Resources) - 1
}

func (t *traceJSON) scope(ss *tracepb.ScopeSpans) int {
	key := string(deterministic(ss.Scope)) + "\x00" + ss.SchemaUrl
	if i, ok := t.scopes[key]; ok {
		return i
	}
	sc := ss.GetScope()
	b := appendString(append([]byte(nil), `{"name":`...), sc.GetName())
	b = appendOptional(b, "version", sc.GetVersion())
	b = appendAttrs(append(b, `,"attributes":`...), sc.GetAttributes())
	b = appendOptional(b, "schema_url", ss.SchemaUrl)
	b = appendDropped(b, sc.GetDroppedAttributesCount())
	t.scopes[key] = len(t.Scopes)
	t.Scopes = append(t.Scopes, append(b, '}'))
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

func (t *traceJSON) appendSpan(b []byte, sp *tracepb.Span, res, scope int) []byte {
	t.SpanCount++
	t.start = min(t.start, sp.StartTimeUnixNano)
	t.end = max(t.end, sp.EndTimeUnixNano)
	b = append(b, `{"span_id":"`...)
	b = hex.AppendEncode(b, sp.SpanId)
	b = append(b, `","parent_span_id":"`...)
	b = hex.AppendEncode(b, sp.ParentSpanId)
	b = appendString(append(b, `","name":`...), sp.Name)
	b = appendString(append(b, `,"kind":`...), kindName(int32(sp.Kind)))
	b = appendString(append(b, `,"service":`...), t.services[res])
	b = strconv.AppendInt(append(b, `,"resource":`...), int64(res), 10)
	b = strconv.AppendInt(append(b, `,"scope":`...), int64(scope), 10)
	b = appendNanos(append(b, `,"start_unix_nano":`...), sp.StartTimeUnixNano)
	b = appendNanos(append(b, `,"end_unix_nano":`...), sp.EndTimeUnixNano)
	var d uint64
	if sp.EndTimeUnixNano > sp.StartTimeUnixNano {
		d = sp.EndTimeUnixNano - sp.StartTimeUnixNano
	}
	b = strconv.AppendUint(append(b, `,"duration_ns":`...), d, 10)
	code, ok := statusNames[sp.GetStatus().GetCode()]
	if !ok {
		code = strconv.Itoa(int(sp.GetStatus().GetCode()))
	}
	b = appendString(append(b, `,"status":{"code":`...), code)
	b = appendOptional(b, "message", sp.GetStatus().GetMessage())
	b = append(b, '}')
	b = appendOptional(b, "trace_state", sp.TraceState)
	if sp.Flags != 0 {
		b = strconv.AppendUint(append(b, `,"flags":`...), uint64(sp.Flags), 10)
	}
	b = appendAttrs(append(b, `,"attributes":`...), sp.Attributes)
	b = append(b, `,"events":[`...)
	for i, e := range sp.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(append(b, `{"name":`...), e.Name)
		b = appendNanos(append(b, `,"time_unix_nano":`...), e.TimeUnixNano)
		b = appendAttrs(append(b, `,"attributes":`...), e.Attributes)
		b = append(appendDropped(b, e.DroppedAttributesCount), '}')
	}
	b = append(b, `],"links":[`...)
	for i, l := range sp.Links {
		if i > 0 {
			b = append(b, ',')
		}
		b = hex.AppendEncode(append(b, `{"trace_id":"`...), l.TraceId)
		b = hex.AppendEncode(append(b, `","span_id":"`...), l.SpanId)
		b = appendOptional(append(b, '"'), "trace_state", l.TraceState)
		if l.Flags != 0 {
			b = strconv.AppendUint(append(b, `,"flags":`...), uint64(l.Flags), 10)
		}
		b = appendAttrs(append(b, `,"attributes":`...), l.Attributes)
		b = append(appendDropped(b, l.DroppedAttributesCount), '}')
	}
	b = append(b, ']')
	if sp.DroppedAttributesCount+sp.DroppedEventsCount+sp.DroppedLinksCount > 0 {
		b = strconv.AppendUint(append(b, `,"dropped":{"attributes":`...), uint64(sp.DroppedAttributesCount), 10)
		b = strconv.AppendUint(append(b, `,"events":`...), uint64(sp.DroppedEventsCount), 10)
		b = strconv.AppendUint(append(b, `,"links":`...), uint64(sp.DroppedLinksCount), 10)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendDropped appends ,"dropped":{"attributes":n} unless n is 0: the
// attributes the sender dropped from a resource, scope, event or link.
func appendDropped(b []byte, n uint32) []byte {
	if n == 0 {
		return b
	}
	return append(strconv.AppendUint(append(b, `,"dropped":{"attributes":`...), uint64(n), 10), '}')
}

func appendNanos(b []byte, ns uint64) []byte {
	return append(strconv.AppendUint(append(b, '"'), ns, 10), '"')
}

// appendOptional appends ,"name":"value" unless value is empty.
func appendOptional(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	return appendString(append(append(append(b, `,"`...), name...), `":`...), value)
}

// appendAttrs appends attributes as a list of {"key", "type", "value"},
// the value typed: string, bool, int (a decimal string, exact), double (a
// number, or "NaN", "Infinity", "-Infinity"), bytes (base64), array (a
// list of {"type", "value"}), kvlist (a list of attributes), or empty
// (null).
func appendAttrs(b []byte, kvs []*commonpb.KeyValue) []byte {
	b = append(b, '[')
	for i, kv := range kvs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(append(b, `{"key":`...), kv.Key)
		b = append(appendValue(append(b, ','), kv.Value), '}')
	}
	return append(b, ']')
}

// appendValue appends the "type" and "value" members of a value.
func appendValue(b []byte, v *commonpb.AnyValue) []byte {
	switch v := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return appendString(append(b, `"type":"string","value":`...), v.StringValue)
	case *commonpb.AnyValue_BoolValue:
		return strconv.AppendBool(append(b, `"type":"bool","value":`...), v.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return append(strconv.AppendInt(append(b, `"type":"int","value":"`...), v.IntValue, 10), '"')
	case *commonpb.AnyValue_DoubleValue:
		b = append(b, `"type":"double","value":`...)
		switch f := v.DoubleValue; {
		case math.IsNaN(f):
			return append(b, `"NaN"`...)
		case math.IsInf(f, 1):
			return append(b, `"Infinity"`...)
		case math.IsInf(f, -1):
			return append(b, `"-Infinity"`...)
		default:
			return strconv.AppendFloat(b, f, 'g', -1, 64)
		}
	case *commonpb.AnyValue_BytesValue:
		return append(base64.StdEncoding.AppendEncode(append(b, `"type":"bytes","value":"`...), v.BytesValue), '"')
	case *commonpb.AnyValue_ArrayValue:
		b = append(b, `"type":"array","value":[`...)
		for i, e := range v.ArrayValue.GetValues() {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendValue(append(b, '{'), e), '}')
		}
		return append(b, ']')
	case *commonpb.AnyValue_KvlistValue:
		return appendAttrs(append(b, `"type":"kvlist","value":`...), v.KvlistValue.GetValues())
	}
	return append(b, `"type":"empty","value":null`...)
}

// appendString appends s as a JSON string. What needs escaping is rare in
// span data, and left to encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
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
