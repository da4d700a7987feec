package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"testing"

	"cairn/internal/histogram"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

var testTrace = [16]byte{0xaa, 1, 2, 3}

func encSpan(t testing.TB, s *tracepb.Span) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testGroups covers every way a span is stored: split with its parent in the
// fragment, outside it or absent, and whole when its bytes could not be
// rebuilt from parts.
func testGroups(t testing.TB) []Group {
	root := &tracepb.Span{TraceId: testTrace[:], SpanId: []byte{1, 1, 1, 1, 1, 1, 1, 1}, Name: "root",
		StartTimeUnixNano: 1000, EndTimeUnixNano: 9000, TraceState: "k=v",
		Attributes: []*commonpb.KeyValue{{Key: "a", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}}},
		Events:     []*tracepb.Span_Event{{TimeUnixNano: 1500, Name: "e"}}}
	child := &tracepb.Span{TraceId: testTrace[:], SpanId: []byte{2, 2, 2, 2, 2, 2, 2, 2}, ParentSpanId: root.SpanId,
		Name: "child", Kind: tracepb.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: 900, EndTimeUnixNano: 2000, Flags: 0x101}
	orphan := &tracepb.Span{TraceId: testTrace[:], SpanId: []byte{3, 3, 3, 3, 3, 3, 3, 3}, ParentSpanId: []byte{9, 9, 9, 9, 9, 9, 9, 9},
		StartTimeUnixNano: 5000, EndTimeUnixNano: 5000}
	// Fields out of order, a repeated field, an end before the start, an
	// empty parent, and a foreign trace ID: kept whole.
	outOfOrder := append(protowire.AppendTag(nil, 5, protowire.BytesType), 1, 'x')
	outOfOrder = append(outOfOrder, encSpan(t, child)...)
	repeated := append(encSpan(t, orphan), encSpan(t, &tracepb.Span{StartTimeUnixNano: 1})...)
	backwards := encSpan(t, &tracepb.Span{TraceId: testTrace[:], SpanId: []byte{4, 4, 4, 4, 4, 4, 4, 4}, StartTimeUnixNano: 10, EndTimeUnixNano: 5})
	emptyParent := append(encSpan(t, &tracepb.Span{TraceId: testTrace[:], SpanId: []byte{5, 5, 5, 5, 5, 5, 5, 5}}),
		protowire.AppendTag(nil, 4, protowire.BytesType)...)
	emptyParent = append(emptyParent, 0)
	foreign := encSpan(t, &tracepb.Span{TraceId: make([]byte, 16), SpanId: []byte{6, 6, 6, 6, 6, 6, 6, 6}})
	return []Group{
		{Num: 0, Spans: [][]byte{encSpan(t, child), encSpan(t, root), outOfOrder}},
		{Num: 300, Spans: [][]byte{encSpan(t, orphan), repeated, backwards, emptyParent, foreign, {}}},
	}
}

// mergedGroups are testGroups as a merge of three blocks' fragments stores
// them: a group once for each cut its spans came with.
func mergedGroups(t testing.TB) []Group {
	g := testGroups(t)
	return []Group{
		{Num: 0, Spans: g[0].Spans[:1], Back: 2},
		{Num: 0, Spans: g[0].Spans[1:]},
		{Num: 300, Spans: g[1].Spans[:2], Back: 1},
		{Num: 300, Spans: g[1].Spans[2:]},
	}
}

func TestFragmentRoundTrip(t *testing.T) {
	t.Run("cut", func(t *testing.T) { testFragmentRoundTrip(t, testGroups(t)) })
	t.Run("merged", func(t *testing.T) { testFragmentRoundTrip(t, mergedGroups(t)) })
}

