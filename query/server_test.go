package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/grpctest"
	"cairn/internal/otlpwire"
	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hour0 is the start of the hour partition that test spans start in, two
// hours ago: well inside the retention period.
var hour0 = time.Now().Truncate(time.Hour).Add(-2 * time.Hour)

// start serves a store holding a two-span trace, 0x01…01, whose spans start at
// hour0 and 90 minutes later, in two hour partitions, and a one-span trace
// 0x01…02. The spans are in the live buffer until the store is closed and
// reopened with serve.
func start(t *testing.T, dir string) (*storage.DB, *grpc.ClientConn) {
	t.Helper()
	db, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := uint64(hour0.UnixNano())
	req := mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "shop"}}},
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			{TraceId: []byte{0: 1, 15: 1}, SpanId: []byte{7: 1}, Name: "GET /", Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1},
			{TraceId: []byte{0: 1, 15: 1}, SpanId: []byte{7: 2}, Name: "GET /", Kind: tracepb.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: t0 + uint64(90*time.Minute), EndTimeUnixNano: t0 + uint64(91*time.Minute)},
			{TraceId: []byte{0: 1, 15: 2}, SpanId: []byte{7: 3}, Name: "render", StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1},
		}}},
	}}})
	writeRequest(t, db, req)
	return db, serve(t, db)
}

// storeWith opens a store in dir holding one encoded export request.
func storeWith(t *testing.T, dir string, req []byte) *storage.DB {
	t.Helper()
	db, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeRequest(t, db, req)
	return db
}

// writeRequest stores an encoded export request as ingest would.
func writeRequest(t testing.TB, db *storage.DB, req []byte) {
	t.Helper()
	var b otlpwire.Batch
	if err := otlpwire.Parse(req, &b, db.Accepts()); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(context.Background(), req, &b); err != nil {
		t.Fatal(err)
	}
}

func serve(t *testing.T, db *storage.DB) *grpc.ClientConn {
	t.Helper()
	t.Cleanup(func() { db.Close() })
	return grpctest.Dial(t, grpctest.Serve(t, NewServer(db, nil)))
}

func countSpans(t *testing.T, conn *grpc.ClientConn, q *jaegerpb.GetTraceParams) (int, error) {
	return countSpansWith(jaegerpb.NewTraceReaderClient(conn), q)
}

// drainSpans counts the spans of a stream of chunks until it ends.
func drainSpans(stream grpc.ServerStreamingClient[tracepb.TracesData]) (int, error) {
	n := 0
	for {
		td, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		for _, rs := range td.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				n += len(ss.Spans)
			}
		}
	}
}

func TestGetTracesTimeHints(t *testing.T) {
	dir := t.TempDir()
	db, conn := start(t, dir)
	id := []byte{0: 1, 15: 1}
	ts := func(h, m int) *timestamppb.Timestamp {
		return timestamppb.New(hour0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute))
	}
	cases := []struct {
		name  string
		q     *jaegerpb.GetTraceParams
		spans int
	}{
		{"no hints", &jaegerpb.GetTraceParams{TraceId: id}, 2},
		{"trace extent", &jaegerpb.GetTraceParams{TraceId: id, StartTime: ts(0, 0), EndTime: ts(1, 31)}, 2},
		// Hints reach one partition beyond their hours.
		{"first hour only", &jaegerpb.GetTraceParams{TraceId: id, StartTime: ts(0, 0), EndTime: ts(0, 30)}, 2},
		{"hour before", &jaegerpb.GetTraceParams{TraceId: id, StartTime: ts(-1, 0), EndTime: ts(-1, 30)}, 1},
		{"start only", &jaegerpb.GetTraceParams{TraceId: id, StartTime: ts(2, 0)}, 1},
		{"later hours", &jaegerpb.GetTraceParams{TraceId: id, StartTime: ts(3, 0), EndTime: ts(6, 0)}, 0},
		{"earlier hours", &jaegerpb.GetTraceParams{TraceId: id, StartTime: ts(-5, 0), EndTime: ts(-2, 0)}, 0},
	}
	check := func(where string) {
		for _, c := range cases {
			n, err := countSpans(t, conn, c.q)
			if err != nil || n != c.spans {
				t.Errorf("%s, %s: %d spans, %v; want %d", where, c.name, n, err, c.spans)
			}
		}
	}
	check("live buffer")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn = serve(t, db)
	check("blocks")
	if _, err := countSpans(t, conn, &jaegerpb.GetTraceParams{TraceId: id[:8]}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("8-byte trace ID: %v, want InvalidArgument", err)
	}
	if _, err := countSpans(t, conn, &jaegerpb.GetTraceParams{TraceId: id, StartTime: ts(1, 0), EndTime: ts(0, 0)}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "after end_time") {
		t.Errorf("start after end: %v, want InvalidArgument", err)
	}
}

