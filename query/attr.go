package query

import (
	"fmt"
	"strconv"
	"strings"

	"cairn/internal/otlpjson"
	"cairn/query/jaegerpb"
)

// ParseAttribute parses an attribute condition written key=value, as the
// command line and the HTTP API take it. The value is an int if it is
// written as a JSON integer that fits 64 bits, a double if as a JSON number
// with a fraction or an exponent, a bool if it is true or false, and a
// string otherwise; a value in double quotes is always a string.
func ParseAttribute(s string) (*jaegerpb.KeyValue, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return nil, fmt.Errorf("attribute %q is not key=value", s)
	}
	return &jaegerpb.KeyValue{Key: k, Value: typedValue(v)}, nil
}

func typedValue(v string) *jaegerpb.AnyValue {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_StringValue{StringValue: v[1 : len(v)-1]}}
	}
	// Go's parsers take more than JSON (Inf, NaN, 0x1p3, 1_000, +5, 007),
	// and a string attribute such as "Nan" or "007" would then be
	// searched for as a number whose text is not its own.
	if otlpjson.IsNumber(v) {
		if i, err := strconv.ParseInt(v, 10, 64); err == nil {
			return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_IntValue{IntValue: i}}
		}
		// Digits past int64's range (an order ID) stay a string: as a
		// double, their text would be another.
		if f, err := strconv.ParseFloat(v, 64); err == nil && strings.ContainsAny(v, ".eE") {
			return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_DoubleValue{DoubleValue: f}}
		}
	}
	if v == "true" || v == "false" {
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_BoolValue{BoolValue: v == "true"}}
	}
	return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_StringValue{StringValue: v}}
}
