package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"

	"cairn/internal/grpctest"
	"cairn/internal/otlptest"
	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tap records, decoded by the reference protobuf implementation, every
// request the OTLP server acknowledges.
type tap struct {
	mu   sync.Mutex
	sent otlptest.Traces
}

func (tp *tap) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err == nil {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		if err := tp.sent.AddRequest(req.(rawcodec.Message)); err != nil {
			return nil, err
		}
	}
	return resp, err
}

func startTestServer(t *testing.T, dir string, opts ...grpc.ServerOption) *server {
	t.Helper()
	return startConfigured(t, testConfig(dir, opts...))
}

// testConfig is the configuration of test servers: every port on a free
// loopback port, and cuts often, so that reads span blocks and the live
// buffer.
func testConfig(dir string, opts ...grpc.ServerOption) serverConfig {
	return serverConfig{
		dataDir:       dir,
		otlpAddr:      "127.0.0.1:0",
		otlpHTTPAddr:  "127.0.0.1:0",
		queryAddr:     "127.0.0.1:0",
		httpAddr:      "127.0.0.1:0",
		maxRequest:    64 << 20,
		flushInterval: 50 * time.Millisecond,
		retention:     100 * 365 * 24 * time.Hour, // fixtures have fixed timestamps from 2023
		log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		otlpOptions:   opts,
	}
}

func startConfigured(t *testing.T, cfg serverConfig) *server {
	t.Helper()
	s, err := startServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// getTraces reads traces through jaeger.storage.v2 GetTraces.
func getTraces(t *testing.T, conn *grpc.ClientConn, ids []string) otlptest.Traces {
	t.Helper()
	req := &jaegerpb.GetTracesRequest{}
	for _, id := range ids {
		raw, err := hex.DecodeString(id)
		if err != nil {
			t.Fatal(err)
		}
		req.Query = append(req.Query, &jaegerpb.GetTraceParams{TraceId: raw})
	}
	stream, err := jaegerpb.NewTraceReaderClient(conn).GetTraces(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	got := otlptest.Traces{}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(chunk.ResourceSpans) == 0 {
			t.Fatal("empty chunk")
		}
		got.Add(chunk.ResourceSpans)
	}
}

// compareAll reads every trace of want and compares it field by field.
func compareAll(t *testing.T, conn *grpc.ClientConn, want otlptest.Traces) {
	t.Helper()
	var ids []string
	for id := range want {
		ids = append(ids, id)
	}
	got := getTraces(t, conn, ids)
	for id := range want {
		if d := otlptest.DiffTrace(want[id], got[id]); d != "" {
			t.Errorf("trace %s: %s", id, d)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d traces, want %d", len(got), len(want))
	}
}

// TestSDKExportRoundTrip sends traces with the official OpenTelemetry Go SDK
// exporter and reads them back, before and after a restart, comparing every
// field with what the exporter put on the wire.
func TestSDKExportRoundTrip(t *testing.T) {
	dir := t.TempDir()
	tp := &tap{sent: otlptest.Traces{}}
	s := startTestServer(t, dir, grpc.UnaryInterceptor(tp.intercept))

	exp, err := otlptracegrpc.New(context.Background(),
		otlptracegrpc.WithEndpoint(s.otlpAddr.String()),
		otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithCompressor("gzip"))
	if err != nil {
		t.Fatal(err)
	}
	res := sdkresource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
		attribute.String("service.name", "checkout"), attribute.String("service.version", "2.4.1"),
		attribute.Int("host.cpus", 8), attribute.StringSlice("process.command_args", []string{"checkout", "--port=8080"}))
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithMaxExportBatchSize(7)), sdktrace.WithResource(res))
	tracer := provider.Tracer("cairn/e2e", trace.WithInstrumentationVersion("0.1.0"),
		trace.WithSchemaURL("https://opentelemetry.io/schemas/1.24.0"),
		trace.WithInstrumentationAttributes(attribute.Bool("scope.test", true)))
	other := provider.Tracer("cairn/e2e/db")

	for i := range 30 {
		ts, _ := trace.ParseTraceState("vendor=a,other=b")
		ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceState: ts}))
		ctx, root := tracer.Start(ctx, "GET /checkout", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", "GET"), attribute.Int64("http.response.status_code", 200),
				attribute.Float64("sample.ratio", 0.25), attribute.Bool("cache.hit", i%2 == 0),
				attribute.Int64Slice("retries", []int64{1, 2}), attribute.Float64Slice("weights", []float64{0.5, math.Inf(1)}),
				attribute.BoolSlice("flags", []bool{true, false})))
		_, child := other.Start(ctx, "SELECT orders", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithLinks(trace.Link{SpanContext: root.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("link.kind", "parent")}}))
		child.AddEvent("rows fetched", trace.WithAttributes(attribute.Int("rows", 42)))
		if i%5 == 0 {
			child.RecordError(errors.New("deadline exceeded"))
			child.SetStatus(codes.Error, "query timed out")
		}
		child.End()
		for _, kind := range []trace.SpanKind{trace.SpanKindInternal, trace.SpanKindProducer, trace.SpanKindConsumer} {
			_, sp := tracer.Start(ctx, "step", trace.WithSpanKind(kind))
			sp.End()
		}
		root.SetStatus(codes.Ok, "")
		root.End()
		time.Sleep(2 * time.Millisecond) // spread the export over several cuts
	}
	if err := provider.Shutdown(context.Background()); err != nil {
		t.Fatalf("export: %v", err)
	}
	if len(tp.sent) != 30 || tp.sent.Spans() != 150 {
		t.Fatalf("tap saw %d traces, %d spans; want 30, 150", len(tp.sent), tp.sent.Spans())
	}
	compareAll(t, grpctest.Dial(t, s.queryAddr.String()), tp.sent)

	if err := s.shutdown(); err != nil {
		t.Fatal(err)
	}
	s = startTestServer(t, dir)
	defer s.shutdown()
	compareAll(t, grpctest.Dial(t, s.queryAddr.String()), tp.sent)
}

