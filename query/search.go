package query

import (
	"context"
	"errors"
	"math"
	"strings"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
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
		Service:   p.GetServiceName(),
		Operation: p.GetOperationName(),
		Limit:     int(p.GetSearchDepth()),
	}
	var err error
	if q.StartMin, err = timeArg(p.GetStartTimeMin(), "start_time_min"); err != nil {
		return q, err
	}
	if q.StartMax, err = timeArg(p.GetStartTimeMax(), "start_time_max"); err != nil {
		return q, err
	}
	if q.DurationMin, err = durationArg(p.GetDurationMin(), "duration_min"); err != nil {
		return q, err
	}
	if q.DurationMax, err = durationArg(p.GetDurationMax(), "duration_max"); err != nil {
		return q, err
	}
	if !q.StartMin.IsZero() && !q.StartMax.IsZero() && q.StartMin.After(q.StartMax) {
		return q, status.Errorf(codes.InvalidArgument, "start_time_min %v is after start_time_max %v",
			q.StartMin.UTC().Format(time.RFC3339Nano), q.StartMax.UTC().Format(time.RFC3339Nano))
	}
	switch {
	case q.Limit < 0:
		return q, status.Errorf(codes.InvalidArgument, "search_depth %d is negative", q.Limit)
	case q.Limit == 0:
		q.Limit = defaultSearchDepth
	case q.Limit > s.opts.MaxSearchDepth:
		// Never a silent cut: a caller given fewer traces than it asked for
		// would take them for all there are.
		return q, status.Errorf(codes.InvalidArgument, "search_depth %d is over the maximum of %d", q.Limit, s.opts.MaxSearchDepth)
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

// attribute converts an attribute condition to its text, as OTLP JSON
// writes the value: storage matches attributes of any type by it.
func attribute(kv *jaegerpb.KeyValue) (storage.Attribute, error) {
	var text []byte
	switch v := kv.GetValue().GetValue().(type) {
	case *jaegerpb.AnyValue_StringValue:
		text = []byte(v.StringValue)
	case *jaegerpb.AnyValue_BoolValue:
		text = otlpwire.AppendText(nil, otlpwire.BoolValue, nil, boolNum(v.BoolValue))
	case *jaegerpb.AnyValue_IntValue:
		text = otlpwire.AppendText(nil, otlpwire.IntValue, nil, uint64(v.IntValue))
	case *jaegerpb.AnyValue_DoubleValue:
		text = otlpwire.AppendText(nil, otlpwire.DoubleValue, nil, math.Float64bits(v.DoubleValue))
	case *jaegerpb.AnyValue_BytesValue:
		text = otlpwire.AppendText(nil, otlpwire.BytesValue, v.BytesValue, 0)
	default:
		return storage.Attribute{}, status.Errorf(codes.InvalidArgument, "attribute %q: conditions take a string, bool, int, double or bytes value", kv.GetKey())
	}
	return storage.Attribute{Key: kv.GetKey(), Value: string(text)}, nil
}

func boolNum(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// find admits a search and runs it. The search keeps its place among the
// searches until the caller, having sent what it found, calls leave.
func (s *service) find(ctx context.Context, p *jaegerpb.TraceQueryParameters) (found []storage.Found, leave func(), err error) {
	if leave, err = s.searches.enter(ctx); err != nil {
		return nil, nil, err
	}
	if found, err = s.search(ctx, p); err != nil {
		leave()
		return nil, nil, err
	}
	return found, leave, nil
}

func (s *service) search(ctx context.Context, p *jaegerpb.TraceQueryParameters) ([]storage.Found, error) {
	q, err := s.toQuery(p)
	if err != nil {
		return nil, err
	}
	found, err := s.r.Find(ctx, q)
	switch {
	case errors.Is(err, storage.ErrBadQuery):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case err != nil && ctx.Err() != nil:
		return nil, ctxStatus(ctx)
	case err != nil:
		return nil, status.Errorf(codes.Internal, "search: %v", err)
	}
	return found, nil
}

// FindTraceIDs returns the IDs of matching traces, the most recent first,
// with the extent of their spans seen while searching as time hints.
func (s *service) FindTraceIDs(ctx context.Context, req *jaegerpb.FindTraceIDsRequest) (*jaegerpb.FindTraceIDsResponse, error) {
	found, leave, err := s.find(ctx, req.GetQuery())
	if err != nil {
		return nil, err
	}
	defer leave()
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
	found, leave, err := s.find(ctx, req.GetQuery())
	if err != nil {
		return err
	}
	defer leave()
	out := &sender{s: s, ctx: ctx, emit: rawSender(stream), heavy: true}
	var partial []string
	for _, f := range found {
		before := out.sent
		err := s.sendTrace(ctx, out, f.ID, storage.TimeRange{})
		switch {
		case status.Code(err) == codes.DataLoss && out.sent == before:
			// A trace that a damaged file holds is left out, as search
			// leaves out what it cannot read.
		case status.Code(err) == codes.DataLoss:
			// Part of it went out before the damage: the caller must not
			// take it for whole. The other traces are still sent.
			partial = append(partial, status.Convert(err).Message())
		case err != nil:
			return err
		}
	}
	if len(partial) > 0 {
		return status.Error(codes.DataLoss, strings.Join(partial, "; "))
	}
	return nil
}

func unixNano(n uint64) time.Time { return time.Unix(0, int64(min(n, math.MaxInt64))) }

// timeArg is a request's timestamp, the zero time if it has none. One that
// is not valid (nanos outside [0, 1e9), or outside the years 1 to 9999) is
// refused; valid times before 1970 or after 2262, which nanoseconds since
// 1970 cannot hold as an int64, are clamped by storage, never wrapped.
func timeArg(ts *timestamppb.Timestamp, field string) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	return ts.AsTime(), nil
}

// traceHint is the time range a request gives for a trace, open where it
// gives no bound.
func traceHint(start, end *timestamppb.Timestamp) (storage.TimeRange, error) {
	var tr storage.TimeRange
	var err error
	if tr.Start, err = timeArg(start, "start_time"); err != nil {
		return tr, err
	}
	if tr.End, err = timeArg(end, "end_time"); err != nil {
		return tr, err
	}
	if !tr.Start.IsZero() && !tr.End.IsZero() && tr.Start.After(tr.End) {
		return tr, status.Errorf(codes.InvalidArgument, "start_time %s is after end_time %s",
			tr.Start.UTC().Format(time.RFC3339Nano), tr.End.UTC().Format(time.RFC3339Nano))
	}
	return tr, nil
}

// durationArg is a request's duration, 0 if it has none. One that is not
// valid or is negative is refused; those past time.Duration's ±292 years
// saturate.
func durationArg(d *durationpb.Duration, field string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	if d.AsDuration() < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "%s %v is negative", field, d.AsDuration())
	}
	return d.AsDuration(), nil
}
