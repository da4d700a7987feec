package query

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"cairn/query/jaegerpb"
	"cairn/storage"
)

// dependencySource is the source of every dependency: cairn pairs spans
// as it stores them.
const dependencySource = "cairn"

type dependencies struct {
	jaegerpb.UnimplementedDependencyReaderServer
	s *service
}

// GetDependencies returns the service graph's edges with the calls that
// started in the minutes from start_time's to end_time's, the latter
// excluded unless end_time is past its start: exact counts, summed from
// what each cut stored. Edges to peers that send
// no spans of their own (a database named by its clients' db.system) are
// among them. A missing end_time is now; a missing start_time, the
// beginning of retention.
func (d dependencies) GetDependencies(ctx context.Context, req *jaegerpb.GetDependenciesRequest) (*jaegerpb.GetDependenciesResponse, error) {
	end := time.Now()
	if req.GetEndTime() != nil {
		end = req.GetEndTime().AsTime()
	}
	start := req.GetStartTime().AsTime()
	if start.After(end) {
		return nil, status.Errorf(codes.InvalidArgument, "start_time %s is after end_time %s", start.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano))
	}
	leave, err := d.s.reads.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	edges, err := d.s.r.Dependencies(ctx, start, end)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctxStatus(ctx)
	case storage.IsCorruption(err):
		return nil, status.Error(codes.DataLoss, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "read the service graph: %v", err)
	}
	// Jaeger has no virtual nodes: calls to a peer named by clients whose
	// spans got no child count with those that did, in one link.
	out := &jaegerpb.GetDependenciesResponse{Dependencies: make([]*jaegerpb.Dependency, 0, len(edges))}
	for i, e := range edges {
		if i > 0 && e.Parent == edges[i-1].Parent && e.Child == edges[i-1].Child {
			out.Dependencies[len(out.Dependencies)-1].CallCount += e.Calls
			continue
		}
		out.Dependencies = append(out.Dependencies, &jaegerpb.Dependency{
			Parent: e.Parent, Child: e.Child, CallCount: e.Calls, Source: dependencySource})
	}
	return out, nil
}
