package query

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"cairn/bench"
	"cairn/internal/grpctest"
	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// pieceSizes is a store, recording the largest piece a read held.
type pieceSizes struct {
	Reader
	largest, pieces int
}

func (p *pieceSizes) TracePieces(ctx context.Context, id storage.TraceID, tr storage.TimeRange, pieceBytes int, admit func(int) error, fn func(*storage.Trace) error) (bool, error) {
	return p.Reader.TracePieces(ctx, id, tr, pieceBytes, admit, func(t *storage.Trace) error {
		n := 0
		for _, g := range t.Groups {
			for _, s := range g.Spans {
				n += len(s)
			}
		}
		p.largest, p.pieces = max(p.largest, n), p.pieces+1
		return fn(t)
	})
}

const (
	hugeSpans      = 600
	hugeBatchSpans = 50 // per request
	hugeBlockSpans = 150
)

// hugeTraceStore returns a store on disk holding a trace of 600 spans,
// 190 KiB, trace 0x05…05, in blocks of 150 spans, 48 KiB: the store is
// closed, which cuts its buffer into a block, and reopened every three
// requests.
func hugeTraceStore(t *testing.T) *storage.DB {
	dir := t.TempDir()
	var db *storage.DB
	reopen := func() {
		if db != nil {
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if db, err = storage.Open(dir, nil); err != nil {
			t.Fatal(err)
		}
	}
	reopen()
	t0 := uint64(hour0.UnixNano())
	for batch := range hugeSpans / hugeBatchSpans {
		ss := &tracepb.ScopeSpans{}
		for i := range hugeBatchSpans {
			k := batch*hugeBatchSpans + i + 1
			ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: hugeID, SpanId: []byte{6: byte(k >> 8), 7: byte(k)}, Name: fmt.Sprintf("step-%d", k),
				StartTimeUnixNano: t0 + uint64(k), EndTimeUnixNano: t0 + uint64(k) + 1,
				Attributes: []*commonpb.KeyValue{stringAttr("pad", strings.Repeat("p", 250))}})
		}
		writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", "batch")}},
			ScopeSpans: []*tracepb.ScopeSpans{ss},
		}}}))
		if (batch+1)*hugeBatchSpans%hugeBlockSpans == 0 {
			reopen()
		}
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var hugeID = []byte{0: 5, 15: 5}

// TestHugeTraceStreamsInPieces reads the huge trace through 8 KiB messages:
// the read holds a message's worth of spans and a block's fragment at a
// time, never the trace.
func TestHugeTraceStreamsInPieces(t *testing.T) {
	const (
		spans = hugeSpans
		limit = 8 << 10
	)
	id := hugeID
	rec := &pieceSizes{Reader: hugeTraceStore(t)}
	client := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(rec, &Options{MaxMessageBytes: limit}))))
	stream, err := client.GetTraces(context.Background(), &jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: id}}})
	if err != nil {
		t.Fatal(err)
	}
	got, messages, total := map[string]bool{}, 0, 0
	for {
		td, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n := proto.Size(td); n > limit {
			t.Fatalf("a %d-byte message", n)
		}
		messages++
		for _, rs := range td.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					got[string(s.SpanId)] = true
					total++
				}
			}
		}
	}
	if len(got) != spans || total != spans {
		t.Fatalf("%d spans, %d distinct; want %d", total, len(got), spans)
	}
	// A piece stops growing at the first fragment that takes it past a
	// message, and a fragment holds a block's spans of the trace: the read
	// never held more than a message and a block of it.
	if most := (limit + hugeBlockSpans*330) * 11 / 10; rec.largest > most || rec.pieces < hugeSpans/hugeBlockSpans-1 {
		t.Fatalf("a %d-byte trace read in %d pieces, the largest %d bytes; want pieces of at most %d", spans*330, rec.pieces, rec.largest, most)
	}
}

// TestLargeFragmentWaitsForSearchSlot reads the huge trace, whose fragments
// are larger than a message, while a search holds the only search slot: the
// read is refused before it decodes anything.
func TestLargeFragmentWaitsForSearchSlot(t *testing.T) {
	h := &heldStore{DB: hugeTraceStore(t), begun: make(chan struct{}, 1), release: make(chan struct{})}
	rec := &pieceSizes{Reader: h}
	client := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(rec, &Options{MaxMessageBytes: 8 << 10, MaxSearches: 1, MaxQueueWait: 20 * time.Millisecond}))))
	search := make(chan error, 1)
	go func() { search <- findIDs(context.Background(), client) }()
	<-h.begun
	n, err := countSpansWith(client, &jaegerpb.GetTraceParams{TraceId: hugeID})
	wantCode(t, "huge trace while a search runs", err, codes.ResourceExhausted, "--query-max-searches")
	if n != 0 || rec.pieces != 0 {
		t.Fatalf("%d spans sent, %d pieces decoded before the refusal; want none", n, rec.pieces)
	}
	close(h.release)
	if err := <-search; err != nil {
		t.Fatal(err)
	}
	if n, err := countSpansWith(client, &jaegerpb.GetTraceParams{TraceId: hugeID}); err != nil || n != hugeSpans {
		t.Fatalf("huge trace once the search ended: %d spans, %v", n, err)
	}
}

