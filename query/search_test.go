package query

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query/jaegerpb"
	"cairn/storage"
)

// The search corpus: named traces whose spans are given as
// service/name@start+duration [error] [orphan] [key=value ...] [ev:key=value ...],
// start and duration in minutes and milliseconds from hour0, "_" standing
// for a space in names, ev: marking an attribute of the span's one event.
// Values are typed as in the golden file: s:string, i:int, b:bool,
// d:double, y:bytes (of the text after it).
var corpus = map[string][]string{
	"checkout-ok":   {"frontend/GET_/checkout@10+120 http.status_code=i:200", "cart/GetCart@10+30", "payment/Charge@11+60 card=s:visa"},
	"checkout-fail": {"frontend/GET_/checkout@20+900 http.status_code=i:500", "payment/Charge@20+800 error card=s:amex retry=b:true"},
	"browse":        {"frontend/GET_/products@30+15 http.status_code=i:200", "catalog/List@30+10 ratio=d:0.5"},
	"slow-browse":   {"frontend/GET_/products@40+2500 http.status_code=i:200", "catalog/List@40+2400 ratio=d:1.5"},
	"status-string": {"frontend/GET_/legacy@50+20 http.status_code=s:200"},
	"cart-only":     {"cart/GetCart@55+5"},
	"two-services":  {"cart/GetCart@5+40 card=s:visa", "payment/Refund@70+40 orphan"},
	// Jaeger's UI sends every tag value as a string.
	"ui-tags": {"frontend/GET_/cart@56+12 http.response.status_code=i:404 app.cache.hit=b:true app.ratio=d:72.5 blob=y:hello"},
	"numbers": {"catalog/Count@57+1 size=i:123 weight=d:123 big=i:1152921504606846976 tiny=d:1e-7 label=s:123.0"},
	// The exception is an event of the frontend span; the cart span has
	// the flag.
	"exception": {"frontend/GET_/pay@58+30 error ev:exception.type=s:Timeout ev:retries=i:3", "cart/GetCart@58+3 flag=s:on"},
}

func corpusRequest(t *testing.T) []byte {
	req := &collectorpb.ExportTraceServiceRequest{}
	byService := map[string]*tracepb.ScopeSpans{}
	for name, spans := range corpus {
		for i, desc := range spans {
			fields := strings.Fields(desc)
			svc, rest, _ := strings.Cut(fields[0], "/")
			op, when, _ := strings.Cut(rest, "@")
			op = strings.ReplaceAll(op, "_", " ")
			startMin, durMs, _ := strings.Cut(when, "+")
			m, _ := strconv.Atoi(startMin)
			d, _ := strconv.Atoi(durMs)
			start := uint64(hour0.Add(time.Duration(m) * time.Minute).UnixNano())
			sp := &tracepb.Span{TraceId: traceID(name), SpanId: []byte{7: byte(i + 1)}, Name: op,
				StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(d)*uint64(time.Millisecond)}
			if i > 0 {
				sp.ParentSpanId = []byte{7: 1}
			}
			var event *tracepb.Span_Event
			for _, f := range fields[1:] {
				if kv, ok := strings.CutPrefix(f, "ev:"); ok {
					if event == nil {
						event = &tracepb.Span_Event{Name: "exception", TimeUnixNano: start}
						sp.Events = append(sp.Events, event)
					}
					k, v, _ := strings.Cut(kv, "=")
					event.Attributes = append(event.Attributes, &commonpb.KeyValue{Key: k, Value: otlpValue(t, v)})
					continue
				}
				switch f {
				case "error":
					sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
					continue
				case "orphan": // its parent never arrives
					sp.ParentSpanId = []byte{7: 99}
					continue
				}
				k, v, _ := strings.Cut(f, "=")
				sp.Attributes = append(sp.Attributes, &commonpb.KeyValue{Key: k, Value: otlpValue(t, v)})
			}
			ss := byService[svc]
			if ss == nil {
				ss = &tracepb.ScopeSpans{}
				byService[svc] = ss
				req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
					Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
						{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: svc}}},
						{Key: "region", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: region(svc)}}},
					}},
					ScopeSpans: []*tracepb.ScopeSpans{ss},
				})
			}
			ss.Spans = append(ss.Spans, sp)
		}
	}
	return mustMarshal(t, req)
}

