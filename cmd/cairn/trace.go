package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"cairn/query/jaegerpb"
)

func traceCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	qf := addQueryFlags(fs)
	format := fs.String("format", "waterfall", "output format: waterfall or otlp-json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: cairn trace TRACE_ID_HEX [--addr HOST:PORT] [--format waterfall|otlp-json]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("trace takes exactly one trace ID")
	}
	id, err := hex.DecodeString(pos[0])
	if err != nil || len(id) != 16 {
		return fmt.Errorf("trace ID %q is not 32 hex digits", pos[0])
	}
	if *format != "waterfall" && *format != "otlp-json" {
		return fmt.Errorf("unknown format %q: want waterfall or otlp-json", *format)
	}

	ctx, client, done, err := qf.connect()
	if err != nil {
		return err
	}
	defer done()
	td, err := fetchTrace(ctx, client, id)
	if err != nil {
		return fmt.Errorf("get trace from %s: %w", *qf.addr, err)
	}
	if len(td.ResourceSpans) == 0 {
		return fmt.Errorf("trace %s not found", pos[0])
	}
	if *format == "otlp-json" {
		return writeOTLPJSON(stdout, td)
	}
	return writeWaterfall(stdout, td)
}

// dialQuery connects to a query port. Chunks are at most 4 MiB, but a single
// span larger than that comes in a chunk of its own, so the CLI accepts what
// the server accepts on ingest.
func dialQuery(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
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
