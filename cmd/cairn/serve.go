package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"

	"cairn/ingest"
	"cairn/internal/access"
	"cairn/internal/bulk"
	"cairn/internal/otlpwire"
	"cairn/internal/ui"
	"cairn/query"
	"cairn/storage"
)

// gcPercent is the GOGC cairn serve runs with unless GOGC is set.
const gcPercent = 800

// drainTimeout bounds how long shutdown waits for in-flight OTLP/HTTP
// exports and open query streams.
const drainTimeout = 5 * time.Second

type serverConfig struct {
	dataDir         string
	otlpAddr        string
	otlpHTTPAddr    string // empty: no OTLP/HTTP receiver
	queryAddr       string
	httpAddr        string // empty: no HTTP port (metrics, pprof, health)
	maxRequest      int
	maxInflight     int64
	maxConns        int   // per OTLP port; 0 for no cap
	maxStreams      int   // per OTLP/gRPC connection
	memoryLimit     int64 // soft limit of the Go heap without requests in flight; 0 for none
	memoryCeiling   int64 // resident memory that requests in flight do not raise the limit past
	corsOrigins     []string
	flushInterval   time.Duration
	recompressAfter time.Duration
	retention       time.Duration
	maxDiskBytes    int64
	diskReserve     int64
	futureTolerance time.Duration
	dictionaryCache int
	bulk            bulk.Options
	pairingWindow   time.Duration
	pairingMaxSpans int
	maxSeries       int // span metrics series per block, answer and Prometheus totals
	tls             access.ServerTLS
	ingestTokenFile string // guards both OTLP ports
	queryTokenFile  string // guards the query port and the HTTP port
	query           query.Options
	log             *slog.Logger
	otlpOptions     []grpc.ServerOption // extra options of the OTLP server
}

func serveCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve")
	var cfg serverConfig
	fs.StringVar(&cfg.dataDir, "data-dir", "./data", "directory of the store")
	fs.StringVar(&cfg.otlpAddr, "otlp-grpc-addr", "localhost:4317", "OTLP/gRPC listen address")
	fs.StringVar(&cfg.otlpHTTPAddr, "otlp-http-addr", "localhost:4318", "OTLP/HTTP listen address (POST /v1/traces); empty turns it off")
	fs.StringVar(&cfg.queryAddr, "query-addr", "localhost:"+defaultQueryPort, "query (jaeger.storage.v2) listen address")
	fs.IntVar(&cfg.query.MaxReads, "query-max-reads", 0, "GetTraces, GetServices and GetOperations calls served at once; more wait --query-queue-wait, then are refused (default 32)")
	fs.IntVar(&cfg.query.MaxSearches, "query-max-searches", 0, "searches, and reads past 4 MiB of response, served at once; more wait --query-queue-wait, then are refused (default half the CPUs, at least 1)")
	fs.DurationVar(&cfg.query.MaxQueueWait, "query-queue-wait", 0, "how long a query waits for a slot before it is refused with RESOURCE_EXHAUSTED (default 2s)")
	fs.DurationVar(&cfg.query.Timeout, "query-timeout", 0, "longest a query runs on the server, its wait for a slot included, whatever the client's deadline (default 30s)")
	fs.IntVar(&cfg.query.MaxTraceIDs, "query-max-trace-ids", 0, "most trace IDs one GetTraces request may name (default 1000)")
	fs.StringVar(&cfg.httpAddr, "http-addr", "localhost:17272", "HTTP listen address of /metrics, /debug/pprof/, /healthz and /readyz; empty turns it off")
	fs.IntVar(&cfg.maxRequest, "otlp-max-request-bytes", 64<<20, "largest OTLP request accepted, after decompression")
	fs.Int64Var(&cfg.maxInflight, "otlp-max-inflight-bytes", 192<<20, "memory that OTLP requests being taken in may hold at once; more wait up to 5s, then are refused, to be retried")
	fs.IntVar(&cfg.maxConns, "otlp-max-conns", 512, "open connections each OTLP port accepts; more are closed at once; 0 for no cap")
	fs.IntVar(&cfg.maxStreams, "otlp-grpc-max-streams", 32, "Export calls one OTLP/gRPC connection may have open at once")
	cors := fs.String("otlp-http-cors-origins", "", "comma-separated origins whose web pages may export over OTLP/HTTP (https://app.example.com, https://*.example.com, or *)")
	fs.DurationVar(&cfg.flushInterval, "flush-interval", 0, "longest a span stays in the write-ahead log before it is cut into a block (default 10s)")
	fs.DurationVar(&cfg.recompressAfter, "recompress-after", 0, "pause in ingest after which span data is recompressed, smaller on disk; negative turns recompression off (default 2s)")
	fs.DurationVar(&cfg.retention, "retention", 72*time.Hour, "how long spans are kept, by start time; older spans are rejected, and expired hour partitions dropped")
	fs.Int64Var(&cfg.maxDiskBytes, "max-disk-bytes", 0, "if positive, drop the oldest data while the store is larger, down to its newest block (checked every second)")
	fs.Int64Var(&cfg.diskReserve, "disk-reserve-bytes", 128<<20, "disk space kept free for the stores' own metadata: writes that would leave less are refused, to be retried; 0 for none")
	fs.DurationVar(&cfg.futureTolerance, "future-tolerance", time.Hour, "how far in the future a span may start; later spans are rejected")
	fs.IntVar(&cfg.dictionaryCache, "dictionary-cache", 1<<16, "resources, scopes and (resource, scope) pairs kept in memory, each; the rest are read from disk")
	fs.DurationVar(&cfg.pairingWindow, "pairing-window", 5*time.Minute, "how far apart a span and its parent may arrive and still make a service graph edge; a client naming an uninstrumented peer becomes an edge to it once this passes with no child")
	fs.IntVar(&cfg.pairingMaxSpans, "pairing-max-spans", 250_000, "spans held in memory for service graph pairing (about 16 bytes each, 32 more for a client awaiting its server); past it the oldest are let go early")
	fs.IntVar(&cfg.maxSeries, "span-metrics-max-series", 10000, "span metrics series (service, span name, kind, status code) kept per block, per query answer and in /metrics; spans of further series count into an overflow series of their service, past as many of those into one of any service")
	fs.StringVar(&cfg.tls.CertFile, "tls-cert-file", "", "PEM certificate: every port speaks TLS")
	fs.StringVar(&cfg.tls.KeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&cfg.tls.ClientCAFile, "tls-client-ca-file", "", "PEM CA certificates: clients must present a certificate they signed (mutual TLS)")
	fs.StringVar(&cfg.ingestTokenFile, "ingest-token-file", "", "file of bearer tokens (one per line) that OTLP exports must carry")
	fs.StringVar(&cfg.queryTokenFile, "query-token-file", "", "file of bearer tokens (one per line) that queries, /metrics and /debug/pprof/ must carry")
	fs.IntVar(&cfg.bulk.Nice, "ingest-nice", 10, "how much lower than a read's the scheduling priority of ingest's CPU-heavy work is (parsing, cuts), as a nice value up to 19; 0 for the same")
	memLimit := fs.Int64("memory-limit-mib", 320, "soft limit of the Go heap in MiB, raised by what OTLP requests being taken in hold, paced by the garbage collector (GOMEMLIMIT, if set, wins); 0 for none")
	memCeiling := fs.Int64("memory-ceiling-mib", 0, "resident memory in MiB that the heap's soft limit keeps the process within, counting the memory outside Go's heap (Pebble's cache and memtables, zstd): past it, what OTLP requests hold no longer raises the limit, and the limit falls below --memory-limit-mib; it is still kept a quarter above the heap the last collection found live, up to what requests ask for; 0 for 160 MiB above --memory-limit-mib")
	verbose := fs.Bool("v", false, "log debug messages")
	if _, err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := refuseNegative(fs, "ingest-nice", "max-disk-bytes", "disk-reserve-bytes", "memory-limit-mib", "memory-ceiling-mib", "flush-interval", "otlp-max-inflight-bytes", "otlp-max-conns",
		"query-max-reads", "query-max-searches", "query-queue-wait", "query-timeout", "query-max-trace-ids"); err != nil {
		return err
	}
	switch {
	case cfg.futureTolerance <= 0: // storage would take zero for its default
		return usagef("--future-tolerance %v is not positive", cfg.futureTolerance)
	case cfg.dictionaryCache <= 0:
		return usagef("--dictionary-cache %d is not positive", cfg.dictionaryCache)
	case cfg.maxSeries <= 0:
		return usagef("--span-metrics-max-series %d is not positive", cfg.maxSeries)
	case cfg.maxRequest <= 0:
		return usagef("--otlp-max-request-bytes %d is not positive", cfg.maxRequest)
	case cfg.maxRequest > otlpwire.MaxRequestBytes:
		return usagef("--otlp-max-request-bytes %d is above %d, the most a protobuf message may have", cfg.maxRequest, otlpwire.MaxRequestBytes)
	case *memCeiling != 0 && *memCeiling <= *memLimit:
		return usagef("--memory-ceiling-mib %d is not above --memory-limit-mib %d", *memCeiling, *memLimit)
	case cfg.maxStreams <= 0:
		return usagef("--otlp-grpc-max-streams %d is not positive", cfg.maxStreams)
	case cfg.bulk.Nice > 19:
		return usagef("--ingest-nice %d is above 19, the lowest priority", cfg.bulk.Nice)
	case cfg.retention <= 0: // storage would take zero for its default
		return usagef("--retention %v is not positive", cfg.retention)
	case cfg.pairingWindow <= 0:
		return usagef("--pairing-window %v is not positive", cfg.pairingWindow)
	case cfg.pairingMaxSpans <= 0:
		return usagef("--pairing-max-spans %d is not positive", cfg.pairingMaxSpans)
	}
	restrictFileModes()
	limitMallocArenas()
	if cfg.bulk.Nice == 0 {
		cfg.bulk.Nice = -1 // bulk.Options takes 0 for its default
	}
	// Ingest's heavy work runs on one worker per CPU, and Pebble's flushes
	// and compactions, up to one per CPU, at the same low priority. Each
	// holds a processor (GOMAXPROCS) while it runs, so there are two more
	// than those: a read then finds one free at once, and a free processor
	// is one whose thread waits on the network, so requests are noticed at
	// once too rather than at the runtime's next poll, up to 10 ms later
	// (see package bulk).
	cpus := runtime.GOMAXPROCS(0) // the CPUs, or the container's CPU limit
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		cfg.bulk.Workers = cpus
		runtime.GOMAXPROCS(2*cpus + 2)
	}
	if cfg.query.MaxSearches == 0 {
		cfg.query.MaxSearches = max(1, cpus/2)
	}
	if *cors != "" {
		for _, o := range strings.Split(*cors, ",") {
			cfg.corsOrigins = append(cfg.corsOrigins, strings.TrimSpace(o))
		}
	}
	// By default the collector lets the heap grow to twice what is live; under
	// sustained ingest that is the difference between fitting a memory budget
	// and not. The limit is soft: past it the collector works harder, it never
	// fails an allocation. It is raised by what requests in flight hold (see
	// followInflight).
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && *memLimit > 0 {
		cfg.memoryLimit = *memLimit << 20
		cfg.memoryCeiling = *memCeiling << 20
		if *memCeiling == 0 {
			cfg.memoryCeiling = cfg.memoryLimit + defaultCeilingAbove
		}
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

// server is a running cairn: storage and its listeners.
type server struct {
	db       *storage.DB
	bulk     *bulk.Pool // ingest's heavy work, closed after db
	otlp     *grpc.Server
	otlpHTTP *http.Server // nil when off
	query    *grpc.Server
	health   *health.Server               // the query port's
	admin    *http.Server                 // nil when off
	api      atomic.Pointer[http.Handler] // the HTTP query API, once the store is open
	phase    atomic.Int32
	// exports counts the OTLP/HTTP requests being handled, which shutdown
	// waits for before it closes the store.
	exports sync.WaitGroup
	stop    chan struct{} // closed to end loops
	loops   sync.WaitGroup

	otlpAddr, otlpHTTPAddr, queryAddr, httpAddr net.Addr // the last two nil when off
	served                                      chan error
	shutdownOnce                                sync.Once
	shutdownErr                                 error
}

// A server's phases, as /readyz reports them.
const (
	phaseOpening = iota
	phaseServing
	phaseStopping
)

// startServer opens the store and starts serving. The HTTP port comes up
// first, so that health checks answer, and /readyz says why not yet, while
// the write-ahead log replays.
func startServer(cfg serverConfig) (_ *server, err error) {
	tlsConfig, err := cfg.tls.Config()
	if err != nil {
		return nil, err
	}
	ingestTokens, err := loadTokens(cfg.ingestTokenFile)
	if err != nil {
		return nil, err
	}
	queryTokens, err := loadTokens(cfg.queryTokenFile)
	if err != nil {
		return nil, err
	}
	ingestOpts := &ingest.Options{
		MaxRequestBytes:    cfg.maxRequest,
		MaxInflightBytes:   cfg.maxInflight,
		MaxStreamsPerConn:  cfg.maxStreams,
		CORSAllowedOrigins: cfg.corsOrigins,
	}
	if err := ingestOpts.Validate(); err != nil {
		return nil, usageError{err: fmt.Errorf("--otlp-http-cors-origins: %w", err)}
	}
	s := &server{served: make(chan error, 4), stop: make(chan struct{})}
	var listeners []net.Listener
	defer func() { // on failure, undo what was started
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			if s.admin != nil {
				s.admin.Close()
			}
		}
	}()
	refusedConns := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cairn_refused_connections_total",
		Help: "Connections closed as soon as accepted: past a port's cap, or taking a file descriptor kept for the store, by port and reason.",
	}, []string{"port", "reason"})
	var fdLimit uint64
	if limit := openFileLimit(); limit > 0 {
		fdLimit = limit - fdHeadroom(limit)
	}
	listen := func(port, addr string, tokens *access.Tokens) (net.Listener, error) {
		raw, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s for %s: %w", addr, port, err)
		}
		l := &guardedListener{Listener: raw, port: port, fdLimit: fdLimit, log: cfg.log,
			refused: func(reason string) { refusedConns.WithLabelValues(port, reason).Inc() }}
		if port == "otlp_grpc" || port == "otlp_http" {
			l.maxConns = int64(cfg.maxConns)
		}
		listeners = append(listeners, l)
		switch {
		case loopback(l.Addr()) || tlsConfig != nil:
		case tokens == nil:
			cfg.log.Warn("listening beyond this machine with neither TLS nor tokens: anyone who reaches the port can use it",
				"port", port, "addr", l.Addr().String())
		default:
			cfg.log.Warn("listening beyond this machine without TLS: tokens cross the network in the clear",
				"port", port, "addr", l.Addr().String())
		}
		return l, nil
	}
	reg := prometheus.NewRegistry()
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cairn_unauthenticated_requests_total",
		Help: "Requests refused for a missing or invalid bearer token or client certificate, by port and reason.",
	}, []string{"port", "reason"})
	guard := func(port string, tokens *access.Tokens) *access.Guard {
		return &access.Guard{Tokens: tokens, Refused: func(reason string) { refused.WithLabelValues(port, reason).Inc() }}
	}
	if err := registerProcessMetrics(reg, refused, refusedConns); err != nil {
		return nil, err
	}

	if cfg.httpAddr != "" {
		l, err := listen("http", cfg.httpAddr, queryTokens)
		if err != nil {
			return nil, err
		}
		g := guard("http", queryTokens)
		// The web UI's page and scripts hold no data; the API they call
		// asks for a token like any other client.
		g.OpenPath = func(path string) bool { return path == "/healthz" || path == "/readyz" || ui.IsAsset(path) }
		adminTLS := tlsConfig
		if tlsConfig != nil && tlsConfig.ClientAuth == tls.RequireAndVerifyClientCert {
			// Probes of health present no certificate; the guard asks one of
			// every other request.
			adminTLS = tlsConfig.Clone()
			adminTLS.ClientAuth = tls.VerifyClientCertIfGiven
			g.RequireClientCert = true
		}
		s.admin = newHTTPServer(localOnly(g.HTTP(adminHandler(reg, s.readiness, s.apiHandler())), l.Addr(), queryTokens != nil), adminTLS, cfg.log)
		s.httpAddr = l.Addr()
		go s.serveHTTP(s.admin, l, adminTLS)
	}

	s.bulk = bulk.New(&cfg.bulk)
	ingestOpts.Bulk = s.bulk
	s.db, err = storage.Open(cfg.dataDir, &storage.Options{
		Bulk:            s.bulk,
		Logger:          cfg.log,
		FlushInterval:   cfg.flushInterval,
		RecompressAfter: cfg.recompressAfter,
		Retention:       cfg.retention,
		MaxDiskBytes:    cfg.maxDiskBytes,
		// Zero is the storage default; none is negative.
		DiskReserveBytes:     cmp.Or(cfg.diskReserve, -1),
		FutureTolerance:      cfg.futureTolerance,
		DictionaryCache:      cfg.dictionaryCache,
		SpanMetricsMaxSeries: cfg.maxSeries,
		PairingWindow:        cfg.pairingWindow,
		PairingMaxSpans:      cfg.pairingMaxSpans,
	})
	if err != nil {
		s.bulk.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			s.db.Close()
			s.bulk.Close()
		}
	}()
	if ingestTokens != nil {
		g := guard("otlp_http", ingestTokens)
		ingestOpts.Authorize = func(r *http.Request) error { return g.Check(r.Header.Get("Authorization")) }
	}
	svc := ingest.NewService(s.db, ingestOpts)
	queryMetrics := query.NewMetrics()
	for _, c := range []prometheus.Collector{s.db.Metrics(), svc.Metrics(), queryMetrics} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}

	otlpLis, err := listen("otlp_grpc", cfg.otlpAddr, ingestTokens)
	if err != nil {
		return nil, err
	}
	queryLis, err := listen("query", cfg.queryAddr, queryTokens)
	if err != nil {
		return nil, err
	}
	var otlpHTTPLis net.Listener
	if cfg.otlpHTTPAddr != "" {
		if otlpHTTPLis, err = listen("otlp_http", cfg.otlpHTTPAddr, ingestTokens); err != nil {
			return nil, err
		}
	}

	grpcOpts := func(g *access.Guard, extra ...grpc.ServerOption) []grpc.ServerOption {
		opts := append(recoverOptions(cfg.log), g.ServerOption())
		opts = append(opts, extra...)
		if tlsConfig != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
		}
		return opts
	}
	s.otlp = ingest.NewServer(svc, grpcOpts(guard("otlp_grpc", ingestTokens), cfg.otlpOptions...)...)
	queryGuard := guard("query", queryTokens)
	queryGuard.OpenMethod = access.IsHealthMethod
	s.health = health.NewServer()
	queryOpts := cfg.query
	queryOpts.Metrics, queryOpts.Health = queryMetrics, s.health
	qs := query.NewService(s.db, &queryOpts)
	s.query = qs.Server(grpcOpts(queryGuard)...)
	api := qs.HTTPHandler()
	s.api.Store(&api)
	s.otlpAddr, s.queryAddr = otlpLis.Addr(), queryLis.Addr()
	go func() { s.served <- s.otlp.Serve(otlpLis) }()
	go func() { s.served <- s.query.Serve(queryLis) }()
	if otlpHTTPLis != nil {
		s.otlpHTTP = newHTTPServer(s.counted(svc.HTTPHandler()), tlsConfig, cfg.log)
		s.otlpHTTPAddr = otlpHTTPLis.Addr()
		go s.serveHTTP(s.otlpHTTP, otlpHTTPLis, tlsConfig)
	}
	if cfg.memoryLimit > 0 {
		s.loops.Go(func() { s.followInflight(cfg.memoryLimit, cfg.memoryCeiling, svc) })
	}
	s.phase.Store(phaseServing)
	cfg.log.Info("cairn serving", "data_dir", cfg.dataDir, "otlp_grpc", s.otlpAddr.String(),
		"otlp_http", addrString(s.otlpHTTPAddr), "query", s.queryAddr.String(), "http", addrString(s.httpAddr),
		"tls", tlsConfig != nil, "mutual_tls", cfg.tls.ClientCAFile != "",
		"ingest_tokens", ingestTokens != nil, "query_tokens", queryTokens != nil)
	return s, nil
}

