package query

import (
	"fmt"
	"strconv"
	"strings"

	"cairn/query/jaegerpb"
)

// ParseAttribute parses an attribute condition written key=value, as the
// command line and the HTTP API take it. The value is an int, a double or a
// bool if it reads as one, and a string otherwise; a value in double quotes
// is always a string.
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
	if i, err := strconv.ParseInt(v, 10, 64); err == nil {
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_IntValue{IntValue: i}}
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_DoubleValue{DoubleValue: f}}
	}
	if v == "true" || v == "false" {
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_BoolValue{BoolValue: v == "true"}}
	}
	return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_StringValue{StringValue: v}}
}