func region(svc string) string {
	if svc == "payment" {
		return "eu"
	}
	return "us"
}

// traceID spells a corpus name into a trace ID, so results read back.
func traceID(name string) []byte {
	id := make([]byte, 16)
	copy(id, name)
	return id
}

func otlpValue(t *testing.T, typed string) *commonpb.AnyValue {
	typ, v, _ := strings.Cut(typed, ":")
	switch typ {
	case "s":
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}
	case "i":
		n, _ := strconv.ParseInt(v, 10, 64)
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: n}}
	case "b":
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v == "true"}}
	case "d":
		f, _ := strconv.ParseFloat(v, 64)
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: f}}
	case "y":
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte(v)}}
	}
	t.Fatalf("bad typed value %q", typed)
	return nil
}

func jaegerValue(t *testing.T, typed string) *jaegerpb.AnyValue {
	v := otlpValue(t, typed)
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_StringValue{StringValue: x.StringValue}}
	case *commonpb.AnyValue_IntValue:
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_IntValue{IntValue: x.IntValue}}
	case *commonpb.AnyValue_BoolValue:
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_BoolValue{BoolValue: x.BoolValue}}
	case *commonpb.AnyValue_BytesValue:
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_BytesValue{BytesValue: x.BytesValue}}
	default:
		return &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_DoubleValue{DoubleValue: x.(*commonpb.AnyValue_DoubleValue).DoubleValue}}
	}
}

// parseQuery reads "find" arguments: service=S operation=O attr=K=TYPED
// min-duration=D max-duration=D start-min=MINUTES start-max=MINUTES limit=N.
func parseQuery(t *testing.T, args []string) *jaegerpb.TraceQueryParameters {
	q := &jaegerpb.TraceQueryParameters{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "service":
			q.ServiceName = v
		case "operation":
			q.OperationName = strings.ReplaceAll(v, "_", " ")
		case "attr":
			ak, av, _ := strings.Cut(v, "=")
			q.Attributes = append(q.Attributes, &jaegerpb.KeyValue{Key: ak, Value: jaegerValue(t, av)})
		case "min-duration", "max-duration":
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatal(err)
			}
			if k == "min-duration" {
				q.DurationMin = durationpb.New(d)
			} else {
				q.DurationMax = durationpb.New(d)
			}
		case "start-min", "start-max":
			m, _ := strconv.Atoi(v)
			ts := timestamppb.New(hour0.Add(time.Duration(m) * time.Minute))
			if k == "start-min" {
				q.StartTimeMin = ts
			} else {
				q.StartTimeMax = ts
			}
		case "limit":
			n, _ := strconv.Atoi(v)
			q.SearchDepth = int32(n)
		default:
			t.Fatalf("unknown query argument %q", a)
		}
	}
	return q
}

// runGolden answers each "find" block of testdata/search.golden through
// FindTraceIDs and compares, or with -update rewrites, the expected traces.
func runGolden(t *testing.T, conn *grpc.ClientConn, where string) {
	path := filepath.Join("testdata", "search.golden")
	in, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	client := jaegerpb.NewTraceReaderClient(conn)
	for _, block := range strings.Split(strings.TrimSpace(string(in)), "\n\n") {
		lines := strings.Split(block, "\n")
		var cmd string
		for _, l := range lines {
			if strings.HasPrefix(l, "#") {
				out.WriteString(l + "\n")
				continue
			}
			cmd = l
			break
		}
		args := strings.Fields(cmd)
		if len(args) == 0 || args[0] != "find" {
			t.Fatalf("%s: block without a find command:\n%s", path, block)
		}
		resp, err := client.FindTraceIDs(context.Background(), &jaegerpb.FindTraceIDsRequest{Query: parseQuery(t, args[1:])})
		fmt.Fprintf(&out, "%s\n----\n", cmd)
		if err != nil {
			fmt.Fprintf(&out, "error: %s\n\n", status.Code(err))
			continue
		}
		for _, f := range resp.TraceIds {
			fmt.Fprintf(&out, "%s\n", bytes.TrimRight(f.TraceId, "\x00"))
		}
		out.WriteString("\n")
	}
	got := strings.TrimSpace(out.String()) + "\n"
	if *update && where == "live buffer" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got != string(in) {
		t.Fatalf("%s: answers differ from %s (run with -update to accept):\n%s", where, path, got)
	}
}