func TestServiceSurface(t *testing.T) {
	_, conn := start(t, t.TempDir())
	ctx := context.Background()
	caps, err := jaegerpb.NewCapabilitiesClient(conn).GetCapabilities(ctx, &jaegerpb.GetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s := caps.GetSearch(); !s.GetWithoutServiceName() || !s.GetSameSpanConjunction() || s.GetSpanSearch() || s.GetPaginated() {
		t.Fatalf("capabilities %v; want search without service name and same-span conjunction, no span search or pagination", s)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "jaeger.storage.v2.TraceReader"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", h, err)
	}
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	refl.CloseSend()
	names := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		names[s.Name] = true
	}
	for _, want := range []string{"jaeger.storage.v2.TraceReader", "jaeger.storage.v2.DependencyReader", "jaeger.storage.v2.Capabilities", "cairn.analysis.v1.Analysis", "grpc.health.v1.Health"} {
		if !names[want] {
			t.Errorf("reflection does not list %s: %v", want, names)
		}
	}
}

func TestServicesAndOperations(t *testing.T) {
	_, conn := start(t, t.TempDir())
	client := jaegerpb.NewTraceReaderClient(conn)
	ctx := context.Background()
	svcs, err := client.GetServices(ctx, &jaegerpb.GetServicesRequest{})
	if err != nil || fmt.Sprint(svcs.GetServices()) != "[shop]" {
		t.Fatalf("GetServices = %v, %v", svcs.GetServices(), err)
	}
	for kind, want := range map[string]string{
		"":         `[GET / (server) GET / (client) render ()]`,
		"server":   `[GET / (server)]`,
		"consumer": `[]`,
	} {
		resp, err := client.GetOperations(ctx, &jaegerpb.GetOperationsRequest{Service: "shop", SpanKind: kind})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, op := range resp.GetOperations() {
			got = append(got, fmt.Sprintf("%s (%s)", op.Name, op.SpanKind))
		}
		if fmt.Sprint(got) != want {
			t.Errorf("GetOperations(shop, %q) = %s, want %s", kind, got, want)
		}
	}
	if _, err := client.GetOperations(ctx, &jaegerpb.GetOperationsRequest{Service: "shop", SpanKind: "SERVER"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown kind: %v", err)
	}
}

// TestOperationsPastTheList checks that a service that sent more span
// names than its list keeps has them listed to the bound, and a last entry
// saying there are more.
func TestOperationsPastTheList(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := uint64(time.Now().UnixNano())
	var spans []*tracepb.Span
	for i := range 10_001 {
		spans = append(spans, &tracepb.Span{TraceId: []byte{13: 1, 14: byte(i >> 8), 15: byte(i)}, SpanId: []byte{7: 1},
			Name: fmt.Sprint("GET /item/", i), StartTimeUnixNano: start, EndTimeUnixNano: start + 1})
	}
	writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "items"}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}))
	resp, err := jaegerpb.NewTraceReaderClient(serve(t, db)).GetOperations(context.Background(), &jaegerpb.GetOperationsRequest{Service: "items"})
	if err != nil {
		t.Fatal(err)
	}
	ops := resp.GetOperations()
	if len(ops) != 10_001 || !strings.HasPrefix(ops[10_000].Name, "cairn: more operations not listed") {
		t.Fatalf("%d operations, the last %q; want 10,000 and a notice", len(ops), ops[len(ops)-1].Name)
	}
}

func TestReadErrorOfDamagedTrace(t *testing.T) {
	cause := &storage.CorruptionError{What: "trace 0101", Path: "/data/spans/000042.sst", Err: errors.New("checksum mismatch")}
	err := readError(storage.TraceID{}, fmt.Errorf("read: %w", cause))
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), "000042.sst") || !strings.Contains(err.Error(), "trace 0101") {
		t.Fatalf("got %v, want DataLoss naming the trace and the file", err)
	}
	if err := readError(storage.TraceID{}, errors.New("disk on fire")); status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want Internal", err)
	}
}

// TestUndecodableRequests sends request messages that do not decode, to a
// unary call and a streaming one: each is refused as the client's fault,
// saying why, and the server goes on serving.
func TestUndecodableRequests(t *testing.T) {
	_, conn := start(t, t.TempDir())
	ctx := context.Background()
	codec := grpc.ForceCodecV2(rawcodec.Codec{})
	badUTF8 := rawcodec.Message("\x0a\x02\xff\xfe") // service: invalid UTF-8
	var out rawcodec.Message
	err := conn.Invoke(ctx, jaegerpb.TraceReader_GetOperations_FullMethodName, badUTF8, &out, codec)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("GetOperations of invalid UTF-8: %v, want InvalidArgument saying why", err)
	}
	stream, err := conn.NewStream(ctx, &jaegerpb.TraceReader_ServiceDesc.Streams[1], jaegerpb.TraceReader_FindTraces_FullMethodName, codec)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(rawcodec.Message("\xff\xff\xff")); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := stream.RecvMsg(&out); status.Code(err) != codes.InvalidArgument {
		t.Errorf("FindTraces of bytes that are not protobuf: %v, want InvalidArgument", err)
	}
	if _, err := jaegerpb.NewTraceReaderClient(conn).GetServices(ctx, &jaegerpb.GetServicesRequest{}); err != nil {
		t.Errorf("GetServices after them: %v", err)
	}
}
