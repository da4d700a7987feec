package query

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/grpctest"
	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// heldStore is the real store whose searches and service lists, once begun,
// wait until the test releases them or their context ends: stand-ins for
// slow queries.
type heldStore struct {
	*storage.DB
	begun   chan struct{}
	release chan struct{}
}

func (h *heldStore) hold(ctx context.Context) error {
	h.begun <- struct{}{}
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *heldStore) Find(ctx context.Context, q storage.Query) ([]storage.Found, error) {
	if err := h.hold(ctx); err != nil {
		return nil, err
	}
	return h.DB.Find(ctx, q)
}

func (h *heldStore) Services() ([]string, error) {
	if err := h.hold(context.Background()); err != nil {
		return nil, err
	}
	return h.DB.Services()
}

// serveHeld serves the store of start, with searches and service lists held,
// under o.
func serveHeld(t *testing.T, o *Options) (*heldStore, jaegerpb.TraceReaderClient) {
	t.Helper()
	db, _ := start(t, t.TempDir())
	h := &heldStore{DB: db, begun: make(chan struct{}, 16), release: make(chan struct{})}
	conn := grpctest.Dial(t, grpctest.Serve(t, NewServer(h, o)))
	return h, jaegerpb.NewTraceReaderClient(conn)
}

func findIDs(ctx context.Context, c jaegerpb.TraceReaderClient) error {
	_, err := c.FindTraceIDs(ctx, &jaegerpb.FindTraceIDsRequest{Query: &jaegerpb.TraceQueryParameters{ServiceName: "shop"}})
	return err
}

func wantCode(t *testing.T, what string, err error, code codes.Code, mention string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), mention) {
		t.Fatalf("%s: %v; want %v mentioning %q", what, err, code, mention)
	}
}

func TestSearchLimitRefusesAndSparesReads(t *testing.T) {
	// At 120 bytes a message holds one span of the two-span trace 0x01…01.
	h, client := serveHeld(t, &Options{MaxSearches: 1, MaxQueueWait: 20 * time.Millisecond, MaxMessageBytes: 120})
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- findIDs(ctx, client) }()
	<-h.begun

	wantCode(t, "second search", findIDs(ctx, client), codes.ResourceExhausted, "--query-max-searches")
	// A small trace is read while the search slot is taken...
	id := []byte{0: 1, 15: 2}
	if n, err := countSpansWith(client, &jaegerpb.GetTraceParams{TraceId: id}); err != nil || n != 1 {
		t.Fatalf("small read while a search runs: %d spans, %v", n, err)
	}
	// ...but a read that outgrows one message needs a search slot to go on.
	_, err := countSpansWith(client, &jaegerpb.GetTraceParams{TraceId: []byte{0: 1, 15: 1}})
	wantCode(t, "large read while a search runs", err, codes.ResourceExhausted, "--query-max-searches")

	close(h.release)
	if err := <-first; err != nil {
		t.Fatalf("held search: %v", err)
	}
	if n, err := countSpansWith(client, &jaegerpb.GetTraceParams{TraceId: []byte{0: 1, 15: 1}}); err != nil || n != 2 {
		t.Fatalf("large read once the search ended: %d spans, %v", n, err)
	}
}

func TestReadLimitRefuses(t *testing.T) {
	h, client := serveHeld(t, &Options{MaxReads: 1, MaxQueueWait: 20 * time.Millisecond})
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := client.GetServices(ctx, &jaegerpb.GetServicesRequest{})
		first <- err
	}()
	<-h.begun
	_, err := client.GetOperations(ctx, &jaegerpb.GetOperationsRequest{Service: "shop"})
	wantCode(t, "operations while services are listed", err, codes.ResourceExhausted, "--query-max-reads")
	_, err = countSpansWith(client, &jaegerpb.GetTraceParams{TraceId: []byte{0: 1, 15: 2}})
	wantCode(t, "trace while services are listed", err, codes.ResourceExhausted, "--query-max-reads")
	close(h.release)
	if err := <-first; err != nil {
		t.Fatalf("held GetServices: %v", err)
	}
	if _, err := client.GetOperations(ctx, &jaegerpb.GetOperationsRequest{Service: "shop"}); err != nil {
		t.Fatalf("operations once the slot is free: %v", err)
	}
}

func TestQueryTimeout(t *testing.T) {
	_, client := serveHeld(t, &Options{Timeout: 20 * time.Millisecond})
	wantCode(t, "held search", findIDs(context.Background(), client), codes.DeadlineExceeded, "--query-timeout")
}

// endlessTrace is the real store, but for trace 0x0e…0e, which it reads
// as pieces of 1,000 spans of 1 KiB each for as long as its reader takes
// them: a trace larger than any client's receive buffer.
type endlessTrace struct {
	*storage.DB
	piece *storage.Trace
}

var endlessID = storage.TraceID{0: 0x0e, 15: 0x0e}

func newEndlessTrace(t *testing.T) *endlessTrace {
	db, _ := start(t, t.TempDir())
	return &endlessTrace{DB: db, piece: paddedPiece(t, endlessID, 1000)}
}

// paddedPiece is a piece of trace id of n spans of about 1 KiB each, in one
// group.
func paddedPiece(t *testing.T, id storage.TraceID, n int) *storage.Trace {
	piece := &storage.Trace{ID: id, Spans: n, Groups: []storage.Group{{}}}
	for i := range n {
		piece.Groups[0].Spans = append(piece.Groups[0].Spans, mustMarshal(t, &tracepb.Span{TraceId: id[:], SpanId: []byte{6: byte(i >> 8), 7: byte(i)},
			Name: "step", Attributes: []*commonpb.KeyValue{stringAttr("pad", strings.Repeat("p", 1000))}}))
	}
	return piece
}

