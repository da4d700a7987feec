package bench

import (
	"fmt"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"cairn/query/analysis"
)

// TestRCAScenarios diagnoses every scenario from its traces in memory, as
// `cairn bench --rca` does through a store, and wants the culprit first
// and its attribute among the first three, and the fault past the noise.
func TestRCAScenarios(t *testing.T) {
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for i, s := range RCAScenarios() {
		t.Run(s.Name, func(t *testing.T) {
			collect := func(rss []*tracepb.ResourceSpans) []*analysis.Trace {
				var c analysis.Collector
				c.Add(&tracepb.TracesData{ResourceSpans: rss})
				return c.Traces()
			}
			base := collect(s.RCATraffic(uint64(2*i+1), 300, start, start.Add(10*time.Minute), false))
			win := collect(s.RCATraffic(uint64(2*i+2), 300, start.Add(10*time.Minute), start.Add(20*time.Minute), true))
			d := analysis.Diagnose(win, base, &analysis.DiagnoseOptions{Service: RCARootService, Operation: RCARootOperation, Errors: s.Errors})
			r := s.Evaluate(diagnosisOf(d))
			if r.OperationRank != 1 || r.AttributeRank == 0 || r.AttributeRank > 3 || r.FalseAttribute != "" || d.WithinNoise {
				ops, attrs := diagnosisOf(d)
				t.Errorf("%+v\noperations %v\nattributes %v", r, ops[:min(len(ops), 5)], attrs[:min(len(attrs), 5)])
			}
		})
	}
}

func diagnosisOf(d analysis.Diagnosis) ([]RCAOperation, []RCAAttribute) {
	var ops []RCAOperation
	for _, o := range d.Operations {
		ops = append(ops, RCAOperation{o.Service, o.Operation, o.Call})
	}
	var attrs []RCAAttribute
	for _, a := range d.Attributes {
		ra := RCAAttribute{Service: a.Service, Key: a.Key, Value: valueText(a.Value), Score: a.Score}
		for _, alias := range a.Aliases {
			ra.Aliases = append(ra.Aliases, alias.Key+"="+valueText(alias.Value))
		}
		attrs = append(attrs, ra)
	}
	return ops, attrs
}

func valueText(v *commonpb.AnyValue) string {
	if b, ok := v.GetValue().(*commonpb.AnyValue_BoolValue); ok {
		return fmt.Sprint(b.BoolValue)
	}
	return v.GetStringValue()
}

// BenchmarkDiagnose times a diagnosis of 2,000 traces a window, as read.
func BenchmarkDiagnose(b *testing.B) {
	s := RCAScenarios()[0]
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	collect := func(rss []*tracepb.ResourceSpans) []*analysis.Trace {
		var c analysis.Collector
		c.Add(&tracepb.TracesData{ResourceSpans: rss})
		return c.Traces()
	}
	const traces = 2000
	base := collect(s.RCATraffic(1, traces, start, start.Add(10*time.Minute), false))
	win := collect(s.RCATraffic(2, traces, start.Add(10*time.Minute), start.Add(20*time.Minute), true))
	b.Run(fmt.Sprintf("traces=%d", traces), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			analysis.Diagnose(win, base, &analysis.DiagnoseOptions{Service: RCARootService, Operation: RCARootOperation})
		}
	})
}