func testFragmentRoundTrip(t *testing.T, groups []Group) {
	var e FragmentEncoder
	enc := e.Append(nil, testTrace, groups)
	got, _, err := DecodeFragment(nil, nil, enc, testTrace)
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, got)
	for i := range got {
		got[i].Keys = nil
	}
	if !reflect.DeepEqual(got, groups) {
		t.Fatalf("got %v\nwant %v", got, groups)
	}
	split := 0
	for _, g := range groups {
		for _, raw := range g.Spans {
			if splitFields(testTrace, raw, false).ok {
				split++
			}
		}
	}
	if split != 3 {
		t.Errorf("%d spans split, want 3", split)
	}
	// The encoder's scratch space must not leak between fragments.
	again := e.Append(nil, testTrace, groups)
	if !bytes.Equal(again, enc) {
		t.Fatal("second encoding differs")
	}
	if hinted := e.Append(nil, testTrace, withOrder(groups)); !bytes.Equal(hinted, enc) {
		t.Fatal("the encoding of spans said to be ordered differs")
	}
	for i := range enc {
		if _, _, err := DecodeFragment(nil, nil, enc[:i], testTrace); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err = %v", i, err)
		}
	}
	if Continued(enc) {
		t.Fatal("a whole fragment reads as continued")
	}
	MarkContinued(enc)
	got, _, err = DecodeFragment(nil, nil, enc, testTrace)
	for i := range got {
		got[i].Keys = nil
	}
	if !Continued(enc) || err != nil || !reflect.DeepEqual(got, groups) {
		t.Fatalf("a part marked continued: continued %v, %v", Continued(enc), err)
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	b := BlockRecord{WALSegment: 9, Spans: 1000, Created: 123}
	if got, err := DecodeBlockRecord(AppendBlockRecord(nil, b)); err != nil || got != b {
		t.Fatalf("block record: %v %v", got, err)
	}
	for _, d := range []Dict{{Raw: nil, SchemaURL: []byte("u")}, {Raw: []byte{}, SchemaURL: nil}, {Raw: []byte("res")}} {
		got, err := DecodeDict(AppendDict(nil, d))
		if err != nil || (got.Raw == nil) != (d.Raw == nil) || !bytes.Equal(got.Raw, d.Raw) || !bytes.Equal(got.SchemaURL, d.SchemaURL) {
			t.Fatalf("dict %+v: got %+v, %v", d, got, err)
		}
	}
}

func FuzzFragment(f *testing.F) {
	var e FragmentEncoder
	f.Add(e.Append(nil, testTrace, testGroups(f)))
	f.Add(e.Append(nil, testTrace, mergedGroups(f)))
	f.Add([]byte{fragmentV2, 0, 0})
	f.Add([]byte{fragmentV2Continued, 0, 0})
	f.Add([]byte{fragmentMerged, 0, 0})
	f.Add([]byte{fragmentMergedContinued, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		groups, _, err := DecodeFragment(nil, nil, b, testTrace)
		if err != nil {
			return
		}
		var e FragmentEncoder
		enc := e.Append(nil, testTrace, groups)
		if hinted := e.Append(nil, testTrace, withOrder(groups)); !bytes.Equal(hinted, enc) {
			t.Fatal("the encoding of spans said to be ordered differs")
		}
		again, _, err := DecodeFragment(nil, nil, enc, testTrace)
		// Keys are compared by TestFragmentRoundTrip: a damaged split span
		// may hold fields that its key, taken from the split, does not
		// show.
		for i := range groups {
			groups[i].Keys = nil
		}
		for i := range again {
			again[i].Keys = nil
		}
		if err != nil || !reflect.DeepEqual(again, groups) {
			t.Fatalf("re-encoded fragment differs: %v", err)
		}
	})
}

// checkKeys checks that each span's key is the start and ID that a
// protobuf decoder finds in the span, where it is a span with an 8-byte ID.
func checkKeys(t *testing.T, groups []Group) {
	t.Helper()
	for _, g := range groups {
		if len(g.Keys) != len(g.Spans) {
			t.Fatalf("group %d: %d keys for %d spans", g.Num, len(g.Keys), len(g.Spans))
		}
		for i, raw := range g.Spans {
			var sp tracepb.Span
			if proto.Unmarshal(raw, &sp) != nil || len(sp.SpanId) != 8 {
				continue
			}
			if want := (SpanKey{sp.StartTimeUnixNano, binary.BigEndian.Uint64(sp.SpanId)}); g.Keys[i] != want {
				t.Fatalf("group %d span %d: key %+v, parsed %+v", g.Num, i, g.Keys[i], want)
			}
		}
	}
}

