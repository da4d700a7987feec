package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	"cairn/internal/access"
	"cairn/query/jaegerpb"
)

// queryFlags are the flags every reading command shares.
type queryFlags struct {
	addr    *string
	timeout *time.Duration
	access  *access.Client
}

func addQueryFlags(fs *flag.FlagSet) queryFlags {
	qf := queryFlags{
		addr:    fs.String("addr", "localhost:"+defaultQueryPort, "query address of a cairn (or any jaeger.storage.v2) server"),
		timeout: fs.Duration("timeout", 30*time.Second, "give up after this long"),
		access:  &access.Client{},
	}
	addClientFlags(fs, qf.access, "query")
	return qf
}

// addClientFlags adds the flags of how a client reaches a port that speaks
// TLS or wants a token.
func addClientFlags(fs *flag.FlagSet, c *access.Client, role string) {
	fs.StringVar(&c.CAFile, "tls-ca-file", "", "PEM CA certificates that signed the server's: connect with TLS")
	fs.StringVar(&c.CertFile, "tls-cert-file", "", "PEM client certificate, for servers that require one (mutual TLS)")
	fs.StringVar(&c.KeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&c.TokenFile, "token-file", "", "file whose first line is a "+role+" token of the server")
}

// rpcError says in one line why a call to the server failed.
func (qf queryFlags) rpcError(err error) error { return rpcError(*qf.addr, *qf.timeout, err) }

// connect returns a TraceReader client of the server and a context bounded
// by the timeout; done releases both.
func (qf queryFlags) connect() (ctx context.Context, client jaegerpb.TraceReaderClient, done func(), err error) {
	ctx, conn, done, err := qf.connectConn()
	if err != nil {
		return nil, nil, nil, err
	}
	return ctx, jaegerpb.NewTraceReaderClient(conn), done, nil
}

// connectConn returns a connection to the server and a context bounded by
// the timeout; done releases both.
func (qf queryFlags) connectConn() (ctx context.Context, conn *grpc.ClientConn, done func(), err error) {
	if *qf.timeout <= 0 {
		return nil, nil, nil, usagef("--timeout %v is not positive", *qf.timeout)
	}
	if conn, err = dialQuery(*qf.addr, *qf.access); err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *qf.timeout)
	return ctx, conn, func() { cancel(); conn.Close() }, nil
}

func servicesCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("services")
	qf := addQueryFlags(fs)
	if _, err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	ctx, client, done, err := qf.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.GetServices(ctx, &jaegerpb.GetServicesRequest{})
	if err != nil {
		return qf.rpcError(err)
	}
	for _, s := range resp.GetServices() {
		if s == "" {
			// An empty line would read as nothing; "" is what
			// cairn operations takes for it.
			s = `"" (resources without service.name)`
		}
		fmt.Fprintln(stdout, s)
	}
	return nil
}

func operationsCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("operations")
	qf := addQueryFlags(fs)
	kind := fs.String("kind", "", "only operations of this span kind: server, client, producer, consumer or internal")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	ctx, client, done, err := qf.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.GetOperations(ctx, &jaegerpb.GetOperationsRequest{Service: pos[0], SpanKind: *kind})
	if err != nil {
		return qf.rpcError(err)
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
