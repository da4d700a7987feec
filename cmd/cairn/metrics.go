package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query/analysispb"
)

// connectAnalysis returns a cairn.analysis.v1 client of the server and a
// context bounded by the timeout; done releases both.
func (qf queryFlags) connectAnalysis() (ctx context.Context, client analysispb.AnalysisClient, done func(), err error) {
	conn, err := dialQuery(*qf.addr, *qf.access)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *qf.timeout)
	return ctx, analysispb.NewAnalysisClient(conn), func() { cancel(); conn.Close() }, nil
}

// windowFlags are --since, --start and --end of the commands that read
// aggregates over a window.
type windowFlags struct {
	since      *time.Duration
	start, end *string
}

func addWindowFlags(fs *flag.FlagSet, defaultSince time.Duration) windowFlags {
	return windowFlags{
		since: fs.Duration("since", defaultSince, "the window: this long before now (or give --start and --end)"),
		start: fs.String("start", "", "start of the window, an RFC 3339 time"),
		end:   fs.String("end", "", "end of the window, an RFC 3339 time (default now)"),
	}
}

// window returns the window the flags give; --start or --end replace the
// default --since.
func (w windowFlags) window(fs *flag.FlagSet, now time.Time) (start, end time.Time, err error) {
	sinceSet := false
	fs.Visit(func(f *flag.Flag) { sinceSet = sinceSet || f.Name == "since" })
	if sinceSet && (*w.start != "" || *w.end != "") {
		return start, end, usagef("give --since or --start/--end, not both")
	}
	if *w.start == "" && *w.end == "" {
		if *w.since <= 0 {
			return start, end, usagef("--since %v is not positive", *w.since)
		}
		return now.Add(-*w.since), now, nil
	}
	end = now
	for _, b := range []struct {
		flag, s string
		dst     *time.Time
	}{{"start", *w.start, &start}, {"end", *w.end, &end}} {
		if b.s == "" {
			continue
		}
		if *b.dst, err = parseTime(b.flag, b.s); err != nil {
			return start, end, err
		}
	}
	if *w.start == "" {
		start = end.Add(-*w.since)
	}
	if !start.Before(end) {
		return start, end, usagef("--start %s is not before --end %s", start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	return start, end, nil
}

// quantileMS is the duration of quantile q among qs in milliseconds, to
// the microsecond (quantiles are within 1%, so finer digits would be
// noise), or 0 if qs has none for q.
func quantileMS(qs []*analysispb.Quantile, q float64) float64 {
	for _, x := range qs {
		if x.Quantile == q {
			return math.Round(x.DurationMs*1000) / 1000
		}
	}
	return 0
}

// kindNames are Jaeger's lower-case names of OTLP span kinds.
var kindNames = [...]string{"unspecified", "internal", "server", "client", "producer", "consumer"}

// metricsJSON is `cairn metrics --format json`.
type metricsJSON struct {
	Series []seriesJSON `json:"series"`
}

type seriesJSON struct {
	Service   string `json:"service"`
	Operation string `json:"operation"`
	SpanKind  string `json:"span_kind"`
	Overflow  bool   `json:"overflow"`
	// SpanNames: the operation is the shape of this many of the service's
	// span names (--shape-names); 0 for one name.
	SpanNames int         `json:"span_names,omitempty"`
	Points    []pointJSON `json:"points"`
}

type pointJSON struct {
	Time      string   `json:"time"`
	Calls     uint64   `json:"calls"`
	Errors    uint64   `json:"errors"`
	P50MS     float64  `json:"p50_ms"`
	P95MS     float64  `json:"p95_ms"`
	P99MS     float64  `json:"p99_ms"`
	Exemplars []string `json:"exemplars"`
}

func metricsCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("metrics")
	qf := addQueryFlags(fs)
	win := addWindowFlags(fs, time.Hour)
	operation := fs.String("operation", "", "only spans of this name")
	kind := fs.String("kind", "", "only spans of this kind: server, client, producer, consumer, internal or unspecified")
	step := fs.Duration("step", time.Minute, "one point per step, a whole number of minutes; as long as the window for one point")
	format := fs.String("format", "table", "output format: table or json")
	shapeNames := fs.Bool("shape-names", false, "one series for a service's span names that differ only in their literals (SQL with its values, paths with IDs), 10 or more of one shape, named by the shape")
	by := fs.String("by", "operation", "a series per operation and kind, or per service (all its operations and the kinds asked for, one series); every service's without SERVICE")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	start, end, err := win.window(fs, time.Now())
	if err != nil {
		return err
	}
	req := &analysispb.GetSpanMetricsRequest{Operation: *operation, ByService: *by == "service", ShapeNames: *shapeNames,
		StartTime: timestamppb.New(start), EndTime: timestamppb.New(end), Step: durationpb.New(*step)}
	if len(pos) > 0 {
		req.Service = pos[0]
	}
	switch {
	case *by != "operation" && *by != "service":
		return usagef("--by %q is not operation or service", *by)
	case len(pos) == 0 && !req.ByService:
		return usagef("give a SERVICE, or --by service for every service")
	case *format != "table" && *format != "json":
		return usagef("unknown format %q: want table or json", *format)
	case *step < time.Minute || *step%time.Minute != 0:
		return usagef("--step %v is not a whole number of minutes", *step)
	case *kind != "":
		k := slices.Index(kindNames[:], *kind)
		if k < 0 {
			return usagef("unknown span kind %q: want server, client, producer, consumer, internal or unspecified", *kind)
		}
		req.SpanKinds = []analysispb.SpanKind{analysispb.SpanKind(k)}
	}
	ctx, client, done, err := qf.connectAnalysis()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.GetSpanMetrics(ctx, req)
	if err != nil {
		return qf.rpcError(err)
	}
	out := toMetricsJSON(resp, req.ByService)
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	from := start.Truncate(time.Minute)
	to := end.Truncate(time.Minute)
	if to.Before(end) {
		to = to.Add(time.Minute)
	}
	return writeMetricsTable(stdout, out, from, to, *step)
}

// toMetricsJSON is resp as JSON; a series by service has no kind.
func toMetricsJSON(resp *analysispb.GetSpanMetricsResponse, byService bool) metricsJSON {
	out := metricsJSON{Series: []seriesJSON{}}
	for _, s := range resp.GetSeries() {
		sj := seriesJSON{Service: s.Service, Operation: s.Operation, SpanKind: kindNames[s.SpanKind], Overflow: s.Overflow,
			SpanNames: int(s.SpanNames), Points: []pointJSON{}}
		if s.Overflow && s.Service == "" || byService {
			sj.SpanKind = ""
		}
		for _, p := range s.Points {
			pj := pointJSON{Time: p.Time.AsTime().UTC().Format(time.RFC3339), Calls: p.Calls, Errors: p.Errors, Exemplars: []string{}}
			pj.P50MS, pj.P95MS, pj.P99MS = quantileMS(p.Quantiles, 0.5), quantileMS(p.Quantiles, 0.95), quantileMS(p.Quantiles, 0.99)
			for _, e := range append(p.Slowest, p.Failing...) {
				if id := hex.EncodeToString(e.TraceId); !slices.Contains(pj.Exemplars, id) {
					pj.Exemplars = append(pj.Exemplars, id)
				}
			}
			sj.Points = append(sj.Points, pj)
		}
		out.Series = append(out.Series, sj)
	}
	return out
}

// writeMetricsTable prints each series under a heading with sparklines of
// its calls and p99 over the window, then a row per step with calls.
func writeMetricsTable(w io.Writer, m metricsJSON, from, to time.Time, step time.Duration) error {
	if len(m.Series) == 0 {
		_, err := fmt.Fprintln(w, "no spans in the window")
		return err
	}
	steps := int((to.Sub(from) + step - 1) / step)
	for i, s := range m.Series {
		if i > 0 {
			fmt.Fprintln(w)
		}
		calls := make([]float64, steps)
		p99 := make([]float64, steps)
		for _, p := range s.Points {
			t, _ := time.Parse(time.RFC3339, p.Time)
			if j := int(t.Sub(from) / step); j >= 0 && j < steps {
				calls[j], p99[j] = float64(p.Calls), p.P99MS
			}
		}
		name := s.Service + ": " + s.Operation + " (" + s.SpanKind + ")"
		if s.SpanNames > 0 {
			name += fmt.Sprintf(" (%d span names)", s.SpanNames)
		}
		switch {
		case s.SpanKind == "" && !s.Overflow: // a service's, by service
			name = s.Service
		case s.Overflow && s.Service != "":
			name = s.Service + ": (overflow: operations past the server's --span-metrics-max-series) (" + s.SpanKind + ")"
		case s.Overflow:
			name = "(overflow: series past the server's --span-metrics-max-series)"
		}
		fmt.Fprintln(w, name)
		fmt.Fprintf(w, "  calls %s\n  p99   %s\n", sparkline(narrow(calls, sum)), sparkline(narrow(p99, slices.Max)))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "TIME\tCALLS\tRATE/S\tERRORS\tP50 MS\tP95 MS\tP99 MS\t")
		for _, p := range s.Points {
			t, _ := time.Parse(time.RFC3339, p.Time)
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\t\n", t.Format("2006-01-02 15:04"), p.Calls,
				fmt3(float64(p.Calls)/step.Seconds()), p.Errors, fmt3(p.P50MS), fmt3(p.P95MS), fmt3(p.P99MS))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// sparkWidth is the most characters a sparkline takes.
const sparkWidth = 60

// narrow combines runs of values with combine, so that they fit in
// sparkWidth characters.
func narrow(values []float64, combine func([]float64) float64) []float64 {
	per := (len(values) + sparkWidth - 1) / sparkWidth
	if per <= 1 {
		return values
	}
	var out []float64
	for v := range slices.Chunk(values, per) {
		out = append(out, combine(v))
	}
	return out
}

func sum(values []float64) float64 {
	total := 0.0
	for _, v := range values {
		total += v
	}
	return total
}

// fmt3 formats a figure with three decimals.
func fmt3(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// sparkline draws values as bars from the lowest to the highest of eight,
// scaled to the largest value; zero is a space.
func sparkline(values []float64) string {
	const bars = "▁▂▃▄▅▆▇█"
	top := slices.Max(append([]float64{0}, values...))
	var b strings.Builder
	for _, v := range values {
		if v <= 0 || top == 0 {
			b.WriteByte(' ')
			continue
		}
		i := min(7, int(math.Ceil(v/top*8))-1)
		b.WriteString(string([]rune(bars)[i]))
	}
	return b.String()
}
