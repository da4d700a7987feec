package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"cairn/bench"
	"cairn/internal/grpctest"
	"cairn/internal/otlptest"
	"cairn/internal/rawcodec"
	"cairn/query/jaegerpb"
)

// buildCairn compiles the cairn binary for tests that need a real process.
func buildCairn(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cairn")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build cairn: %v\n%s", err, out)
	}
	return bin
}

// startCairn runs `cairn serve` on loopback and waits until it listens.
func startCairn(t *testing.T, bin, dir string, extra ...string) *child {
	t.Helper()
	c, err := startChild(bin, dir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kill)
	return c
}

// TestSIGKILLLosesNoAcknowledgedSpans kills the server with SIGKILL while
// clients export as fast as they can, restarts it, and checks that every span
// of every acknowledged request is there, field for field.
func TestSIGKILLLosesNoAcknowledgedSpans(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCairn(t)
	dir := t.TempDir()
	p := startCairn(t, bin, dir, "--flush-interval", "100ms")

	const clients, perClient = 4, 60
	gen := bench.NewGenerator(bench.Config{BatchSpans: 256})
	var reqs [clients][]bench.Request
	for c := range clients {
		for range perClient {
			reqs[c] = append(reqs[c], gen.Next())
		}
	}
	conn := grpctest.Dial(t, p.otlpAddr)
	var (
		mu    sync.Mutex
		acked = otlptest.Traces{}
		n     int
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, r := range reqs[c] {
				var resp collectorpb.ExportTraceServiceResponse
				err := conn.Invoke(ctx, exportMethod, rawcodec.Message(r.Bytes), &resp, grpc.ForceCodecV2(rawcodec.Codec{}))
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				if err := acked.AddRequest(r.Bytes); err != nil {
					t.Error(err)
				}
				n++
				mu.Unlock()
			}
		}()
	}
	// Kill once a good share has been acknowledged, mid-stream.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := n
		mu.Unlock()
		if done >= clients*perClient/3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	wg.Wait()
	if n == 0 || n == clients*perClient {
		t.Fatalf("%d of %d requests acknowledged: the kill must land mid-ingest", n, clients*perClient)
	}
	t.Logf("killed after %d acknowledged requests (%d spans)", n, acked.Spans())

	p = startCairn(t, bin, dir)
	qconn := grpctest.Dial(t, p.queryAddr)
	var ids []string
	for id := range acked {
		ids = append(ids, id)
	}
	got := getTraces(t, qconn, ids)
	for id, want := range acked {
		present := map[string]otlptest.Entry{}
		for _, e := range got[id] {
			present[string(e.Span.SpanId)] = e
		}
		for _, w := range want {
			g, ok := present[string(w.Span.SpanId)]
			if !ok {
				t.Fatalf("acknowledged span %x of trace %s lost", w.Span.SpanId, id)
			}
			if d := otlptest.DiffTrace([]otlptest.Entry{w}, []otlptest.Entry{g}); d != "" {
				t.Fatalf("trace %s: %s", id, d)
			}
		}
	}

	// A clean shutdown on SIGTERM exits 0.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("shutdown on SIGTERM: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "index")); err != nil {
		t.Fatal(fmt.Errorf("store missing after shutdown: %w", err))
	}
	// Everything serve created, Pebble's files included, is its user's alone.
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := d.Info()
		if err == nil && info.Mode().Perm()&0o077 != 0 {
			err = fmt.Errorf("%s has mode %v", path, info.Mode().Perm())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSIGKILLDuringRecompression kills the server while it recompresses span
// data, restarts it, and checks that traces and searches read back whole:
// recompression only ever writes keys again with the values they have.
func TestSIGKILLDuringRecompression(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCairn(t)
	dir := t.TempDir()
	p := startCairn(t, bin, dir, "--flush-interval", "100ms", "--recompress-after", "300ms")
	conn := grpctest.Dial(t, p.otlpAddr)
	gen := bench.NewGenerator(bench.Config{BatchSpans: 1024})
	sent := otlptest.Traces{}
	for range 60 {
		r := gen.Next()
		var resp collectorpb.ExportTraceServiceResponse
		if err := conn.Invoke(context.Background(), exportMethod, rawcodec.Message(r.Bytes), &resp, grpc.ForceCodecV2(rawcodec.Codec{})); err != nil {
			t.Fatal(err)
		}
		if err := sent.AddRequest(r.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	// Recompression starts once ingest has paused, and works in a
	// directory of its own while it runs.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "recompress")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("recompression did not start")
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()

	p = startCairn(t, bin, dir)
	qconn := grpctest.Dial(t, p.queryAddr)
	sample := otlptest.Traces{}
	for id, entries := range sent {
		if len(sample) == 200 {
			break
		}
		sample[id] = entries
	}
	compareAll(t, qconn, sample)
	for _, svc := range []string{"checkout", "frontend", "payment"} {
		resp, err := jaegerpb.NewTraceReaderClient(qconn).FindTraceIDs(context.Background(), &jaegerpb.FindTraceIDsRequest{
			Query: &jaegerpb.TraceQueryParameters{ServiceName: svc, SearchDepth: 20},
		})
		if err != nil || len(resp.TraceIds) == 0 {
			t.Fatalf("search for %s after the kill: %v, %v", svc, resp, err)
		}
	}
}