// fixedWindows are a client's fixed 64 KiB flow-control windows, which turn
// off gRPC's growing them: a client that takes no message then stalls its
// server once little more than that is in flight.
var fixedWindows = []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)}

// TestTimeoutEndsStalledStream starts reading the huge trace without taking
// any message, so that the server blocks sending once flow control allows no
// more, and checks that the server's timeout ends the call, and frees its
// slot for the next read, though the client never reads.
func TestTimeoutEndsStalledStream(t *testing.T) {
	db := hugeTraceStore(t)
	opts := &Options{MaxMessageBytes: 8 << 10, MaxReads: 1, Timeout: 300 * time.Millisecond}
	// With fixed windows the server can have at most about 128 KiB of the
	// 190 KiB trace in flight.
	client := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(db, opts)), fixedWindows...))
	stalled, err := client.GetTraces(context.Background(), &jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: hugeID}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Header(); err != nil { // the server has begun
		t.Fatal(err)
	}
	// Reads queued behind the stalled stream time out with it, until its
	// timeout frees its slot.
	for give := time.Now().Add(10 * time.Second); ; {
		_, err := client.GetServices(context.Background(), &jaegerpb.GetServicesRequest{})
		if err == nil {
			break
		}
		if status.Code(err) != codes.DeadlineExceeded || time.Now().After(give) {
			t.Fatalf("read queued behind a stalled stream: %v", err)
		}
	}
	n, err := drainSpans(stalled)
	wantCode(t, "stalled stream", err, codes.DeadlineExceeded, "--query-timeout")
	if n >= hugeSpans {
		t.Fatalf("the stalled stream sent all %d spans", n)
	}
}

// damagedAfter reads from a real store but fails a trace's read with a
// corruption error after n of its pieces, as a damaged block met part-way
// through a trace does.
type damagedAfter struct {
	Reader
	n int
}

func (d damagedAfter) TracePieces(ctx context.Context, id storage.TraceID, tr storage.TimeRange, pieceBytes int, admit func(int) error, fn func(*storage.Trace) error) (bool, error) {
	damaged := &storage.CorruptionError{What: fmt.Sprintf("trace %x", id), Path: "/data/spans/000042.sst", Err: errors.New("checksum mismatch")}
	pieces := 0
	found, err := d.Reader.TracePieces(ctx, id, tr, pieceBytes, admit, func(t *storage.Trace) error {
		if pieces == d.n {
			return damaged
		}
		pieces++
		return fn(t)
	})
	return found, err
}

// TestFindTracesNeverPassesPartOfATraceForWhole damages the huge trace
// before any of it is sent, and after two of its pieces: search leaves the
// first out, but must not end a stream that carried part of a trace as if
// nothing were missing.
func TestFindTracesNeverPassesPartOfATraceForWhole(t *testing.T) {
	db := hugeTraceStore(t)
	for _, tc := range []struct {
		pieces   int
		wantCode codes.Code
	}{{0, codes.OK}, {2, codes.DataLoss}} {
		srv := NewServer(damagedAfter{Reader: db, n: tc.pieces}, &Options{MaxMessageBytes: 8 << 10})
		client := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, srv)))
		stream, err := client.FindTraces(context.Background(), &jaegerpb.FindTracesRequest{Query: &jaegerpb.TraceQueryParameters{ServiceName: "batch"}})
		if err != nil {
			t.Fatal(err)
		}
		n, err := drainSpans(stream)
		if status.Code(err) != tc.wantCode || tc.pieces == 0 && n != 0 || tc.pieces > 0 && (n == 0 || n >= hugeSpans) {
			t.Errorf("damaged after %d pieces: FindTraces sent %d of %d spans and ended with %v, want %v", tc.pieces, n, hugeSpans, err, tc.wantCode)
		}
		if tc.wantCode == codes.DataLoss && err != nil && !strings.Contains(err.Error(), "000042.sst") {
			t.Errorf("DataLoss does not name the file: %v", err)
		}
	}
}

// TestGetTracesNamesSomeDamagedTraces reads 30 traces that all fail as
// damaged: the status names ten, and counts the rest.
func TestGetTracesNamesSomeDamagedTraces(t *testing.T) {
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	start := uint64(time.Now().UnixNano())
	var spans []*tracepb.Span
	var query []*jaegerpb.GetTraceParams
	for i := range 30 {
		id := []byte{15: byte(i + 1)}
		spans = append(spans, &tracepb.Span{TraceId: id, SpanId: []byte{7: 1}, Name: "op", StartTimeUnixNano: start, EndTimeUnixNano: start + 1})
		query = append(query, &jaegerpb.GetTraceParams{TraceId: id})
	}
	writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}}))
	client := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(damagedAfter{Reader: db}, nil))))
	stream, err := client.GetTraces(context.Background(), &jaegerpb.GetTracesRequest{Query: query})
	if err != nil {
		t.Fatal(err)
	}
	_, err = drainSpans(stream)
	if msg := status.Convert(err).Message(); status.Code(err) != codes.DataLoss || strings.Count(msg, "000042.sst") != 10 ||
		!strings.HasSuffix(msg, "and 20 more damaged traces") {
		t.Fatalf("GetTraces of 30 damaged traces ended with %v; want DataLoss naming 10 and counting 20 more", err)
	}
}

