package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"

	"cairn/internal/grpctest"
	"cairn/internal/otlpwire"
	"cairn/internal/rawcodec"
	"cairn/storage"
)

// waitFor polls cond until it holds, failing the test after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStalledStream checks that an Export call is admitted when its headers
// arrive, before gRPC reads its message, and that a call whose message
// never comes is answered DeadlineExceeded and gives its share back.
func TestStalledStream(t *testing.T) {
	db := openDB(t)
	svc := NewService(db, &Options{MaxRequestBytes: 64 << 10, BodyTimeout: 100 * time.Millisecond})
	conn := grpctest.Dial(t, grpctest.Serve(t, NewServer(svc)))

	stream, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		exportMethod, grpc.ForceCodecV2(rawcodec.Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	// Headers only: the handler runs and reserves the worst case at once.
	waitFor(t, "a call with no message reserving its read", func() bool { return svc.InflightBytes() == 2*64<<10 })
	if svc.HeldBytes() != 0 {
		t.Fatalf("%d bytes held for a message not yet read", svc.HeldBytes())
	}
	var resp rawcodec.Message
	err = stream.RecvMsg(&resp)
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "did not arrive") {
		t.Fatalf("stalled call: %v, want DeadlineExceeded", err)
	}
	waitFor(t, "the stalled call's share given back", func() bool { return svc.InflightBytes() == 0 })

	// The server still takes exports.
	if _, err := collectorpb.NewTraceServiceClient(conn).Export(context.Background(), request(1)); err != nil {
		t.Fatal(err)
	}
}

// held is a Writer whose writes wait until open is closed, counting those
// that arrive.
type held struct {
	Writer
	writes atomic.Int64
	open   chan struct{}
}

func (h *held) Write(ctx context.Context, req []byte, b *otlpwire.Batch) error {
	h.writes.Add(1)
	<-h.open
	return h.Writer.Write(ctx, req, b)
}

// TestOverloadLosesNothingAcknowledged sends many large requests at once
// over both protocols, half of them highly compressible gzip, to a server
// whose in-flight bound holds a few of them: each is either acknowledged,
// and then stored whole, or refused with the code and delay clients retry
// on; none fails otherwise, and the bound is free once all are answered.
func TestOverloadLosesNothingAcknowledged(t *testing.T) {
	db := openDB(t)
	w := &held{Writer: db, open: make(chan struct{})}
	const maxRequest = 256 << 10
	svc := NewService(w, &Options{MaxRequestBytes: maxRequest, MaxInflightBytes: 4 * maxRequest,
		AdmitWait: 20 * time.Millisecond, RetryAfter: 2 * time.Second})
	conn := grpctest.Dial(t, grpctest.Serve(t, NewServer(svc)))
	url := httpReceiver(t, svc)

	var refused atomic.Int64
	var openOnce sync.Once
	// Writes are held until something is refused: the admitted requests
	// then hold the bound, so that refusals must happen.
	refuse := func() { refused.Add(1); openOnce.Do(func() { close(w.open) }) }
	// Were nothing refused, the writes would be held for ever: give up on
	// that after a while, which the check below then reports.
	giveUp := time.AfterFunc(time.Minute, func() { openOnce.Do(func() { close(w.open) }) })
	defer giveUp.Stop()
	acked := make(chan byte, 64)
	var wg sync.WaitGroup
	for i := range 32 {
		trace := byte(i + 1)
		body := bigRequest(maxRequest/2+i*(maxRequest/80), trace)
		compressed := i%2 == 1
		if i%4 < 2 {
			wg.Go(func() {
				var opts []grpc.CallOption
				if compressed {
					opts = append(opts, grpc.UseCompressor(gzip.Name))
				}
				var resp rawcodec.Message
				err := conn.Invoke(context.Background(), exportMethod, rawcodec.Message(body), &resp,
					append(opts, grpc.ForceCodecV2(rawcodec.Codec{}))...)
				st := status.Convert(err)
				switch {
				case err == nil:
					acked <- trace
				case st.Code() == codes.ResourceExhausted && len(st.Details()) == 1 &&
					st.Details()[0].(*errdetails.RetryInfo).GetRetryDelay().AsDuration() == 2*time.Second:
					refuse()
				default:
					t.Errorf("gRPC request %d: %v", trace, err)
				}
			})
			continue
		}
		wg.Go(func() {
			header := map[string]string{"Content-Type": contentProtobuf}
			if compressed {
				body = compress(t, "gzip", body)
				header["Content-Encoding"] = "gzip"
			}
			r := post(t, url, header, body)
			switch {
			case r.code == http.StatusOK:
				acked <- trace
			case r.code == http.StatusTooManyRequests && r.header.Get("Retry-After") == "2":
				refuse()
			default:
				t.Errorf("HTTP request %d: %d %q", trace, r.code, r.body)
			}
		})
	}
	wg.Wait()
	close(acked)
	if refused.Load() == 0 {
		t.Fatal("nothing was refused")
	}
	n := 0
	for trace := range acked {
		n++
		tr, err := db.Trace(context.Background(), storage.TraceID{15: trace}, storage.TimeRange{})
		if err != nil || tr == nil || tr.Spans != 1 {
			t.Errorf("acknowledged trace %d: stored %v, %v", trace, tr, err)
		}
	}
	if n == 0 {
		t.Fatal("nothing was acknowledged")
	}
	if got := svc.InflightBytes(); got != 0 {
		t.Fatalf("%d bytes still reserved", got)
	}
	t.Logf("%d acknowledged, %d refused", n, refused.Load())
}

// slowRetention is a Writer whose Accepts, asked just before a request is
// parsed, waits until release is closed.
type slowRetention struct {
	*held
	asked   chan struct{}
	release chan struct{}
}

