package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query/analysispb"
)

// depsJSON is `cairn deps --format json`.
type depsJSON struct {
	Edges []edgeJSON `json:"edges"`
}

type edgeJSON struct {
	Parent  string  `json:"parent"`
	Child   string  `json:"child"`
	Calls   uint64  `json:"calls"`
	Errors  uint64  `json:"errors"`
	P50MS   float64 `json:"p50_ms"`
	P99MS   float64 `json:"p99_ms"`
	Virtual bool    `json:"virtual"`
}

func depsCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("deps")
	qf := addQueryFlags(fs)
	win := addWindowFlags(fs, time.Hour)
	format := fs.String("format", "table", "output format: table, dot (Graphviz) or json")
	if _, err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *format != "table" && *format != "dot" && *format != "json" {
		return usagef("unknown format %q: want table, dot or json", *format)
	}
	start, end, err := win.window(fs, time.Now())
	if err != nil {
		return err
	}
	ctx, client, done, err := qf.connectAnalysis()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.GetServiceGraph(ctx, &analysispb.GetServiceGraphRequest{
		StartTime: timestamppb.New(start), EndTime: timestamppb.New(end), Quantiles: []float64{0.5, 0.99}})
	if err != nil {
		return qf.rpcError(err)
	}
	out := toDepsJSON(resp)
	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "dot":
		return writeDepsDot(stdout, out)
	}
	return writeDepsTable(stdout, out)
}

func toDepsJSON(resp *analysispb.GetServiceGraphResponse) depsJSON {
	out := depsJSON{Edges: []edgeJSON{}}
	for _, e := range resp.GetEdges() {
		out.Edges = append(out.Edges, edgeJSON{Parent: e.Parent, Child: e.Child, Calls: e.Calls, Errors: e.Errors, Virtual: e.Virtual,
			P50MS: quantileMS(e.Quantiles, 0.5), P99MS: quantileMS(e.Quantiles, 0.99)})
	}
	return out
}

// writeDepsTable prints a row per edge; a peer that sends no spans is
// marked virtual.
func writeDepsTable(w io.Writer, d depsJSON) error {
	if len(d.Edges) == 0 {
		_, err := fmt.Fprintln(w, "no calls between services in the window")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARENT\tCHILD\tCALLS\tERRORS\tP50 MS\tP99 MS")
	for _, e := range d.Edges {
		child := e.Child
		if e.Virtual {
			child += " (virtual)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", e.Parent, child, e.Calls, e.Errors, fmt3(e.P50MS), fmt3(e.P99MS))
	}
	return tw.Flush()
}

// writeDepsDot prints the graph in Graphviz's dot language: an edge per
// parent and child labelled with its calls, errors and latency, dashed to
// a peer that sends no spans, which is drawn dashed too unless spans of it
// were paired as well.
func writeDepsDot(w io.Writer, d depsJSON) error {
	fmt.Fprintln(w, "digraph services {")
	fmt.Fprintln(w, "  node [shape=box];")
	real, virtual := map[string]bool{}, map[string]bool{}
	for _, e := range d.Edges {
		real[e.Parent] = true
		if !e.Virtual {
			real[e.Child] = true
		}
	}
	for _, e := range d.Edges {
		if e.Virtual && !real[e.Child] && !virtual[e.Child] {
			virtual[e.Child] = true
			fmt.Fprintf(w, "  %s [style=dashed];\n", strconv.Quote(e.Child))
		}
	}
	for _, e := range d.Edges {
		style := ""
		if e.Virtual {
			style = ", style=dashed"
		}
		label := fmt.Sprintf("%d calls, %d errors\\np50 %s ms, p99 %s ms", e.Calls, e.Errors, fmt3(e.P50MS), fmt3(e.P99MS))
		fmt.Fprintf(w, "  %s -> %s [label=\"%s\"%s];\n", strconv.Quote(e.Parent), strconv.Quote(e.Child), label, style)
	}
	_, err := fmt.Fprintln(w, "}")
	return err
}
