package main

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cairn runs the command line as main does and returns what it printed and
// the status it would exit with.
func cairn(args ...string) (stdout, stderr string, exit int) {
	var out, errOut bytes.Buffer
	exit = exitStatus(run(args, &out, &errOut), &errOut)
	return out.String(), errOut.String(), exit
}

func TestHelp(t *testing.T) {
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {"help", c.name}} {
			out, errOut, exit := cairn(args...)
			if exit != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: "+c.synopsis()+"\n") {
				t.Errorf("cairn %s: exit %d, stderr %q, stdout:\n%s", strings.Join(args, " "), exit, errOut, out)
			}
			if strings.Contains(c.args, "[flags]") && !strings.Contains(out, "\nFlags:\n") {
				t.Errorf("cairn %s lists no flags:\n%s", strings.Join(args, " "), out)
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		if out, errOut, exit := cairn(args...); exit != 0 || errOut != "" || !strings.Contains(out, "cairn trace TRACE_ID_HEX [flags]") {
			t.Errorf("cairn %s: exit %d, stderr %q, stdout:\n%s", args, exit, errOut, out)
		}
	}
	out, errOut, exit := cairn()
	if exit != 2 || out != "" || !strings.Contains(errOut, "cairn search [flags]") || !strings.Contains(errOut, "Exit status:") {
		t.Errorf("cairn without arguments: exit %d, stdout %q, stderr:\n%s", exit, out, errOut)
	}
	if out, _, exit := cairn("version", "--help"); exit != 0 || strings.Contains(out, "go1") {
		t.Errorf("version --help printed the version:\n%s", out)
	}
	if out, _, exit := cairn("--version"); exit != 0 || !strings.HasPrefix(out, "cairn ") {
		t.Errorf("--version: exit %d\n%s", exit, out)
	}
}

// TestUsageErrors checks that a command called wrongly says what is wrong in
// one line, points to its help, and exits with status 2.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"search", "--limit", "x"}, `invalid value "x" for flag -limit: parse error` + "\nsee 'cairn search --help'"},
		{[]string{"serve", "--nope"}, "flag provided but not defined: -nope\nsee 'cairn serve --help'"},
		{[]string{"services", "extra"}, `services takes no arguments, got ["extra"]` + "\nsee 'cairn services --help'"},
		{[]string{"trace"}, "trace needs TRACE_ID_HEX\nsee 'cairn trace --help'"},
		{[]string{"operations", "a", "b"}, `operations takes only SERVICE, got ["a" "b"]` + "\nsee 'cairn operations --help'"},
		{[]string{"bench", "--spans", "many"}, `invalid value "many" for flag -spans: parse error` + "\nsee 'cairn bench --help'"},
		{[]string{"bench", "--overload", "--conns", "-1", "--inflight", "-1"}, "--conns -1 is negative\nsee 'cairn bench --help'"},
		{[]string{"bench", "--overload", "--inflight", "0"}, "--overload needs --inflight of at least 1\nsee 'cairn bench --help'"},
		{[]string{"bench", "--rate", "-5"}, "--rate -5 is negative\nsee 'cairn bench --help'"},
		{[]string{"version", "now"}, `version takes no arguments, got ["now"]` + "\nsee 'cairn version --help'"},
		{[]string{"help", "nope"}, `unknown command "nope"` + "\nsee 'cairn --help'"},
		{[]string{"nope"}, `unknown command "nope"` + "\nsee 'cairn --help'"},
	} {
		out, errOut, exit := cairn(tc.args...)
		if want := "cairn: " + tc.want + "\n"; exit != 2 || out != "" || errOut != want {
			t.Errorf("cairn %s: exit %d, stdout %q, stderr\n%s\nwant\n%s", strings.Join(tc.args, " "), exit, out, errOut, want)
		}
	}
}

