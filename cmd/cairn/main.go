// Command cairn is an embedded, single-binary distributed-tracing store: it
// ingests OTLP over gRPC and HTTP, stores spans in Pebble on local disk, and
// serves them over the Jaeger remote-storage API, with its own metrics on an
// HTTP port. The flags of every component live here.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// command is one of cairn's subcommands.
type command struct {
	name string
	// args is what follows the name in the synopsis: positional arguments,
	// then "[flags]" if the command has any.
	args    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands in the order the overview shows them. It
// is a function rather than a variable because the commands look their own
// synopses up in it.
func commands() []command {
	return []command{
		{"serve", "[flags]", "ingest OTLP over gRPC and HTTP, and serve queries and metrics", serveCmd},
		{"trace", "TRACE_ID_HEX [flags]", "print a trace", traceCmd},
		{"critical-path", "[TRACE_ID_HEX] [flags]", "print where a trace's time went, or an operation's in a window: the work its end waited on", criticalPathCmd},
		{"diagnose", "[flags]", "name the operation and attributes most likely behind a regression", diagnoseCmd},
		{"search", "[flags]", "find traces by service, operation, attributes, duration, time", searchCmd},
		{"services", "[flags]", "list the services that sent spans", servicesCmd},
		{"operations", "SERVICE [flags]", "list a service's operations and span kinds", operationsCmd},
		{"deps", "[flags]", "the service graph: calls, errors and latency between services", depsCmd},
		{"metrics", "[SERVICE] [flags]", "a service's calls, errors and latency per step, or every service's (--by service), from span metrics", metricsCmd},
		{"check", "DATA_DIR", "verify every file of a stopped store and report damage", checkCmd},
		{"repair", "DATA_DIR", "drop what a stopped store cannot read, so the rest serves normally", repairCmd},
		{"bench", "[flags]", "measure ingest, reads and searches of cairn or any OTLP endpoint", benchCmd},
		{"version", "", "print the version and build information", versionCmd},
	}
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func (c command) synopsis() string { return strings.TrimSpace("cairn " + c.name + " " + c.args) }

func writeOverview(w io.Writer) {
	fmt.Fprint(w, "cairn — an embedded distributed-tracing store\n\nUsage:\n")
	width := 0
	for _, c := range commands() {
		width = max(width, utf8.RuneCountInString(c.synopsis()))
	}
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-*s %s\n", width, c.synopsis(), c.summary)
	}
	fmt.Fprint(w, `
Run 'cairn help COMMAND' or 'cairn COMMAND --help' for a command's flags.

Exit status: 0 on success, 1 when a command fails, 2 when it is called wrongly.
`)
}

// errNoCommand is returned by run without arguments, after the overview.
var errNoCommand = errors.New("no command given")

// usageError is a command called wrongly.
type usageError struct {
	command string // whose help to see; empty for cairn's own
	err     error
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{err: fmt.Errorf(format, a...)} }

func main() {
	os.Exit(exitStatus(run(os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitStatus reports err on stderr, in one line and, for a command called
// wrongly, a pointer to its help, and returns the status cairn exits with.
func exitStatus(err error, stderr io.Writer) int {
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNoCommand): // the overview said it
		return 2
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "cairn: %v\nsee '%s --help'\n", err, strings.TrimSpace("cairn "+usage.command))
		return 2
	default:
		fmt.Fprintln(stderr, "cairn:", err)
		return 1
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		writeOverview(stderr)
		return errNoCommand
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		writeOverview(stdout)
		return nil
	case "help":
		if len(args) == 1 {
			writeOverview(stdout)
			return nil
		}
		return run([]string{args[1], "--help"}, stdout, stderr)
	case "-version", "--version":
		name = "version"
	}
	c, ok := lookupCommand(name)
	if !ok {
		return usagef("unknown command %q", name)
	}
	err := c.run(args[1:], stdout, stderr)
	var usage usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil
	case errors.As(err, &usage):
		usage.command = c.name
		return usage
	}
	return err
}

// newFlagSet returns the flag set of the named command, for parseFlags. The
// flag package itself reports nothing: it would print the whole usage after
// every mistake.
func newFlagSet(command string) *flag.FlagSet {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses the arguments of the command fs belongs to, whose flags
// may stand before, between or after its positional arguments, and returns
// the positional arguments, as many as its synopsis names. Asked for help,
// it prints the command's usage to stdout and returns flag.ErrHelp. An
// argument the synopsis names in brackets may be left out.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	c, _ := lookupCommand(fs.Name())
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(stdout, c, fs)
			return nil, err
		}
		if err != nil {
			return nil, usageError{err: err}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	var want, optional []string
	for _, a := range strings.Fields(c.args) {
		switch {
		case a == "[flags]":
		case strings.HasPrefix(a, "["):
			optional = append(optional, strings.Trim(a, "[]"))
		default:
			want = append(want, a)
		}
	}
	switch {
	case len(pos) >= len(want) && len(pos) <= len(want)+len(optional):
		return pos, nil
	case len(want)+len(optional) == 0:
		return nil, usagef("%s takes no arguments, got %q", c.name, pos)
	case len(pos) < len(want):
		return nil, usagef("%s needs %s", c.name, strings.Join(want[len(pos):], " "))
	default:
		return nil, usagef("%s takes only %s, got %q", c.name, strings.Join(append(want, optional...), " "), pos)
	}
}

// writeUsage prints a command's synopsis, what it does, and its flags.
func writeUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n%s%s.\n", c.synopsis(), strings.ToUpper(c.summary[:1]), c.summary[1:])
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// refuseNegative refuses a negative value of any of the named int, int64 or
// duration flags of fs, which would otherwise be taken as their default or
// as zero.
func refuseNegative(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		f := fs.Lookup(name)
		var negative bool
		switch v := f.Value.(flag.Getter).Get().(type) {
		case int:
			negative = v < 0
		case int64:
			negative = v < 0
		case time.Duration:
			negative = v < 0
		case float64:
			negative = v < 0
		}
		if negative {
			return usagef("--%s %s is negative", name, f.Value)
		}
	}
	return nil
}
