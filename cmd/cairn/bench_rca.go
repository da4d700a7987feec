package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/bench"
	"cairn/internal/access"
	"cairn/query"
	"cairn/query/analysis"
	"cairn/query/jaegerpb"
)

// rcaOptions are the flags of `cairn bench --rca`.
type rcaOptions struct {
	target, reader             string // empty for an embedded cairn
	targetAccess, readerAccess access.Client
	traces                     int // per window and scenario
	sample                     int // traces a diagnosis reads of each window
	seed                       uint64
	settle                     time.Duration // pause before the diagnoses
}

// rcaRow is one scenario's line of the report.
type rcaRow struct {
	Scenario       string  `json:"scenario"`
	Description    string  `json:"description"`
	Mode           string  `json:"mode"`
	Culprit        string  `json:"culprit"`
	OperationRank  int     `json:"operation_rank"`
	Attribute      string  `json:"attribute,omitempty"`
	AttributeRank  int     `json:"attribute_rank"`
	FalseAttribute string  `json:"false_attribute,omitempty"`
	WindowTraces   int     `json:"window_traces"`
	BaselineTraces int     `json:"baseline_traces"`
	Seconds        float64 `json:"seconds"`
}

type rcaReport struct {
	TracesPerWindow int      `json:"traces_per_window"`
	Sample          int      `json:"sample"`
	Scenarios       []rcaRow `json:"scenarios"`
	OperationsTop1  int      `json:"operations_top1"`
	OperationsTop3  int      `json:"operations_top3"`
	WithAttribute   int      `json:"with_attribute"`
	AttributesTop1  int      `json:"attributes_top1"`
	AttributesTop3  int      `json:"attributes_top3"`
	FalseAttributes int      `json:"false_attributes"`
	MaxSeconds      float64  `json:"max_seconds"`
}

