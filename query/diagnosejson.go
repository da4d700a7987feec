package query

import (
	"cmp"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	traceanalysis "cairn/query/analysis"
	"cairn/query/analysispb"
)

// DiagnosisJSON is a diagnosis as GET /api/v1/diagnose and `cairn diagnose
// --format json` write it.
type DiagnosisJSON struct {
	Window     DiagnosisWindowJSON  `json:"window"`
	Baseline   DiagnosisWindowJSON  `json:"baseline"`
	Operations []CulpritJSON        `json:"operations"`
	Attributes []AttributeScoreJSON `json:"attributes"`
	Symptoms   []AttributeScoreJSON `json:"symptoms"`
	// WithinNoise: the first operation's growth is within sampling noise,
	// and the ranking may be noise.
	WithinNoise bool `json:"within_noise"`
}

// DiagnosisWindowJSON is one of a diagnosis' two windows.
type DiagnosisWindowJSON struct {
	Start     string  `json:"start"`
	End       string  `json:"end"`
	Traces    int     `json:"traces"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	ErrorRate float64 `json:"error_rate"`
	// LeftOut: traces found but left out of the sample, as the API's
	// DiagnoseWindow.left_out says.
	LeftOut int `json:"left_out,omitempty"`
}

// CulpritJSON is an operation ranked as a cause.
type CulpritJSON struct {
	Service    string   `json:"service"`
	Operation  string   `json:"operation"`
	Score      float64  `json:"score"`
	BaselineMS float64  `json:"baseline_ms"`
	WindowMS   float64  `json:"window_ms"`
	Exemplars  []string `json:"exemplars"`
	// Diagnosing errors: the shares of traces whose failure originates in
	// the operation.
	BaselineOriginRate *float64 `json:"baseline_origin_rate,omitempty"`
	WindowOriginRate   *float64 `json:"window_origin_rate,omitempty"`
	// Diagnosing latency: the shares of traces with the operation on the
	// critical path.
	BaselineOnPathRate *float64 `json:"baseline_on_path_rate,omitempty"`
	WindowOnPathRate   *float64 `json:"window_on_path_rate,omitempty"`
	// Diagnosing latency: the operation's spans per trace.
	BaselineCallsPerTrace *float64 `json:"baseline_calls_per_trace,omitempty"`
	WindowCallsPerTrace   *float64 `json:"window_calls_per_trace,omitempty"`
	// Call: the time is the callers' wait on the operation outside its
	// server spans.
	Call bool `json:"call,omitempty"`
	// SpanNames: the operation is the shape of this many span names that
	// differ only in their literals, each written ?.
	SpanNames int `json:"span_names,omitempty"`
	// Fallback: diagnosing latency, the operation requests fell back to
	// when this one failed, and the shares of traces where this one
	// failed; the score is the fallback's.
	Fallback           *FallbackJSON `json:"fallback,omitempty"`
	BaselineFailedRate *float64      `json:"baseline_failed_rate,omitempty"`
	WindowFailedRate   *float64      `json:"window_failed_rate,omitempty"`
}

// FallbackJSON names the operation a culprit's failures sent requests to.
type FallbackJSON struct {
	Service   string `json:"service"`
	Operation string `json:"operation"`
}

// Name is the operation as service: operation, marked when the time is
// its callers' wait on it, and when it stands for many span names.
func (c CulpritJSON) Name() string {
	name := operationName(c.Service, c.Operation, c.SpanNames)
	if c.Call {
		name += " (calls to it)"
	}
	return name
}

// operationName is an operation as service: operation, marked when it is
// the shape of many span names.
func operationName(service, operation string, spanNames int) string {
	name := service + ": " + operation
	if spanNames > 0 {
		name += fmt.Sprintf(" (%d span names)", spanNames)
	}
	return name
}

// AttributeScoreJSON is an attribute ranked as a cause, or a symptom.
type AttributeScoreJSON struct {
	Key           string  `json:"key"`
	Value         any     `json:"value"`
	Service       string  `json:"service"`
	Score         float64 `json:"score"`
	WindowShare   float64 `json:"window_share"`
	BaselineShare float64 `json:"baseline_share"`
	// Other values of the service on exactly the same traces, folded into
	// this one.
	Aliases []AliasJSON `json:"aliases"`
}

// AliasJSON is a value an attribute's entry stands for too.
type AliasJSON struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// DiagnosisToJSON writes a diagnosis of the window [windowStart,
// windowEnd) against the baseline [baselineStart, baselineEnd) as the API
// would answer it.
func DiagnosisToJSON(d traceanalysis.Diagnosis, windowStart, windowEnd, baselineStart, baselineEnd time.Time, errorsMode bool) DiagnosisJSON {
	return DiagnosisFromAPI(diagnoseResponse(d, timeWindow{windowStart, windowEnd}, timeWindow{baselineStart, baselineEnd}), errorsMode)
}

// DiagnosisFromAPI writes RootCause/Diagnose's answer as JSON; errorsMode
// is the request's errors.
func DiagnosisFromAPI(resp *analysispb.DiagnoseResponse, errorsMode bool) DiagnosisJSON {
	side := func(w *analysispb.DiagnoseWindow) DiagnosisWindowJSON {
		return DiagnosisWindowJSON{Start: w.GetStartTime().AsTime().Format(time.RFC3339Nano), End: w.GetEndTime().AsTime().Format(time.RFC3339Nano),
			Traces: int(w.GetTraces()), P50MS: w.GetP50Ms(), P99MS: w.GetP99Ms(), ErrorRate: w.GetErrorRate(), LeftOut: int(w.GetLeftOut())}
	}
	out := DiagnosisJSON{Window: side(resp.Window), Baseline: side(resp.Baseline), Operations: []CulpritJSON{},
		Attributes: attributesFromAPI(resp.Attributes), Symptoms: attributesFromAPI(resp.Symptoms), WithinNoise: resp.WithinNoise}
	for _, c := range resp.Operations {
		cj := CulpritJSON{Service: c.Service, Operation: c.Operation, Score: c.Score, BaselineMS: c.BaselineMs, WindowMS: c.WindowMs, Exemplars: []string{},
			Call: c.Call, SpanNames: int(c.SpanNames)}
		if errorsMode {
			cj.BaselineOriginRate, cj.WindowOriginRate = &c.BaselineOriginRate, &c.WindowOriginRate
		} else {
			cj.BaselineOnPathRate, cj.WindowOnPathRate = &c.BaselineOnPathRate, &c.WindowOnPathRate
			cj.BaselineCallsPerTrace, cj.WindowCallsPerTrace = &c.BaselineCallsPerTrace, &c.WindowCallsPerTrace
			if c.FallbackService != "" || c.FallbackOperation != "" {
				cj.Fallback = &FallbackJSON{Service: c.FallbackService, Operation: c.FallbackOperation}
				cj.BaselineFailedRate, cj.WindowFailedRate = &c.BaselineFailedRate, &c.WindowFailedRate
			}
		}
		for _, id := range c.Exemplars {
			cj.Exemplars = append(cj.Exemplars, hex.EncodeToString(id))
		}
		out.Operations = append(out.Operations, cj)
	}
	return out
}

func attributesFromAPI(as []*analysispb.AttributeScore) []AttributeScoreJSON {
	out := []AttributeScoreJSON{}
	for _, a := range as {
		aj := AttributeScoreJSON{Key: a.Key, Value: AnyJSON(a.Value), Service: a.Service, Score: a.Score,
			WindowShare: a.WindowShare, BaselineShare: a.BaselineShare, Aliases: []AliasJSON{}}
		for _, kv := range a.Aliases {
			aj.Aliases = append(aj.Aliases, AliasJSON{Key: kv.Key, Value: AnyJSON(kv.Value)})
		}
		out = append(out, aj)
	}
	return out
}

// AnyJSON is an attribute value as JSON of its own type: a string, a number
// or a bool; bytes in base64, arrays and key-value lists as JSON's own.
func AnyJSON(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		if math.IsInf(x.DoubleValue, 0) || math.IsNaN(x.DoubleValue) {
			return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64) // JSON has no such numbers
		}
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		a := []any{}
		for _, e := range x.ArrayValue.GetValues() {
			a = append(a, AnyJSON(e))
		}
		return a
	case *commonpb.AnyValue_KvlistValue:
		m := map[string]any{}
		for _, kv := range x.KvlistValue.GetValues() {
			m[kv.Key] = AnyJSON(kv.Value)
		}
		return m
	}
	return nil
}

// namesAttribute reports whether the cause's sentence names the first
// attribute: whether one of the leading ones passes
// traceanalysis.NamedScore.
func namesAttribute(attrs []AttributeScoreJSON) bool {
	for _, a := range attrs[:min(len(attrs), traceanalysis.NamedLead)] {
		if a.Score > traceanalysis.NamedScore {
			return true
		}
	}
	return false
}

// Cause is one sentence naming the most likely cause and its evidence.
func (d DiagnosisJSON) Cause(errorsMode bool) string {
	if d.Window.Traces == 0 || d.Baseline.Traces == 0 {
		return fmt.Sprintf("Too few traces to compare: %d in the window, %d in the baseline.", d.Window.Traces, d.Baseline.Traces)
	}
	if len(d.Operations) == 0 {
		if errorsMode {
			return "No operation is where failures originate more often than in the baseline."
		}
		return "No operation's time on the critical path grew from the baseline."
	}
	c := d.Operations[0]
	var b strings.Builder
	fmt.Fprintf(&b, "%s is the most likely cause: ", c.Name())
	switch {
	case errorsMode:
		fmt.Fprintf(&b, "failures originate in it in %.1f%% of traces (%.1f%% before)", 100**c.WindowOriginRate, 100**c.BaselineOriginRate)
	case c.Fallback != nil && c.BaselineFailedRate != nil && c.WindowFailedRate != nil:
		fb := CulpritJSON{Service: c.Fallback.Service, Operation: c.Fallback.Operation}
		fmt.Fprintf(&b, "it failed in %.1f%% of traces (%.1f%% before), and requests fell back to %s", 100**c.WindowFailedRate, 100**c.BaselineFailedRate, fb.Name())
		if i := slices.IndexFunc(d.Operations, func(o CulpritJSON) bool { return !o.Call && o.Service == fb.Service && o.Operation == fb.Operation }); i >= 0 {
			fmt.Fprintf(&b, ", whose time on the critical path grew from %s ms to %s ms per trace", roundMS(d.Operations[i].BaselineMS), roundMS(d.Operations[i].WindowMS))
		}
	case c.Call:
		fmt.Fprintf(&b, "its callers' wait on it outside its spans, on the network or in a queue on either side, grew on the critical path from %s ms to %s ms per trace",
			roundMS(c.BaselineMS), roundMS(c.WindowMS))
	default:
		fmt.Fprintf(&b, "its time on the critical path grew from %s ms to %s ms per trace", roundMS(c.BaselineMS), roundMS(c.WindowMS))
	}
	if !errorsMode && c.Fallback == nil {
		b.WriteString(cmp.Or(c.isNew(), c.reachedMoreOften(), c.ranMoreOften()))
	}
	selection := "slow"
	if errorsMode {
		selection = "failed"
	}
	switch {
	case d.WithinNoise:
		// Where the culprit may be noise, so are the traces it was slow
		// in, and a value they share would read as evidence.
	case !namesAttribute(d.Attributes):
		fmt.Fprintf(&b, "; no attribute sets the %s traces apart", selection)
	default:
		a := d.Attributes[0]
		fmt.Fprintf(&b, "; %.0f%% of %s traces have %s (%.0f%% before)", 100*a.WindowShare, selection, a.Name(), 100*a.BaselineShare)
		// Which of a version and a pod to suspect is the reader's call: say
		// when they coincide.
		if len(a.Aliases) > 0 {
			fmt.Fprintf(&b, ", exactly the traces with %s", a.Aliases[0])
			switch more := len(a.Aliases) - 1; {
			case more == 1:
				b.WriteString(" and 1 other value")
			case more > 1:
				fmt.Fprintf(&b, " and %d other values", more)
			}
		}
	}
	b.WriteString(".")
	if d.WithinNoise {
		b.WriteString(" But its growth is within sampling noise: the ranking may be noise.")
	}
	return b.String()
}

// ranMoreOften is a clause saying that the culprit's spans per trace grew
// by half or more, and by one or more, or nothing if they did not: a
// query run in a loop, once per item, is slower for running more often,
// not for being slower, which the time alone does not say.
func (c CulpritJSON) ranMoreOften() string {
	cb, cw, ok := c.callsPerTrace()
	if !ok || cw < 1.5*cb || cw-cb < 1 {
		return ""
	}
	return fmt.Sprintf(", and it ran %s times a trace (%s before)", roundCount(cw), roundCount(cb))
}

// isNew is a clause saying that no baseline trace ran the culprit, or
// nothing if one did: a call that a release added reads as a slowdown
// from 0 ms otherwise.
func (c CulpritJSON) isNew() string {
	cb, cw, ok := c.callsPerTrace()
	if !ok || cb > 0 || cw == 0 {
		return ""
	}
	return fmt.Sprintf(", and it is new: no baseline trace ran it, and the window's ran it %s times a trace", roundCount(cw))
}

// callsPerTrace are the culprit's spans per trace in the baseline and the
// window, if the answer has them (a server before they were counted, or a
// diagnosis of errors, gives none).
func (c CulpritJSON) callsPerTrace() (cb, cw float64, ok bool) {
	if c.BaselineCallsPerTrace == nil || c.WindowCallsPerTrace == nil {
		return 0, 0, false
	}
	return *c.BaselineCallsPerTrace, *c.WindowCallsPerTrace, true
}

// roundCount writes a count per trace to a tenth.
func roundCount(n float64) string {
	return strconv.FormatFloat(math.Round(n*10)/10, 'f', -1, 64)
}

// reachedMoreOften is a clause saying that most of the culprit's growth
// is that it is on the critical path of more traces, each time for about
// as long as before, or nothing if it is not: a shift in the mix of
// requests, which the reader should not take for a slowdown.
func (c CulpritJSON) reachedMoreOften() string {
	if c.BaselineOnPathRate == nil || c.WindowOnPathRate == nil {
		return ""
	}
	sb, sw := *c.BaselineOnPathRate, *c.WindowOnPathRate
	cb, cw, ok := c.callsPerTrace()
	if !ok {
		cb, cw = -1, -1 // not known: MostlyReach judges by the shares alone
	}
	if !traceanalysis.MostlyReach(c.BaselineMS, c.WindowMS, sb, sw, cb, cw) {
		return ""
	}
	eachB, eachW := c.BaselineMS/sb, c.WindowMS/sw
	return fmt.Sprintf(", most of it because more traces reach it: it is on the critical path of %.0f%% of traces (%.0f%% before), for %s ms each time (%s ms before)",
		100*sw, 100*sb, roundMS(eachW), roundMS(eachB))
}

// Name is the attribute as key=value on service.
func (a AttributeScoreJSON) Name() string {
	return fmt.Sprintf("%s=%s on %s", a.Key, valueText(a.Value), a.Service)
}

// AliasNames lists the attribute's aliases as key=value, comma-separated.
func (a AttributeScoreJSON) AliasNames() string {
	names := make([]string, len(a.Aliases))
	for i, alias := range a.Aliases {
		names[i] = alias.String()
	}
	return strings.Join(names, ", ")
}

// String is the alias as key=value.
func (a AliasJSON) String() string { return a.Key + "=" + valueText(a.Value) }

// valueText writes a value of AnyJSON's as a person reads it: a string as
// itself, anything else as JSON.
func valueText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// roundMS writes milliseconds with three significant digits, or more
// where the number needs them.
func roundMS(ms float64) string {
	switch {
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64)
	case ms >= 10:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	default:
		return strconv.FormatFloat(ms, 'f', 2, 64)
	}
}