// TestSearchGolden checks search semantics on a fixed corpus, while the
// spans are in the live buffer and again from segments after a restart.
func TestSearchGolden(t *testing.T) {
	dir := t.TempDir()
	db := storeWith(t, dir, corpusRequest(t))
	runGolden(t, serve(t, db), "live buffer")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	runGolden(t, serve(t, db), "segments")
}

func TestFindTracesAndSummaries(t *testing.T) {
	client := jaegerpb.NewTraceReaderClient(serve(t, storeWith(t, t.TempDir(), corpusRequest(t))))
	q := &jaegerpb.TraceQueryParameters{ServiceName: "payment", SearchDepth: 10}

	stream, err := client.FindTraces(context.Background(), &jaegerpb.FindTracesRequest{Query: q})
	if err != nil {
		t.Fatal(err)
	}
	spans := map[string]int{}
	var order []string
	for {
		td, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, rs := range td.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					name := string(bytes.TrimRight(s.TraceId, "\x00"))
					if spans[name] == 0 {
						order = append(order, name)
					}
					spans[name]++
				}
			}
		}
	}
	// Whole traces, not just their payment spans, most recent first: the
	// refund of two-services, at 01:10, is the latest payment span.
	if fmt.Sprint(order) != "[two-services checkout-fail checkout-ok]" || spans["checkout-ok"] != 3 || spans["two-services"] != 2 {
		t.Fatalf("FindTraces returned %v in order %v", spans, order)
	}

	sstream, err := client.FindTraceSummaries(context.Background(), &jaegerpb.FindTraceSummariesRequest{Query: q})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := sstream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*jaegerpb.TraceSummary{}
	var sorder []string
	for _, s := range resp.Summaries {
		byName[string(bytes.TrimRight(s.TraceId, "\x00"))] = s
		sorder = append(sorder, string(bytes.TrimRight(s.TraceId, "\x00")))
	}
	// Summaries show each trace's start, its earliest span's, and come in
	// that order, the latest first: two-services started at 00:05, though
	// the search found it by its refund at 01:10.
	if fmt.Sprint(sorder) != "[checkout-fail checkout-ok two-services]" {
		t.Errorf("summaries in order %v, want the latest start first", sorder)
	}
	s := byName["checkout-fail"]
	start := uint64(hour0.Add(20 * time.Minute).UnixNano())
	if s.RootServiceName != "frontend" || s.RootOperationName != "GET /checkout" ||
		s.SpanCount != 2 || s.ErrorSpanCount != 1 || s.OrphanSpanCount != 0 ||
		s.MinStartTimeUnixNano != start || s.MaxEndTimeUnixNano != start+uint64(900*time.Millisecond) ||
		fmt.Sprint(s.Services) != fmt.Sprint([]*jaegerpb.ServiceSummary{{Name: "frontend", SpanCount: 1}, {Name: "payment", SpanCount: 1, ErrorSpanCount: 1}}) {
		t.Fatalf("summary %v", s)
	}
	// The refund of two-services names a parent that never arrived.
	if s := byName["two-services"]; s.RootServiceName != "cart" || s.RootOperationName != "GetCart" || s.OrphanSpanCount != 1 {
		t.Fatalf("summary of a trace with an orphan %v", s)
	}
}