func (e *endlessTrace) TracePieces(ctx context.Context, id storage.TraceID, tr storage.TimeRange, pieceBytes int, admit func(int) error, fn func(*storage.Trace) error) (bool, error) {
	if id != endlessID {
		return e.DB.TracePieces(ctx, id, tr, pieceBytes, admit, fn)
	}
	for ctx.Err() == nil {
		// Pieces are the reader's to keep: each is new.
		g := e.piece.Groups[0]
		g.Spans = slices.Clone(g.Spans)
		if err := fn(&storage.Trace{ID: endlessID, Spans: e.piece.Spans, Groups: []storage.Group{g}}); err != nil {
			return true, err
		}
	}
	return true, ctx.Err()
}

// TestHTTPTimeoutEndsStalledDownloads asks the HTTP API for a trace larger
// than any receive buffer and never reads the answer: once --query-timeout
// has passed, the read must give its slot back, as over gRPC.
func TestHTTPTimeoutEndsStalledDownloads(t *testing.T) {
	svc := NewService(newEndlessTrace(t), &Options{MaxReads: 1, Timeout: 200 * time.Millisecond, MaxQueueWait: 20 * time.Millisecond})
	srv := httptest.NewServer(svc.HTTPHandler())
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /api/v1/traces/%x/otlp HTTP/1.1\r\nHost: cairn\r\n\r\n", endlessID); err != nil {
		t.Fatal(err)
	}
	services := func() int {
		resp, err := http.Get(srv.URL + "/api/v1/services")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Once the download holds the slot, the slot must come back well
	// within fifty times the query timeout.
	deadline := time.Now().Add(10 * time.Second)
	for services() == http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the download never took the read slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for deadline = time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code := services()
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("services: HTTP %d 10 s after a download stalled, with a 200 ms query timeout: the download holds its read slot", code)
		}
	}
}

func TestGetTracesDedupesAndBoundsIDs(t *testing.T) {
	_, client := serveHeld(t, &Options{MaxTraceIDs: 3})
	two := []byte{0: 1, 15: 1}
	ts := func(h int) *timestamppb.Timestamp { return timestamppb.New(hour0.Add(time.Duration(h) * time.Hour)) }
	// Each hint alone reaches one of the trace's spans; merged, both.
	n, err := countSpansIn(client, []*jaegerpb.GetTraceParams{
		{TraceId: two, StartTime: ts(-1), EndTime: ts(-1)},
		{TraceId: two, StartTime: ts(3), EndTime: ts(3)},
		{TraceId: two, StartTime: ts(-1), EndTime: ts(-1)},
	})
	if err != nil || n != 2 {
		t.Fatalf("one trace named three times: %d spans, %v; want its 2 spans once", n, err)
	}
	_, err = countSpansIn(client, []*jaegerpb.GetTraceParams{{TraceId: two}, {TraceId: two}, {TraceId: two}, {TraceId: two}})
	wantCode(t, "four IDs", err, codes.InvalidArgument, "--query-max-trace-ids")
}

func countSpansWith(c jaegerpb.TraceReaderClient, q *jaegerpb.GetTraceParams) (int, error) {
	return countSpansIn(c, []*jaegerpb.GetTraceParams{q})
}

func countSpansIn(c jaegerpb.TraceReaderClient, qs []*jaegerpb.GetTraceParams) (int, error) {
	stream, err := c.GetTraces(context.Background(), &jaegerpb.GetTracesRequest{Query: qs})
	if err != nil {
		return 0, err
	}
	return drainSpans(stream)
}

// recordingStream is a server stream that records what is sent on it,
// taking a random while for each send, and fails the send numbered failAt.
type recordingStream struct {
	grpc.ServerStream
	rng    *rand.Rand
	failAt int
	sent   [][]byte
}

var errSendFailed = errors.New("send failed")

func (r *recordingStream) SendMsg(m any) error {
	time.Sleep(time.Duration(r.rng.IntN(200)) * time.Microsecond)
	if len(r.sent) == r.failAt {
		return errSendFailed
	}
	r.sent = append(r.sent, m.(rawcodec.Message))
	return nil
}

// TestTimedStreamSendsInOrder sends random runs of messages of random
// sizes through the stream the server-side timeout wraps around a call:
// those sent on the handler's goroutine and those handed to its sender
// must arrive whole and in order, before the call ends, and a failed send
// must end the call with its error.
func TestTimedStreamSendsInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := rng.IntN(20)
		failAt := -1
		if rng.IntN(4) == 0 && n > 0 {
			failAt = rng.IntN(n)
		}
		rec := &recordingStream{rng: rand.New(rand.NewPCG(uint64(round), 3)), failAt: failAt}
		ts := &timedStream{ServerStream: rec, ctx: context.Background()}
		var want [][]byte
		err := ts.finish(func() error {
			for i := range n {
				m := make(rawcodec.Message, 1+rng.IntN(20<<10))
				m[0] = byte(i)
				if err := ts.SendMsg(m); err != nil {
					return err
				}
				want = append(want, m)
			}
			return nil
		}())
		if failAt >= 0 {
			if !errors.Is(err, errSendFailed) {
				t.Fatalf("round %d: send %d of %d failed, the call ended with %v", round, failAt, n, err)
			}
			want = want[:min(len(want), failAt)]
		} else if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(rec.sent) != len(want) {
			t.Fatalf("round %d: %d messages arrived, want %d", round, len(rec.sent), len(want))
		}
		for i := range want {
			if !bytes.Equal(rec.sent[i], want[i]) {
				t.Fatalf("round %d: message %d is not the one sent %d-th", round, i, i)
			}
		}
	}
}
