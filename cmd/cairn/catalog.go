package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"cairn/query/jaegerpb"
)

// queryFlags are the flags every reading command shares.
type queryFlags struct {
	addr    *string
	timeout *time.Duration
}

func addQueryFlags(fs *flag.FlagSet) queryFlags {
	return queryFlags{
		addr:    fs.String("addr", "localhost:17271", "query address of a cairn (or any jaeger.storage.v2) server"),
		timeout: fs.Duration("timeout", 30*time.Second, "give up after this long"),
	}
}

func servicesCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("services", flag.ContinueOnError)
	fs.SetOutput(stderr)
	qf := addQueryFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("services takes no arguments, got %q", pos)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *qf.timeout)
	defer cancel()
	conn, err := dialQuery(*qf.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := jaegerpb.NewTraceReaderClient(conn).GetServices(ctx, &jaegerpb.GetServicesRequest{})
	if err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	for _, s := range resp.GetServices() {
		fmt.Fprintln(stdout, s)
	}
	return nil
}

func operationsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("operations", flag.ContinueOnError)
	fs.SetOutput(stderr)
	qf := addQueryFlags(fs)
	kind := fs.String("kind", "", "only operations of this span kind: server, client, producer, consumer or internal")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: cairn operations SERVICE [--addr HOST:PORT] [--kind KIND]")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *qf.timeout)
	defer cancel()
	conn, err := dialQuery(*qf.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := jaegerpb.NewTraceReaderClient(conn).GetOperations(ctx, &jaegerpb.GetOperationsRequest{Service: pos[0], SpanKind: *kind})
	if err != nil {
		return fmt.Errorf("list operations: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tOPERATION")
	for _, op := range resp.GetOperations() {
		k := op.GetSpanKind()
		if k == "" {
			k = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", k, op.GetName())
	}
	return tw.Flush()
}