// TestTimeArguments refuses timestamps and durations that are not valid
// and answers those past 2262, where nanoseconds since 1970 overflow an
// int64, as any other.
func TestTimeArguments(t *testing.T) {
	conn := serve(t, storeWith(t, t.TempDir(), corpusRequest(t)))
	client := jaegerpb.NewTraceReaderClient(conn)
	y2300 := timestamppb.New(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC))
	find := func(q *jaegerpb.TraceQueryParameters) (int, error) {
		q.ServiceName, q.SearchDepth = "payment", 10
		stream, err := client.FindTraceSummaries(context.Background(), &jaegerpb.FindTraceSummariesRequest{Query: q})
		if err != nil {
			return 0, err
		}
		n := 0
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			n += len(resp.Summaries)
		}
	}
	for _, c := range []struct {
		name string
		q    *jaegerpb.TraceQueryParameters
		want int // traces, or -1 for InvalidArgument
	}{
		{"no bounds", &jaegerpb.TraceQueryParameters{}, 3},
		{"max in 2300", &jaegerpb.TraceQueryParameters{StartTimeMax: y2300}, 3},
		{"max in 9999", &jaegerpb.TraceQueryParameters{StartTimeMax: &timestamppb.Timestamp{Seconds: 253402300799, Nanos: 999_999_999}}, 3},
		{"min at 0", &jaegerpb.TraceQueryParameters{StartTimeMin: &timestamppb.Timestamp{}, StartTimeMax: y2300}, 3},
		{"min before 1970", &jaegerpb.TraceQueryParameters{StartTimeMin: &timestamppb.Timestamp{Seconds: -86400}}, 3},
		{"min in 2300", &jaegerpb.TraceQueryParameters{StartTimeMin: y2300}, 0},
		{"negative nanos", &jaegerpb.TraceQueryParameters{StartTimeMax: &timestamppb.Timestamp{Seconds: 2e9, Nanos: -1}}, -1},
		{"nanos of a second or more", &jaegerpb.TraceQueryParameters{StartTimeMin: &timestamppb.Timestamp{Nanos: 1e9}}, -1},
		{"past 9999", &jaegerpb.TraceQueryParameters{StartTimeMax: &timestamppb.Timestamp{Seconds: 253402300800}}, -1},
		{"min after max", &jaegerpb.TraceQueryParameters{StartTimeMin: y2300, StartTimeMax: timestamppb.New(hour0)}, -1},
		{"negative duration", &jaegerpb.TraceQueryParameters{DurationMin: durationpb.New(-time.Second)}, -1},
		{"duration with mixed signs", &jaegerpb.TraceQueryParameters{DurationMax: &durationpb.Duration{Seconds: 1, Nanos: -1}}, -1},
		{"duration past 292 years", &jaegerpb.TraceQueryParameters{DurationMax: &durationpb.Duration{Seconds: 315576000000}}, 3},
	} {
		n, err := find(c.q)
		switch {
		case c.want < 0 && status.Code(err) != codes.InvalidArgument:
			t.Errorf("%s: %d traces, %v; want InvalidArgument", c.name, n, err)
		case c.want >= 0 && (err != nil || n != c.want):
			t.Errorf("%s: %d traces, %v; want %d", c.name, n, err, c.want)
		}
	}

	id := [16]byte(traceID("checkout-ok"))
	for _, c := range []struct {
		name       string
		start, end *timestamppb.Timestamp
		want       int // spans, or -1 for InvalidArgument
	}{
		{"end in 2300", nil, y2300, 3},
		{"from 0 to 9999", &timestamppb.Timestamp{}, &timestamppb.Timestamp{Seconds: 253402300799}, 3},
		{"negative nanos", &timestamppb.Timestamp{Nanos: -5}, nil, -1},
		{"past 9999", nil, &timestamppb.Timestamp{Seconds: 1 << 40}, -1},
	} {
		n, err := countSpans(t, conn, &jaegerpb.GetTraceParams{TraceId: id[:], StartTime: c.start, EndTime: c.end})
		switch {
		case c.want < 0 && status.Code(err) != codes.InvalidArgument:
			t.Errorf("GetTraces, %s: %d spans, %v; want InvalidArgument", c.name, n, err)
		case c.want >= 0 && (err != nil || n != c.want):
			t.Errorf("GetTraces, %s: %d spans, %v; want %d", c.name, n, err, c.want)
		}
	}
}

// TestSearchDepthOverMaximum refuses a search_depth over the maximum with a
// message naming it, rather than answering with fewer traces.
func TestSearchDepthOverMaximum(t *testing.T) {
	client := jaegerpb.NewTraceReaderClient(serve(t, storeWith(t, t.TempDir(), corpusRequest(t))))
	_, err := client.FindTraceIDs(context.Background(), &jaegerpb.FindTraceIDsRequest{
		Query: &jaegerpb.TraceQueryParameters{ServiceName: "frontend", SearchDepth: DefaultMaxSearchDepth + 1}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "search_depth 10001 is over the maximum of 10000") {
		t.Fatalf("search_depth over the maximum: %v", err)
	}
}
