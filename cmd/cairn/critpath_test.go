package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"cairn/query"
)

// TestCriticalPathGolden prints the critical path of the trace each
// testdata/critical-path/*.golden file's first line names, "$ cairn
// critical-path NAME.trace FLAGS…", the trace being a spec of
// testdata/waterfall, and compares it with the rest of the file.
func TestCriticalPathGolden(t *testing.T) {
	checkGoldens(t, "testdata/critical-path", "critical-path", func(t *testing.T, args string) string {
		fs := newFlagSet("critical-path")
		format := fs.String("format", "table", "")
		maxSegments := fs.Int("max-segments", 100, "")
		td := specOf(t, fs, args)
		var got bytes.Buffer
		if err := writeCriticalPath(&got, criticalPathOf(td), *format, *maxSegments); err != nil {
			t.Fatal(err)
		}
		return got.String()
	})
}

// TestCriticalPathCommand reads a trace from a server and prints its
// critical path as JSON.
func TestCriticalPathCommand(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	exportRequest(t, s.otlpAddr.String(), sampleTrace())

	var out, errOut bytes.Buffer
	err := run([]string{"critical-path", "4bf92f3577b34da6a3ce929d0e0e4736", "--format", "json", "--addr", s.queryAddr.String()}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var got criticalPathJSON
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if got.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || got.DurationMS != 200 || len(got.Segments) == 0 {
		t.Fatalf("critical path %+v", got)
	}
	if first, last := got.Segments[0], got.Segments[len(got.Segments)-1]; last.EndUnixNano-first.StartUnixNano != 200e6 {
		t.Errorf("segments span %d ns, the trace 200 ms", last.EndUnixNano-first.StartUnixNano)
	}
	// Against a server without cairn.analysis.v1.RootCause, the CLI
	// computes the same path from the trace.
	local := runJSON(t, "critical-path", "4bf92f3577b34da6a3ce929d0e0e4736", "--format", "json", "--addr", serveReaderOnly(t, s.queryAddr.String()))
	if want := mustJSON(t, got); local != want {
		t.Errorf("computed in the CLI:\n%s\non the server:\n%s", local, want)
	}
	err = run([]string{"critical-path", "--addr", s.queryAddr.String(), "00000000000000000000000000000001"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown trace: %v", err)
	}
}

// TestCriticalPathsSpanNames sums up where checkouts spent their time when
// inventory names each stock query by its SQL with the SKU in it: the
// queries are one operation, their shape, on the server and in the CLI,
// and the table says how many names it stands for.
func TestCriticalPathsSpanNames(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	_, mid, end := writeScenario(t, s, "literal-sql")
	args := []string{"critical-path", "--service", "web", "--operation", "POST /checkout", "--start", mid.Format(time.RFC3339), "--end", end.Format(time.RFC3339)}
	remote := runJSON(t, append(slices.Clone(args), "--format", "json", "--addr", s.queryAddr.String())...)
	var agg query.CriticalPathsJSON
	if err := json.Unmarshal([]byte(remote), &agg); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(agg.Operations, func(o query.OperationPathJSON) bool { return o.Service == "inventory" && o.SpanNames > 0 })
	if i < 0 || !strings.Contains(agg.Operations[i].Operation, "?") || agg.Operations[i].SpanNames < 100 {
		t.Fatalf("operations %+v, want inventory's stock queries as one shape of 100 names or more", agg.Operations)
	}
	for _, o := range agg.Operations {
		if o.Service == "inventory" && strings.Contains(o.Operation, "SKU-") {
			t.Errorf("%s: a stock query apart from its shape", o.Operation)
		}
	}
	if local := runJSON(t, append(slices.Clone(args), "--format", "json", "--addr", serveReaderOnly(t, s.queryAddr.String()))...); local != remote {
		t.Errorf("aggregated in the CLI:\n%s\non the server:\n%s", local, remote)
	}
	var table, errOut bytes.Buffer
	if err := run(append(args, "--addr", s.queryAddr.String()), &table, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	if want := fmt.Sprintf("inventory: %s (%d span names)\n", agg.Operations[i].Operation, agg.Operations[i].SpanNames); !strings.Contains(table.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, table.String())
	}
}
