package otlpwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the OTLP messages that the walker reads. They are fixed by
// opentelemetry-proto and never change.
//
// ExportTraceServiceRequest and TracesData are the same message on the wire,
// and ResourceSpans and ScopeSpans share a shape: a context message (resource
// or scope), the repeated children, and a schema URL.
const (
	TracesDataResourceSpans = 1 // also ExportTraceServiceRequest.resource_spans

	ResourceSpansResource   = 1
	ResourceSpansScopeSpans = 2
	ResourceSpansSchemaURL  = 3

	ScopeSpansScope     = 1
	ScopeSpansSpans     = 2
	ScopeSpansSchemaURL = 3
)

const (
	spanTraceID    = 1
	spanSpanID     = 2
	spanTraceState = 3
	spanParentID   = 4
	spanName       = 5
	spanKind       = 6
	spanStart      = 7
	spanEnd        = 8
	spanAttributes = 9
	spanEvents     = 11
	spanLinks      = 13
	spanStatus     = 15
)

// maxDepth bounds the nesting of AnyValue arrays and key-value lists. It keeps
// a hostile request from exhausting the stack; real telemetry nests a few
// levels at most.
const maxDepth = 64

// ErrMalformed is wrapped by every error that Parse returns for bytes that are
// not a valid encoded ExportTraceServiceRequest.
var ErrMalformed = errors.New("malformed OTLP trace request")

// Resource is one ResourceSpans' resource, as encoded in the request.
type Resource struct {
	Raw       []byte // encoded opentelemetry.proto.resource.v1.Resource; nil if absent, non-nil if present
	SchemaURL []byte
	Service   []byte // the string value of its service.name attribute, if any
}

// Scope is one ScopeSpans' instrumentation scope, as encoded in the request.
type Scope struct {
	Raw       []byte // encoded opentelemetry.proto.common.v1.InstrumentationScope; nil if absent
	SchemaURL []byte
	Resource  int32 // index into Batch.Resources
}

// Span is one accepted span.
type Span struct {
	TraceID [16]byte
	SpanID  [8]byte
	Parent  [8]byte // parent_span_id; zero for a root, or if not 8 bytes
	Start   uint64  // start_time_unix_nano
	End     uint64  // end_time_unix_nano
	Name    []byte
	Kind    int32  // opentelemetry.proto.trace.v1.Span.SpanKind
	Error   bool   // status code is STATUS_CODE_ERROR, as in Facts
	Status  uint8  // status code: 0 unset, 1 ok, 2 error; codes OTLP does not define count as unset
	Scope   int32  // index into Batch.Scopes
	Raw     []byte // the encoded span message, exactly as received
	// Ordered reports that Raw's fields come in non-decreasing number
	// order, as protobuf encoders write them, so that a store taking
	// fields out of the span can stop looking once it is past them.
	Ordered bool
	// AttrFrom and AttrTo bound, in Batch.Attrs, the scalar attributes of
	// the span and of its events, which search looks for alike, in order,
	// as SpanAndEventAttributes reports them (see Batch.SpanAttrs). Indexes
	// rather than a slice: a span's slice kept alive each array that
	// Batch.Attrs outgrew, which for a large request doubled its memory.
	AttrFrom, AttrTo int32
}

// SpanAttrs returns the attributes of s, a span of b, as Span.AttrFrom
// describes them.
func (b *Batch) SpanAttrs(s *Span) []Attribute { return b.Attrs[s.AttrFrom:s.AttrTo:s.AttrTo] }

// Attribute is a span attribute with a scalar value: strings and bytes in
// B; bool (0 or 1), int (two's complement) and double (IEEE-754 bits) in
// Num. Its key and bytes are found in the encoded span it belongs to
// (Span.Raw) rather than held as slices: a large request parses into more
// attributes than spans, and slices made them twice the size, and two
// pointers each for the collector to follow.
type Attribute struct {
	key, b Range
	Num    uint64
	Type   ValueType
	// Event says the attribute is an event's, not the span's own.
	Event bool
}

// Key is the attribute's key; raw is its span's Span.Raw.
func (a *Attribute) Key(raw []byte) []byte { return a.key.Of(raw) }

// B is the attribute's string or bytes value; raw is its span's Span.Raw.
func (a *Attribute) B(raw []byte) []byte { return a.b.Of(raw) }

