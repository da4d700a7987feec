package query

import (
	"strings"
	"testing"
	"time"

	traceanalysis "cairn/query/analysis"
)

// TestCauseSaysWhenWithinNoise checks that the sentence naming the most
// likely cause says when its growth is within sampling noise, and only
// then, and names no attribute then: the traces the culprit was slow in
// may be noise too.
func TestCauseSaysWhenWithinNoise(t *testing.T) {
	base, win := 0.01, 0.012
	for _, errorsMode := range []bool{false, true} {
		for _, within := range []bool{false, true} {
			d := DiagnosisJSON{
				Window:   DiagnosisWindowJSON{Traces: 1000},
				Baseline: DiagnosisWindowJSON{Traces: 1000},
				Operations: []CulpritJSON{{Service: "payment", Operation: "POST", BaselineMS: 12.9, WindowMS: 13.3,
					BaselineOriginRate: &base, WindowOriginRate: &win}},
				Attributes:  []AttributeScoreJSON{{Key: "cart.items", Value: int64(5), Service: "web", Score: 0.69, WindowShare: 0.86, BaselineShare: 0.17}},
				WithinNoise: within,
			}
			got := d.Cause(errorsMode)
			if !strings.HasPrefix(got, "payment: POST is the most likely cause") || strings.Contains(got, "within sampling noise") != within ||
				strings.Contains(got, "cart.items") == within {
				t.Errorf("errors %v, within noise %v: %q", errorsMode, within, got)
			}
		}
	}
}

// TestCauseSaysWhenMoreTracesReachIt checks that the sentence says when
// most of the culprit's growth is that more traces have it on the critical
// path, each time for about as long, and not when it got slower, nor when
// it ran no more often.
func TestCauseSaysWhenMoreTracesReachIt(t *testing.T) {
	for _, c := range []struct {
		name                  string
		baseMS, winMS, bs, ws float64
		want                  string
	}{
		{"mix shift", 3, 15, 0.1, 0.5, ", most of it because more traces reach it: it is on the critical path of 50% of traces (10% before), for 30.0 ms each time (30.0 ms before); no attribute sets the slow traces apart."},
		{"slower", 3, 15, 0.1, 0.1, " per trace; no attribute sets the slow traces apart."},
		{"slower and a little more often", 3, 15, 0.1, 0.15, " per trace; no attribute sets the slow traces apart."},
		{"new on the path", 0, 15, 0, 0.5, " per trace; no attribute sets the slow traces apart."},
	} {
		d := DiagnosisJSON{
			Window:     DiagnosisWindowJSON{Traces: 1000},
			Baseline:   DiagnosisWindowJSON{Traces: 1000},
			Operations: []CulpritJSON{{Service: "db", Operation: "SELECT", BaselineMS: c.baseMS, WindowMS: c.winMS, BaselineOnPathRate: &c.bs, WindowOnPathRate: &c.ws}},
		}
		if got := d.Cause(false); !strings.HasSuffix(got, c.want) {
			t.Errorf("%s: %q, want it to end %q", c.name, got, c.want)
		}
		// A query that ran in as many traces, a saturated pool making it
		// outlast what ran beside it, is on the path of more traces
		// because it got slower: no shift in the mix, whatever the shares.
		calls := 1.0
		d.Operations[0].BaselineCallsPerTrace, d.Operations[0].WindowCallsPerTrace = &calls, &calls
		if got := d.Cause(false); strings.Contains(got, "more traces reach it") {
			t.Errorf("%s, as many calls a trace: %q", c.name, got)
		}
	}
}

// TestCauseSaysWhenItRanMoreOften checks that the sentence says when the
// culprit's spans per trace grew by half or more, and by one or more, as
// a query run once per item does, or from none, and not otherwise.
func TestCauseSaysWhenItRanMoreOften(t *testing.T) {
	for _, c := range []struct {
		name           string
		cb, cw, bs, ws float64
		want           string
	}{
		{"a loop", 3, 30.04, 1, 1, " per trace, and it ran 30 times a trace (3 before); no attribute sets the slow traces apart."},
		{"half again", 2, 3.06, 1, 1, " per trace, and it ran 3.1 times a trace (2 before); no attribute sets the slow traces apart."},
		{"less than half again", 3, 4.4, 1, 1, " per trace; no attribute sets the slow traces apart."},
		{"less than one more", 0.5, 1.2, 1, 1, " per trace; no attribute sets the slow traces apart."},
		{"reached by more traces, which is said instead", 1, 5, 0.1, 0.5, " (100 ms before); no attribute sets the slow traces apart."},
		{"new", 0, 0.7, 0, 0.7, ", and it is new: no baseline trace ran it, and the window's ran it 0.7 times a trace; no attribute sets the slow traces apart."},
	} {
		d := DiagnosisJSON{
			Window:   DiagnosisWindowJSON{Traces: 1000},
			Baseline: DiagnosisWindowJSON{Traces: 1000},
			Operations: []CulpritJSON{{Service: "db", Operation: "SELECT", BaselineMS: 10, WindowMS: 50,
				BaselineOnPathRate: &c.bs, WindowOnPathRate: &c.ws, BaselineCallsPerTrace: &c.cb, WindowCallsPerTrace: &c.cw}},
		}
		if got := d.Cause(false); !strings.HasSuffix(got, c.want) {
			t.Errorf("%s: %q, want it to end %q", c.name, got, c.want)
		}
	}
}

