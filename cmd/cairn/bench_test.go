package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"cairn/bench"
)

// benchReport is the part of `cairn bench --json` the tests check.
type benchReport struct {
	Spans            int64   `json:"spans"`
	SpansPerSec      float64 `json:"spans_per_sec"`
	ExportP99Ms      float64 `json:"export_p99_ms"`
	FailedSpans      int64   `json:"failed_spans"`
	PeakRSSMB        float64 `json:"peak_rss_mb"`
	DiskBytesPerSpan float64 `json:"disk_bytes_per_span"`
	VisibilityProbes int     `json:"visibility_probes"`
	GetTraces        []struct {
		Class   string `json:"class"`
		Queries int    `json:"queries"`
	} `json:"get_traces"`
	Searches []struct {
		Shape      string  `json:"shape"`
		MeanTraces float64 `json:"mean_traces"`
	} `json:"searches"`
	TracesChecked    int     `json:"traces_checked"`
	CompleteFraction float64 `json:"complete_fraction"`
}

// TestBenchEmbedded runs `cairn bench` as users do: it starts its own cairn
// in a child process and reports every figure, as JSON with nothing else on
// stdout, and as an HTML page.
func TestBenchEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCairn(t)
	html := filepath.Join(t.TempDir(), "report.html")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "bench", "--spans", "40000", "--batch", "500", "--queries", "5", "--settle", "0", "--json", "--html", html)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cairn bench: %v\n%s", err, stderr.String())
	}
	var r benchReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("stdout is not one JSON report: %v\n%s", err, stdout.String())
	}
	if r.Spans < 40000 || r.FailedSpans != 0 || r.SpansPerSec <= 0 || r.ExportP99Ms <= 0 {
		t.Errorf("ingest figures: %+v", r)
	}
	if r.PeakRSSMB <= 0 || r.DiskBytesPerSpan <= 0 {
		t.Errorf("embedded figures missing: rss %.1f MiB, disk %.1f B/span", r.PeakRSSMB, r.DiskBytesPerSpan)
	}
	if len(r.GetTraces) < 2 || len(r.Searches) != 4 {
		t.Errorf("read figures missing: %+v", r)
	}
	for _, s := range r.Searches {
		if s.MeanTraces == 0 {
			t.Errorf("search %s found nothing", s.Shape)
		}
	}
	if r.TracesChecked == 0 || r.CompleteFraction != 1 {
		t.Errorf("%d traces checked, %.3f complete", r.TracesChecked, r.CompleteFraction)
	}
	page, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte("<svg")) || !bytes.Contains(page, []byte("spans/s")) {
		t.Errorf("HTML report lacks its charts")
	}
}

// TestBenchTarget benchmarks a server it did not start, with and without a
// reader, and checks the table.
func TestBenchTarget(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()

	var out, errOut bytes.Buffer
	if err := run([]string{"bench", "--target", s.otlpAddr.String(), "--spans", "5000", "--batch", "100"}, &out, &errOut); err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "spans/s") || strings.Contains(out.String(), "trace by ID") {
		t.Errorf("ingest-only table:\n%s", out.String())
	}
	out.Reset()
	err := run([]string{"bench", "--target", s.otlpAddr.String(), "--reader", s.queryAddr.String(),
		"--spans", "5000", "--batch", "100", "--queries", "3", "--seed", "2", "--settle", "0"}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"trace by ID, 11-200 spans", "search service+min-duration", "complete traces"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if err := run([]string{"bench", "--reader", s.queryAddr.String()}, &out, &errOut); err == nil {
		t.Error("--reader without --target was accepted")
	}
	// Each service instance's spans in requests of their own: traces
	// arrive in pieces, and read back whole. A seed of its own, as the
	// runs above stored seeds 1 and 2's traces.
	out.Reset()
	err = run([]string{"bench", "--target", s.otlpAddr.String(), "--reader", s.queryAddr.String(), "--exporters",
		"--spans", "5000", "--batch", "100", "--queries", "3", "--seed", "3", "--settle", "0", "--json"}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench --exporters: %v\n%s", err, errOut.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Exporters || rep.TracesChecked == 0 || rep.TracesComplete != rep.TracesChecked {
		t.Errorf("--exporters: exporters %v, %d of %d traces complete", rep.Exporters, rep.TracesComplete, rep.TracesChecked)
	}
	for _, other := range []string{"--overload", "--rca"} {
		err := run([]string{"bench", "--exporters", other}, &out, &errOut)
		if want := "--exporters shapes the workload; --rca and --overload send their own"; err == nil || err.Error() != want {
			t.Errorf("--exporters %s: %v, want %q", other, err, want)
		}
	}
}

