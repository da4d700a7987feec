//go:build jaeger

// The Jaeger end-to-end test runs with `make test-jaeger`, which builds
// Jaeger v2 from its Go module (.ci/jaeger) and names it in CAIRN_JAEGER.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// readmeJaegerConfig is the Jaeger configuration README.md gives: the first
// yaml block of its Jaeger section.
func readmeJaegerConfig(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "### Jaeger UI on top of cairn")
	if !ok {
		t.Fatal("README.md has no Jaeger section")
	}
	_, block, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatal("README.md's Jaeger section has no yaml block")
	}
	config, _, _ := strings.Cut(block, "```")
	return config
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestJaegerOnCairn runs Jaeger with README.md's configuration against a
// cairn, sends spans to Jaeger's OTLP port, and searches them through
// jaeger-query's HTTP API as the UI does: tags are strings there.
func TestJaegerOnCairn(t *testing.T) {
	bin := os.Getenv("CAIRN_JAEGER")
	if bin == "" {
		t.Skip("CAIRN_JAEGER names no Jaeger binary; run make test-jaeger")
	}
	cfg := testConfig(t.TempDir())
	cfg.otlpHTTPAddr = ""
	s := startConfigured(t, cfg)
	defer s.shutdown()

	// The README's addresses, each moved to a free port: cairn's to those
	// it listens on.
	config := readmeJaegerConfig(t)
	moved := map[string]string{"localhost:17271": s.queryAddr.String(), "localhost:4316": s.otlpAddr.String()}
	for _, addr := range regexp.MustCompile(`localhost:\d+`).FindAllString(config, -1) {
		if moved[addr] == "" {
			moved[addr] = freeAddr(t)
		}
	}
	for _, want := range []string{"localhost:17271", "localhost:4316", "localhost:16686", "localhost:4317"} {
		if !strings.Contains(config, want) {
			t.Fatalf("README.md's Jaeger configuration does not name %s:\n%s", want, config)
		}
	}
	config = regexp.MustCompile(`localhost:\d+`).ReplaceAllStringFunc(config, func(a string) string { return moved[a] })
	path := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	jaeger := exec.CommandContext(ctx, bin, "--config", path)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "jaeger.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	jaeger.Stdout, jaeger.Stderr = logFile, logFile
	if err := jaeger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		jaeger.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("jaeger's log:\n%s", log)
		}
	}()
	api := "http://" + moved["localhost:16686"] + "/api/"

	ids := sendThroughJaeger(t, moved["localhost:4317"])
	for _, c := range []struct {
		tags map[string]string
		want string // trace, or "" for none
	}{
		{map[string]string{"http.response.status_code": "404"}, ids["miss"]},
		{map[string]string{"app.cache.hit": "true"}, ids["hit"]},
		{map[string]string{"app.ratio": "72.5"}, ids["hit"]},
		{map[string]string{"exception.type": "Timeout"}, ids["miss"]},
		{map[string]string{"exception.type": "Timeout", "http.response.status_code": "404"}, ids["miss"]},
		{map[string]string{"exception.type": "Timeout", "app.cache.hit": "true"}, ""},
		{map[string]string{"http.response.status_code": "500"}, ""},
	} {
		tags, _ := json.Marshal(c.tags)
		q := url.Values{"service": {"shop"}, "tags": {string(tags)}, "lookback": {"1h"}, "limit": {"20"}}
		got := findTraces(t, api+"traces?"+q.Encode(), c.want != "")
		if want := fmt.Sprint([]string{c.want}); c.want == "" && len(got) > 0 || c.want != "" && fmt.Sprint(got) != want {
			t.Errorf("tags %s: traces %v, want %v", tags, got, c.want)
		}
	}
	// A limit over the maximum reaches the UI as an error that names it.
	q := url.Values{"service": {"shop"}, "lookback": {"1h"}, "limit": {"10001"}}
	if ids, err := getTraceIDs(api + "traces?" + q.Encode()); err == nil || !strings.Contains(err.Error(), "maximum of 10000") {
		t.Errorf("limit 10001: traces %v, error %v; want one naming the maximum", ids, err)
	}
}

// sendThroughJaeger sends two traces of service shop with the OTel SDK to
// Jaeger's OTLP port, and returns their IDs: "miss", whose span has an int
// status code and an exception event, and "hit", with a bool and a double.
func sendThroughJaeger(t *testing.T, otlpAddr string) map[string]string {
	t.Helper()
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(otlpAddr), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	res := sdkresource.NewSchemaless(attribute.String("service.name", "shop"))
	provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res))
	defer provider.Shutdown(context.Background())
	tracer := provider.Tracer("cairn/jaeger-test")
	ids := map[string]string{}
	_, miss := tracer.Start(context.Background(), "GET /item", trace.WithAttributes(attribute.Int("http.response.status_code", 404)))
	miss.AddEvent("exception", trace.WithAttributes(attribute.String("exception.type", "Timeout")))
	miss.End()
	ids["miss"] = miss.SpanContext().TraceID().String()
	_, hit := tracer.Start(context.Background(), "GET /cart",
		trace.WithAttributes(attribute.Bool("app.cache.hit", true), attribute.Float64("app.ratio", 72.5)))
	hit.End()
	ids["hit"] = hit.SpanContext().TraceID().String()
	return ids
}

// findTraces asks jaeger-query's HTTP API for traces and returns their IDs.
// Jaeger may not be up yet, and spans take a moment through its pipeline
// and cairn's: a search that should find something is retried until it
// does, for a while.
func findTraces(t *testing.T, u string, expectSome bool) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ids, err := getTraceIDs(u)
		if err == nil && (len(ids) > 0 || !expectSome) {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v, %v", u, ids, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// noKeepAlive leaves no idle connections behind, which goleak would take
// for leaks.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func getTraceIDs(u string) ([]string, error) {
	resp, err := noKeepAlive.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Data []struct {
			TraceID string `json:"traceID"`
		} `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || len(body.Errors) > 0 {
		return nil, fmt.Errorf("status %s, errors %v", resp.Status, body.Errors)
	}
	var ids []string
	for _, d := range body.Data {
		ids = append(ids, d.TraceID)
	}
	return ids, nil
}
