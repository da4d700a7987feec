package query

import (
	"math"
	"time"

	traceanalysis "cairn/query/analysis"
	"cairn/query/analysispb"
)

// CriticalPathsResponse sums up the critical paths of an operation's
// spans in a window's traces, as RootCause/CriticalPaths answers.
func CriticalPathsResponse(paths []traceanalysis.Path) *analysispb.CriticalPathsResponse {
	resp := &analysispb.CriticalPathsResponse{Traces: int32(len(paths))}
	for _, p := range paths {
		resp.MeanMs += float64(p.End-p.Start) / 1e6 / float64(len(paths))
	}
	for _, o := range traceanalysis.AggregatePaths(paths) {
		resp.Operations = append(resp.Operations, &analysispb.OperationPathStats{Service: o.Service, Operation: o.Operation,
			Traces: int32(o.Traces), MeanMs: o.Mean / 1e6, P50Ms: o.P50 / 1e6, P95Ms: o.P95 / 1e6, Share: o.Share,
			SpanNames: int32(min(o.Names, math.MaxInt32))})
	}
	return resp
}

// CriticalPathsJSON is where an operation's time went in a window, as GET
// /api/v1/critical-paths and `cairn critical-path --service S --operation
// O … --format json` write it.
type CriticalPathsJSON struct {
	Service    string              `json:"service"`
	Operation  string              `json:"operation"`
	Start      string              `json:"start"`
	End        string              `json:"end"`
	Traces     int                 `json:"traces"`
	MeanMS     float64             `json:"mean_ms"`
	Operations []OperationPathJSON `json:"operations"`
	// LeftOut: traces found but left out of the sample, as the API's
	// CriticalPathsResponse.left_out says.
	LeftOut int `json:"left_out,omitempty"`
}

// OperationPathJSON is an operation's self time on the critical paths.
type OperationPathJSON struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	Traces    int     `json:"traces"`
	MeanMS    float64 `json:"mean_ms"`
	P50MS     float64 `json:"p50_ms"`
	P95MS     float64 `json:"p95_ms"`
	Share     float64 `json:"share"`
	// SpanNames: the operation is the shape of this many span names that
	// differ only in their literals; 0 for one name.
	SpanNames int `json:"span_names,omitempty"`
}

// Name is the operation as service: operation, and how many span names it
// stands for, if many.
func (o OperationPathJSON) Name() string { return operationName(o.Service, o.Operation, o.SpanNames) }

// CriticalPathsFromAPI is resp, the critical paths of service's operation
// in [start, end), as JSON.
func CriticalPathsFromAPI(service, operation string, start, end time.Time, resp *analysispb.CriticalPathsResponse) CriticalPathsJSON {
	out := CriticalPathsJSON{Service: service, Operation: operation, Start: start.UTC().Format(time.RFC3339Nano),
		End: end.UTC().Format(time.RFC3339Nano), Traces: int(resp.GetTraces()), MeanMS: resp.GetMeanMs(), Operations: []OperationPathJSON{},
		LeftOut: int(resp.GetLeftOut())}
	for _, o := range resp.GetOperations() {
		out.Operations = append(out.Operations, OperationPathJSON{Service: o.Service, Operation: o.Operation, Traces: int(o.Traces),
			MeanMS: o.MeanMs, P50MS: o.P50Ms, P95MS: o.P95Ms, Share: o.Share, SpanNames: int(o.SpanNames)})
	}
	return out
}
