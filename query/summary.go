package query

import (
	"cmp"
	"context"
	"math"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"cairn/internal/otlpwire"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// FindTraceSummaries streams a summary of each matching trace, the one
// whose earliest span started last first.
func (s *service) FindTraceSummaries(req *jaegerpb.FindTraceSummariesRequest, stream grpc.ServerStreamingServer[jaegerpb.FindTraceSummariesResponse]) error {
	// Summaries go out in as many messages as keep each within the limit.
	resp, size := &jaegerpb.FindTraceSummariesResponse{}, 0
	err := s.summaries(stream.Context(), req.GetQuery(), func(ts *jaegerpb.TraceSummary) error {
		n := embedded(proto.Size(ts))
		if size+n > s.opts.MaxMessageBytes && len(resp.Summaries) > 0 {
			if err := stream.Send(resp); err != nil {
				return err
			}
			resp, size = &jaegerpb.FindTraceSummariesResponse{}, 0
		}
		resp.Summaries, size = append(resp.Summaries, ts), size+n
		return nil
	})
	if err != nil || len(resp.Summaries) == 0 {
		return err
	}
	return stream.Send(resp)
}

// summaries searches and calls fn with a summary of each matching trace,
// the one whose earliest span started last first. A search orders what it
// finds by the spans it read of each trace, which for a trace that started
// in an hour the search did not reach (a long root) is a later start than
// its summary shows: sorted by that, a list would depend on the limit, and
// would not read as newest first.
func (s *service) summaries(ctx context.Context, p *jaegerpb.TraceQueryParameters, fn func(*jaegerpb.TraceSummary) error) error {
	found, leave, err := s.find(ctx, p)
	if err != nil {
		return err
	}
	defer leave()
	sums := make([]*jaegerpb.TraceSummary, 0, len(found))
	for _, f := range found {
		sum := newSummary(f.ID)
		ok, err := s.r.TracePieces(ctx, f.ID, storage.TimeRange{}, s.opts.MaxMessageBytes, nil, func(t *storage.Trace) error {
			sum.add(t)
			return nil
		})
		switch {
		case err != nil && ctx.Err() != nil:
			return ctxStatus(ctx)
		case storage.IsCorruption(err):
			// Left out, as search leaves out what it cannot read.
			continue
		case err != nil:
			return readError(f.ID, err)
		case !ok:
			continue
		}
		sums = append(sums, sum.finish())
	}
	slices.SortStableFunc(sums, func(a, b *jaegerpb.TraceSummary) int {
		return cmp.Compare(b.MinStartTimeUnixNano, a.MinStartTimeUnixNano)
	})
	for _, sum := range sums {
		if err := fn(sum); err != nil {
			return err
		}
	}
	return nil
}

// summary computes a trace's summary from its spans, a piece at a time. It
// keeps nothing of the pieces, so that they can be freed.
type summary struct {
	sum                *jaegerpb.TraceSummary
	ids                map[[8]byte]bool
	parents            [][8]byte // of spans whose parent_span_id is 8 bytes
	services           map[string]*jaegerpb.ServiceSummary
	hasRoot            bool
	rootStart, rootEnd uint64
	// longest are the longest spans with a parent, the longest first, at
	// most rootCandidates: the root, if no span is without a parent, is
	// the longest of them whose parent is missing; if one is, and such a
	// span holds it and is longer, that span (see analysis.CriticalPath).
	longest []rootCandidate
}

// rootCandidates is how many of a trace's longest spans with a parent a
// summary keeps. A trace that continues one begun outside the store (a
// browser's, or a proxy's that exports elsewhere) has no span without a
// parent; its first span here is its longest, whose parent is missing,
// and the root of its critical path.
const rootCandidates = 8

type rootCandidate struct {
	parent          [8]byte // all zero for a parent_span_id of another length
	duration, start uint64
	service, name   string
}

func newSummary(id storage.TraceID) *summary {
	return &summary{
		sum:      &jaegerpb.TraceSummary{TraceId: id[:], MinStartTimeUnixNano: math.MaxUint64},
		ids:      map[[8]byte]bool{},
		services: map[string]*jaegerpb.ServiceSummary{},
	}
}

func (s *summary) add(t *storage.Trace) {
	sum := s.sum
	for _, g := range t.Groups {
		svc := string(otlpwire.ServiceName(g.Resource))
		ss := s.services[svc]
		if ss == nil {
			ss = &jaegerpb.ServiceSummary{Name: svc}
			s.services[svc] = ss
		}
		for _, raw := range g.Spans {
			f := otlpwire.Facts(raw)
			s.ids[f.ID] = true
			switch {
			case len(f.Parent) == 8:
				s.parents = append(s.parents, [8]byte(f.Parent))
			case len(f.Parent) > 0: // names no span
				sum.OrphanSpanCount++
			}
			sum.SpanCount++
			ss.SpanCount++
			if f.Error {
				sum.ErrorSpanCount++
				ss.ErrorSpanCount++
			}
			sum.MinStartTimeUnixNano = min(sum.MinStartTimeUnixNano, f.Start)
			sum.MaxEndTimeUnixNano = max(sum.MaxEndTimeUnixNano, f.End)
			if len(f.Parent) == 0 && (!s.hasRoot || f.Start < s.rootStart) {
				s.hasRoot, s.rootStart, s.rootEnd = true, f.Start, max(f.Start, f.End)
				sum.RootServiceName, sum.RootOperationName = svc, string(f.Name)
			}
			if len(f.Parent) > 0 {
				s.consider(f, svc)
			}
		}
	}
}

// consider keeps span f of service svc among the longest spans with a
// parent, ordered as critical paths choose a root among orphans: the
// longest, then the earliest.
func (s *summary) consider(f otlpwire.SpanFacts, svc string) {
	d := f.End - min(f.Start, f.End)
	ahead := func(c rootCandidate) bool {
		return cmp.Or(cmp.Compare(c.duration, d), cmp.Compare(f.Start, c.start)) > 0
	}
	at := len(s.longest)
	for at > 0 && !ahead(s.longest[at-1]) {
		at--
	}
	if at == rootCandidates {
		return
	}
	c := rootCandidate{duration: d, start: f.Start, service: svc, name: string(f.Name)}
	if len(f.Parent) == 8 {
		c.parent = [8]byte(f.Parent)
	}
	if len(s.longest) == rootCandidates {
		s.longest = s.longest[:rootCandidates-1]
	}
	s.longest = slices.Insert(s.longest, at, c)
}

func (s *summary) finish() *jaegerpb.TraceSummary {
	for _, p := range s.parents {
		if !s.ids[p] {
			s.sum.OrphanSpanCount++
		}
	}
	for _, c := range s.longest {
		holds := c.start <= s.rootStart && s.rootEnd <= c.start+c.duration && c.duration > s.rootEnd-s.rootStart
		if !s.ids[c.parent] && (!s.hasRoot || holds) {
			s.sum.RootServiceName, s.sum.RootOperationName = c.service, c.name
			break
		}
	}
	for _, ss := range s.services {
		s.sum.Services = append(s.sum.Services, ss)
	}
	slices.SortFunc(s.sum.Services, func(a, b *jaegerpb.ServiceSummary) int { return cmp.Compare(a.Name, b.Name) })
	return s.sum
}