func TestRPCErrorMessages(t *testing.T) {
	const addr = "localhost:17271"
	for _, tc := range []struct {
		code codes.Code
		msg  string
		want string
	}{
		{codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:17271: connect: connection refused"`,
			"cannot reach cairn at localhost:17271 (connection refused); is 'cairn serve' running? (--addr sets the address)"},
		{codes.Unavailable, "name resolver error: produced zero addresses",
			"cannot reach cairn at localhost:17271 (no such host); is 'cairn serve' running? (--addr sets the address)"},
		{codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.1:17271: i/o timeout"`,
			"cannot reach cairn at localhost:17271 (i/o timeout); is 'cairn serve' running? (--addr sets the address)"},
		{codes.DeadlineExceeded, "context deadline exceeded while waiting for connections to become ready",
			"cannot reach cairn at localhost:17271 (no connection within 30s); is 'cairn serve' running? (--addr sets the address)"},
		{codes.Unavailable, `connection error: desc = "error reading server preface: http2: failed reading the frame payload: http2: frame too large, note that the frame header looked like an HTTP/1.1 header"`,
			"localhost:17271 is not a cairn query port (it does not speak gRPC); the query port is 17271 by default"},
		{codes.Unimplemented, "unknown service jaeger.storage.v2.TraceReader",
			"localhost:17271 is not a cairn query port (it does not serve jaeger.storage.v2); the query port is 17271 by default"},
		{codes.InvalidArgument, "operation_name needs service_name", "operation_name needs service_name"},
		{codes.NotFound, "no such thing", "no such thing"},
		{codes.FailedPrecondition, "not yet", "not yet"},
		{codes.Unauthenticated, "missing token", "localhost:17271 refused the request: missing token (pass a query token with --token-file)"},
		{codes.PermissionDenied, "wrong token", "localhost:17271 refused the request: wrong token (pass a query token with --token-file)"},
		{codes.DeadlineExceeded, "context deadline exceeded", "no answer from localhost:17271 within 30s (--timeout)"},
		{codes.DeadlineExceeded, "query timeout: the query ran past the server's limit of 30s (--query-timeout)",
			"localhost:17271 stopped the query: query timeout: the query ran past the server's limit of 30s (--query-timeout)"},
		{codes.ResourceExhausted, "searches and large reads: at most 1 at once (--query-max-searches), and none finished within 2s; retry later",
			"localhost:17271 is busy: searches and large reads: at most 1 at once (--query-max-searches), and none finished within 2s; retry later"},
		{codes.Unavailable, "list services: pebble: closed", "localhost:17271 failed the request: list services: pebble: closed"},
		{codes.Internal, "read trace 01: corrupt", "localhost:17271 failed the request: read trace 01: corrupt"},
		{codes.DataLoss, "trace 01 is unreadable: data/spans/000042.sst is damaged: checksum mismatch",
			"trace 01 is unreadable: data/spans/000042.sst is damaged: checksum mismatch (stop cairn, then run cairn check and cairn repair on its data directory)"},
	} {
		if got := rpcError(addr, 30*time.Second, status.Error(tc.code, tc.msg)).Error(); got != tc.want {
			t.Errorf("%v %q:\n got %s\nwant %s", tc.code, tc.msg, got, tc.want)
		}
	}
}

// TestReadingCommandsExplainFailures points every reading command at a
// closed port, at an OTLP port and at an HTTP/1 server, and checks each says
// so in one line and exits with status 1.
func TestReadingCommandsExplainFailures(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	otlp, http1 := s.otlpAddr.String(), web.Listener.Addr().String()
	for addr, want := range map[string]string{
		closed: "cannot reach cairn at " + closed + " (connection refused); is 'cairn serve' running? (--addr sets the address)",
		otlp:   otlp + " is not a cairn query port (it does not serve jaeger.storage.v2); the query port is 17271 by default",
		http1:  http1 + " is not a cairn query port (it does not speak gRPC); the query port is 17271 by default",
	} {
		for _, args := range [][]string{
			{"trace", "4bf92f3577b34da6a3ce929d0e0e4736"},
			{"search", "--service", "frontend"},
			{"services"},
			{"operations", "frontend"},
			{"critical-path", "4bf92f3577b34da6a3ce929d0e0e4736"},
			{"diagnose", "--service", "web", "--operation", "POST /checkout", "--since", "1h"},
		} {
			out, errOut, exit := cairn(append(args, "--addr", addr)...)
			if exit != 1 || out != "" || errOut != "cairn: "+want+"\n" {
				t.Errorf("cairn %s --addr %s: exit %d, stdout %q, stderr\n%s", strings.Join(args, " "), addr, exit, out, errOut)
			}
		}
	}
}

