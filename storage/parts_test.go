package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"cairn/internal/otlptest"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// TestLargeFragmentsStoredInParts writes a trace several times partBytes
// large and checks that its fragment is stored in parts of about that size,
// that it reads back whole before and after recompression, and that a
// search that must check its spans finds the one span that matches, in the
// last part.
func TestLargeFragmentsStoredInParts(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{RecompressAfter: -1}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	tid := []byte{0x1a, 15: 0x7e}
	t0 := uint64(time.Now().Add(-time.Minute).UnixNano())
	str := func(v string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}
	}
	req := &collectorpb.ExportTraceServiceRequest{}
	for svc := range 2 {
		ss := &tracepb.ScopeSpans{}
		for i := svc; i < n; i += 2 {
			attrs := []*commonpb.KeyValue{{Key: "pad", Value: str(strings.Repeat(fmt.Sprint(i%10), 300))}}
			if i == n-1 {
				attrs = append(attrs, &commonpb.KeyValue{Key: "marker", Value: str("last")})
			}
			ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: tid, SpanId: binary.BigEndian.AppendUint64(nil, uint64(i+1)),
				ParentSpanId: binary.BigEndian.AppendUint64(nil, uint64(i/2+1)), Name: fmt.Sprintf("op-%04d", i),
				StartTimeUnixNano: t0 + uint64(i)*uint64(time.Millisecond), EndTimeUnixNano: t0 + uint64(i+1)*uint64(time.Millisecond),
				Attributes: attrs})
		}
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: str(fmt.Sprint("svc-", svc))}}},
			ScopeSpans: []*tracepb.ScopeSpans{ss}})
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	want := otlptest.Traces{}
	if err := want.AddRequest(raw); err != nil {
		t.Fatal(err)
	}
	write(t, db, raw)
	db = reopen(t, db, dir, opts) // cut

	parts, continued := 0, 0
	it, err := db.spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		t.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		_, _, id, part, err := keys.ParseDataPart(it.Key())
		if err != nil || id != TraceID(tid) || part != uint32(parts) {
			t.Fatalf("key %x: part %d of %x, %v; want part %d of %x", it.Key(), part, id, err, parts, tid)
		}
		if len(it.Value()) > 2*partBytes {
			t.Fatalf("part %d is %d bytes", part, len(it.Value()))
		}
		if codec.Continued(it.Value()) {
			continued++
		}
		parts++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if min := len(raw) / partBytes; parts < min || continued != parts-1 {
		t.Fatalf("%d parts (%d marked continued) for a %d-byte trace, want at least %d, all but the last continued", parts, continued, len(raw), min)
	}

	check := func() {
		t.Helper()
		checkAll(t, db, want)
		// The window excludes the trace's first spans, so the search
		// must check its spans to find the one that matches.
		found, err := db.Find(context.Background(), Query{
			Attributes: []Attribute{{Key: "marker", Value: "last"}},
			StartMin:   time.Unix(0, int64(t0+n/2*uint64(time.Millisecond))), StartMax: time.Now(), Limit: 20})
		if err != nil || len(found) != 1 || found[0].ID != TraceID(tid) {
			t.Fatalf("search found %v, %v; want the trace", found, err)
		}
	}
	check()
	db.opts.RecompressAfter = time.Millisecond
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	check()
}
