package query

import (
	"strings"
	"testing"
)

// TestCauseSaysWhenWithinNoise checks that the sentence naming the most
// likely cause says when its growth is within sampling noise, and only
// then.
func TestCauseSaysWhenWithinNoise(t *testing.T) {
	base, win := 0.01, 0.012
	for _, errorsMode := range []bool{false, true} {
		for _, within := range []bool{false, true} {
			d := DiagnosisJSON{
				Window:   DiagnosisWindowJSON{Traces: 1000},
				Baseline: DiagnosisWindowJSON{Traces: 1000},
				Operations: []CulpritJSON{{Service: "payment", Operation: "POST", BaselineMS: 12.9, WindowMS: 13.3,
					BaselineOriginRate: &base, WindowOriginRate: &win}},
				WithinNoise: within,
			}
			got := d.Cause(errorsMode)
			if !strings.HasPrefix(got, "payment: POST is the most likely cause") || strings.Contains(got, "within sampling noise") != within {
				t.Errorf("errors %v, within noise %v: %q", errorsMode, within, got)
			}
		}
	}
}

// TestCauseSaysWhenMoreTracesReachIt checks that the sentence says when
// most of the culprit's growth is that more traces have it on the critical
// path, each time for about as long, and not when it got slower.
func TestCauseSaysWhenMoreTracesReachIt(t *testing.T) {
	for _, c := range []struct {
		name                  string
		baseMS, winMS, bs, ws float64
		want                  string
	}{
		{"mix shift", 3, 15, 0.1, 0.5, ", most of it because more traces reach it: it is on the critical path of 50% of traces (10% before), for 30.0 ms each time (30.0 ms before)."},
		{"slower", 3, 15, 0.1, 0.1, " per trace."},
		{"slower and a little more often", 3, 15, 0.1, 0.15, " per trace."},
		{"new on the path", 0, 15, 0, 0.5, " per trace."},
	} {
		d := DiagnosisJSON{
			Window:     DiagnosisWindowJSON{Traces: 1000},
			Baseline:   DiagnosisWindowJSON{Traces: 1000},
			Operations: []CulpritJSON{{Service: "db", Operation: "SELECT", BaselineMS: c.baseMS, WindowMS: c.winMS, BaselineOnPathRate: &c.bs, WindowOnPathRate: &c.ws}},
		}
		if got := d.Cause(false); !strings.HasSuffix(got, c.want) {
			t.Errorf("%s: %q, want it to end %q", c.name, got, c.want)
		}
	}
}
