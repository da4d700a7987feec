package analysis

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// A trace file describes a trace in a line per span:
//
//	ID PARENT SERVICE[@HOST] KIND START END NAME… [| error] [| key=value…]
//
// ID and PARENT are labels of up to 8 bytes, PARENT "-" for none; a parent
// no line defines makes an orphan. START and END are milliseconds. Spans of
// one SERVICE@HOST share a resource, hence a clock. Attributes after a "|"
// are span attributes, typed as the CLI types them; "res:key=value" sets
// one on the resource.
func readTrace(path string) (*Trace, map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	t := &Trace{}
	resources := map[string]int{}
	labels := map[string]int{}
	lines := bufio.NewScanner(f)
	for n := 1; lines.Scan(); n++ {
		line := strings.TrimSpace(lines.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSpanLine(t, resources, line)
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		labels[strings.TrimRight(string(s.ID[:]), "\x00")] = len(t.Spans)
		t.Spans = append(t.Spans, s)
	}
	return t, labels, lines.Err()
}

func parseSpanLine(t *Trace, resources map[string]int, line string) (Span, error) {
	parts := strings.Split(line, "|")
	f := strings.Fields(parts[0])
	if len(f) < 7 {
		return Span{}, fmt.Errorf("%q: want ID PARENT SERVICE KIND START END NAME", line)
	}
	var s Span
	copy(s.ID[:], f[0])
	if f[1] != "-" {
		copy(s.Parent[:], f[1])
	}
	kind, ok := tracepb.Span_SpanKind_value["SPAN_KIND_"+strings.ToUpper(f[3])]
	if !ok {
		return Span{}, fmt.Errorf("kind %q", f[3])
	}
	s.Kind = tracepb.Span_SpanKind(kind)
	start, err1 := strconv.ParseFloat(f[4], 64)
	end, err2 := strconv.ParseFloat(f[5], 64)
	if err1 != nil || err2 != nil {
		return Span{}, fmt.Errorf("times %q %q", f[4], f[5])
	}
	const base = 1_700_000_000_000_000_000
	s.Start, s.End = base+uint64(start*1e6), base+uint64(end*1e6)
	s.Name = strings.Join(f[6:], " ")
	process := f[2]
	s.Service, _, _ = strings.Cut(process, "@")
	var resAttrs []*commonpb.KeyValue
	for _, p := range parts[1:] {
		for _, a := range strings.Fields(p) {
			if a == "error" {
				s.Failed = true
				continue
			}
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return Span{}, fmt.Errorf("attribute %q is not key=value", a)
			}
			if rk, ok := strings.CutPrefix(k, "res:"); ok {
				resAttrs = append(resAttrs, &commonpb.KeyValue{Key: rk, Value: typedValue(v)})
				process += " " + a
				continue
			}
			s.Attrs = append(s.Attrs, &commonpb.KeyValue{Key: k, Value: typedValue(v)})
		}
	}
	res, ok := resources[process]
	if !ok {
		res = len(t.Resources)
		resources[process] = res
		attrs := append([]*commonpb.KeyValue{{Key: "service.name", Value: str(s.Service)}}, resAttrs...)
		t.Resources = append(t.Resources, attrs)
	}
	s.Resource = res
	return s, nil
}

func str(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}

func typedValue(v string) *commonpb.AnyValue {
	if i, err := strconv.ParseInt(v, 10, 64); err == nil {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: i}}
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: f}}
	}
	if v == "true" || v == "false" {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v == "true"}}
	}
	return str(v)
}
