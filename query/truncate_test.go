package query

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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

// randomValue is a string (some of it multi-byte), bytes, int, or a list or
// map of those, nested up to depth.
func randomValue(r *rand.Rand, depth int) *commonpb.AnyValue {
	n := r.IntN(6)
	if depth == 0 {
		n %= 3
	}
	switch n {
	case 0:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: strings.Repeat([]string{"a", "é", "€", "😀", "aé€😀"}[r.IntN(5)], r.IntN(400))}}
	case 1:
		b := make([]byte, r.IntN(3000))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: b}}
	case 2:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: r.Int64()}}
	case 3:
		arr := &commonpb.ArrayValue{}
		for range r.IntN(4) {
			arr.Values = append(arr.Values, randomValue(r, depth-1))
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: arr}}
	default:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: randomAttrs(r, depth-1)}}}
	}
}

func randomAttrs(r *rand.Rand, depth int) []*commonpb.KeyValue {
	var kvs []*commonpb.KeyValue
	for i := range r.IntN(5) {
		kvs = append(kvs, &commonpb.KeyValue{Key: strings.Repeat("k", i+1), Value: randomValue(r, depth)})
	}
	return kvs
}

// randomID returns n random bytes: IDs are binary, and most end in a byte
// that is not valid UTF-8 on its own.
func randomID(r *rand.Rand, n int) []byte {
	id := make([]byte, n)
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	return id
}

func randomSpan(r *rand.Rand) *tracepb.Span {
	sp := &tracepb.Span{
		TraceId: randomID(r, 16), SpanId: randomID(r, 8), ParentSpanId: randomID(r, 8),
		Name: "op", Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: 1e18, EndTimeUnixNano: 1e18 + 5,
		Attributes: randomAttrs(r, 3),
		Status:     &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR},
	}
	for range r.IntN(3) {
		sp.Events = append(sp.Events, &tracepb.Span_Event{Name: "e", TimeUnixNano: 1e18 + 1, Attributes: randomAttrs(r, 2)})
	}
	for range r.IntN(2) {
		sp.Links = append(sp.Links, &tracepb.Span_Link{TraceId: sp.TraceId, SpanId: sp.SpanId, Attributes: randomAttrs(r, 2)})
	}
	return sp
}

// takeMarker removes the cairn.truncated attribute from attrs and returns its
// value, or -1 if there is none.
func takeMarker(attrs *[]*commonpb.KeyValue) int64 {
	for i, kv := range *attrs {
		if kv.Key == TruncatedKey {
			*attrs = append((*attrs)[:i], (*attrs)[i+1:]...)
			return kv.Value.GetIntValue()
		}
	}
	return -1
}

// adoptCuts checks that every string and bytes value of got is its
// counterpart in want or a prefix of it, and copies got's values into want,
// so that what remains to compare is everything else.
func adoptCuts(t *testing.T, want, got []*commonpb.KeyValue) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%d attributes, want %d", len(got), len(want))
	}
	for i := range want {
		adoptValue(t, want[i].Value, got[i].Value)
	}
}

func adoptValue(t *testing.T, want, got *commonpb.AnyValue) {
	t.Helper()
	switch w := want.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		g := got.GetStringValue()
		if !strings.HasPrefix(w.StringValue, g) {
			t.Fatalf("string cut to %q, not a prefix", g)
		}
		w.StringValue = g
	case *commonpb.AnyValue_BytesValue:
		g := got.GetBytesValue()
		if !bytes.HasPrefix(w.BytesValue, g) {
			t.Fatal("bytes cut to something not a prefix")
		}
		w.BytesValue = g
	case *commonpb.AnyValue_ArrayValue:
		if len(w.ArrayValue.Values) != len(got.GetArrayValue().GetValues()) {
			t.Fatal("array length changed")
		}
		for i := range w.ArrayValue.Values {
			adoptValue(t, w.ArrayValue.Values[i], got.GetArrayValue().Values[i])
		}
	case *commonpb.AnyValue_KvlistValue:
		adoptCuts(t, w.KvlistValue.Values, got.GetKvlistValue().GetValues())
	}
}

