package query

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/otlpwire"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// defaultSearchDepth is the limit of a search that gives none, as in Jaeger.
const defaultSearchDepth = 20

// toQuery turns Jaeger's query parameters into a storage query.
func (s *service) toQuery(p *jaegerpb.TraceQueryParameters) (storage.Query, error) {
	if p == nil {
		return storage.Query{}, status.Error(codes.InvalidArgument, "query is required")
	}
	q := storage.Query{
		Service:     p.GetServiceName(),
		Operation:   p.GetOperationName(),
		StartMin:    timeOf(p.GetStartTimeMin()),
		StartMax:    timeOf(p.GetStartTimeMax()),
		DurationMin: p.GetDurationMin().AsDuration(),
		DurationMax: p.GetDurationMax().AsDuration(),
		Limit:       int(p.GetSearchDepth()),
	}
	switch {
	case q.Limit < 0:
		return q, status.Errorf(codes.InvalidArgument, "search_depth %d is negative", q.Limit)
	case q.Limit == 0:
		q.Limit = defaultSearchDepth
	case q.Limit > s.opts.MaxSearchDepth:
		q.Limit = s.opts.MaxSearchDepth
	}
	if q.Operation != "" && q.Service == "" {
		return q, status.Error(codes.InvalidArgument, "operation_name needs service_name")
	}
	if q.DurationMax > 0 && q.DurationMin > q.DurationMax {
		return q, status.Errorf(codes.InvalidArgument, "duration_min %v exceeds duration_max %v", q.DurationMin, q.DurationMax)
	}
	for _, kv := range p.GetAttributes() {
		a, err := attribute(kv)
		if err != nil {
			return q, err
		}
		q.Attributes = append(q.Attributes, a)
	}
	return q, nil
}

// attribute converts a typed attribute condition to otlpwire's canonical
// form.
func attribute(kv *jaegerpb.KeyValue) (storage.Attribute, error) {
	a := storage.Attribute{Key: kv.GetKey()}
	switch v := kv.GetValue().GetValue().(type) {
	case *jaegerpb.AnyValue_StringValue:
		a.Type, a.Value = otlpwire.StringValue, []byte(v.StringValue)
	case *jaegerpb.AnyValue_BoolValue:
		a.Type, a.Value = otlpwire.BoolValue, []byte{0}
		if v.BoolValue {
			a.Value[0] = 1
		}
	case *jaegerpb.AnyValue_IntValue:
		a.Type, a.Value = otlpwire.IntValue, binary.BigEndian.AppendUint64(nil, uint64(v.IntValue))
	case *jaegerpb.AnyValue_DoubleValue:
		a.Type, a.Value = otlpwire.DoubleValue, binary.BigEndian.AppendUint64(nil, math.Float64bits(v.DoubleValue))
	case *jaegerpb.AnyValue_BytesValue:
		a.Type, a.Value = otlpwire.BytesValue, v.BytesValue
	default:
		return a, status.Errorf(codes.InvalidArgument, "attribute %q: conditions take a string, bool, int, double or bytes value", kv.GetKey())
	}
	return a, nil
}

func (s *service) find(ctx context.Context, p *jaegerpb.TraceQueryParameters) ([]storage.Found, error) {
	q, err := s.toQuery(p)
	if err != nil {
		return nil, err
	}
	found, err := s.r.Find(ctx, q)
	switch {
	case errors.Is(err, storage.ErrBadQuery):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case err != nil && ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	case err != nil:
		return nil, status.Errorf(codes.Internal, "search: %v", err)
	}
	return found, nil
}

// FindTraceIDs returns the IDs of matching traces, the most recent first,
// with the extent of their spans seen while searching as time hints.
func (s *service) FindTraceIDs(ctx context.Context, req *jaegerpb.FindTraceIDsRequest) (*jaegerpb.FindTraceIDsResponse, error) {
	found, err := s.find(ctx, req.GetQuery())
	if err != nil {
		return nil, err
	}
	resp := &jaegerpb.FindTraceIDsResponse{}
	for _, f := range found {
		resp.TraceIds = append(resp.TraceIds, &jaegerpb.FoundTraceID{
			TraceId: f.ID[:],
			Start:   timestamppb.New(unixNano(f.Start)),
			End:     timestamppb.New(unixNano(f.End)),
		})
	}
	return resp, nil
}