// TestEveryFieldRoundTrip sends a hand-built request through a plain OTLP
// gRPC client, with gzip, and checks every field comes back, that invalid
// spans are rejected one by one, and that garbage is refused.
func TestEveryFieldRoundTrip(t *testing.T) {
	tp := &tap{sent: otlptest.Traces{}}
	s := startTestServer(t, t.TempDir(), grpc.UnaryInterceptor(tp.intercept))
	defer s.shutdown()
	conn := grpctest.Dial(t, s.otlpAddr.String())
	client := collectorpb.NewTraceServiceClient(conn)

	resp, err := client.Export(context.Background(), otlptest.EveryField(), grpc.UseCompressor(gzip.Name))
	if err != nil {
		t.Fatal(err)
	}
	ps := resp.GetPartialSuccess()
	if ps.GetRejectedSpans() != 3 {
		t.Fatalf("rejected %d spans, want 3 (%q)", ps.GetRejectedSpans(), ps.GetErrorMessage())
	}
	const msg = "3 spans rejected: 2 with invalid trace_id (must be 16 bytes, not all zero), 1 with invalid span_id (must be 8 bytes, not all zero)"
	if ps.GetErrorMessage() != msg {
		t.Fatalf("partial success message %q, want %q", ps.GetErrorMessage(), msg)
	}
	// The tap saw the rejected spans too; only the valid trace is expected.
	want := otlptest.Traces{}
	for id, es := range tp.sent {
		for _, e := range es {
			if id == "deadbeef0102030405060708090a0b0c" && string(e.Span.SpanId) != string(make([]byte, 8)) {
				want[id] = append(want[id], e)
			}
		}
	}
	if len(want) != 1 || want.Spans() != 4 {
		t.Fatalf("expected 4 valid spans, tap has %v", tp.sent)
	}
	compareAll(t, grpctest.Dial(t, s.queryAddr.String()), want)

	// Bytes that are not an Export request are refused as a whole.
	var out rawcodec.Message
	err = conn.Invoke(context.Background(), exportMethod, rawcodec.Message{0x0a, 0x05, 0x01}, &out, grpc.ForceCodecV2(rawcodec.Codec{}))
	if status.Code(err) != grpccodes.InvalidArgument {
		t.Fatalf("garbage request: %v, want InvalidArgument", err)
	}
	// Unknown trace IDs are skipped.
	if got := getTraces(t, grpctest.Dial(t, s.queryAddr.String()), []string{"0102030405060708090a0b0c0d0e0f10"}); len(got) != 0 {
		t.Fatalf("unknown trace returned %v", got)
	}
}

const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// TestVisibleOnAcknowledgement checks that a span can be read and searched
// as soon as its export is acknowledged, before any cut.
func TestVisibleOnAcknowledgement(t *testing.T) {
	s, err := startServer(serverConfig{
		dataDir: t.TempDir(), otlpAddr: "127.0.0.1:0", queryAddr: "127.0.0.1:0", maxRequest: 64 << 20,
		flushInterval: time.Hour, retention: 100 * 365 * 24 * time.Hour,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.shutdown()
	req := otlptest.EveryField()
	if _, err := collectorpb.NewTraceServiceClient(grpctest.Dial(t, s.otlpAddr.String())).Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	conn := grpctest.Dial(t, s.queryAddr.String())
	if got := getTraces(t, conn, []string{"deadbeef0102030405060708090a0b0c"}); got.Spans() != 4 {
		t.Fatalf("GetTraces right after the acknowledgement: %d spans, want 4", got.Spans())
	}
	resp, err := jaegerpb.NewTraceReaderClient(conn).FindTraceIDs(context.Background(), &jaegerpb.FindTraceIDsRequest{
		Query: &jaegerpb.TraceQueryParameters{Attributes: []*jaegerpb.KeyValue{{Key: "str", Value: &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_StringValue{StringValue: "héllo"}}}}},
	})
	if err != nil || len(resp.TraceIds) != 1 {
		t.Fatalf("search right after the acknowledgement: %v, %v", resp, err)
	}
}

// TestSecondServerOnDataDir starts a second server on a data directory in
// use: it is refused in one line that names the first one's pid.
func TestSecondServerOnDataDir(t *testing.T) {
	dir := t.TempDir()
	s := startTestServer(t, dir)
	defer s.shutdown()
	_, err := startServer(serverConfig{dataDir: dir, otlpAddr: "127.0.0.1:0", queryAddr: "127.0.0.1:0",
		log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	want := fmt.Sprintf("data directory %s is in use by another cairn (pid %d)", dir, os.Getpid())
	if !errors.Is(err, storage.ErrLocked) || err.Error() != want {
		t.Fatalf("second server: %v, want %q", err, want)
	}
}
