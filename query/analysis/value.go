package analysis

import (
	"encoding/hex"
	"math"
	"strconv"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// valueString is a key of an attribute value that tells types apart: the
// string "1" and the int 1 are different values.
func valueString(v *commonpb.AnyValue) string { return string(appendValue(nil, v)) }

// appendValue appends the key valueString returns to b.
func appendValue(b []byte, v *commonpb.AnyValue) []byte {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return append(append(b, 's'), x.StringValue...)
	case *commonpb.AnyValue_IntValue:
		return strconv.AppendInt(append(b, 'i'), x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.AppendUint(append(b, 'd'), math.Float64bits(x.DoubleValue), 16)
	case *commonpb.AnyValue_BoolValue:
		return strconv.AppendBool(append(b, 'b'), x.BoolValue)
	case *commonpb.AnyValue_BytesValue:
		return hex.AppendEncode(append(b, 'x'), x.BytesValue)
	case nil:
		return b
	default: // arrays and maps: their encoding, deterministic for one value
		m, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v)
		return append(append(b, 'm'), m...)
	}
}
