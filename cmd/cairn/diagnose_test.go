package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"cairn/bench"
	"cairn/query"
)

// TestDiagnoseCommand writes a baseline and a window of checkouts in which
// inventory's stock query slowed down on the pod running 2.9.0, and wants
// cairn diagnose to name that query and that version, in JSON and in the
// table's first sentence.
func TestDiagnoseCommand(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	start, mid, end := writeScenario(t, s, "slow-db-version")

	args := diagnoseArgs(s, mid, end)
	var out, errOut bytes.Buffer
	if err := run(append(args, "--format", "json"), &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var d diagnoseJSON
	if err := json.Unmarshal(out.Bytes(), &d); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if d.Window.Traces != 200 || d.Baseline.Traces != 200 {
		t.Errorf("%d traces in the window, %d in the baseline, want 200 each", d.Window.Traces, d.Baseline.Traces)
	}
	if d.Baseline.Start != start.UTC().Format(time.RFC3339Nano) || d.Window.End != end.UTC().Format(time.RFC3339Nano) {
		t.Errorf("baseline from %s, window to %s, want %s and %s", d.Baseline.Start, d.Window.End, start, end)
	}
	if len(d.Operations) == 0 || d.Operations[0].Operation != "SELECT inventory.stock" || len(d.Operations[0].Exemplars) != 3 {
		t.Fatalf("operations %+v, want SELECT inventory.stock first", d.Operations)
	}
	if len(d.Attributes) == 0 || d.Attributes[0].Key != "service.version" || d.Attributes[0].Value != "2.9.0" {
		t.Fatalf("attributes %+v, want service.version=2.9.0 first", d.Attributes)
	}
	// The upgraded pod's name and identifiers are on the same traces as
	// its version: aliases of it, keeping their types.
	aliases := map[string]any{}
	for _, a := range d.Attributes[0].Aliases {
		aliases[a.Key] = a.Value
	}
	if name, _ := aliases["k8s.pod.name"].(string); !strings.HasPrefix(name, "inventory-") || len(aliases) != 5 {
		t.Errorf("aliases %v, want the pod's name, pod UID, instance, container and process IDs", aliases)
	}
	if _, ok := aliases["process.pid"].(float64); !ok {
		t.Errorf("process.pid alias %#v, want a number", aliases["process.pid"])
	}

	// Against a server without cairn.analysis.v1.RootCause, the CLI
	// computes the same diagnosis from traces read through TraceReader.
	readerOnly := serveReaderOnly(t, s.queryAddr.String())
	local := runJSON(t, append(slices.Clone(args), "--format", "json", "--addr", readerOnly)...)
	if want := mustJSON(t, d); local != want {
		t.Errorf("diagnosed in the CLI:\n%s\non the server:\n%s", local, want)
	}

	// Where the window's checkouts spent their time, on the server and in
	// the CLI.
	paths := []string{"critical-path", "--service", "web", "--operation", "POST /checkout", "--start", mid.Format(time.RFC3339), "--end", end.Format(time.RFC3339), "--format", "json"}
	var agg query.CriticalPathsJSON
	remote := runJSON(t, append(slices.Clone(paths), "--addr", s.queryAddr.String())...)
	if err := json.Unmarshal([]byte(remote), &agg); err != nil {
		t.Fatal(err)
	}
	if agg.Traces != 200 || len(agg.Operations) == 0 || agg.Operations[0].Operation != "SELECT inventory.stock" {
		t.Errorf("critical paths %+v, want 200 traces, SELECT inventory.stock first", agg)
	}
	if local := runJSON(t, append(slices.Clone(paths), "--addr", readerOnly)...); local != remote {
		t.Errorf("aggregated in the CLI:\n%s\non the server:\n%s", local, remote)
	}

	out.Reset()
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "service.version=2.9.0 on inventory\n"+strings.Repeat(" ", 29)+"alias k8s.pod.name=inventory-") {
		t.Errorf("the table does not list the version's aliases under it:\n%s", out.String())
	}
	first, _, _ := strings.Cut(out.String(), "\n")
	for _, want := range []string{"inventory: SELECT inventory.stock is the most likely cause", "service.version=2.9.0 on inventory",
		"exactly the traces with k8s.pod.name=inventory-", "and 4 other values."} {
		if !strings.Contains(first, want) {
			t.Errorf("first line %q lacks %q", first, want)
		}
	}

	for _, bad := range [][]string{
		{"diagnose", "--service", "web"},
		{"diagnose", "--service", "web", "--operation", "x"},
		{"diagnose", "--service", "web", "--operation", "x", "--since", "1h", "--start", mid.Format(time.RFC3339)},
		{"diagnose", "--service", "web", "--operation", "x", "--start", end.Format(time.RFC3339), "--end", mid.Format(time.RFC3339)},
	} {
		var usage usageError
		if err := run(bad, &out, &errOut); !errors.As(err, &usage) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}

// TestDiagnoseCommandCall writes checkouts whose calls to one payment pod
// take 30 ms longer on the network, and wants the table and JSON to name
// the calls to payment's Charge, in its first sentence too, on the server
// and computed in the CLI alike.
func TestDiagnoseCommandCall(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	_, mid, end := writeScenario(t, s, "network-delay")
	args := diagnoseArgs(s, mid, end)
	var d diagnoseJSON
	remote := runJSON(t, append(slices.Clone(args), "--format", "json")...)
	if err := json.Unmarshal([]byte(remote), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Operations) == 0 || d.Operations[0].Name() != "payment: Charge (calls to it)" || !d.Operations[0].Call {
		t.Fatalf("operations %+v, want the calls to payment's Charge first", d.Operations)
	}
	local := runJSON(t, append(slices.Clone(args), "--format", "json", "--addr", serveReaderOnly(t, s.queryAddr.String()))...)
	if local != remote {
		t.Errorf("diagnosed in the CLI:\n%s\non the server:\n%s", local, remote)
	}

	var out, errOut bytes.Buffer
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	first, rest, _ := strings.Cut(out.String(), "\n")
	if want := "payment: Charge (calls to it) is the most likely cause: its callers' wait on it outside its spans"; !strings.HasPrefix(first, want) {
		t.Errorf("first line %q, want it to start %q", first, want)
	}
	if !strings.Contains(rest, "  payment: Charge (calls to it)  ") {
		t.Errorf("the table does not name the call:\n%s", rest)
	}
}

// diagnoseArgs runs cairn diagnose on the checkouts of [mid, end), as
// writeScenario writes them, through s.
func diagnoseArgs(s *server, mid, end time.Time) []string {
	return []string{"diagnose", "--addr", s.queryAddr.String(), "--service", "web", "--operation", "POST /checkout",
		"--start", mid.Format(time.RFC3339), "--end", end.Format(time.RFC3339)}
}

// writeScenario writes one of the bench's faults by name: a baseline of 200
// checkouts in [start, mid), then 200 in [mid, end) with the fault. The
// first, "slow-db-version", has the stock query take 80 ms more on the
// inventory pod upgraded to 2.9.0.
func writeScenario(t *testing.T, s *server, name string) (start, mid, end time.Time) {
	t.Helper()
	i := slices.IndexFunc(bench.RCAScenarios(), func(sc bench.RCAScenario) bool { return sc.Name == name })
	if i < 0 {
		t.Fatalf("no scenario %q", name)
	}
	scenario := bench.RCAScenarios()[i]
	end = time.Now().Truncate(time.Second)
	mid = end.Add(-10 * time.Minute)
	start = mid.Add(-10 * time.Minute)
	exportRequest(t, s.otlpAddr.String(), &collectorpb.ExportTraceServiceRequest{ResourceSpans: scenario.RCATraffic(1, 200, start, mid, false)})
	exportRequest(t, s.otlpAddr.String(), &collectorpb.ExportTraceServiceRequest{ResourceSpans: scenario.RCATraffic(2, 200, mid, end, true)})
	return start, mid, end
}

// runJSON runs cairn with args and returns what it printed, as mustJSON
// prints it.
func runJSON(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("cairn %q: %v: %s", args, err, errOut.String())
	}
	var v any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("cairn %q: %v:\n%s", args, err, out.String())
	}
	return mustJSON(t, v)
}

// mustJSON writes v as indented JSON with the keys of its objects sorted,
// so that structs and what they decode to compare equal.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	if b, err = json.MarshalIndent(generic, "", "  "); err != nil {
		t.Fatal(err)
	}
	return string(b)
}
