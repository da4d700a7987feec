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