// threeChunkTrace is the real store, but for trace 0x0d…0d, which it reads
// as one piece of 700 spans of about 1 KiB: three 256 KiB messages.
type threeChunkTrace struct {
	*storage.DB
	piece *storage.Trace
	begun atomic.Int32 // reads of the trace admitted (past their slots)
	ended atomic.Int32 // reads of the trace whose handler has read it all
}

var threeChunkID = storage.TraceID{0: 0x0d, 15: 0x0d}

func (c *threeChunkTrace) TracePieces(ctx context.Context, id storage.TraceID, tr storage.TimeRange, pieceBytes int, admit func(int) error, fn func(*storage.Trace) error) (bool, error) {
	if id != threeChunkID {
		return c.DB.TracePieces(ctx, id, tr, pieceBytes, admit, fn)
	}
	c.begun.Add(1)
	defer c.ended.Add(1)
	g := c.piece.Groups[0]
	return true, fn(&storage.Trace{ID: threeChunkID, Spans: c.piece.Spans, Groups: []storage.Group{{Resource: g.Resource, Scope: g.Scope, Spans: append([][]byte(nil), g.Spans...)}}})
}

// TestStalledStreamsStayWithinSlots opens, one after another, four reads of
// a 700 KiB trace from a client that never reads, with one read slot and
// one search slot. While a stalled stream's messages are still to be sent
// (the server holds them until --query-timeout), it must keep its slots:
// otherwise every stalled stream pins its unsent messages outside any
// slot, and the memory a server holds for clients that stopped reading
// grows with the number of such streams rather than with
// --query-max-reads and --query-max-searches.
func TestStalledStreamsStayWithinSlots(t *testing.T) {
	db, _ := start(t, t.TempDir())
	store := &threeChunkTrace{DB: db, piece: paddedPiece(t, threeChunkID, 700)}
	opts := &Options{MaxMessageBytes: 256 << 10, MaxReads: 1, MaxSearches: 1, Timeout: 5 * time.Second, MaxQueueWait: 20 * time.Millisecond}
	client := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(store, opts)), fixedWindows...))
	const streams = 4
	for range streams {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stalled, err := client.GetTraces(ctx, &jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: threeChunkID[:]}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stalled.Header(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // the handler, if it can, hands everything off and returns
	}
	if n := store.begun.Load(); n != 1 {
		t.Fatalf("%d of %d stalled reads of a 3-message trace were admitted with --query-max-reads=1 (%d handlers returned and gave back their slots with messages still unsent); want 1",
			n, streams, store.ended.Load())
	}
}

// TestConcurrentReadsKeepTheirBytes reads traces of every size at once, over
// and over: each answer must be byte for byte the one read alone. Chunk
// buffers go back to a pool once gRPC has written them; one reused too soon
// would show here as another read's bytes.
func TestConcurrentReadsKeepTheirBytes(t *testing.T) {
	pool, err := bench.NewPool(bench.Config{BatchSpans: 1024, LargeTraceEvery: 20, TracesPerSecond: 10_000}, 25_000)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(t.TempDir(), &storage.Options{RecompressAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	for seq := range uint64(pool.Requests()) {
		writeRequest(t, db, pool.Request(nil, seq))
	}
	conn := serve(t, db)
	read := func(id [16]byte) ([]byte, error) {
		var all []byte
		_, err := receive(conn, &jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: id[:]}}},
			func(m rawcodec.Message) { all = append(all, m...) })
		return all, err
	}
	var traces []bench.PoolTrace
	small := 0
	for _, tr := range pool.Traces() {
		if tr.Spans > 2000 || small < 40 {
			traces = append(traces, tr)
		}
		if tr.Spans <= 2000 {
			small++
		}
	}
	want := make([][]byte, len(traces))
	large := 0
	for i, tr := range traces {
		if want[i], err = read(tr.ID); err != nil || len(want[i]) == 0 {
			t.Fatalf("trace %x alone: %d bytes, %v", tr.ID, len(want[i]), err)
		}
		if len(want[i]) > 1<<20 {
			large++
		}
	}
	if large == 0 {
		t.Fatal("no trace over a megabyte: the pool's large buffers go untested")
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for k := range 15 {
				i := (w*7 + k*13) % len(traces)
				got, err := read(traces[i].ID)
				if err != nil || !bytes.Equal(got, want[i]) {
					t.Errorf("trace %x read beside others: %d bytes, %v; alone %d bytes", traces[i].ID, len(got), err, len(want[i]))
					return
				}
			}
		})
	}
	wg.Wait()
}
