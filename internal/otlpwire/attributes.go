package otlpwire

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// ValueType is the type of a scalar attribute value. Search compares values
// by their text (AppendText), whatever their types.
type ValueType uint8

// Scalar AnyValue types, numbered as AnyValue's oneof fields.
const (
	StringValue ValueType = 1
	BoolValue   ValueType = 2
	IntValue    ValueType = 3
	DoubleValue ValueType = 4
	BytesValue  ValueType = 7
)

// Field numbers of the repeated attributes field in the messages that have
// one.
const (
	ResourceAttributes protowire.Number = 1
	SpanAttributes     protowire.Number = spanAttributes
	eventAttributes    protowire.Number = 3
)

// Attributes calls fn for each attribute with a scalar value of an encoded,
// validated message whose attributes are field number field. String and
// bytes values come as b; bool (0 or 1), int (two's complement) and double
// (IEEE-754 bits) values as num, so that nothing is allocated. Arrays,
// key-value lists and empty values are skipped.
func Attributes(msg []byte, field protowire.Number, fn func(key []byte, t ValueType, b []byte, num uint64)) {
	for len(msg) > 0 {
		num, kv, rest := nextBytesField(msg)
		msg = rest
		if num == field {
			scalarKeyValue(kv, fn)
		}
	}
}

// scalarKeyValue calls fn for an encoded KeyValue if its value is a scalar.
func scalarKeyValue(kv []byte, fn func(key []byte, t ValueType, b []byte, num uint64)) {
	var key, val []byte
	for len(kv) > 0 {
		var n protowire.Number
		var v []byte
		n, v, kv = nextBytesField(kv)
		switch n {
		case 1:
			key = v
		case 2:
			val = v
		}
	}
	if t, b, x, ok := scalar(val); ok {
		fn(key, t, b, x)
	}
}

// SpanAndEventAttributes calls fn, as Attributes does, for each scalar
// attribute of an encoded, validated span and of its events, in the order
// they are encoded: the attributes Parse records for a span (Batch.SpanAttrs).
func SpanAndEventAttributes(span []byte, fn func(key []byte, t ValueType, b []byte, num uint64)) {
	for len(span) > 0 {
		num, v, rest := nextBytesField(span)
		switch num {
		case spanAttributes:
			scalarKeyValue(v, fn)
		case spanEvents:
			Attributes(v, eventAttributes, fn)
		}
		span = rest
	}
}

// AppendText appends a scalar value as OTLP JSON writes it, unquoted: a
// string as it is, bytes in base64, a bool as true or false, an int in
// decimal, a double as JavaScript writes numbers (72.5, 123 for 123.0,
// 1e+21), or NaN, Infinity, -Infinity. Search terms hash values in this form
// and search compares them in it, as Jaeger's own stores compare values: a
// Jaeger UI sends every tag value as a string, and the int 404 must match
// its "404"; the int 123 and the double 123.0 then match too.
func AppendText(dst []byte, t ValueType, b []byte, num uint64) []byte {
	switch t {
	case BoolValue:
		return strconv.AppendBool(dst, num != 0)
	case IntValue:
		return strconv.AppendInt(dst, int64(num), 10)
	case DoubleValue:
		return appendDouble(dst, math.Float64frombits(num))
	case BytesValue:
		return base64.StdEncoding.AppendEncode(dst, b)
	}
	return append(dst, b...)
}

// appendDouble writes f as ECMAScript's Number::toString does, which is
// also how protobuf's JSON encoding writes doubles: plain decimals from
// 1e-6 up to 1e21, exponents (without a leading zero) outside.
func appendDouble(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		// -0 too, as JavaScript writes it (protobuf's JSON writes -0): search
		// matches numbers by value, and -0 is 0.
		return append(dst, '0')
	}
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		dst = strconv.AppendFloat(dst, f, 'e', -1, 64)
		// Go pads the exponent to two digits (1e-07), JavaScript does not;
		// exponents of 21 and up need no padding.
		if n := len(dst); dst[n-4] == 'e' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
		return dst
	}
	return strconv.AppendFloat(dst, f, 'f', -1, 64)
}

