package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strings"

	"github.com/klauspost/compress/gzhttp"
	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"cairn/internal/ui"
)

// adminHandler serves cairn's HTTP port: the web UI and the query API it
// calls, Prometheus metrics, Go's profiler, liveness and readiness.
func adminHandler(reg *prometheus.Registry, ready func() (bool, string), api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "alive")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	mux.Handle("/api/", compressed(api))
	mux.Handle("/", compressed(ui.Handler()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Traces hold what services put in them, secrets too: no other
		// site may frame the UI, and no answer is read as another type.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
		mux.ServeHTTP(w, r)
	})
}

// compressed compresses what h answers, with zstd or gzip as the client
// accepts, once it passes 1 KiB: a 10,000-span trace is 7.6 MB of JSON,
// 0.5 MB as gzip, which its fastest level makes in 13 ms. The UI's scripts
// shrink too. The API reads tokens from a header, never a cookie, so a
// page elsewhere cannot have a browser send authenticated requests and
// learn secrets from the size of their answers (BREACH).
var compressed = func() func(http.Handler) http.HandlerFunc {
	wrap, err := gzhttp.NewWrapper(gzhttp.CompressionLevel(gzip.BestSpeed))
	if err != nil {
		panic(err) // the options are fixed
	}
	return wrap
}()

// localOnly answers only requests addressed to this machine by name
// (localhost) or loopback address, where the port listens on loopback
// without tokens. A web page on another site can make its own name
// resolve to 127.0.0.1 (DNS rebinding) and then read the port as its
// own; its requests still carry its name as Host. Listening beyond the
// machine, or with tokens, the port is meant to be reached by other names.
func localOnly(h http.Handler, l net.Addr, tokens bool) http.Handler {
	if tokens || !loopback(l) {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if name, _, err := net.SplitHostPort(host); err == nil {
			host = name
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		ip := net.ParseIP(strings.Trim(host, "[]"))
		if host != "localhost" && !strings.HasSuffix(host, ".localhost") && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, fmt.Sprintf("cairn's HTTP port listens on loopback without tokens, and answers only to localhost or a loopback address, not to %q: "+
				"a web page's own name made to resolve to this machine would look the same (DNS rebinding). Use http://localhost:PORT, or --query-token-file to serve under other names.", r.Host),
				http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// registerProcessMetrics registers what every cairn process reports: the Go
// runtime, the process, its build, and cs.
func registerProcessMetrics(reg *prometheus.Registry, cs ...prometheus.Collector) error {
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "cairn_build_info",
		Help:        "Always 1; its labels name the build.",
		ConstLabels: prometheus.Labels{"version": cairnVersion(), "goversion": runtime.Version()},
	})
	build.Set(1)
	cs = append(cs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), build)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
