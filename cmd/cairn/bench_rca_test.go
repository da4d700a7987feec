package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"cairn/bench"
)

// TestBenchRCA runs the fault-injection suite, small, against a test
// server, and checks that every scenario was written, diagnosed and
// reported; with 100 traces a window the culprits still rank first.
func TestBenchRCA(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	var out, errOut bytes.Buffer
	err := run([]string{"bench", "--rca", "--rca-traces", "100", "--settle", "0", "--json",
		"--target", s.otlpAddr.String(), "--reader", s.queryAddr.String()}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var rep rcaReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if len(rep.Scenarios) != len(bench.RCAScenarios()) {
		t.Fatalf("%d scenarios reported, want %d", len(rep.Scenarios), len(bench.RCAScenarios()))
	}
	for _, r := range rep.Scenarios {
		if r.WindowTraces != 100 || r.BaselineTraces != 100 || r.OperationRank != 1 {
			t.Errorf("%+v: want 100 traces each side and the culprit first", r)
		}
	}
	if err := run([]string{"bench", "--rca", "--target", s.otlpAddr.String()}, &out, &errOut); err == nil {
		t.Error("--rca with --target alone was accepted")
	}
}
