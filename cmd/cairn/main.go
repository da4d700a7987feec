// Command cairn is an embedded, single-binary distributed-tracing store: it
// ingests OTLP/gRPC, stores spans in Pebble on local disk, and serves them over
// the Jaeger remote-storage API.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `cairn — an embedded distributed-tracing store

Usage:
  cairn serve [flags]                  ingest OTLP/gRPC and serve queries
  cairn trace TRACE_ID_HEX [flags]     print a trace
  cairn search [flags]                 find traces by service, operation, attributes, duration, time
  cairn services [flags]               list the services that sent spans
  cairn operations SERVICE [flags]     list a service's operations and span kinds
  cairn bench [flags]                  measure ingest, reads and searches of cairn or any OTLP endpoint
  cairn version                        print the version and build information

Run 'cairn COMMAND -h' for a command's flags.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cairn:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return serveCmd(args[1:], stderr)
	case "trace":
		return traceCmd(args[1:], stdout, stderr)
	case "search":
		return searchCmd(args[1:], stdout, stderr)
	case "services":
		return servicesCmd(args[1:], stdout, stderr)
	case "operations":
		return operationsCmd(args[1:], stdout, stderr)
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		writeVersion(stdout)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// parseInterspersed parses flags that may stand before, between or after
// positional arguments, and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
