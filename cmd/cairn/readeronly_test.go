package main

import (
	"context"
	"errors"
	"io"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"cairn/internal/grpctest"
	"cairn/query/jaegerpb"
)

// readerOnly serves what a jaeger.storage.v2 server that is not cairn
// serves, TraceReader alone, by passing the calls the analyses make to a
// cairn.
type readerOnly struct {
	jaegerpb.UnimplementedTraceReaderServer
	c jaegerpb.TraceReaderClient
}

func (r readerOnly) FindTraceIDs(ctx context.Context, req *jaegerpb.FindTraceIDsRequest) (*jaegerpb.FindTraceIDsResponse, error) {
	return r.c.FindTraceIDs(ctx, req)
}

func (r readerOnly) GetTraces(req *jaegerpb.GetTracesRequest, out grpc.ServerStreamingServer[tracepb.TracesData]) error {
	in, err := r.c.GetTraces(out.Context(), req)
	if err != nil {
		return err
	}
	for {
		td, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Send(td); err != nil {
			return err
		}
	}
}

// serveReaderOnly serves a readerOnly in front of the cairn at addr and
// returns its address.
func serveReaderOnly(t *testing.T, addr string) string {
	s := grpc.NewServer()
	jaegerpb.RegisterTraceReaderServer(s, readerOnly{c: jaegerpb.NewTraceReaderClient(grpctest.Dial(t, addr))})
	return grpctest.Serve(t, s)
}
