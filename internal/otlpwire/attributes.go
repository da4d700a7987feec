package otlpwire

import (
	"encoding/binary"

	"google.golang.org/protobuf/encoding/protowire"
)

// ValueType is the type of a scalar attribute value. Values of different
// types never compare equal: the integer 5 is not the string "5".
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
)

// Attributes calls fn for each attribute with a scalar value of an encoded,
// validated message whose attributes are field number field. The value is
// in canonical form: string and bytes values as they are, bool as one byte
// 0 or 1, int as 8 bytes big-endian, double as its 8 IEEE-754 bytes
// big-endian. v is only valid during the call. Arrays, key-value lists and
// empty values are skipped.
func Attributes(msg []byte, field protowire.Number, fn func(key []byte, t ValueType, v []byte)) {
	var scratch [8]byte
	for len(msg) > 0 {
		num, kv, rest := nextBytesField(msg)
		msg = rest
		if num != field {
			continue
		}
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
		if t, v, ok := scalar(val, &scratch); ok {
			fn(key, t, v)
		}
	}
}

// scalar returns the canonical form of an encoded AnyValue holding a scalar.
func scalar(val []byte, scratch *[8]byte) (ValueType, []byte, bool) {
	var (
		t  ValueType
		v  []byte
		ok bool
	)
	for len(val) > 0 {
		num, typ, n := protowire.ConsumeTag(val)
		val = val[n:]
		n = protowire.ConsumeFieldValue(num, typ, val)
		field := val[:n]
		val = val[n:]
		switch {
		case (num == 1 || num == 7) && typ == protowire.BytesType:
			b, _ := protowire.ConsumeBytes(field)
			t, v, ok = ValueType(num), b, true
		case num == 2 && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(field)
			scratch[0] = 0
			if x != 0 {
				scratch[0] = 1
			}
			t, v, ok = BoolValue, scratch[:1], true
		case num == 3 && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(field)
			binary.BigEndian.PutUint64(scratch[:], x)
			t, v, ok = IntValue, scratch[:], true
		case num == 4 && typ == protowire.Fixed64Type:
			binary.BigEndian.PutUint64(scratch[:], binary.LittleEndian.Uint64(field))
			t, v, ok = DoubleValue, scratch[:], true
		case num == 5 || num == 6:
			t, v, ok = 0, nil, false // array or kvlist: the last value field wins
		}
	}
	return t, v, ok
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
func Facts(raw []byte) SpanFacts {
	var f SpanFacts
	for msg := raw; len(msg) > 0; {
		num, typ, n := protowire.ConsumeTag(msg)
		msg = msg[n:]
		n = protowire.ConsumeFieldValue(num, typ, msg)
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
			f.Error = statusCode(status) == statusCodeError
		}
	}
	return f
}

const statusCodeError = 2 // opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR

func statusCode(status []byte) uint64 {
	var code uint64
	for len(status) > 0 {
		num, typ, n := protowire.ConsumeTag(status)
		status = status[n:]
		n = protowire.ConsumeFieldValue(num, typ, status)
		if num == 3 && typ == protowire.VarintType { // Status.code
			code, _ = protowire.ConsumeVarint(status[:n])
		}
		status = status[n:]
	}
	return code
}
