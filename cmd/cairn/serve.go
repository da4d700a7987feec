package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"cairn/ingest"
	"cairn/query"
	"cairn/storage"
)

// gcPercent is the GOGC cairn serve runs with unless GOGC is set.
const gcPercent = 800

// queryDrainTimeout bounds how long shutdown waits for open query streams.
const queryDrainTimeout = 5 * time.Second

type serverConfig struct {
	dataDir         string
	otlpAddr        string
	queryAddr       string
	maxRequest      int
	flushInterval   time.Duration
	recompressAfter time.Duration
	retention       time.Duration
	maxDiskBytes    int64
	log             *slog.Logger
	otlpOptions     []grpc.ServerOption // extra options of the OTLP server
}

func serveCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve")
	var cfg serverConfig
	fs.StringVar(&cfg.dataDir, "data-dir", "./data", "directory of the store")
	fs.StringVar(&cfg.otlpAddr, "otlp-grpc-addr", "localhost:4317", "OTLP/gRPC listen address")
	fs.StringVar(&cfg.queryAddr, "query-addr", "localhost:"+defaultQueryPort, "query (jaeger.storage.v2) listen address")
	fs.IntVar(&cfg.maxRequest, "otlp-max-request-bytes", 64<<20, "largest OTLP request accepted, after decompression")
	fs.DurationVar(&cfg.flushInterval, "flush-interval", 0, "longest a span stays in the write-ahead log before it is cut into a block (default 10s)")
	fs.DurationVar(&cfg.recompressAfter, "recompress-after", 0, "pause in ingest after which span data is recompressed, smaller on disk; negative turns recompression off (default 2s)")
	fs.DurationVar(&cfg.retention, "retention", 72*time.Hour, "how long spans are kept, by start time; older spans are rejected, and expired hour partitions dropped")
	fs.Int64Var(&cfg.maxDiskBytes, "max-disk-bytes", 0, "if positive, drop the oldest partitions while the store is larger")
	memLimit := fs.Int64("memory-limit-mib", 352, "soft limit of the Go heap in MiB, paced by the garbage collector (GOMEMLIMIT, if set, wins); 0 for none")
	verbose := fs.Bool("v", false, "log debug messages")
	if _, err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := refuseNegative(fs, "max-disk-bytes", "memory-limit-mib", "flush-interval"); err != nil {
		return err
	}
	switch {
	case cfg.maxRequest <= 0:
		return usagef("--otlp-max-request-bytes %d is not positive", cfg.maxRequest)
	case cfg.retention <= 0: // storage would take zero for its default
		return usagef("--retention %v is not positive", cfg.retention)
	}
	// By default the collector lets the heap grow to twice what is live; under
	// sustained ingest that is the difference between fitting a memory budget
	// and not. The limit is soft: past it the collector works harder, it never
	// fails an allocation.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && *memLimit > 0 {
		debug.SetMemoryLimit(*memLimit << 20)
	}
	// Between bursts of ingest the live heap is a few MiB, and the default
	// GOGC of 100 then collects every few MiB allocated: several times per
	// read of a large trace, each cycle taking CPU and pauses from the reads.
	// Under load the memory limit paces the collector anyway.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	s, err := startServer(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var serveErr error
	select {
	case <-ctx.Done():
		cfg.log.Info("shutting down")
	case serveErr = <-s.served:
	}
	return errors.Join(serveErr, s.shutdown())
}

// server is a running cairn: storage, the OTLP listener and the query
// listener.
type server struct {
	db        *storage.DB
	otlp      *grpc.Server
	query     *grpc.Server
	otlpAddr  net.Addr
	queryAddr net.Addr
	served    chan error
}

func startServer(cfg serverConfig) (*server, error) {
	db, err := storage.Open(cfg.dataDir, &storage.Options{
		Logger:          cfg.log,
		FlushInterval:   cfg.flushInterval,
		RecompressAfter: cfg.recompressAfter,
		Retention:       cfg.retention,
		MaxDiskBytes:    cfg.maxDiskBytes,
	})
	if err != nil {
		return nil, err
	}
	otlpLis, err := net.Listen("tcp", cfg.otlpAddr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen for OTLP: %w", err), db.Close())
	}
	queryLis, err := net.Listen("tcp", cfg.queryAddr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen for queries: %w", err), otlpLis.Close(), db.Close())
	}
	s := &server{
		db:        db,
		otlp:      ingest.NewServer(ingest.NewService(db), append(cfg.otlpOptions, grpc.MaxRecvMsgSize(cfg.maxRequest))...),
		query:     query.NewServer(db, nil),
		otlpAddr:  otlpLis.Addr(),
		queryAddr: queryLis.Addr(),
		served:    make(chan error, 2),
	}
	go func() { s.served <- s.otlp.Serve(otlpLis) }()
	go func() { s.served <- s.query.Serve(queryLis) }()
	cfg.log.Info("cairn serving", "data_dir", cfg.dataDir, "otlp_grpc", s.otlpAddr.String(), "query", s.queryAddr.String())
	return s, nil
}

// shutdown stops the listeners first, letting in-flight exports finish and
// open query streams drain for a while, then flushes and closes storage.
func (s *server) shutdown() error {
	s.otlp.GracefulStop()
	drained := make(chan struct{})
	go func() { s.query.GracefulStop(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(queryDrainTimeout):
		s.query.Stop()
		<-drained
	}
	return s.db.Close()
}
