package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/grpctest"
	"cairn/query"
	"cairn/query/analysispb"
)

// TestHTTPAnalysisAPI checks that the analysis calls of the HTTP API
// answer what the gRPC ones answer for the same question, over the shop's
// traces.
func TestHTTPAnalysisAPI(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	shop := writeShop(t, s, false)
	conn := grpctest.Dial(t, s.queryAddr.String())
	ctx := context.Background()
	rfc := func(t time.Time) string { return url.QueryEscape(t.UTC().Format(time.RFC3339Nano)) }
	from, to := shop.base.Add(-time.Minute), shop.base.Add(3*time.Minute)
	// Span metrics and the service graph are written at the cut.
	waitFor(t, "the shop's span metrics and service graph", func() bool {
		m, err := analysispb.NewAnalysisClient(conn).GetSpanMetrics(ctx, &analysispb.GetSpanMetricsRequest{StartTime: timestamppb.New(from), EndTime: timestamppb.New(to),
			SpanKinds: []analysispb.SpanKind{analysispb.SpanKind_SPAN_KIND_SERVER}})
		g, gerr := analysispb.NewAnalysisClient(conn).GetServiceGraph(ctx, &analysispb.GetServiceGraphRequest{StartTime: timestamppb.New(from), EndTime: timestamppb.New(to)})
		calls := uint64(0)
		for _, se := range m.GetSeries() {
			for _, p := range se.Points {
				calls += p.Calls
			}
		}
		return err == nil && gerr == nil && calls == 2*shopCount && len(g.Edges) > 0
	})

	// The critical path of each trace, span for span.
	for _, id := range shop.ids {
		raw, _ := hex.DecodeString(id)
		want, err := analysispb.NewRootCauseClient(conn).CriticalPath(ctx, &analysispb.CriticalPathRequest{TraceId: raw})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			DurationMS float64 `json:"duration_ms"`
			Segments   []struct {
				SpanID             string `json:"span_id"`
				Service, Operation string
				Start              string `json:"start_unix_nano"`
			}
			Operations []struct {
				Service, Operation string
				SelfMS             float64 `json:"self_ms"`
			}
		}
		apiGet(t, s, "/api/v1/traces/"+id+"/critical-path", &got)
		if got.DurationMS != want.DurationMs || len(got.Segments) != len(want.Segments) || len(got.Operations) != len(want.Operations) || len(got.Segments) == 0 {
			t.Fatalf("critical path of %s: %+v, gRPC %v", id, got, want)
		}
		for i, sg := range want.Segments {
			g := got.Segments[i]
			if g.SpanID != hex.EncodeToString(sg.SpanId) || g.Service != sg.Service || g.Operation != sg.Operation || g.Start != fmt.Sprint(sg.StartUnixNano) {
				t.Errorf("critical path of %s, segment %d: %+v, gRPC %v", id, i, g, sg)
			}
		}
		for i, o := range want.Operations {
			if g := got.Operations[i]; g.Service != o.Service || g.Operation != o.Operation || g.SelfMS != o.SelfMs {
				t.Errorf("critical path of %s, operation %d: %+v, gRPC %v", id, i, g, o)
			}
		}
	}

	// Span metrics: each series' calls and errors, step for step; by
	// service, the sums of its operations.
	type point struct {
		Time          string
		Calls, Errors uint64
	}
	type series struct {
		Service, Operation string
		SpanKind           string `json:"span_kind"`
		Points             []point
	}
	var byOp, byService struct{ Series []series }
	window := "start=" + rfc(from) + "&end=" + rfc(to)
	apiGet(t, s, "/api/v1/span-metrics?"+window+"&step=2m", &byOp)
	want, err := analysispb.NewAnalysisClient(conn).GetSpanMetrics(ctx, &analysispb.GetSpanMetricsRequest{
		StartTime: timestamppb.New(from), EndTime: timestamppb.New(to), Step: durationpb.New(2 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(byOp.Series) != len(want.Series) || len(want.Series) < 4 {
		t.Fatalf("span metrics: %d series, gRPC %d", len(byOp.Series), len(want.Series))
	}
	sums := map[string]uint64{}
	for i, ws := range want.Series {
		g := byOp.Series[i]
		if g.Service != ws.Service || g.Operation != ws.Operation || len(g.Points) != len(ws.Points) {
			t.Fatalf("span metrics series %d: %+v, gRPC %v", i, g, ws)
		}
		for j, p := range ws.Points {
			if gp := g.Points[j]; gp.Calls != p.Calls || gp.Errors != p.Errors || gp.Time != p.Time.AsTime().UTC().Format(time.RFC3339) {
				t.Errorf("span metrics %s/%s point %d: %+v, gRPC %v", g.Service, g.Operation, j, gp, p)
			}
			if g.SpanKind == "server" {
				sums[g.Service] += p.Calls
			}
		}
	}
	apiGet(t, s, "/api/v1/span-metrics?"+window+"&step=10m&by=service&span_kind=server&span_kind=consumer", &byService)
	got := map[string]uint64{}
	for _, se := range byService.Series {
		if se.Operation != "" || len(se.Points) != 1 {
			t.Errorf("by service: %+v", se)
		}
		got[se.Service] = se.Points[0].Calls
	}
	if want := map[string]uint64{"checkout": shopCount, "payments": shopCount}; fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(sums) != fmt.Sprint(want) {
		t.Errorf("server calls by service: %v; summed over operations: %v; want %v", got, sums, want)
	}

	// The service graph, edge for edge.
	var graph struct {
		Edges []struct {
			Parent, Child string
			Calls, Errors uint64
		}
	}
	apiGet(t, s, "/api/v1/service-graph?"+window, &graph)
	wantGraph, err := analysispb.NewAnalysisClient(conn).GetServiceGraph(ctx, &analysispb.GetServiceGraphRequest{StartTime: timestamppb.New(from), EndTime: timestamppb.New(to)})
	if err != nil {
		t.Fatal(err)
	}
	if len(graph.Edges) != len(wantGraph.Edges) {
		t.Fatalf("service graph: %+v, gRPC %v", graph.Edges, wantGraph.Edges)
	}
	for i, e := range wantGraph.Edges {
		if g := graph.Edges[i]; g.Parent != e.Parent || g.Child != e.Child || g.Calls != e.Calls || g.Errors != e.Errors {
			t.Errorf("edge %d: %+v, gRPC %v", i, g, e)
		}
	}

	// A diagnosis: the JSON of cairn diagnose, its sentence, and the
	// latencies of the operation's spans in both samples.
	mid := shop.base.Add(60 * time.Second)
	var diag struct {
		query.DiagnosisJSON
		Cause   string
		Latency struct {
			BoundsMS         []float64 `json:"bounds_ms"`
			Window, Baseline []int
		}
	}
	apiGet(t, s, "/api/v1/diagnose?service=checkout&operation=GET+/checkout&start="+rfc(mid)+"&end="+rfc(mid.Add(time.Minute)), &diag)
	resp, err := analysispb.NewRootCauseClient(conn).Diagnose(ctx, &analysispb.DiagnoseRequest{Service: "checkout", Operation: "GET /checkout",
		StartTime: timestamppb.New(mid), EndTime: timestamppb.New(mid.Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	wantDiag := query.DiagnosisFromAPI(resp, false)
	if jsonText(t, diag.DiagnosisJSON) != jsonText(t, wantDiag) || diag.Cause != wantDiag.Cause(false) {
		t.Errorf("diagnosis:\n%+v\n%q\ngRPC:\n%+v", diag.DiagnosisJSON, diag.Cause, wantDiag)
	}
	// And of failures: the origin rates are there, and the sentence says so.
	var failing struct {
		query.DiagnosisJSON
		Cause string
	}
	apiGet(t, s, "/api/v1/diagnose?service=checkout&operation=GET+/checkout&errors=true&start="+rfc(mid)+"&end="+rfc(mid.Add(time.Minute)), &failing)
	resp, err = analysispb.NewRootCauseClient(conn).Diagnose(ctx, &analysispb.DiagnoseRequest{Service: "checkout", Operation: "GET /checkout", Errors: true,
		StartTime: timestamppb.New(mid), EndTime: timestamppb.New(mid.Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	if wantDiag := query.DiagnosisFromAPI(resp, true); jsonText(t, failing.DiagnosisJSON) != jsonText(t, wantDiag) || failing.Cause != wantDiag.Cause(true) {
		t.Errorf("diagnosis of failures:\n%+v\n%q\ngRPC:\n%+v", failing.DiagnosisJSON, failing.Cause, wantDiag)
	}
	sum := func(xs []int) (n int) {
		for _, x := range xs {
			n += x
		}
		return n
	}
	if sum(diag.Latency.Window) != diag.Window.Traces || sum(diag.Latency.Baseline) != diag.Baseline.Traces ||
		diag.Window.Traces != 6 || len(diag.Latency.BoundsMS) != len(diag.Latency.Window)+1 || !slices.IsSorted(diag.Latency.BoundsMS) {
		t.Errorf("latency histograms %+v of %d and %d traces, want 6 each", diag.Latency, diag.Window.Traces, diag.Baseline.Traces)
	}

	// Where the window's checkouts spent their time: the JSON of cairn
	// critical-path --service.
	var paths query.CriticalPathsJSON
	apiGet(t, s, "/api/v1/critical-paths?service=checkout&operation=GET+/checkout&start="+rfc(mid)+"&end="+rfc(mid.Add(time.Minute)), &paths)
	pathsResp, err := analysispb.NewRootCauseClient(conn).CriticalPaths(ctx, &analysispb.CriticalPathsRequest{Service: "checkout", Operation: "GET /checkout",
		StartTime: timestamppb.New(mid), EndTime: timestamppb.New(mid.Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	if want := query.CriticalPathsFromAPI("checkout", "GET /checkout", mid, mid.Add(time.Minute), pathsResp); jsonText(t, paths) != jsonText(t, want) || paths.Traces != 6 || len(paths.Operations) == 0 {
		t.Errorf("critical paths:\n%+v\ngRPC:\n%+v", paths, want)
	}

	m := scrape(t, http.DefaultClient, "http://"+s.httpAddr.String(), nil)
	for _, method := range []string{"http_critical_path", "http_span_metrics", "http_service_graph", "http_diagnose", "http_critical_paths"} {
		if metricValue(t, m, "cairn_query_duration_seconds", "method", method, "code", "OK") == 0 {
			t.Errorf("no call of %s timed", method)
		}
	}
	for _, c := range []struct {
		path string
		code int
		want apiError
	}{
		{"/api/v1/traces/0102030405060708090a0b0c0d0e0f10/critical-path", 404, apiError{"trace 0102030405060708090a0b0c0d0e0f10 not found", "NotFound"}},
		{"/api/v1/span-metrics?by=host", 400, apiError{`by "host" is not service or operation`, "InvalidArgument"}},
		{"/api/v1/span-metrics?span_kind=odd", 400, apiError{`unknown span_kind "odd": want server, client, producer, consumer or internal`, "InvalidArgument"}},
		{"/api/v1/span-metrics?step=90s", 400, apiError{"step 1m30s is not a whole number of minutes", "InvalidArgument"}},
		{"/api/v1/span-metrics?shape_names=maybe", 400, apiError{`shape_names "maybe" is not true or false`, "InvalidArgument"}},
		{"/api/v1/diagnose?service=a&operation=b&since=1h&errors=maybe", 400, apiError{`errors "maybe" is not true or false`, "InvalidArgument"}},
		{"/api/v1/service-graph?since=-1h", 400, apiError{`since "-1h" is not a positive duration such as 15m or 1h`, "InvalidArgument"}},
		{"/api/v1/service-graph?quantile=high", 400, apiError{`quantile "high" is not a number`, "InvalidArgument"}},
		{"/api/v1/diagnose?service=checkout", 400, apiError{"service and operation are required", "InvalidArgument"}},
		{"/api/v1/diagnose?service=a&operation=b&since=1h&sample=0", 400, apiError{`sample "0" is not a positive number`, "InvalidArgument"}},
		{"/api/v1/diagnose?service=a&operation=b&since=1h&sample=10001", 400, apiError{"sample 10001 is over the maximum of 10000", "InvalidArgument"}},
		{"/api/v1/critical-paths?service=checkout&since=1h", 400, apiError{"service and operation are required", "InvalidArgument"}},
		{"/api/v1/critical-paths?service=a&operation=b", 400, apiError{"start_time and end_time are required", "InvalidArgument"}},
		{"/api/v1/critical-paths?service=a&operation=b&start=2026-01-01T00:00:00Z&end=2026-01-01T00:00:00Z", 400, apiError{"start_time 2026-01-01T00:00:00Z is not before end_time 2026-01-01T00:00:00Z", "InvalidArgument"}},
		{"/api/v1/critical-paths?service=a&operation=b&since=1h&sample=x", 400, apiError{`sample "x" is not a positive number`, "InvalidArgument"}},
		{"/api/v1/critical-paths?service=a&operation=b&since=1h&limit=3", 400, apiError{`unknown parameter "limit": this call takes [service operation start end since sample]`, "InvalidArgument"}},
	} {
		var got apiError
		if code := apiGet(t, s, c.path, &got); code != c.code || got != c.want {
			t.Errorf("GET %s: %d %+v, want %d %+v", c.path, code, got, c.code, c.want)
		}
	}
}

// jsonText is v as JSON, which compares what pointers point to.
func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
