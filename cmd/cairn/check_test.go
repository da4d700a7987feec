package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/internal/otlpwire"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// TestCheckAndRepair damages a stopped store: check reports it and exits 1,
// repair drops it, and check then passes. A store in use is refused.
func TestCheckAndRepair(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := proto.Marshal(sampleTrace())
	if err != nil {
		t.Fatal(err)
	}
	var b otlpwire.Batch
	if err := otlpwire.Parse(req, &b, otlpwire.Window{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(context.Background(), req, &b); err != nil {
		t.Fatal(err)
	}
	if _, _, exit := cairn("check", dir); exit != 1 {
		t.Fatalf("check of a store in use: exit %d, want 1", exit)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if out, errOut, exit := cairn("check", dir); exit != 0 || !strings.Contains(out, "no damage found") {
		t.Fatalf("check of an intact store: exit %d\n%s%s", exit, out, errOut)
	}

	// The sample trace's span data is the one sstable of the spans store;
	// its one data block starts the file.
	tables, err := filepath.Glob(filepath.Join(dir, "spans", "*.sst"))
	if err != nil || len(tables) != 1 {
		t.Fatalf("spans sstables %v, %v", tables, err)
	}
	data, err := os.ReadFile(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	data[20] ^= 1
	if err := os.WriteFile(tables[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Served, the damaged trace fails with DataLoss naming the file, and
	// readiness and the metrics say why; the server keeps running.
	s := startTestServer(t, dir)
	stream, err := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, s.queryAddr.String())).GetTraces(context.Background(),
		&jaegerpb.GetTracesRequest{Query: []*jaegerpb.GetTraceParams{{TraceId: sampleTrace().ResourceSpans[0].ScopeSpans[0].Spans[0].TraceId}}})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), filepath.Base(tables[0])) {
		t.Fatalf("GetTraces of the damaged trace: %v, want DataLoss naming %s", err, tables[0])
	}
	base := "http://" + s.httpAddr.String()
	if code, body := httpGet(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "corruption") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if _, body := httpGet(t, base+"/metrics"); !strings.Contains(body, `cairn_storage_fault{kind="corruption"} 1`) {
		t.Fatalf("/metrics has no corruption fault:\n%s", body)
	}
	s.shutdown()

	out, errOut, exit := cairn("check", dir)
	if exit != 1 || !strings.Contains(out, tables[0]) || !strings.Contains(out, "4bf92f3577b34da6a3ce929d0e0e4736") ||
		!strings.Contains(errOut, "cairn repair") {
		t.Fatalf("check of a damaged store: exit %d\n%s%s", exit, out, errOut)
	}
	if out, errOut, exit := cairn("repair", dir); exit != 0 || !strings.Contains(out, "dropped") || !strings.Contains(out, "check passes") {
		t.Fatalf("repair: exit %d\n%s%s", exit, out, errOut)
	}
	if out, errOut, exit := cairn("check", dir); exit != 0 {
		t.Fatalf("check after repair: exit %d\n%s%s", exit, out, errOut)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	body := readBody(t, resp, err)
	return resp.StatusCode, string(body)
}

// readBody reads the whole answer to a request, which err says whether it
// got, and closes it; any error fails the test.
func readBody(t *testing.T, resp *http.Response, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}