// counted wraps h so that shutdown can wait for the requests it handles.
func (s *server) counted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.exports.Add(1)
		defer s.exports.Done()
		h.ServeHTTP(w, r)
	})
}

func loadTokens(path string) (*access.Tokens, error) {
	if path == "" {
		return nil, nil
	}
	return access.LoadTokens(path)
}

// loopback reports whether a listener's address is reachable from this
// machine only.
func loopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// newHTTPServer returns a server for h. Headers must arrive promptly; a
// body may take as long as a large export needs. Connection errors, such as
// failed TLS handshakes of port scanners, are logged at debug level.
func newHTTPServer(h http.Handler, tlsConfig *tls.Config, log *slog.Logger) *http.Server {
	s := &http.Server{
		Handler:           recoverHTTP(h, log),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if tlsConfig != nil {
		s.TLSConfig = tlsConfig.Clone()
	}
	return s
}

func (s *server) serveHTTP(hs *http.Server, l net.Listener, tlsConfig *tls.Config) {
	var err error
	if tlsConfig != nil {
		err = hs.ServeTLS(l, "", "")
	} else {
		err = hs.Serve(l)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		s.served <- err
	}
}

// apiHandler serves the HTTP query API while the server is serving, and
// answers 503 with the reason before and during shutdown.
func (s *server) apiHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api := s.api.Load()
		if api == nil || s.phase.Load() != phaseServing {
			_, why := s.readiness()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]string{"error": why, "code": "Unavailable"})
			return
		}
		(*api).ServeHTTP(w, r)
	})
}