// benchRCA writes each scenario's baseline and fault window into a cairn,
// an embedded one unless o names one, diagnoses each as `cairn diagnose`
// does (on the server, if it serves cairn.analysis.v1.RootCause), and
// reports how well each was named.
func benchRCA(ctx context.Context, o rcaOptions, jsonOut bool, stdout io.Writer) error {
	var activity func() (int64, error)
	if o.target == "" {
		c, dir, done, err := startEmbedded("cairn-rca-")
		if err != nil {
			return err
		}
		defer done()
		o.target, o.reader = c.otlpAddr, c.queryAddr
		activity = func() (int64, error) { return dirSize(dir) }
	}
	ingest, err := dialQuery(o.target, o.targetAccess)
	if err != nil {
		return err
	}
	defer ingest.Close()
	read, err := dialQuery(o.reader, o.readerAccess)
	if err != nil {
		return err
	}
	defer read.Close()
	exporter := collectorpb.NewTraceServiceClient(ingest)
	reader := jaegerpb.NewTraceReaderClient(read)

	// Scenarios lie side by side in the past, each a baseline of 10
	// minutes then a window of 10, a minute apart.
	const window = 10 * time.Minute
	now := time.Now().Truncate(time.Second)
	scenarios := bench.RCAScenarios()
	spans := make([][2]timeRange, len(scenarios))
	for i, s := range scenarios {
		end := now.Add(-time.Duration(i) * (2*window + time.Minute))
		spans[i] = [2]timeRange{{end.Add(-window), end}, {end.Add(-2 * window), end.Add(-window)}}
		for side, faulty := range []bool{true, false} {
			if err := exportTraffic(ctx, exporter, s, o.seed+uint64(4*i+side), o.traces, spans[i][side], faulty); err != nil {
				return err
			}
		}
	}
	if err := awaitSearchable(ctx, reader, spans[len(spans)-1][1]); err != nil {
		return err
	}
	// Diagnoses are timed once the store has done the work the writes
	// left, as settled reads are.
	if err := bench.Settle(ctx, o.settle, activity); err != nil {
		return err
	}

	rep := rcaReport{TracesPerWindow: o.traces, Sample: o.sample}
	for i, s := range scenarios {
		began := time.Now()
		out, err := diagnoseOn(ctx, read, &analysis.DiagnoseOptions{Service: bench.RCARootService, Operation: bench.RCARootOperation, Errors: s.Errors},
			spans[i][0], spans[i][1], o.sample)
		if err != nil {
			return fmt.Errorf("diagnose %s: %w", s.Name, err)
		}
		took := time.Since(began)
		var ops []bench.RCAOperation
		for _, c := range out.Operations {
			ops = append(ops, bench.RCAOperation{Service: c.Service, Operation: c.Operation, Call: c.Call})
		}
		var attrs []bench.RCAAttribute
		for _, a := range out.Attributes {
			ra := bench.RCAAttribute{Service: a.Service, Key: a.Key, Value: fmt.Sprint(a.Value), Score: a.Score}
			for _, alias := range a.Aliases {
				ra.Aliases = append(ra.Aliases, alias.String())
			}
			attrs = append(attrs, ra)
		}
		r := s.Evaluate(ops, attrs)
		row := rcaRow{Scenario: s.Name, Description: s.Description, Mode: "latency", Culprit: query.CulpritJSON{Service: s.CulpritService, Operation: s.CulpritOperation, Call: s.CulpritCall}.Name(),
			OperationRank: r.OperationRank, AttributeRank: r.AttributeRank, FalseAttribute: r.FalseAttribute,
			WindowTraces: out.Window.Traces, BaselineTraces: out.Baseline.Traces, Seconds: took.Seconds()}
		if s.Errors {
			row.Mode = "errors"
		}
		if s.AttrKey != "" {
			row.Attribute = fmt.Sprintf("%s=%s on %s", s.AttrKey, s.AttrValue, s.AttrService)
		}
		rep.add(row)
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.writeTable(stdout)
	return nil
}

func (rep *rcaReport) add(r rcaRow) {
	rep.Scenarios = append(rep.Scenarios, r)
	if r.OperationRank == 1 {
		rep.OperationsTop1++
	}
	if r.OperationRank >= 1 && r.OperationRank <= 3 {
		rep.OperationsTop3++
	}
	if r.AttributeRank >= 0 {
		rep.WithAttribute++
	}
	if r.AttributeRank == 1 {
		rep.AttributesTop1++
	}
	if r.AttributeRank >= 1 && r.AttributeRank <= 3 {
		rep.AttributesTop3++
	}
	if r.FalseAttribute != "" {
		rep.FalseAttributes++
	}
	rep.MaxSeconds = max(rep.MaxSeconds, r.Seconds)
}

func (rep *rcaReport) writeTable(w io.Writer) {
	rank := func(r int) string {
		switch r {
		case -1:
			return "none"
		case 0:
			return "missed"
		}
		return fmt.Sprint(r)
	}
	fmt.Fprintf(w, "%d traces per window and scenario, diagnosed from a sample of at most %d a window\n\n", rep.TracesPerWindow, rep.Sample)
	fmt.Fprintf(w, "%-20s %-7s %-38s %4s  %-44s %6s  %8s\n", "scenario", "mode", "culprit", "rank", "attribute", "rank", "time s")
	for _, r := range rep.Scenarios {
		attr := r.Attribute
		if r.FalseAttribute != "" {
			attr = "named wrongly: " + r.FalseAttribute
		}
		fmt.Fprintf(w, "%-20s %-7s %-38s %4s  %-44s %6s  %8.3f\n", r.Scenario, r.Mode, truncate(r.Culprit, 38), rank(r.OperationRank),
			truncate(attr, 44), rank(r.AttributeRank), r.Seconds)
	}
	fmt.Fprintf(w, "\noperations: top-1 %d/%d, top-3 %d/%d; attributes: top-1 %d/%d, top-3 %d/%d; attributes named where none is at fault: %d; slowest diagnosis %.3f s\n",
		rep.OperationsTop1, len(rep.Scenarios), rep.OperationsTop3, len(rep.Scenarios), rep.AttributesTop1, rep.WithAttribute,
		rep.AttributesTop3, rep.WithAttribute, rep.FalseAttributes, rep.MaxSeconds)
}

// exportTraffic sends n traces of s over r, faulty or not, in requests of
// at most 250 traces.
func exportTraffic(ctx context.Context, client collectorpb.TraceServiceClient, s bench.RCAScenario, seed uint64, n int, r timeRange, faulty bool) error {
	const per = 250
	requests := (n + per - 1) / per
	step := r.end.Sub(r.start) / time.Duration(requests)
	for i := range requests {
		count := min(per, n-i*per)
		from := r.start.Add(time.Duration(i) * step)
		rss := s.RCATraffic(seed*1000+uint64(i), count, from, from.Add(step), faulty)
		if _, err := client.Export(ctx, &collectorpb.ExportTraceServiceRequest{ResourceSpans: rss}); err != nil {
			return fmt.Errorf("export %s: %w", s.Name, err)
		}
	}
	return nil
}

// awaitSearchable waits until a search finds a trace in r, the window
// written last.
func awaitSearchable(ctx context.Context, client jaegerpb.TraceReaderClient, r timeRange) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.FindTraceIDs(ctx, &jaegerpb.FindTraceIDsRequest{Query: &jaegerpb.TraceQueryParameters{
			ServiceName: bench.RCARootService, OperationName: bench.RCARootOperation, SearchDepth: 1,
			StartTimeMin: timestamppb.New(r.start), StartTimeMax: timestamppb.New(r.end),
		}})
		if err == nil && len(resp.TraceIds) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("traces written are not searchable after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