// BRange is where B is in the span's bytes.
func (a *Attribute) BRange() Range { return a.b }

// attribute records an attribute of the span raw.
func attribute(raw, key []byte, t ValueType, b []byte, num uint64) Attribute {
	return Attribute{key: RangeIn(raw, key), b: RangeIn(raw, b), Num: num, Type: t}
}

// Range says where in a span's bytes a field's value is: held instead of a
// slice, it is two words smaller and no pointer for the collector to
// follow.
type Range struct{ at, len uint32 }

// RangeIn finds field, a slice of raw's bytes as the parser makes them,
// in raw: both run to the end of the request they were parsed from, so
// their capacities differ by field's offset. An empty field, or one that
// is not those very bytes of raw, is the empty range, which is within any
// copy of raw.
func RangeIn(raw, field []byte) Range {
	at := cap(raw) - cap(field)
	if len(field) == 0 || at < 0 || at+len(field) > len(raw) || &raw[at] != &field[0] {
		return Range{}
	}
	return Range{uint32(at), uint32(len(field))}
}

// Of is the range's bytes in raw, nil if it is empty.
func (r Range) Of(raw []byte) []byte {
	if r.len == 0 {
		return nil
	}
	return raw[r.at : r.at+r.len : r.at+r.len]
}

// Window is the span start times a store accepts, in unix nanoseconds.
type Window struct {
	NotBefore uint64 // spans that started earlier are too old; 0 for no bound
	NotAfter  uint64 // spans that start later are too far in the future; 0 for no bound
}

// Rejection counts spans that were dropped one by one, by reason.
type Rejection struct {
	BadTraceID int // trace_id not 16 bytes or all zero
	BadSpanID  int // span_id not 8 bytes or all zero
	TooOld     int // started before Window.NotBefore
	TooNew     int // starts after Window.NotAfter
	// BadUTF8 counts spans with a string that is not valid UTF-8, in the
	// span itself or in its resource or scope; BadUTF8Field names the first
	// such field, even in a resource or scope without spans.
	BadUTF8      int
	BadUTF8Field string
	Window       Window // the window that Parse was given
}

// Total is the number of rejected spans.
func (r Rejection) Total() int { return r.BadTraceID + r.BadSpanID + r.TooOld + r.TooNew + r.BadUTF8 }

// Message describes the rejections for an OTLP partial_success, or is empty.
func (r Rejection) Message() string {
	var parts []string
	if r.BadTraceID > 0 {
		parts = append(parts, fmt.Sprintf("%d with invalid trace_id (must be 16 bytes, not all zero)", r.BadTraceID))
	}
	if r.BadSpanID > 0 {
		parts = append(parts, fmt.Sprintf("%d with invalid span_id (must be 8 bytes, not all zero)", r.BadSpanID))
	}
	if r.BadUTF8 > 0 {
		parts = append(parts, fmt.Sprintf("%d with a string that is not valid UTF-8 (first: %s)", r.BadUTF8, r.BadUTF8Field))
	}
	if r.TooOld > 0 {
		parts = append(parts, fmt.Sprintf("%d starting before %s, outside the retention period",
			r.TooOld, formatNanos(r.Window.NotBefore)))
	}
	if r.TooNew > 0 {
		parts = append(parts, fmt.Sprintf("%d starting after %s, too far in the future (check the sender's clock)",
			r.TooNew, formatNanos(r.Window.NotAfter)))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("%d spans rejected: %s", r.Total(), strings.Join(parts, ", "))
}

// formatNanos formats unix nanoseconds as RFC 3339, clamped to the times
// that time.Time holds as nanoseconds.
func formatNanos(ns uint64) string {
	return time.Unix(0, int64(min(ns, math.MaxInt64))).UTC().Format(time.RFC3339)
}

// badUTF8 counts n spans rejected for invalid UTF-8 in field. The field is
// named even if it rejected no span (a resource without spans).
func (r *Rejection) badUTF8(n int, field string) {
	if r.BadUTF8Field == "" {
		r.BadUTF8Field = field
	}
	r.BadUTF8 += n
}

// MaxRequestBytes is the largest request Parse takes: 2 GiB, the most a
// protobuf message may have. Attributes record where their bytes are in
// 32 bits.
const MaxRequestBytes = math.MaxInt32

// Batch is a parsed Export request. Its slices alias the request bytes, so
// the request must outlive the batch. A Batch can be reused with Reset.
type Batch struct {
	Resources []Resource
	Scopes    []Scope
	Spans     []Span
	Attrs     []Attribute // of all spans, in order; see Span.AttrFrom
	Rejected  Rejection
}

// Reset empties the batch, keeping its capacity.
func (b *Batch) Reset() {
	b.Resources = b.Resources[:0]
	b.Scopes = b.Scopes[:0]
	b.Spans = b.Spans[:0]
	b.Attrs = b.Attrs[:0]
	b.Rejected = Rejection{}
}

// Parse walks an encoded ExportTraceServiceRequest (or, identically on the
// wire, a TracesData) into b, which it resets first. Spans with invalid IDs,
// spans that start outside accept, and spans with a string that is not valid
// UTF-8 are counted in b.Rejected and left out; invalid UTF-8 in a resource
// or scope leaves out all of its spans. Any other fault anywhere in the
// request fails the whole request with an error wrapping ErrMalformed, as
// does a request larger than MaxRequestBytes.
func Parse(req []byte, b *Batch, accept Window) error {
	b.Reset()
	if len(req) > MaxRequestBytes {
		return fmt.Errorf("%w: %d bytes, more than the %d a protobuf message may have", ErrMalformed, len(req), MaxRequestBytes)
	}
	b.Rejected.Window = accept
	err := walkFields(req, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != TracesDataResourceSpans {
			return nil
		}
		if typ != protowire.BytesType {
			return wrongType("ExportTraceServiceRequest.resource_spans")
		}
		return b.parseResourceSpans(v)
	})
	if err != nil {
		b.Reset()
	}
	return err
}