func TestFitRandomSpans(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cut, skeletons := 0, 0
	for range 300 {
		want := randomSpan(r)
		raw, _ := proto.Marshal(want)
		budget := 90 + r.IntN(len(raw)+10)
		out := fit(raw, &spanShape, budget)
		if len(raw) <= budget {
			if !bytes.Equal(out, raw) {
				t.Fatal("a span that fits was changed")
			}
			continue
		}
		if out == nil || len(out) > budget {
			t.Fatalf("%d-byte span fit to %d bytes: %d bytes", len(raw), budget, len(out))
		}
		var got tracepb.Span
		if err := proto.Unmarshal(out, &got); err != nil {
			t.Fatalf("cut span does not decode: %v", err)
		}
		removed := takeMarker(&got.Attributes)
		if removed <= 0 {
			t.Fatalf("cut span has no %s attribute", TruncatedKey)
		}
		if got.Status == nil {
			// Values cut to nothing would not do: IDs, name, kind and
			// times are left.
			skeletons++
			sk := &tracepb.Span{TraceId: want.TraceId, SpanId: want.SpanId, ParentSpanId: want.ParentSpanId,
				Name: want.Name, Kind: want.Kind, StartTimeUnixNano: want.StartTimeUnixNano, EndTimeUnixNano: want.EndTimeUnixNano}
			if !proto.Equal(sk, &got) {
				t.Fatalf("skeleton %v, want %v", &got, sk)
			}
			continue
		}
		cut++
		adoptCuts(t, want.Attributes, got.Attributes)
		for i := range want.Events {
			adoptCuts(t, want.Events[i].Attributes, got.Events[i].Attributes)
		}
		for i := range want.Links {
			adoptCuts(t, want.Links[i].Attributes, got.Links[i].Attributes)
		}
		if !proto.Equal(want, &got) {
			t.Fatalf("fields other than attribute values changed:\n got %v\nwant %v", &got, want)
		}
		if int(removed) != len(raw)-len(out)+markerSize(removed) {
			t.Fatalf("marker says %d bytes removed; %d were", removed, len(raw)-len(out)+markerSize(removed))
		}
	}
	if cut == 0 || skeletons == 0 {
		t.Fatalf("%d spans cut, %d reduced to their skeleton: both should occur", cut, skeletons)
	}
}

func markerSize(removed int64) int { return len(appendMarker(nil, 9, int(removed))) }

func FuzzFit(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		raw, _ := proto.Marshal(randomSpan(r))
		f.Add(raw, len(raw)/2)
	}
	f.Fuzz(func(t *testing.T, msg []byte, budget int) {
		for _, sh := range []*shape{&spanShape, &resourceShape, &scopeShape} {
			if out := fit(msg, sh, budget); out != nil && len(out) > max(budget, len(msg)) {
				t.Fatalf("%d bytes fit to %d: %d bytes", len(msg), budget, len(out))
			}
		}
	})
}

func stringAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// TestResponsesFitMessages reads, from a store on disk, a span with a
// 1 MiB attribute, a resource with a 100 KiB one, and more services and
// operations than a message holds, through a server whose messages are at
// most 16 KiB: the API at a quarter of its scale.
func TestResponsesFitMessages(t *testing.T) {
	const limit = 16 << 10
	t0 := uint64(hour0.UnixNano())
	bigSpan := &tracepb.Span{TraceId: []byte{0: 2, 15: 1}, SpanId: []byte{7: 1}, Name: "upload", StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 9,
		Attributes: []*commonpb.KeyValue{stringAttr("small", "kept"), stringAttr("body", strings.Repeat("b", 1<<20))},
		Events:     []*tracepb.Span_Event{{Name: "log", TimeUnixNano: t0 + 1, Attributes: []*commonpb.KeyValue{stringAttr("stack", strings.Repeat("s", 200<<10))}}}}
	small := &tracepb.Span{TraceId: bigSpan.TraceId, SpanId: []byte{7: 2}, Name: "small", StartTimeUnixNano: t0 + 1, EndTimeUnixNano: t0 + 2}
	req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", "shop")}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{bigSpan, small}}}},
		{Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", "env"), stringAttr("env", strings.Repeat("e", 100<<10))}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{0: 2, 15: 2}, SpanId: []byte{7: 3}, Name: "x", StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1}}}}},
	}}
	var ops []*tracepb.Span
	for i := range 2000 {
		ops = append(ops, &tracepb.Span{TraceId: []byte{0: 3, 15: 1}, SpanId: []byte{5: 1, 6: byte(i >> 8), 7: byte(i)}, Name: fmt.Sprintf("operation-%04d", i), StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1})
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{stringAttr("service.name", fmt.Sprintf("service-%04d", i))}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: []byte{0: 4, 14: byte(i >> 8), 15: byte(i)}, SpanId: []byte{7: 1}, Name: "x", StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1}}}},
		})
	}
	req.ResourceSpans[0].ScopeSpans = append(req.ResourceSpans[0].ScopeSpans, &tracepb.ScopeSpans{Spans: ops})
	dir := t.TempDir()
	db := storeWith(t, dir, mustMarshal(t, req))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	client := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(db, &Options{MaxMessageBytes: limit}))))

	read := func(id []byte) []*tracepb.ResourceSpans {
		stream, err := client.GetTraces(context.Background(), &jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: id}}})
		if err != nil {
			t.Fatal(err)
		}
		var all []*tracepb.ResourceSpans
		for {
			td, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return all
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := proto.Size(td); n > limit {
				t.Fatalf("trace %x: a %d-byte message", id, n)
			}
			all = append(all, td.ResourceSpans...)
		}
	}
	var got []*tracepb.Span
	for _, rs := range read(bigSpan.TraceId) {
		for _, ss := range rs.ScopeSpans {
			got = append(got, ss.Spans...)
		}
	}
	if len(got) != 2 || !proto.Equal(got[1], small) {
		t.Fatalf("trace with a huge span: %d spans; want the huge one cut and the small one as it was", len(got))
	}
	cutSpan := got[0]
	if removed := takeMarker(&cutSpan.Attributes); removed < 1<<20 {
		t.Fatalf("cut span's %s is %d; want the bytes removed, over 1 MiB", TruncatedKey, removed)
	}
	want := proto.Clone(bigSpan).(*tracepb.Span)
	adoptCuts(t, want.Attributes, cutSpan.Attributes)
	adoptCuts(t, want.Events[0].Attributes, cutSpan.Events[0].Attributes)
	if !proto.Equal(want, cutSpan) || cutSpan.Attributes[0].Value.GetStringValue() != "kept" {
		t.Fatalf("cut span differs beyond its long values, or a short value was cut")
	}

	rs := read([]byte{0: 2, 15: 2})
	if len(rs) != 1 || takeMarker(&rs[0].Resource.Attributes) <= 0 || len(rs[0].ScopeSpans[0].Spans) != 1 {
		t.Fatalf("trace under a huge resource: %v", rs)
	}

	services, err := client.GetServices(context.Background(), &jaegerpb.GetServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	checkCut(t, "services", proto.Size(services), limit, services.Services, 2002)
	operations, err := client.GetOperations(context.Background(), &jaegerpb.GetOperationsRequest{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, op := range operations.Operations {
		names = append(names, op.Name)
	}
	checkCut(t, "operations", proto.Size(operations), limit, names, 2002)
}

// checkCut checks that a list of total names came in a message of at most
// limit bytes, cut short with a notice that counts the names left out.
func checkCut(t *testing.T, what string, size, limit int, names []string, total int) {
	t.Helper()
	last := len(names) - 1
	notice := fmt.Sprintf("cairn: %d more %s not listed, over the %d-byte response limit", total-last, what, limit)
	if size > limit || last < 0 || names[last] != notice {
		t.Fatalf("%s: %d bytes, %d names ending %q; want at most %d bytes ending %q", what, size, len(names), names[max(last, 0)], limit, notice)
	}
}

// TestFindTraceSummariesSplitsMessages asks for every summary of the corpus
// through messages of at most 300 bytes, and gets them all, in order, over
// several messages.
func TestFindTraceSummariesSplitsMessages(t *testing.T) {
	db := storeWith(t, t.TempDir(), corpusRequest(t))
	const limit = 300
	whole := jaegerpb.NewTraceReaderClient(serve(t, db))
	split := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, grpctest.Serve(t, NewServer(db, &Options{MaxMessageBytes: limit}))))
	summaries := func(c jaegerpb.TraceReaderClient, limit int) (all []*jaegerpb.TraceSummary, messages int) {
		stream, err := c.FindTraceSummaries(context.Background(), &jaegerpb.FindTraceSummariesRequest{Query: &jaegerpb.TraceQueryParameters{SearchDepth: 20}})
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return all, messages
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := proto.Size(resp); n > limit && len(resp.Summaries) > 1 {
				t.Fatalf("a %d-byte message of %d summaries", n, len(resp.Summaries))
			}
			all, messages = append(all, resp.Summaries...), messages+1
		}
	}
	want, _ := summaries(whole, 4<<20)
	got, messages := summaries(split, limit)
	if len(got) != len(corpus) || messages < 2 || !proto.Equal(&jaegerpb.FindTraceSummariesResponse{Summaries: got}, &jaegerpb.FindTraceSummariesResponse{Summaries: want}) {
		t.Fatalf("%d summaries in %d messages; want the %d of one message, in several", len(got), messages, len(want))
	}
}