// readiness reports whether the server takes requests, and if not, why.
func (s *server) readiness() (bool, string) {
	switch s.phase.Load() {
	case phaseServing:
		if faults := s.db.Faults(); len(faults) > 0 {
			why := make([]string, len(faults))
			for i, f := range faults {
				why[i] = f.Kind + ": " + f.Why
			}
			return false, strings.Join(why, "\n")
		}
		return true, "ready"
	case phaseOpening:
		return false, "opening the store and replaying its write-ahead log"
	}
	return false, "shutting down"
}

// shutdown stops in order: the OTLP listeners first, letting in-flight
// exports finish for up to drainTimeout, then queries, draining open
// streams for as long, then storage, which flushes what is buffered; the
// HTTP port last, so that health checks and metrics answer throughout. It is
// safe to call twice.
func (s *server) shutdown() error {
	s.shutdownOnce.Do(func() {
		s.phase.Store(phaseStopping)
		s.health.Shutdown() // NOT_SERVING, to load balancers and Watch streams
		var errs []error
		var wg sync.WaitGroup
		wg.Go(func() { drain(s.otlp) })
		if s.otlpHTTP != nil {
			ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			if err := s.otlpHTTP.Shutdown(ctx); err != nil {
				// Exports still arriving after drainTimeout are cut off, as
				// drain cuts off gRPC ones: none was acknowledged, and a
				// client slow to send is no failure of the server's.
				s.otlpHTTP.Close()
			}
			cancel()
			// Close leaves handlers running; with their connections gone,
			// their reads and waits end at once.
			s.exports.Wait()
		}
		wg.Wait()
		drain(s.query)
		errs = append(errs, s.db.Close())
		s.bulk.Close()
		close(s.stop)
		s.loops.Wait()
		if s.admin != nil {
			s.admin.Close()
		}
		s.shutdownErr = errors.Join(errs...)
	})
	return s.shutdownErr
}

// drain stops a gRPC server gracefully, or at once after drainTimeout.
func drain(g *grpc.Server) {
	drained := make(chan struct{})
	go func() { g.GracefulStop(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		g.Stop()
		<-drained
	}
}