func (b *Batch) parseResourceSpans(rs []byte) error {
	raw, schemaURL, err := resourceSpans.context(rs)
	if err != nil {
		return b.rejectContainer(&resourceSpans, err, rs, countScopeSpans)
	}
	ri := int32(len(b.Resources))
	b.Resources = append(b.Resources, Resource{Raw: raw, SchemaURL: schemaURL, Service: ServiceName(raw)})
	return resourceSpans.children(rs, func(ss []byte) error { return b.parseScopeSpans(ss, ri) })
}

func (b *Batch) parseScopeSpans(ss []byte, resource int32) error {
	raw, schemaURL, err := scopeSpans.context(ss)
	if err != nil {
		return b.rejectContainer(&scopeSpans, err, ss, func([]byte) (int, error) { return 1, nil })
	}
	si := int32(len(b.Scopes))
	b.Scopes = append(b.Scopes, Scope{Raw: raw, SchemaURL: schemaURL, Resource: resource})
	return scopeSpans.children(ss, func(span []byte) error { return b.parseSpan(span, si) })
}

// rejectContainer handles the fault err found in the context of a
// ResourceSpans or ScopeSpans message: invalid UTF-8 rejects the spans
// under it, whose children count, and anything else fails the request.
func (b *Batch) rejectContainer(c *container, err error, msg []byte, spans func(child []byte) (int, error)) error {
	field, ok := utf8Field(err)
	if !ok {
		return err
	}
	n := 0
	err = c.children(msg, func(child []byte) error {
		k, err := spans(child)
		n += k
		return err
	})
	b.Rejected.badUTF8(n, c.what+": "+field)
	return err
}

// countScopeSpans counts the spans of an encoded ScopeSpans.
func countScopeSpans(ss []byte) (int, error) {
	n := 0
	err := scopeSpans.children(ss, func([]byte) error { n++; return nil })
	return n, err
}

// container describes ResourceSpans or ScopeSpans, which share a shape: a
// context message (resource or scope), the repeated children, and a schema
// URL.
type container struct {
	what                                  string // of the context, for rejections
	contextField, schemaField, childField string // field names, for errors
	validate                              func([]byte) error
}

var (
	resourceSpans = container{"resource", "ResourceSpans.resource", "ResourceSpans.schema_url", "ResourceSpans.scope_spans", validateResource}
	scopeSpans    = container{"scope", "ScopeSpans.scope", "ScopeSpans.schema_url", "ScopeSpans.spans", validateScope}
)