// TestBenchOverHTTP benchmarks cairn's OTLP/HTTP receiver with each
// encoding, and reads back: every trace sampled must be complete, so what
// the JSON encoding carried was stored whole.
func TestBenchOverHTTP(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	for i, protocol := range []string{"http/protobuf", "http/json"} {
		var out, errOut bytes.Buffer
		err := run([]string{"bench", "--protocol", protocol, "--target", s.otlpHTTPAddr.String(), "--reader", s.queryAddr.String(),
			"--spans", "5000", "--batch", "100", "--queries", "3", "--seed", strconv.Itoa(3 + i), "--settle", "0", "--json"}, &out, &errOut)
		if err != nil {
			t.Fatalf("bench %s: %v\n%s", protocol, err, errOut.String())
		}
		var r benchReport
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Spans < 5000 || r.FailedSpans != 0 || r.TracesChecked == 0 || r.CompleteFraction != 1 {
			t.Errorf("%s: %d spans, %d failed, %d traces checked, %.3f complete", protocol, r.Spans, r.FailedSpans, r.TracesChecked, r.CompleteFraction)
		}
	}
}

// TestBenchCompressed benchmarks cairn's receivers with requests in each
// compression the Collector's exporters offer, and reads back: every trace
// sampled must be complete.
func TestBenchCompressed(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	seed := 10
	for _, protocol := range []string{"grpc", "http/protobuf", "http/json"} {
		target := s.otlpAddr.String()
		if protocol != "grpc" {
			target = s.otlpHTTPAddr.String()
		}
		for _, compression := range []string{"gzip", "zstd", "snappy"} {
			seed++
			var out, errOut bytes.Buffer
			err := run([]string{"bench", "--protocol", protocol, "--compression", compression, "--target", target, "--reader", s.queryAddr.String(),
				"--spans", "3000", "--batch", "100", "--queries", "3", "--seed", strconv.Itoa(seed), "--settle", "0", "--json"}, &out, &errOut)
			if err != nil {
				t.Fatalf("bench %s %s: %v\n%s", protocol, compression, err, errOut.String())
			}
			var r bench.Report
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if r.Compression != compression || r.Spans < 3000 || r.FailedSpans != 0 || r.TracesChecked == 0 || r.TracesComplete != r.TracesChecked {
				t.Errorf("%s %s: compression %q, %d spans, %d failed, %d of %d traces complete",
					protocol, compression, r.Compression, r.Spans, r.FailedSpans, r.TracesComplete, r.TracesChecked)
			}
		}
	}
	var out, errOut bytes.Buffer
	err := run([]string{"bench", "--compression", "lz4", "--target", s.otlpAddr.String()}, &out, &errOut)
	if want := `bench: unknown compression "lz4": want none, gzip, zstd or snappy`; err == nil || err.Error() != want {
		t.Errorf("--compression lz4: %v, want %s", err, want)
	}
}

// TestBenchUnreachable checks that a target nothing listens on fails the
// bench at once, in one line.
func TestBenchUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	var out, errOut bytes.Buffer
	err = run([]string{"bench", "--target", addr, "--protocol", "http/json"}, &out, &errOut)
	if want := "cannot reach OTLP endpoint " + addr + " over http/json: connection refused"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestServingLine reads the listeners' addresses from the line `cairn serve`
// logs.
func TestServingLine(t *testing.T) {
	for line, want := range map[string][3]string{
		`level=INFO msg="cairn serving" data_dir="/tmp/a b" otlp_grpc=127.0.0.1:4317 otlp_http=127.0.0.1:4318 query=127.0.0.1:17271 http=127.0.0.1:8080`: {
			"127.0.0.1:4317", "127.0.0.1:4318", "127.0.0.1:17271"},
	} {
		m := servingLine.FindStringSubmatch(line)
		if m == nil || [3]string(m[1:]) != want {
			t.Errorf("%s: got %q, want %q", line, m, want)
		}
	}
}

// TestBenchOverload overloads a server with a small in-flight bound, with
// gzip, and checks that every request was acknowledged or refused with a
// retryable code, and every acknowledged one read back whole.
func TestBenchOverload(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t.TempDir())
	cfg.maxRequest, cfg.maxInflight = 2<<20, 6<<20
	s := startConfigured(t, cfg)
	defer s.shutdown()
	var out, errOut bytes.Buffer
	err := run([]string{"bench", "--overload", "--overload-gzip", "--target", s.otlpAddr.String(), "--reader", s.queryAddr.String(),
		"--conns", "2", "--inflight", "4", "--overload-min-mib", "1", "--overload-max-mib", "1", "--duration", "1s", "--json"}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	var r struct {
		Acknowledged  int64            `json:"acknowledged"`
		Refused       int64            `json:"refused_retryable"`
		Failed        map[string]int64 `json:"failed"`
		TracesChecked int              `json:"traces_checked"`
		TracesMissing int              `json:"traces_missing"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Acknowledged == 0 || len(r.Failed) != 0 || r.TracesChecked != int(r.Acknowledged) || r.TracesMissing != 0 {
		t.Errorf("report %+v\n%s", r, out.String())
	}
	t.Logf("%d acknowledged, %d refused", r.Acknowledged, r.Refused)
}
