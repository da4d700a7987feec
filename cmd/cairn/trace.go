package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"cairn/internal/access"
	"cairn/query/jaegerpb"
)

func traceCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("trace")
	qf := addQueryFlags(fs)
	format := fs.String("format", "waterfall", "output format: waterfall or otlp-json")
	wf := addWaterfallFlags(fs)
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	id, err := hex.DecodeString(pos[0])
	if err != nil || len(id) != 16 {
		return usagef("trace ID %q is not 32 hex digits", pos[0])
	}
	if *format != "waterfall" && *format != "otlp-json" {
		return usagef("unknown format %q: want waterfall or otlp-json", *format)
	}
	if err := refuseNegative(fs, "max-spans", "depth"); err != nil {
		return err
	}

	ctx, client, done, err := qf.connect()
	if err != nil {
		return err
	}
	defer done()
	td, err := fetchTrace(ctx, client, id)
	if err != nil {
		return qf.rpcError(err)
	}
	if len(td.ResourceSpans) == 0 {
		return fmt.Errorf("trace %s not found", pos[0])
	}
	if *format == "otlp-json" {
		return writeOTLPJSON(stdout, td)
	}
	return writeWaterfall(stdout, td, *wf)
}

// dialQuery connects to a query port. Chunks are at most 4 MiB, but a span
// whose IDs and name alone are larger still comes whole, in a chunk of its
// own, so the CLI accepts what the server accepts on ingest.
func dialQuery(addr string, c access.Client) (*grpc.ClientConn, error) {
	opts, err := c.DialOptions()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return conn, nil
}

// fetchTrace reads a trace through GetTraces and joins its chunks.
func fetchTrace(ctx context.Context, client jaegerpb.TraceReaderClient, id []byte) (*tracepb.TracesData, error) {
	stream, err := client.GetTraces(ctx, &jaegerpb.GetTracesRequest{
		Query: []*jaegerpb.GetTraceParams{{TraceId: id}},
	})
	if err != nil {
		return nil, err
	}
	td := &tracepb.TracesData{}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return td, nil
		}
		if err != nil {
			return nil, err
		}
		td.ResourceSpans = append(td.ResourceSpans, chunk.ResourceSpans...)
	}
}