// context returns the validated context message and schema URL of a
// container. They may follow the children on the wire, so this is a pass
// of its own, before the children are walked.
func (c *container) context(msg []byte) (raw, schemaURL []byte, err error) {
	err = walkFields(msg, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case ResourceSpansResource: // = ScopeSpansScope
			if typ != protowire.BytesType {
				return wrongType(c.contextField)
			}
			if err := c.validate(v); err != nil {
				return err
			}
			raw = mergeMessage(raw, v)
		case ResourceSpansSchemaURL: // = ScopeSpansSchemaURL
			if err := checkString(typ, v, c.schemaField); err != nil {
				return err
			}
			schemaURL = v
		}
		return nil
	})
	return raw, schemaURL, err
}

// children calls child for each child of a container.
func (c *container) children(msg []byte, child func([]byte) error) error {
	return walkFields(msg, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != ResourceSpansScopeSpans { // = ScopeSpansSpans
			return nil
		}
		if typ != protowire.BytesType {
			return wrongType(c.childField)
		}
		return child(v)
	})
}
func (b *Batch) parseSpan(raw []byte, scope int32) error {
	sp := Span{Scope: scope, Raw: raw}
	var traceOK, spanOK bool
	// Attributes are read as they are validated, so that indexing the span
	// does not walk it again.
	firstAttr := len(b.Attrs)
	sp.Ordered = true
	var prev protowire.Number
	err := walkFields(raw, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num < prev {
			sp.Ordered = false
		}
		prev = num
		switch num {
		case spanTraceID:
			if typ != protowire.BytesType {
				return wrongType("Span.trace_id")
			}
			traceOK = len(v) == 16 && !allZero(v)
			if traceOK {
				copy(sp.TraceID[:], v)
			}
		case spanSpanID:
			if typ != protowire.BytesType {
				return wrongType("Span.span_id")
			}
			spanOK = len(v) == 8 && !allZero(v)
			if spanOK {
				copy(sp.SpanID[:], v)
			}
		case spanParentID:
			if typ != protowire.BytesType {
				return wrongType("Span.parent_span_id")
			}
			if len(v) == 8 {
				copy(sp.Parent[:], v)
			}
		case spanTraceState:
			return checkString(typ, v, "Span.trace_state")
		case spanName:
			if err := checkString(typ, v, "Span.name"); err != nil {
				return err
			}
			sp.Name = v
		case spanKind:
			if typ == protowire.VarintType {
				k, _ := protowire.ConsumeVarint(v)
				sp.Kind = int32(k)
			}
		case spanStart:
			if typ == protowire.Fixed64Type {
				sp.Start = binary.LittleEndian.Uint64(v)
			}
		case spanEnd:
			if typ == protowire.Fixed64Type {
				sp.End = binary.LittleEndian.Uint64(v)
			}
		case spanAttributes:
			key, t, bs, num, ok, err := scalarAttribute(typ, v, 0)
			if err != nil {
				return err
			}
			if ok {
				b.Attrs = append(b.Attrs, attribute(raw, key, t, bs, num))
			}
		case spanEvents:
			if err := validateMessage(typ, v, "Span.events", validateEvent); err != nil {
				return err
			}
			Attributes(v, eventAttributes, func(key []byte, t ValueType, bs []byte, num uint64) {
				a := attribute(raw, key, t, bs, num)
				a.Event = true
				b.Attrs = append(b.Attrs, a)
			})
		case spanLinks:
			return validateMessage(typ, v, "Span.links", validateLink)
		case spanStatus:
			if err := validateMessage(typ, v, "Span.status", validateStatus); err != nil {
				return err
			}
			// A later status merges over an earlier one, its code
			// included: a code OTLP does not define counts as unset.
			if code, ok := statusCode(v); ok {
				sp.Error = code == statusCodeError
				sp.Status = 0
				if code <= statusCodeError {
					sp.Status = uint8(code)
				}
			}
		}
		return nil
	})
	switch {
	case err != nil:
		field, ok := utf8Field(err)
		if !ok {
			return err
		}
		b.Rejected.badUTF8(1, "span: "+field)
	case !traceOK:
		b.Rejected.BadTraceID++
	case !spanOK:
		b.Rejected.BadSpanID++
	case sp.Start < b.Rejected.Window.NotBefore:
		b.Rejected.TooOld++
	case b.Rejected.Window.NotAfter > 0 && sp.Start > b.Rejected.Window.NotAfter:
		b.Rejected.TooNew++
	default:
		sp.AttrFrom, sp.AttrTo = int32(firstAttr), int32(len(b.Attrs))
		b.Spans = append(b.Spans, sp)
		return nil
	}
	b.Attrs = b.Attrs[:firstAttr]
	return nil
}