// TestCauseNamesOnlyAnAttributeThatSetsTracesApart: an attribute about as
// common before as in the selection is not named as evidence.
func TestCauseNamesOnlyAnAttributeThatSetsTracesApart(t *testing.T) {
	for _, c := range []struct {
		score float64
		want  string
	}{
		{0.03, "; no attribute sets the slow traces apart."},
		{0.6, "; 90% of slow traces have retry.attempt=1 on pay (30% before)."},
	} {
		d := DiagnosisJSON{
			Window:     DiagnosisWindowJSON{Traces: 1000},
			Baseline:   DiagnosisWindowJSON{Traces: 1000},
			Operations: []CulpritJSON{{Service: "db", Operation: "SELECT", BaselineMS: 3, WindowMS: 15}},
			Attributes: []AttributeScoreJSON{{Key: "retry.attempt", Value: "1", Service: "pay", Score: c.score, WindowShare: 0.9, BaselineShare: 0.3}},
		}
		if got := d.Cause(false); !strings.HasSuffix(got, c.want) {
			t.Errorf("score %v: %q, want it to end %q", c.score, got, c.want)
		}
	}
	// A zone named before the two pods of it that lead scores less than
	// they do: they are its evidence.
	d := DiagnosisJSON{
		Window:     DiagnosisWindowJSON{Traces: 1000},
		Baseline:   DiagnosisWindowJSON{Traces: 1000},
		Operations: []CulpritJSON{{Service: "blob", Operation: "disk.write", BaselineMS: 3, WindowMS: 15}},
		Attributes: []AttributeScoreJSON{
			{Key: "cloud.availability_zone", Value: "us-east-1c", Service: "blob", Score: 0.065, WindowShare: 0.995, BaselineShare: 0.93},
			{Key: "k8s.pod.name", Value: "blob-3", Service: "blob", Score: 0.103, WindowShare: 0.8, BaselineShare: 0.7},
		},
	}
	if got, want := d.Cause(false), "; 100% of slow traces have cloud.availability_zone=us-east-1c on blob (93% before)."; !strings.HasSuffix(got, want) {
		t.Errorf("zone before its pods: %q, want it to end %q", got, want)
	}
}

// TestCauseNamesTheFallback checks that a culprit whose failures sent
// requests to a fallback comes through the API's answer with its fallback
// and how often it failed, and that the sentence gives those and the
// fallback's growth, not its own time, which did not grow.
func TestCauseNamesTheFallback(t *testing.T) {
	d := traceanalysis.Diagnosis{
		Window:   traceanalysis.WindowStats{Traces: 1000},
		Baseline: traceanalysis.WindowStats{Traces: 1000},
		Operations: []traceanalysis.Culprit{
			{Service: "payments", Operation: "POST /v1/charges", Score: 1.08, Baseline: 14.4e6, Window: 13.7e6, BaselineOnPath: 1, WindowOnPath: 1,
				BaselineCalls: 1, WindowCalls: 1, FallbackService: "payments", FallbackOperation: "POST /v2/payments", BaselineFailed: 0.014, WindowFailed: 0.109},
			{Service: "payments", Operation: "POST /v2/payments", Score: 1.08, Baseline: 0.74e6, Window: 10.37e6, BaselineOnPath: 0.01, WindowOnPath: 0.11,
				BaselineCalls: 0.01, WindowCalls: 0.11},
		},
	}
	at := time.Unix(1_700_000_000, 0)
	j := DiagnosisToJSON(d, at, at.Add(time.Minute), at.Add(-time.Minute), at, false)
	c := j.Operations[0]
	if c.Fallback == nil || *c.Fallback != (FallbackJSON{Service: "payments", Operation: "POST /v2/payments"}) ||
		c.BaselineFailedRate == nil || *c.BaselineFailedRate != 0.014 || *c.WindowFailedRate != 0.109 || j.Operations[1].Fallback != nil {
		t.Fatalf("operations %+v, want the first with its fallback and failed rates", j.Operations)
	}
	want := "payments: POST /v1/charges is the most likely cause: it failed in 10.9% of traces (1.4% before), and requests fell back to " +
		"payments: POST /v2/payments, whose time on the critical path grew from 0.74 ms to 10.4 ms per trace; no attribute sets the slow traces apart."
	if got := j.Cause(false); got != want {
		t.Errorf("%q\nwant %q", got, want)
	}
}
