package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// pieceSizes is the real store, recording the largest piece a read held.
type pieceSizes struct {
	*storage.DB
	largest, pieces int
}

func (p *pieceSizes) TracePieces(ctx context.Context, id storage.TraceID, tr storage.TimeRange, pieceBytes int, admit func(int) error, fn func(*storage.Trace) error) (bool, error) {
	return p.DB.TracePieces(ctx, id, tr, pieceBytes, admit, func(t *storage.Trace) error {
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

// TestHugeTraceStreamsInPieces reads a trace of 360 KiB, cut into blocks of
// at most 32 KiB of requests, through 8 KiB messages: the read holds a
// message's worth of spans and a fragment at a time, never the trace.
func TestHugeTraceStreamsInPieces(t *testing.T) {
	const (
		spans       = 1200
		bufferBytes = 32 << 10
		limit       = 8 << 10
	)
	dir := t.TempDir()
	db, err := storage.Open(dir, &storage.Options{BufferBytes: bufferBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	id := []byte{0: 5, 15: 5}
	t0 := uint64(hour0.UnixNano())
	for batch := range spans / 50 {
		ss := &tracepb.ScopeSpans{}
		for i := range 50 {
			k := batch*50 + i + 1
			ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: id, SpanId: []byte{6: byte(k >> 8), 7: byte(k)}, Name: fmt.Sprintf("step-%d", k),
				StartTimeUnixNano: t0 + uint64(k), EndTimeUnixNano: t0 + uint64(k) + 1,
				Attributes: []*commonpb.KeyValue{stringAttr("pad", strings.Repeat("p", 250))}})
		}
		writeRequest(t, db, mustMarshal(t, &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", "batch")}},
			ScopeSpans: []*tracepb.ScopeSpans{ss},
		}}}))
	}
	// Reopened, the store reads the trace from blocks on disk.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = storage.Open(dir, &storage.Options{BufferBytes: bufferBytes}); err != nil {
		t.Fatal(err)
	}
	rec := &pieceSizes{DB: db}
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
	// message, and a fragment holds at most a block's worth of requests, a
	// tenth of the trace here (how much exactly depends on how fast cuts
	// go): the read never held much of the trace at once.
	if rec.pieces < 4 || rec.largest > spans*300/4 {
		t.Fatalf("a %d-byte trace read in %d pieces, the largest %d bytes", spans*300, rec.pieces, rec.largest)
	}
}