// FindTraces streams the matching traces, whole, the most recent first,
// chunked as GetTraces chunks them.
func (s *service) FindTraces(req *jaegerpb.FindTracesRequest, stream grpc.ServerStreamingServer[tracepb.TracesData]) error {
	ctx := stream.Context()
	found, err := s.find(ctx, req.GetQuery())
	if err != nil {
		return err
	}
	for _, f := range found {
		// A trace that a damaged file holds is left out, as search leaves
		// out what it cannot read.
		if err := s.sendTrace(ctx, stream, f.ID, storage.TimeRange{}); err != nil && status.Code(err) != codes.DataLoss {
			return err
		}
	}
	return nil
}

// FindTraceSummaries streams a summary of each matching trace, the most
// recent first.
func (s *service) FindTraceSummaries(req *jaegerpb.FindTraceSummariesRequest, stream grpc.ServerStreamingServer[jaegerpb.FindTraceSummariesResponse]) error {
	ctx := stream.Context()
	found, err := s.find(ctx, req.GetQuery())
	if err != nil {
		return err
	}
	resp := &jaegerpb.FindTraceSummariesResponse{}
	for _, f := range found {
		t, err := s.r.Trace(ctx, f.ID, storage.TimeRange{})
		if storage.IsCorruption(err) {
			continue
		}
		if err != nil {
			return readError(ctx, f.ID, err)
		}
		if t != nil {
			resp.Summaries = append(resp.Summaries, summarize(t))
		}
	}
	if len(resp.Summaries) == 0 {
		return nil
	}
	return stream.Send(resp)
}

// summarize computes a trace's summary from its spans.
func summarize(t *storage.Trace) *jaegerpb.TraceSummary {
	sum := &jaegerpb.TraceSummary{TraceId: t.ID[:], MinStartTimeUnixNano: math.MaxUint64}
	ids := map[[8]byte]bool{}
	var parents [][]byte
	services := map[string]*jaegerpb.ServiceSummary{}
	var root *otlpwire.SpanFacts
	var rootService string
	for _, g := range t.Groups {
		svc := string(otlpwire.ServiceName(g.Resource))
		ss := services[svc]
		if ss == nil {
			ss = &jaegerpb.ServiceSummary{Name: svc}
			services[svc] = ss
		}
		for _, raw := range g.Spans {
			f := otlpwire.Facts(raw)
			ids[f.ID] = true
			parents = append(parents, f.Parent)
			sum.SpanCount++
			ss.SpanCount++
			if f.Error {
				sum.ErrorSpanCount++
				ss.ErrorSpanCount++
			}
			sum.MinStartTimeUnixNano = min(sum.MinStartTimeUnixNano, f.Start)
			sum.MaxEndTimeUnixNano = max(sum.MaxEndTimeUnixNano, f.End)
			if len(f.Parent) == 0 && (root == nil || f.Start < root.Start) {
				root, rootService = &f, svc
			}
		}
	}
	for _, p := range parents {
		if len(p) > 0 && (len(p) != 8 || !ids[[8]byte(p)]) {
			sum.OrphanSpanCount++
		}
	}
	if root != nil {
		sum.RootServiceName, sum.RootOperationName = rootService, string(root.Name)
	}
	for _, ss := range services {
		sum.Services = append(sum.Services, ss)
	}
	slices.SortFunc(sum.Services, func(a, b *jaegerpb.ServiceSummary) int { return cmp.Compare(a.Name, b.Name) })
	return sum
}

func unixNano(n uint64) time.Time { return time.Unix(0, int64(min(n, math.MaxInt64))) }