// listenCounting listens on loopback for commands that must not connect.
// connections closes the listener and returns how many connections were
// made to it.
func listenCounting(t *testing.T) (addr string, connections func() int) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis.Addr().String(), func() int {
		defer lis.Close()
		// Connections are accepted in the order they were made: those
		// before this one are the command's.
		own, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		for n := 0; ; n++ {
			c, err := lis.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if c.RemoteAddr().String() == own.LocalAddr().String() {
				return n
			}
		}
	}
}

// TestNonsenseRefused checks that flag values that mean nothing are refused
// in one line before anything is dialled, listened on or created.
func TestNonsenseRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"search", "--since", "-1h"}, "--since -1h0m0s is negative"},
		{[]string{"search", "--start", "2026-11-21T11:00:00Z", "--end", "2026-11-21T10:00:00Z"},
			"--start 2026-11-21T11:00:00Z is after --end 2026-11-21T10:00:00Z"},
		{[]string{"search", "--start", "yesterday"}, `--start "yesterday" is not an RFC 3339 time such as 2026-11-21T10:00:00Z`},
		{[]string{"search", "--since", "1h", "--end", "2026-11-21T10:00:00Z"}, "give --since or --start/--end, not both"},
		{[]string{"search", "--limit", "0"}, "--limit 0 is under the minimum of 1"},
		{[]string{"search", "--limit", "10001"}, "--limit 10001 is over the maximum of 10000"},
		{[]string{"search", "--min-duration", "-5ms"}, "--min-duration -5ms is negative"},
		{[]string{"search", "--max-duration", "-1s"}, "--max-duration -1s is negative"},
		{[]string{"search", "--min-duration", "2s", "--max-duration", "1s"}, "--min-duration 2s is over --max-duration 1s"},
		{[]string{"search", "--operation", "Charge"}, "--operation needs --service: operations are looked up within a service"},
		{[]string{"search", "--format", "xml"}, `unknown format "xml": want table or json`},
		{[]string{"trace", "xyz"}, `trace ID "xyz" is not 32 hex digits`},
		{[]string{"critical-path", "xyz"}, `trace ID "xyz" is not 32 hex digits`},
		{[]string{"critical-path", "4bf92f3577b34da6a3ce929d0e0e4736", "--format", "xml"}, `unknown format "xml": want table or json`},
		{[]string{"critical-path", "4bf92f3577b34da6a3ce929d0e0e4736", "--max-segments", "-1"}, "--max-segments -1 is negative"},
		{[]string{"critical-path", "--service", "web"}, "give a trace ID, or --service and --operation and a window"},
		{[]string{"critical-path", "4bf92f3577b34da6a3ce929d0e0e4736", "--service", "web"}, "give a trace ID, or --service and --operation, not both"},
		{[]string{"critical-path", "--service", "web", "--operation", "x"}, "give the window: --since, or --start and --end"},
		{[]string{"critical-path", "a", "b"}, `critical-path takes only TRACE_ID_HEX, got ["a" "b"]`},
		{[]string{"diagnose", "--service", "web", "--operation", "x", "--since", "1h", "--sample", "5"}, "--sample 5 is not between 10 and 10000"},
		{[]string{"diagnose", "--service", "web", "--operation", "x", "--since", "1h", "--sample", "4294967306"}, "--sample 4294967306 is not between 10 and 10000"},
		{[]string{"critical-path", "--service", "web", "--operation", "x", "--since", "1h", "--sample", "10001"}, "--sample 10001 is not between 10 and 10000"},
		{[]string{"services", "--timeout", "0s"}, "--timeout 0s is not positive"},
		{[]string{"search", "--timeout", "-1s"}, "--timeout -1s is not positive"},
		{[]string{"diagnose", "--service", "web", "--operation", "x", "--since", "1h", "--format", "xml"}, `unknown format "xml": want table or json`},
		{[]string{"diagnose", "--service", "web", "--operation", "x"}, "give the window: --since, or --start and --end"},
		{[]string{"trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--format", "yaml"}, `unknown format "yaml": want waterfall or otlp-json`},
		{[]string{"trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--max-spans", "-1"}, "--max-spans -1 is negative"},
		{[]string{"trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--depth", "-2"}, "--depth -2 is negative"},
		{[]string{"serve", "--otlp-max-request-bytes", "0"}, "--otlp-max-request-bytes 0 is not positive"},
		{[]string{"serve", "--otlp-max-request-bytes", "4294967296"}, "--otlp-max-request-bytes 4294967296 is above 2147483647, the most a protobuf message may have"},
		{[]string{"serve", "--memory-ceiling-mib", "300"}, "--memory-ceiling-mib 300 is not above --memory-limit-mib 320"},
		{[]string{"serve", "--retention", "-24h"}, "--retention -24h0m0s is not positive"},
		{[]string{"serve", "--retention", "0"}, "--retention 0s is not positive"},
		{[]string{"serve", "--max-disk-bytes", "-1"}, "--max-disk-bytes -1 is negative"},
		{[]string{"serve", "--disk-reserve-bytes", "-1"}, "--disk-reserve-bytes -1 is negative"},
		{[]string{"serve", "--future-tolerance", "0"}, "--future-tolerance 0s is not positive"},
		{[]string{"serve", "--dictionary-cache", "0"}, "--dictionary-cache 0 is not positive"},
		{[]string{"serve", "--pairing-window", "0s"}, "--pairing-window 0s is not positive"},
		{[]string{"serve", "--pairing-max-spans", "0"}, "--pairing-max-spans 0 is not positive"},
		{[]string{"serve", "--span-metrics-max-series", "0"}, "--span-metrics-max-series 0 is not positive"},
		{[]string{"serve", "--memory-limit-mib", "-352"}, "--memory-limit-mib -352 is negative"},
		{[]string{"serve", "--flush-interval", "-10s"}, "--flush-interval -10s is negative"},
		{[]string{"serve", "--otlp-max-inflight-bytes", "-1"}, "--otlp-max-inflight-bytes -1 is negative"},
		{[]string{"serve", "--query-max-searches", "-1"}, "--query-max-searches -1 is negative"},
		{[]string{"serve", "--query-timeout", "-1s"}, "--query-timeout -1s is negative"},
		{[]string{"serve", "--otlp-http-cors-origins", "https://ok.example.com,https://*example.com"},
			`--otlp-http-cors-origins: CORS origin "https://*example.com" is not SCHEME://HOST[:PORT], *, or SCHEME://*.DOMAIN[:PORT]`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			addr, connections := listenCounting(t)
			dataDir := filepath.Join(t.TempDir(), "data")
			args := append(tc.args, "--addr", addr)
			if tc.args[0] == "serve" {
				args = append(tc.args, "--data-dir", dataDir, "--otlp-grpc-addr", addr, "--query-addr", addr, "--otlp-http-addr", addr, "--http-addr", addr)
			}
			var out, errOut bytes.Buffer
			err := run(args, &out, &errOut)
			var usage usageError
			if err == nil || err.Error() != tc.want || !errors.As(err, &usage) {
				t.Errorf("got %v, want usage error %q", err, tc.want)
			}
			if n := connections(); n != 0 {
				t.Errorf("%d connections made", n)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("data directory created: %v", err)
			}
		})
	}
}
