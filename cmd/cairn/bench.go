package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"cairn/bench"
	"cairn/internal/access"
)

func benchCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench")
	var o bench.Options
	fs.StringVar(&o.Target, "target", "", "OTLP endpoint to benchmark: HOST:PORT, or for OTLP/HTTP an http(s) URL (path /v1/traces unless given); empty starts an embedded cairn on a temporary directory")
	fs.StringVar(&o.Protocol, "protocol", bench.ProtocolGRPC, "OTLP protocol: grpc, http/protobuf or http/json")
	fs.StringVar(&o.Compression, "compression", bench.CompressionNone, "how requests are compressed, as the Collector's exporters' compression setting: none, gzip, zstd or snappy (over HTTP the block format); the bench compresses as it sends, on the machine it measures")
	fs.StringVar(&o.Reader, "reader", "", "jaeger.storage.v2 endpoint HOST:PORT of the target, to measure reads too")
	fs.Int64Var(&o.Spans, "spans", 0, "spans to send (default 1,000,000 unless --duration is set)")
	fs.DurationVar(&o.Duration, "duration", 0, "send for this long instead")
	fs.Uint64Var(&o.Seed, "seed", 1, "workload seed")
	fs.IntVar(&o.Batch, "batch", 1024, "spans per Export request")
	fs.BoolVar(&o.Exporters, "exporters", false, "send the workload as each service instance's SDK exporter would: a request holds one instance's spans, so a trace's spans arrive in many requests, seconds apart at low rates; without it a request holds whole traces of every service")
	fs.IntVar(&o.Conns, "conns", 4, "gRPC connections; over HTTP, conns × inflight connections carry a request each")
	fs.IntVar(&o.Inflight, "inflight", 4, "requests in flight per connection")
	fs.Float64Var(&o.Rate, "rate", 0, "spans per second to send at most; 0 sends as fast as they are acknowledged")
	fs.DurationVar(&o.Settle, "settle", 15*time.Second, "pause between ingest and the settled reads, for the store to finish the work the load left (cuts, compactions, recompression); the embedded cairn is further waited for until its files have not changed for 3s; reads during the pause are reported as the store-busy phase; 0 reads at once")
	fs.IntVar(&o.Queries, "queries", 300, "settled reads timed per trace-size class and per search shape")
	addClientFlags(fs, &o.TargetAccess, "ingest")
	readerToken := fs.String("reader-token-file", "", "file whose first line is a query token of --reader")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	htmlFile := fs.String("html", "", "also write a self-contained HTML report to this file")
	overload := fs.Bool("overload", false, "instead of the workload, overload the target with large requests, 64 conns × 8 in flight unless --conns and --inflight say otherwise, for --duration (default 30s); report how each ended, peak RSS, and whether every acknowledged one reads back whole")
	minMiB := fs.Int("overload-min-mib", 8, "with --overload, the smallest request in MiB")
	maxMiB := fs.Int("overload-max-mib", 60, "with --overload, the largest request in MiB")
	gzipped := fs.Bool("overload-gzip", false, "with --overload, gzip every request; the bodies compress some thousand times")
	rca := fs.Bool("rca", false, "instead of the workload, measure how well cairn diagnose names injected faults: write a baseline and a fault window of checkouts per scenario, diagnose each, and report where the culprit operation and attribute ranked; needs --reader with --target")
	rcaTraces := fs.Int("rca-traces", 2000, "with --rca, traces written per window and scenario")
	rcaSample := fs.Int("rca-sample", 1000, "with --rca, most traces each diagnosis reads of a window (cairn diagnose --sample)")
	_, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if err := refuseNegative(fs, "spans", "duration", "batch", "conns", "inflight", "rate", "settle", "queries"); err != nil {
		return err
	}
	if o.Compression != bench.CompressionNone && (*rca || *overload) {
		return usagef("--compression applies to the workload; --rca and --overload send their own (--overload-gzip)")
	}
	if o.Exporters && (*rca || *overload) {
		return usagef("--exporters shapes the workload; --rca and --overload send their own")
	}
	if *rca {
		if (o.Target == "") != (o.Reader == "") {
			return usagef("--rca needs --target and --reader together, or neither for an embedded cairn")
		}
		if *rcaTraces < 10 || *rcaSample < 10 {
			return usagef("--rca-traces and --rca-sample must be at least 10")
		}
		ro := rcaOptions{target: o.Target, reader: o.Reader, targetAccess: o.TargetAccess, traces: *rcaTraces, sample: *rcaSample, seed: o.Seed, settle: o.Settle}
		ro.readerAccess, ro.readerAccess.TokenFile = o.TargetAccess, *readerToken
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return benchRCA(ctx, ro, *jsonOut, stdout)
	}
	if *overload {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if *htmlFile != "" {
			return usagef("--html does not report --overload runs")
		}
		if o.Protocol != bench.ProtocolGRPC {
			return usagef("--overload sends over grpc only")
		}
		if *minMiB <= 0 || *maxMiB < *minMiB {
			return usagef("--overload-min-mib %d and --overload-max-mib %d are not 0 < min ≤ max", *minMiB, *maxMiB)
		}
		ov := bench.OverloadOptions{Target: o.Target, Reader: o.Reader, TargetAccess: o.TargetAccess,
			MinBytes: *minMiB << 20, MaxBytes: *maxMiB << 20, Gzip: *gzipped, Duration: o.Duration, Seed: o.Seed}
		ov.ReaderAccess, ov.ReaderAccess.TokenFile = o.TargetAccess, *readerToken
		for _, name := range []string{"conns", "inflight"} {
			if set[name] && fs.Lookup(name).Value.String() == "0" {
				return usagef("--overload needs --%s of at least 1", name)
			}
		}
		if set["conns"] {
			ov.Conns = o.Conns
		}
		if set["inflight"] {
			ov.Inflight = o.Inflight
		}
		if !set["seed"] {
			ov.Seed = 0
		}
		return benchOverload(ov, args, *jsonOut, stdout)
	}
	if o.Target == "" {
		if o.Reader != "" {
			return usagef("--reader needs --target: the embedded cairn is its own reader")
		}
		if o.TargetAccess != (access.Client{}) || *readerToken != "" {
			return usagef("the TLS and token flags need --target: the embedded cairn has neither")
		}
	}
	// The reader is the target's query port: the same TLS, its own token.
	o.ReaderAccess = o.TargetAccess
	o.ReaderAccess.TokenFile = *readerToken
	if !*jsonOut && isTerminal(stderr) {
		o.Progress = func(p bench.Progress) {
			fmt.Fprintf(stderr, "\r\033[K%12d spans acknowledged  %9.0f spans/s  %d errors  %5.1fs",
				p.Acked, p.SpansPerSec, p.Errors, p.Elapsed.Seconds())
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep *bench.Report
	if o.Target == "" {
		rep, err = benchEmbedded(ctx, o)
	} else {
		rep, err = bench.Run(ctx, o)
	}
	if o.Progress != nil {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if err != nil {
		return err
	}
	rep.Version, rep.Args = cairnVersion(), args
	if *htmlFile != "" {
		if err := writeFile(*htmlFile, rep.WriteHTML); err != nil {
			return err
		}
	}
	if *jsonOut {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
}

// benchOverload runs an overload, against an embedded cairn unless o names
// a target, and prints its report.
func benchOverload(o bench.OverloadOptions, args []string, jsonOut bool, stdout io.Writer) error {
	if o.Target != "" && o.Reader == "" {
		return usagef("--overload needs --reader, to read back what was acknowledged")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rep *bench.OverloadReport
	var err error
	if o.Target == "" {
		rep, err = overloadEmbedded(ctx, o)
	} else {
		rep, err = bench.Overload(ctx, o)
	}
	if err != nil {
		return err
	}
	rep.Version, rep.Args = cairnVersion(), args
	if jsonOut {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
}

// overloadEmbedded overloads a `cairn serve` child on a temporary
// directory, with its default limits, and measures its peak RSS.
func overloadEmbedded(ctx context.Context, o bench.OverloadOptions) (*bench.OverloadReport, error) {
	c, _, done, err := startEmbedded("cairn-overload-")
	if err != nil {
		return nil, err
	}
	defer done()
	o.Target, o.Reader = c.otlpAddr, c.queryAddr
	rep, err := bench.Overload(ctx, o)
	if err != nil {
		return nil, err
	}
	rep.Embedded = true
	if rep.PeakRSSMB, err = c.stop(); err != nil {
		return nil, err
	}
	return rep, nil
}

// benchEmbedded runs `cairn serve` as a child process on a temporary
// directory, so that its memory and disk are measured apart from the load
// generator's, and benchmarks it over loopback.
func benchEmbedded(ctx context.Context, o bench.Options) (*bench.Report, error) {
	c, dir, done, err := startEmbedded("cairn-bench-")
	if err != nil {
		return nil, err
	}
	defer done()
	o.Target, o.Reader = c.otlpAddr, c.queryAddr
	if o.Protocol != bench.ProtocolGRPC && o.Protocol != "" {
		o.Target = c.otlpHTTPAddr
	}
	// Once ingest pauses the store recompresses what it holds; reads are
	// timed after that, when its files stop changing.
	o.Activity = func() (int64, error) { return dirSize(dir) }
	rep, err := bench.Run(ctx, o)
	if err != nil {
		return nil, err
	}
	rep.Embedded = true
	// A graceful stop cuts the live buffer into a block: what remains is the
	// store as it would stay on disk.
	if rep.PeakRSSMB, err = c.stop(); err != nil {
		return nil, err
	}
	if rep.DiskBytes, err = dirSize(dir); err != nil {
		return nil, err
	}
	rep.DiskBytesPerSpan = float64(rep.DiskBytes) / float64(rep.Spans)
	return rep, nil
}

// startEmbedded runs this binary's `cairn serve` as a child on a new
// temporary data directory, named from prefix. done kills the child if it
// still runs and removes the directory.
func startEmbedded(prefix string) (c *child, dir string, done func(), err error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, "", nil, fmt.Errorf("find cairn binary: %w", err)
	}
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return nil, "", nil, fmt.Errorf("create data directory: %w", err)
	}
	if c, err = startChild(bin, dir); err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	return c, dir, func() { c.kill(); os.RemoveAll(dir) }, nil
}

// servingLine is the log line `cairn serve` prints once it listens.
var servingLine = regexp.MustCompile(`otlp_grpc=(\S+) otlp_http=(\S+) query=(\S+)`)

// child is a `cairn serve` process.
type child struct {
	cmd          *exec.Cmd
	otlpAddr     string
	otlpHTTPAddr string
	queryAddr    string
	log          *tailBuffer
	drained      chan struct{}
}

// startChild runs `cairn serve` on free loopback ports, away from any other
// cairn or collector on the host, and waits until it listens.
func startChild(bin, dir string, extra ...string) (*child, error) {
	args := append([]string{"serve", "--data-dir", dir, "--otlp-grpc-addr", "127.0.0.1:0", "--query-addr", "127.0.0.1:0",
		"--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start cairn serve: %w", err)
	}
	c := &child{cmd: cmd, log: &tailBuffer{}, drained: make(chan struct{})}
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		c.log.add(lines.Text())
		if m := servingLine.FindStringSubmatch(lines.Text()); m != nil {
			c.otlpAddr, c.otlpHTTPAddr, c.queryAddr = m[1], m[2], m[3]
			go func() { // keep draining so the server never blocks on logging
				defer close(c.drained)
				for lines.Scan() {
					c.log.add(lines.Text())
				}
			}()
			return c, nil
		}
	}
	err = cmd.Wait()
	return nil, fmt.Errorf("cairn serve exited before serving (%v):\n%s", err, c.log)
}

// stop shuts the server down gracefully and returns its peak resident set
// size in MiB.
func (c *child) stop() (float64, error) {
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("stop cairn serve: %w", err)
	}
	<-c.drained
	if err := c.cmd.Wait(); err != nil {
		return 0, fmt.Errorf("cairn serve: %w\n%s", err, c.log)
	}
	ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, errors.New("peak RSS is not reported on this platform")
	}
	return float64(ru.Maxrss) / (1 << 10), nil // Linux reports KiB
}

func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

// tailBuffer keeps the last lines a child logged, for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 20 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, line)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// dirSize sums the sizes of the files under dir. A running server creates
// and deletes files as it goes; those gone by the time they are reached
// count for nothing.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path != dir {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure data directory: %w", err)
	}
	return n, nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
