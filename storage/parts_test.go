package storage

import (
	"context"
	"encoding/binary"
	"errors"
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
	dir, clk, opts, db := openRecompressing(t)
	const n = 1000
	t0 := uint64(time.Now().Add(-time.Minute).UnixNano())
	raw := largeTrace(t, 0, n, t0)
	want := otlptest.Traces{}
	if err := want.AddRequest(raw); err != nil {
		t.Fatal(err)
	}
	write(t, db, raw)
	db = reopen(t, db, dir, opts) // cut

	parts, continued := 0, 0
	if err := forEachData(db, func(k, v []byte) {
		_, _, id, part, err := keys.ParseDataPart(k)
		if err != nil || id != largeTraceID || part != uint32(parts) {
			t.Fatalf("key %x: part %d of %x, %v; want part %d of %x", k, part, id, err, parts, largeTraceID)
		}
		if len(v) > 2*partBytes {
			t.Fatalf("part %d is %d bytes", part, len(v))
		}
		if codec.Continued(v) {
			continued++
		}
		parts++
	}); err != nil {
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
		if err != nil || len(found) != 1 || found[0].ID != largeTraceID {
			t.Fatalf("search found %v, %v; want the trace", found, err)
		}
	}
	check()
	clk.add(2 * time.Minute)
	if err := db.recompress(context.Background()); err != nil {
		t.Fatal(err)
	}
	check()
}

var largeTraceID = TraceID{0x1a, 15: 0x7e}

// largeTrace is a request of spans from..to-1 of a trace of two services,
// about 330 bytes each, the last with the attribute marker=last.
func largeTrace(t *testing.T, from, to int, t0 uint64) []byte {
	t.Helper()
	str := func(v string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}
	}
	req := &collectorpb.ExportTraceServiceRequest{}
	for svc := range 2 {
		ss := &tracepb.ScopeSpans{}
		for i := from + svc; i < to; i += 2 {
			attrs := []*commonpb.KeyValue{{Key: "pad", Value: str(strings.Repeat(fmt.Sprint(i%10), 300))}}
			if i == to-1 {
				attrs = append(attrs, &commonpb.KeyValue{Key: "marker", Value: str("last")})
			}
			ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: largeTraceID[:], SpanId: binary.BigEndian.AppendUint64(nil, uint64(i+1)),
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
	return raw
}

// TestUpgradeFromFormat8 writes a large fragment whole, as version 8 did,
// then checks that the upgraded store reads it, and reads it with a later
// fragment of the same trace that is stored in parts.
func TestUpgradeFromFormat8(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{RecompressAfter: -1}
	t0 := uint64(time.Now().Add(-time.Minute).UnixNano())
	want := otlptest.Traces{}
	first, second := largeTrace(t, 0, 1000, t0), largeTrace(t, 1000, 2000, t0)
	for _, raw := range [][]byte{first, second} {
		if err := want.AddRequest(raw); err != nil {
			t.Fatal(err)
		}
	}
	// Cuts read partBytes: it changes only while no store is open, and is
	// given back after the stores this test leaves open are closed.
	old := partBytes
	t.Cleanup(func() { partBytes = old })
	partBytes = 1 << 30
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	write(t, db, first)
	if err := db.idx.Set(keys.Meta("format"), []byte{8}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil { // cuts the fragment whole
		t.Fatal(err)
	}
	partBytes = old
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	if v, closer, err := db.idx.Get(keys.Meta("format")); err != nil || v[0] != FormatVersion {
		t.Fatalf("format after upgrade: %v, %v", v, err)
	} else {
		closer.Close()
	}
	write(t, db, second)
	db = reopen(t, db, dir, opts)
	whole, parts := 0, 0
	if err := forEachData(db, func(k, v []byte) {
		switch {
		case len(k) == keys.DataPartLen:
			parts++
		case len(v) > 2*partBytes:
			whole++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if whole != 1 || parts == 0 {
		t.Fatalf("%d values over %d bytes, %d later parts; want the whole fragment and one in parts", whole, 2*partBytes, parts)
	}
	checkAll(t, db, want)
}

// forEachData calls fn with each span data key and value.
func forEachData(db *DB, fn func(k, v []byte)) error {
	it, err := db.spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		fn(it.Key(), it.Value())
	}
	return errors.Join(it.Error(), it.Close())
}