// scalar decodes an encoded AnyValue holding a scalar.
func scalar(val []byte) (t ValueType, b []byte, num uint64, ok bool) {
	for len(val) > 0 {
		n, typ, m := protowire.ConsumeTag(val)
		val = val[m:]
		m = protowire.ConsumeFieldValue(n, typ, val)
		field := val[:m]
		val = val[m:]
		switch {
		case (n == 1 || n == 7) && typ == protowire.BytesType:
			b, _ = protowire.ConsumeBytes(field)
			t, num, ok = ValueType(n), 0, true
		case n == 2 && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(field)
			t, b, num, ok = BoolValue, nil, 0, true
			if x != 0 {
				num = 1
			}
		case n == 3 && typ == protowire.VarintType:
			num, _ = protowire.ConsumeVarint(field)
			t, b, ok = IntValue, nil, true
		case n == 4 && typ == protowire.Fixed64Type:
			t, b, num, ok = DoubleValue, nil, binary.LittleEndian.Uint64(field), true
		case n == 5 || n == 6:
			t, b, num, ok = 0, nil, 0, false // array or kvlist: the last value field wins
		}
	}
	return t, b, num, ok
}

// SpanFacts are the fields of an accepted span that search conditions read.
type SpanFacts struct {
	ID     [8]byte
	Parent []byte // empty for a root span
	Name   []byte
	Kind   int32
	Start  uint64
	End    uint64
	Error  bool // status code is STATUS_CODE_ERROR
}

// Facts reads the searchable fields of an encoded span that Parse accepted.
// Spans are read back from disk, where damage that checksums miss is rare
// but possible: of a malformed span it reads the fields before the first
// bad one.
func Facts(raw []byte) SpanFacts {
	var f SpanFacts
	for msg := raw; len(msg) > 0; {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			break
		}
		msg = msg[n:]
		if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
			break
		}
		v := msg[:n]
		msg = msg[n:]
		switch {
		case num == spanSpanID && typ == protowire.BytesType:
			if id, _ := protowire.ConsumeBytes(v); len(id) == 8 {
				f.ID = [8]byte(id)
			}
		case num == spanParentID && typ == protowire.BytesType:
			f.Parent, _ = protowire.ConsumeBytes(v)
		case num == spanName && typ == protowire.BytesType:
			f.Name, _ = protowire.ConsumeBytes(v)
		case num == spanKind && typ == protowire.VarintType:
			k, _ := protowire.ConsumeVarint(v)
			f.Kind = int32(k)
		case num == spanStart && typ == protowire.Fixed64Type:
			f.Start = binary.LittleEndian.Uint64(v)
		case num == spanEnd && typ == protowire.Fixed64Type:
			f.End = binary.LittleEndian.Uint64(v)
		case num == spanStatus && typ == protowire.BytesType:
			status, _ := protowire.ConsumeBytes(v)
			if code, ok := statusCode(status); ok {
				f.Error = code == statusCodeError
			}
		}
	}
	return f
}

const statusCodeError = 2 // opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR

// statusCode returns the code an encoded Status sets, if it sets one. A span
// whose status field occurs more than once has the merge of them, where the
// last code set wins.
func statusCode(status []byte) (code uint64, ok bool) {
	for len(status) > 0 {
		num, typ, n := protowire.ConsumeTag(status)
		if n < 0 {
			break
		}
		status = status[n:]
		if n = protowire.ConsumeFieldValue(num, typ, status); n < 0 {
			break
		}
		if num == 3 && typ == protowire.VarintType { // Status.code
			code, _ = protowire.ConsumeVarint(status[:n])
			ok = true
		}
		status = status[n:]
	}
	return code, ok
}
