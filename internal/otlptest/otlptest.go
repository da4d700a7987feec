// Package otlptest compares OTLP trace data for tests: it flattens
// ResourceSpans into one entry per span, carrying the span's resource and
// scope with their schema URLs, so that two encodings of the same spans that
// group them differently compare equal, and nothing else does.
package otlptest

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Entry is one span with its context.
type Entry struct {
	Resource *tracepb.ResourceSpans // Resource and SchemaUrl only
	Scope    *tracepb.ScopeSpans    // Scope and SchemaUrl only
	Span     *tracepb.Span
}

// Traces maps hex trace IDs to their entries, ordered by span ID.
type Traces map[string][]Entry

// Add flattens resource spans into t.
func (t Traces) Add(rss []*tracepb.ResourceSpans) {
	for _, rs := range rss {
		res := &tracepb.ResourceSpans{Resource: rs.Resource, SchemaUrl: rs.SchemaUrl}
		for _, ss := range rs.ScopeSpans {
			sc := &tracepb.ScopeSpans{Scope: ss.Scope, SchemaUrl: ss.SchemaUrl}
			for _, s := range ss.Spans {
				id := fmt.Sprintf("%x", s.TraceId)
				t[id] = append(t[id], Entry{res, sc, s})
			}
		}
	}
	for id := range t {
		slices.SortStableFunc(t[id], func(a, b Entry) int {
			if c := bytes.Compare(a.Span.SpanId, b.Span.SpanId); c != 0 {
				return c
			}
			return cmp.Compare(a.Span.StartTimeUnixNano, b.Span.StartTimeUnixNano)
		})
	}
}

// AddRequest flattens an encoded ExportTraceServiceRequest into t.
func (t Traces) AddRequest(req []byte) error {
	var r collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(req, &r); err != nil {
		return err
	}
	t.Add(r.ResourceSpans)
	return nil
}

// Spans is the number of entries.
func (t Traces) Spans() int {
	n := 0
	for _, es := range t {
		n += len(es)
	}
	return n
}

// DiffTrace describes how got differs from want for one trace, or returns "".
func DiffTrace(want, got []Entry) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d spans, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		switch {
		case !proto.Equal(w.Span, g.Span):
			return fmt.Sprintf("span %d differs:\n got  %v\n want %v", i, g.Span, w.Span)
		case !proto.Equal(w.Resource, g.Resource):
			return fmt.Sprintf("resource of span %x differs:\n got  %v\n want %v", w.Span.SpanId, g.Resource, w.Resource)
		case !proto.Equal(w.Scope, g.Scope):
			return fmt.Sprintf("scope of span %x differs:\n got  %v\n want %v", w.Span.SpanId, g.Scope, w.Scope)
		}
	}
	return ""
}
