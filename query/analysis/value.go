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
func valueString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return "s" + x.StringValue
	case *commonpb.AnyValue_IntValue:
		return "i" + strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return "d" + strconv.FormatUint(math.Float64bits(x.DoubleValue), 16)
	case *commonpb.AnyValue_BoolValue:
		return "b" + strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_BytesValue:
		return "x" + hex.EncodeToString(x.BytesValue)
	case nil:
		return ""
	default: // arrays and maps: their encoding, deterministic for one value
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v)
		return "m" + string(b)
	}
}