func (s *slowRetention) Accepts() otlpwire.Window {
	s.asked <- struct{}{}
	<-s.release
	return s.held.Accepts()
}

// TestGoneClientNotStored checks that a request whose client has gone is
// not stored: neither one that waits for the in-flight bound, nor one
// whose client goes while it is being parsed.
func TestGoneClientNotStored(t *testing.T) {
	db := openDB(t)
	w := &slowRetention{held: &held{Writer: db, open: make(chan struct{})},
		asked: make(chan struct{}, 4), release: make(chan struct{})}
	svc := NewService(w, &Options{MaxRequestBytes: 1 << 20, MaxInflightBytes: 1 << 20, AdmitWait: time.Minute})
	// The interceptor sees each call's context once its message is read.
	calls := make(chan context.Context, 4)
	intercept := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		calls <- ctx
		return handler(ctx, req)
	}
	client := collectorpb.NewTraceServiceClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(svc, grpc.UnaryInterceptor(intercept)))))
	export := func(ctx context.Context, trace byte) <-chan error {
		done := make(chan error, 1)
		go func() { _, err := client.Export(ctx, request(trace)); done <- err }()
		return done
	}

	// The first request is parsed while its client gives up.
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := export(ctx1, 1)
	served1 := <-calls
	<-w.asked
	// The second waits for the bound the first holds, and its client
	// gives up too.
	ctx2, cancel2 := context.WithCancel(context.Background())
	second := export(ctx2, 2)
	waitFor(t, "the second request waiting", func() bool { return svc.budget.waiters() == 1 })
	cancel2()
	if err := <-second; status.Code(err) != codes.Canceled {
		t.Fatalf("second request: %v, want Canceled", err)
	}
	cancel1()
	if err := <-first; status.Code(err) != codes.Canceled {
		t.Fatalf("first request: %v, want Canceled", err)
	}
	waitFor(t, "the server seeing the first client go", func() bool { return served1.Err() != nil })
	close(w.release)
	close(w.open)
	waitFor(t, "the bound free", func() bool { return svc.InflightBytes() == 0 })
	if n := w.writes.Load(); n != 0 {
		t.Fatalf("%d requests of gone clients reached the store", n)
	}
	for _, trace := range []byte{1, 2} {
		if tr, _ := db.Trace(context.Background(), storage.TraceID{15: trace}, storage.TimeRange{}); tr != nil {
			t.Fatalf("trace %d of a gone client was stored", trace)
		}
	}
}

// TestWaitForBudget checks that a request that does not fit waits for the
// bound to be given back, and is then taken, over both protocols, rather
// than refused.
func TestWaitForBudget(t *testing.T) {
	db := openDB(t)
	w := &held{Writer: db, open: make(chan struct{})}
	var opened sync.Once
	open := func() { opened.Do(func() { close(w.open) }) }
	defer open() // a failed test must not leave a write held
	// A bound of one byte: the first request, alone, is taken; no other
	// fits while it is in.
	svc := NewService(w, &Options{MaxInflightBytes: 1, AdmitWait: time.Minute})
	client := collectorpb.NewTraceServiceClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(svc))))
	url := httpReceiver(t, svc)

	first := make(chan error, 1)
	go func() { _, err := client.Export(context.Background(), request(1)); first <- err }()
	waitFor(t, "the first request in the store", func() bool { return w.writes.Load() == 1 })
	second := make(chan error, 1)
	go func() { _, err := client.Export(context.Background(), request(2)); second <- err }()
	third := make(chan reply, 1)
	go func() {
		third <- post(t, url, map[string]string{"Content-Type": contentProtobuf}, protobuf(t, request(3)))
	}()
	waitFor(t, "two requests waiting", func() bool { return svc.budget.waiters() == 2 })
	if w.writes.Load() != 1 {
		t.Fatal("a request that does not fit went on")
	}
	open()
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if r := <-third; r.code != http.StatusOK {
		t.Fatalf("waiting HTTP request: %d %q", r.code, r.body)
	}
	for _, trace := range []byte{1, 2, 3} {
		if tr, err := db.Trace(context.Background(), storage.TraceID{15: trace}, storage.TimeRange{}); err != nil || tr == nil {
			t.Fatalf("trace %d: %v, %v", trace, tr, err)
		}
	}
}

// TestStalledMessage checks that a call whose message stops arriving one
// byte short is answered DeadlineExceeded once the body timeout passes,
// and gives its share of the bound back. The call is made over raw HTTP/2,
// as no gRPC client sends part of a message.
func TestStalledMessage(t *testing.T) {
	db := openDB(t)
	svc := NewService(db, &Options{MaxRequestBytes: 64 << 10, BodyTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", grpctest.Serve(t, NewServer(svc)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", exportMethod}, {":authority", "cairn"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	const length = 4096
	msg := make([]byte, 5+length-1) // one byte short
	binary.BigEndian.PutUint32(msg[1:5], length)
	if err := errors.Join(fr.WriteSettings(),
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}),
		fr.WriteData(1, false, msg)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the call admitted", func() bool { return svc.InflightBytes() > 0 })

	// Read until the call's trailers, which carry its status.
	dec := hpack.NewDecoder(4096, nil)
	grpcStatus := ""
	for grpcStatus == "" {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no status for the stalled call: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == "grpc-status" {
					grpcStatus = hf.Value
				}
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset (%v) without a status", f.ErrCode)
		}
	}
	if want := strconv.Itoa(int(codes.DeadlineExceeded)); grpcStatus != want {
		t.Fatalf("grpc-status %s, want %s (DeadlineExceeded)", grpcStatus, want)
	}
	waitFor(t, "the stalled call's share given back", func() bool { return svc.InflightBytes() == 0 })
}