// FuzzSplitFields checks that a span is split only if it can be rebuilt
// byte for byte from its parts.
func FuzzSplitFields(f *testing.F) {
	for _, g := range testGroups(f) {
		for _, raw := range g.Spans {
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// Whatever a caller says of the fields' order, a split span must
		// rebuild exactly.
		for _, ordered := range []bool{false, true} {
			sp := splitFields(testTrace, raw, ordered)
			if !sp.ok {
				continue
			}
			for _, r := range sp.runs[:sp.nruns] {
				sp.rest = append(sp.rest, raw[r[0]:r[1]]...)
			}
			if got := rebuildSpan(nil, testTrace, &sp); !bytes.Equal(got, raw) {
				t.Fatalf("split span (ordered %v) rebuilds as %x, was %x", ordered, got, raw)
			}
		}
		// Where it is right, it must not change the split.
		if fieldsOrdered(raw) {
			if walked, skipped := splitFields(testTrace, raw, false), splitFields(testTrace, raw, true); !reflect.DeepEqual(walked, skipped) {
				t.Fatalf("ordered span split as %+v, walked whole as %+v", skipped, walked)
			}
		}
	})
}

// withOrder returns a copy of groups that says which of their spans have
// their fields in order.
func withOrder(groups []Group) []Group {
	out := slices.Clone(groups)
	for i, g := range out {
		out[i].Ordered = make([]bool, len(g.Spans))
		for j, raw := range g.Spans {
			out[i].Ordered[j] = fieldsOrdered(raw)
		}
	}
	return out
}

// fieldsOrdered reports whether msg is well-formed protobuf with fields in
// non-decreasing number order, as otlpwire.Span.Ordered says of a span.
func fieldsOrdered(msg []byte) bool {
	var prev protowire.Number
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 || num < prev {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return false
		}
		prev, msg = num, msg[n+m:]
	}
	return true
}

func FuzzRecords(f *testing.F) {
	f.Add(AppendBlockRecord(nil, BlockRecord{1, 2, 3}))
	f.Add(AppendDict(nil, Dict{Raw: []byte("r"), SchemaURL: []byte("s")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := DecodeBlockRecord(b); err == nil {
			if again, err := DecodeBlockRecord(AppendBlockRecord(nil, r)); err != nil || again != r {
				t.Fatalf("block record %v does not round-trip", r)
			}
		}
		if d, err := DecodeDict(b); err == nil {
			again, err := DecodeDict(AppendDict(nil, d))
			if err != nil || !bytes.Equal(again.Raw, d.Raw) || (again.Raw == nil) != (d.Raw == nil) || !bytes.Equal(again.SchemaURL, d.SchemaURL) {
				t.Fatalf("dict %v does not round-trip", d)
			}
		}
	})
}

// FuzzServiceGraph checks that the decoder of service graph sections fails
// cleanly on any input, and that what it accepts encodes back to itself.
func FuzzServiceGraph(f *testing.F) {
	var h histogram.Histogram
	h.Add(1500)
	h.Add(2e6)
	f.Add(AppendServiceGraph(nil, []GraphEdge{{Parent: "web", Child: "orders", Minute: 29000000, Errors: 1, Latency: h},
		{Parent: "orders", Child: "postgresql", Virtual: true, Minute: 29000001, Latency: h}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var edges []GraphEdge
		err := DecodeServiceGraph(b, func(e *EdgeHeader) (*histogram.Histogram, *uint64) {
			edges = append(edges, GraphEdge{Parent: string(e.Parent), Child: string(e.Child), Virtual: e.Virtual, Minute: e.Minute, Errors: e.Errors})
			return &edges[len(edges)-1].Latency, nil
		})
		if err != nil {
			return
		}
		// Counted alone, each edge's calls are its latencies' count.
		var again []GraphEdge
		calls := make([]uint64, len(edges))
		if err := DecodeServiceGraph(AppendServiceGraph(nil, edges), func(e *EdgeHeader) (*histogram.Histogram, *uint64) {
			again = append(again, GraphEdge{Parent: string(e.Parent), Child: string(e.Child)})
			if len(again) > len(calls) {
				return nil, nil
			}
			return nil, &calls[len(again)-1]
		}); err != nil {
			t.Fatalf("re-encoded section fails: %v", err)
		}
		if len(again) != len(edges) {
			t.Fatalf("%d edges after re-encoding, want %d", len(again), len(edges))
		}
		for i := range edges {
			if calls[i] != edges[i].Latency.Count() {
				t.Fatalf("edge %d counted %d calls, its latencies %d", i, calls[i], edges[i].Latency.Count())
			}
		}
	})
}