// mergeMessage returns the encoding of a singular message field that has
// occurred with encodings prev (nil before the first occurrence) and v.
// Protobuf merges repeated occurrences, and the concatenation of two
// encodings is the encoding of their merge. The result is never nil: a
// present empty message differs from an absent one.
func mergeMessage(prev, v []byte) []byte {
	if prev == nil {
		if v == nil {
			return []byte{}
		}
		return v[:len(v):len(v)]
	}
	return append(append([]byte{}, prev...), v...)
}

// ServiceName returns the string value of the service.name attribute of an
// encoded, validated Resource; the last one wins, as in any attribute map.
func ServiceName(res []byte) []byte {
	var name []byte
	Attributes(res, ResourceAttributes, func(key []byte, t ValueType, b []byte, _ uint64) {
		if string(key) == "service.name" {
			name = nil
			if t == StringValue {
				name = b
			}
		}
	})
	return name
}

// nextBytesField consumes one field of a message already validated by
// walkFields and returns its number and, if length-delimited, its payload
// (otherwise nil, with number 0).
func nextBytesField(msg []byte) (protowire.Number, []byte, []byte) {
	num, typ, n := protowire.ConsumeTag(msg)
	msg = msg[n:]
	if typ != protowire.BytesType {
		n = protowire.ConsumeFieldValue(num, typ, msg)
		return 0, nil, msg[n:]
	}
	v, n := protowire.ConsumeBytes(msg)
	return num, v, msg[n:]
}

func allZero(v []byte) bool {
	for _, c := range v {
		if c != 0 {
			return false
		}
	}
	return true
}

// walkFields calls fn for every field of an encoded message. For
// length-delimited fields v is the payload; for fixed-width fields it is the
// raw little-endian bytes; for varints it is the encoded varint.
func walkFields(msg []byte, fn func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return malformed(protowire.ParseError(n))
		}
		// ConsumeTag lets through numbers up to 2^31-1; protobuf's end at 2^29-1.
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: field number %d out of range", ErrMalformed, num)
		}
		msg = msg[n:]
		var v []byte
		switch typ {
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(msg)
			if n > 0 {
				v = msg[:n]
			}
		case protowire.Fixed64Type:
			n = 8
			if len(msg) < 8 {
				n = -1
			} else {
				v = msg[:8]
			}
		case protowire.Fixed32Type:
			n = 4
			if len(msg) < 4 {
				n = -1
			} else {
				v = msg[:4]
			}
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(msg)
		default:
			// Groups are not used by OTLP; proto3 parsers reject them too.
			return fmt.Errorf("%w: field %d has unsupported wire type %d", ErrMalformed, num, typ)
		}
		if n < 0 {
			return malformed(protowire.ParseError(n))
		}
		msg = msg[n:]
		if err := fn(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

func malformed(err error) error { return fmt.Errorf("%w: %v", ErrMalformed, err) }

func wrongType(field string) error {
	return fmt.Errorf("%w: %s has the wrong wire type", ErrMalformed, field)
}

func checkString(typ protowire.Type, v []byte, field string) error {
	if typ != protowire.BytesType {
		return wrongType(field)
	}
	if !utf8.Valid(v) {
		return &utf8Error{field}
	}
	return nil
}

// utf8Error is a string field that is not valid UTF-8. Unlike other
// faults, it leaves the message around it well formed, so only the span,
// or the resource or scope, that holds it is rejected.
type utf8Error struct{ field string }

func (e *utf8Error) Error() string {
	return fmt.Sprintf("%v: %s is not valid UTF-8", ErrMalformed, e.field)
}

func (e *utf8Error) Unwrap() error { return ErrMalformed }

// utf8Field returns the field that err, if a utf8Error, names.
func utf8Field(err error) (string, bool) {
	var bad *utf8Error
	if !errors.As(err, &bad) {
		return "", false
	}
	return bad.field, true
}

func validateMessage(typ protowire.Type, v []byte, field string, validate func([]byte) error) error {
	if typ != protowire.BytesType {
		return wrongType(field)
	}
	return validate(v)
}
