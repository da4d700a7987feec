package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/internal/otlpjson"
	"cairn/internal/rawcodec"
)

// otlpHTTP is an OTLP/HTTP receiver for tests: it decodes every request,
// protobuf or JSON, acknowledges those without spans and has answer answer
// the others.
type otlpHTTP struct {
	answer func(*httpExport)
	n      atomic.Int64
	conns  sync.Map // connections that carried a request
}

// httpExport is an OTLP/HTTP request with spans to answer.
type httpExport struct {
	n    int64 // counts the requests with spans, from 0
	w    http.ResponseWriter
	r    *http.Request
	json bool
	req  *collectorpb.ExportTraceServiceRequest
}

func serveOTLPHTTP(t *testing.T, answer func(*httpExport)) (*otlpHTTP, string) {
	o := &otlpHTTP{answer: answer}
	srv := httptest.NewUnstartedServer(o)
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateActive {
			o.conns.Store(c, true)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return o, srv.Listener.Addr().String()
}

func (o *otlpHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, "not an OTLP export", http.StatusNotFound)
		return
	}
	e := &httpExport{w: w, r: r, json: r.Header.Get("Content-Type") == "application/json",
		req: &collectorpb.ExportTraceServiceRequest{}}
	if e.json {
		body, err = otlpjson.DecodeRequest(body)
	} else if r.Header.Get("Content-Type") != "application/x-protobuf" {
		err = fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
	}
	if err == nil {
		err = proto.Unmarshal(body, e.req)
	}
	if err != nil {
		e.fail(http.StatusBadRequest, err.Error())
		return
	}
	if len(e.req.ResourceSpans) == 0 {
		e.respond(&collectorpb.ExportTraceServiceResponse{})
		return
	}
	e.n = o.n.Add(1) - 1
	o.answer(e)
}

func (e *httpExport) spans() int64 {
	n := 0
	for _, rs := range e.req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	return int64(n)
}

func (e *httpExport) firstSpanID() string {
	return string(e.req.ResourceSpans[0].ScopeSpans[0].Spans[0].SpanId)
}

// respond writes m in the request's encoding.
func (e *httpExport) respond(m proto.Message) {
	if e.json {
		b, _ := protojson.Marshal(m)
		e.w.Header().Set("Content-Type", "application/json")
		e.w.Write(b)
		return
	}
	b, _ := proto.Marshal(m)
	e.w.Header().Set("Content-Type", "application/x-protobuf")
	e.w.Write(b)
}

// fail answers code with a google.rpc.Status of code INVALID_ARGUMENT.
func (e *httpExport) fail(code int, msg string) {
	b := protowire.AppendString(protowire.AppendTag([]byte{8, 3}, 2, protowire.BytesType), msg)
	ct := "application/x-protobuf"
	if e.json {
		b, _ = json.Marshal(map[string]any{"code": 3, "message": msg})
		ct = "application/json"
	}
	e.w.Header().Set("Content-Type", ct)
	e.w.WriteHeader(code)
	e.w.Write(b)
}

