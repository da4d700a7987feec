package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/query"
	"cairn/query/jaegerpb"
)

// attrFlags collects repeated --attr key=value conditions.
type attrFlags []*jaegerpb.KeyValue

func (a *attrFlags) String() string { return "" }

// Set parses a condition as query.ParseAttribute does.
func (a *attrFlags) Set(s string) error {
	kv, err := query.ParseAttribute(s)
	if err != nil {
		return err
	}
	*a = append(*a, kv)
	return nil
}

// searchResult is one line of `cairn search --format json`.
type searchResult struct {
	TraceID       string  `json:"trace_id"`
	Start         string  `json:"start"`
	DurationMS    float64 `json:"duration_ms"`
	RootService   string  `json:"root_service"`
	RootOperation string  `json:"root_operation"`
	Spans         int32   `json:"spans"`
	Errors        int32   `json:"errors"`
}

func searchCmd(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("search")
	qf := addQueryFlags(fs)
	service := fs.String("service", "", "spans of this service")
	operation := fs.String("operation", "", "spans with this name (needs --service)")
	var attrs attrFlags
	fs.Var(&attrs, "attr", `key=value that must hold on the same span, repeatable; "value" in quotes is a string, otherwise ints, doubles and true/false are typed`)
	minDur := fs.Duration("min-duration", 0, "spans lasting at least this long")
	maxDur := fs.Duration("max-duration", 0, "spans lasting at most this long")
	errorsOnly := fs.Bool("errors", false, "spans with an error status")
	since := fs.Duration("since", 0, "spans that started within this long before now")
	start := fs.String("start", "", "spans that started at or after this RFC 3339 time")
	end := fs.String("end", "", "spans that started at or before this RFC 3339 time")
	limit := fs.Int("limit", 20, "most traces to list, the most recent first")
	format := fs.String("format", "table", "output format: table or json")
	if _, err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := refuseNegative(fs, "since", "min-duration", "max-duration"); err != nil {
		return err
	}
	switch {
	case *format != "table" && *format != "json":
		return usagef("unknown format %q: want table or json", *format)
	case *limit < 1:
		return usagef("--limit %d is under the minimum of 1", *limit)
	case *limit > query.DefaultMaxSearchDepth: // more, the server would silently cut
		return usagef("--limit %d is over the maximum of %d", *limit, query.DefaultMaxSearchDepth)
	case *maxDur > 0 && *minDur > *maxDur:
		return usagef("--min-duration %v is over --max-duration %v", *minDur, *maxDur)
	case *operation != "" && *service == "":
		return usagef("--operation needs --service: operations are looked up within a service")
	}
	q := &jaegerpb.TraceQueryParameters{ServiceName: *service, OperationName: *operation, Attributes: attrs, SearchDepth: int32(*limit)}
	if *errorsOnly {
		q.Attributes = append(q.Attributes, &jaegerpb.KeyValue{Key: "error", Value: &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_BoolValue{BoolValue: true}}})
	}
	if *minDur > 0 {
		q.DurationMin = durationpb.New(*minDur)
	}
	if *maxDur > 0 {
		q.DurationMax = durationpb.New(*maxDur)
	}
	switch {
	case *since > 0 && (*start != "" || *end != ""):
		return usagef("give --since or --start/--end, not both")
	case *since > 0:
		now := time.Now()
		q.StartTimeMin, q.StartTimeMax = timestamppb.New(now.Add(-*since)), timestamppb.New(now)
	default:
		for _, b := range []struct {
			flag, s string
			dst     **timestamppb.Timestamp
		}{{"start", *start, &q.StartTimeMin}, {"end", *end, &q.StartTimeMax}} {
			if b.s == "" {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, b.s)
			if err != nil {
				return usagef("--%s %q is not an RFC 3339 time such as 2026-11-21T10:00:00Z", b.flag, b.s)
			}
			*b.dst = timestamppb.New(t)
		}
		if *start != "" && *end != "" && q.StartTimeMin.AsTime().After(q.StartTimeMax.AsTime()) {
			return usagef("--start %s is after --end %s", *start, *end)
		}
	}

	ctx, client, done, err := qf.connect()
	if err != nil {
		return err
	}
	defer done()
	stream, err := client.FindTraceSummaries(ctx, &jaegerpb.FindTraceSummariesRequest{Query: q})
	if err != nil {
		return qf.rpcError(err)
	}
	var results []searchResult
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return qf.rpcError(err)
		}
		for _, s := range resp.Summaries {
			dur := 0.0
			if s.MaxEndTimeUnixNano > s.MinStartTimeUnixNano {
				dur = float64(s.MaxEndTimeUnixNano-s.MinStartTimeUnixNano) / 1e6
			}
			results = append(results, searchResult{
				TraceID:       hex.EncodeToString(s.TraceId),
				Start:         time.Unix(0, int64(min(s.MinStartTimeUnixNano, math.MaxInt64))).UTC().Format(time.RFC3339Nano),
				DurationMS:    dur,
				RootService:   s.RootServiceName,
				RootOperation: s.RootOperationName,
				Spans:         s.SpanCount,
				Errors:        s.ErrorSpanCount,
			})
		}
	}
	if *format == "json" {
		if results == nil {
			results = []searchResult{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tTRACE ID\tROOT\tDURATION\tSPANS\tERRORS")
	for _, r := range results {
		start, _ := time.Parse(time.RFC3339Nano, r.Start)
		root := r.RootService + ": " + r.RootOperation
		if r.RootService == "" && r.RootOperation == "" {
			root = "(no root span)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ms\t%d\t%d\n", start.Format("2006-01-02 15:04:05.000"), r.TraceID, truncate(root, 60),
			strconv.FormatFloat(r.DurationMS, 'f', 3, 64), r.Spans, r.Errors)
	}
	return tw.Flush()
}