// TestHTTPExport sends over OTLP/HTTP, in both encodings, to a receiver that
// rejects some spans of every request, throttles with and without
// Retry-After, and refuses one request outright, and checks what the report
// counts.
func TestHTTPExport(t *testing.T) {
	for _, protocol := range []string{ProtocolHTTPProtobuf, ProtocolHTTPJSON} {
		t.Run("protocol="+protocol, func(t *testing.T) {
			var mu sync.Mutex
			var acked, rejected, refused int64
			var throttled string // the first span ID of the request throttled
			var throttledAt time.Time
			var retryGap time.Duration
			srv, addr := serveOTLPHTTP(t, func(e *httpExport) {
				mu.Lock()
				defer mu.Unlock()
				spans := e.spans()
				if e.firstSpanID() == throttled {
					retryGap = time.Since(throttledAt)
				}
				switch e.n {
				case 2:
					e.w.Header().Set("Retry-After", "1")
					e.fail(http.StatusTooManyRequests, "slow down")
					throttled, throttledAt = e.firstSpanID(), time.Now()
					return
				case 5:
					http.Error(e.w, "<html>busy</html>", http.StatusServiceUnavailable)
					return
				case 9:
					refused += spans
					e.fail(http.StatusBadRequest, "span 7 has no name")
					return
				}
				if e.json && e.n%2 == 0 {
					// A number where protojson writes a string, which
					// receivers may do, and a field from a later OTLP.
					e.w.Header().Set("Content-Type", "application/json")
					fmt.Fprint(e.w, `{"partialSuccess":{"rejectedSpans":3,"errorMessage":"too old"},"laterField":1}`)
				} else {
					e.respond(&collectorpb.ExportTraceServiceResponse{PartialSuccess: &collectorpb.ExportTracePartialSuccess{
						RejectedSpans: 3, ErrorMessage: "too old"}})
				}
				acked += spans - 3
				rejected += 3
			})
			target := addr
			if protocol == ProtocolHTTPJSON {
				target = "http://" + addr // the path defaults to /v1/traces
			}
			rep, err := Run(context.Background(), Options{Target: target, Protocol: protocol, Spans: 3000, Batch: 100,
				Conns: 2, Inflight: 2, PoolSpans: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Protocol != protocol || rep.Spans != acked || rep.RejectedSpans != rejected || rep.FailedSpans != refused {
				t.Errorf("report: %d acked, %d rejected, %d failed over %s; receiver: %d, %d, %d",
					rep.Spans, rep.RejectedSpans, rep.FailedSpans, rep.Protocol, acked, rejected, refused)
			}
			if rep.Retries != 2 || rep.Requests != 29 {
				t.Errorf("%d retries, %d requests acknowledged; want 2 and 29", rep.Retries, rep.Requests)
			}
			if !strings.Contains(rep.FirstError, "400 Bad Request: span 7 has no name") {
				t.Errorf("first error %q", rep.FirstError)
			}
			if retryGap < 900*time.Millisecond {
				t.Errorf("retried %s after a 429 with Retry-After: 1", retryGap)
			}
			n := 0
			srv.conns.Range(func(any, any) bool { n++; return true })
			if n > 4 {
				t.Errorf("%d connections for 2 × 2 requests in flight", n)
			}
		})
	}
}

func TestExportURL(t *testing.T) {
	for target, want := range map[string]string{
		"localhost:4318":               "http://localhost:4318/v1/traces",
		"secure localhost:4318":        "https://localhost:4318/v1/traces",
		"http://127.0.0.1:4318":        "http://127.0.0.1:4318/v1/traces",
		"https://otel.example:443/":    "https://otel.example:443/v1/traces",
		"http://gateway/otlp/v1/spans": "http://gateway/otlp/v1/spans",
		"ftp://host:21":                "error",
		"http://":                      "error",
	} {
		host, secure := strings.CutPrefix(target, "secure ")
		u, err := exportURL(host, secure)
		got := "error"
		if err == nil {
			got = u.String()
		}
		if got != want {
			t.Errorf("%s: got %s, want %s", target, got, want)
		}
	}
}

// serveOTLPGRPC serves OTLP/gRPC Export on loopback with export, which
// receives every request encoded, and returns its address.
func serveOTLPGRPC(tb testing.TB, export func(ctx context.Context, req []byte) (rawcodec.Message, error)) string {
	s := grpc.NewServer(rawcodec.ServerOptions()...)
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Export",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var req rawcodec.Message
				if err := dec(&req); err != nil {
					return nil, err
				}
				return export(ctx, req)
			}}},
	}, struct{}{})
	return grpctest.Serve(tb, s)
}

// BenchmarkSend measures what sending one request of 1024 spans costs: the
// pool's copy and patches and the protocol's round trip over loopback to a
// receiver that only reads it, from 16 senders at once as a run has in
// flight.
func BenchmarkSend(b *testing.B) {
	pool, err := NewPool(Config{BatchSpans: 1024}, 20_000)
	if err != nil {
		b.Fatal(err)
	}
	jsonPool, err := NewPool(Config{BatchSpans: 1024}, 20_000)
	if err != nil {
		b.Fatal(err)
	}
	if err := jsonPool.EncodeJSON(); err != nil {
		b.Fatal(err)
	}
	grpcAddr := serveOTLPGRPC(b, func(context.Context, []byte) (rawcodec.Message, error) { return nil, nil })
	httpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
	}))
	defer httpSrv.Close()
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON} {
		b.Run("protocol="+strings.ReplaceAll(protocol, "/", "-"), func(b *testing.B) {
			o := (&Options{Target: httpSrv.Listener.Addr().String(), Protocol: protocol}).withDefaults()
			p := pool
			switch protocol {
			case ProtocolGRPC:
				o.Target = grpcAddr
			case ProtocolHTTPJSON:
				p = jsonPool
			}
			exps, _, err := newExporters(o)
			if err != nil {
				b.Fatal(err)
			}
			defer closeAll(exps)
			var next atomic.Uint64
			b.ReportAllocs()
			b.SetBytes(int64(len(p.Request(nil, 0))))
			b.SetParallelism(o.Conns * o.Inflight / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var buf []byte
				for pb.Next() {
					seq := next.Add(1) - 1
					buf = p.Request(buf, seq)
					if _, err := exps[seq%uint64(len(exps))].export(context.Background(), buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkPoolRequest measures preparing one request of 1024 spans, in a
// round past the first, which patches every ID and time.
func BenchmarkPoolRequest(b *testing.B) {
	for _, encoding := range []string{"protobuf", "json"} {
		b.Run("encoding="+encoding, func(b *testing.B) {
			p, err := NewPool(Config{BatchSpans: 1024}, 20_000)
			if err != nil {
				b.Fatal(err)
			}
			if encoding == "json" {
				if err := p.EncodeJSON(); err != nil {
					b.Fatal(err)
				}
			}
			n := uint64(p.Requests())
			buf := p.Request(nil, n)
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := range uint64(b.N) {
				buf = p.Request(buf, n+i)
			}
		})
	}
}
