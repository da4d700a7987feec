package query

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"cairn/internal/otlpjson"
	"cairn/internal/respwriter"
	"cairn/query/jaegerpb"
	"cairn/storage"
)

// HTTPHandler serves the query API as JSON under /api/v1/ (see the README
// for paths, parameters and answers). Each call runs the gRPC method's own
// code, within the same slots and timeout; a failure is answered with an
// HTTP status and {"error": "…", "code": "…"}, code being the gRPC name of
// the failure.
func (q *Service) HTTPHandler() http.Handler {
	s := q.svc
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/services", s.api("http_services", s.httpServices))
	mux.Handle("GET /api/v1/operations", s.api("http_operations", s.httpOperations))
	mux.Handle("GET /api/v1/search", s.api("http_search", s.httpSearch))
	mux.Handle("GET /api/v1/traces/{id}", s.api("http_trace", s.httpTrace))
	mux.Handle("GET /api/v1/traces/{id}/otlp", s.api("http_trace_otlp", s.httpTraceOTLP))
	mux.Handle("GET /api/v1/traces/{id}/critical-path", s.api("http_critical_path", s.httpCriticalPath))
	mux.Handle("GET /api/v1/span-metrics", s.api("http_span_metrics", s.httpSpanMetrics))
	mux.Handle("GET /api/v1/service-graph", s.api("http_service_graph", s.httpServiceGraph))
	mux.Handle("GET /api/v1/diagnose", s.api("http_diagnose", s.httpDiagnose))
	mux.Handle("GET /api/v1/critical-paths", s.api("http_critical_paths", s.httpCriticalPaths))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		// Every call is a GET: another method on a call's path is told
		// so, not that the call does not exist.
		get := r.Clone(r.Context())
		get.Method = http.MethodGet
		if _, pattern := mux.Handler(get); pattern != "/api/" {
			w.Header().Set("Allow", "GET, HEAD")
			writeStatus(w, http.StatusMethodNotAllowed, status.Errorf(codes.InvalidArgument, "%s %s: this call takes GET", r.Method, r.URL.Path))
			return
		}
		writeError(w, status.Errorf(codes.NotFound, "no API call %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// apiFunc answers one call; an error it returns before writing anything is
// answered as JSON.
type apiFunc func(ctx context.Context, w http.ResponseWriter, r *http.Request) error

// api runs fn under the server-side timeout and records its latency as the
// gRPC methods' is recorded, under name.
func (s *service) api(name string, fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, cancel := s.withTimeout(r.Context())
		defer cancel()
		// The timeout ends a call that waits for a client that stopped
		// reading too: a blocked write does not see the context end.
		if d, ok := ctx.Deadline(); ok {
			_ = http.NewResponseController(w).SetWriteDeadline(d)
		}
		tw := &respwriter.Watched{ResponseWriter: w}
		err := fn(ctx, tw, r)
		if err != nil && ctx.Err() != nil && status.Code(err) == codes.Unknown {
			err = ctxStatus(ctx)
		}
		if s.opts.Metrics != nil {
			s.opts.Metrics.observe(name, start, err)
		}
		switch {
		case err == nil:
		case tw.Started:
			// Part of the answer is out: end the connection, so that the
			// client sees a failed transfer rather than a short document.
			panic(http.ErrAbortHandler)
		default:
			writeError(w, err)
		}
	})
}

// httpStatus maps the status of a failed call to an HTTP status.
var httpStatus = map[codes.Code]int{
	codes.InvalidArgument: http.StatusBadRequest,
	codes.NotFound:        http.StatusNotFound,
	// A request that no retry can serve, such as an analysis of a trace
	// larger than analyses read.
	codes.FailedPrecondition: http.StatusUnprocessableEntity,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.Canceled:           http.StatusServiceUnavailable,
}

func writeError(w http.ResponseWriter, err error) {
	code, ok := httpStatus[status.Code(err)]
	if !ok {
		code = http.StatusInternalServerError
	}
	writeStatus(w, code, err)
}

// writeStatus answers err, a gRPC status, with HTTP status code.
func writeStatus(w http.ResponseWriter, code int, err error) {
	st := status.Convert(err)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{st.Message(), st.Code().String()})
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return status.Errorf(codes.Internal, "encode JSON: %v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, err = w.Write(append(b, '\n'))
	return err
}

func badRequest(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// allowParams refuses parameters other than those named: a misspelt one
// would otherwise be ignored, and the answer taken for what was asked. So
// is a query string that does not parse, whose bad pairs Go would drop
// (service=a;b, a lone %), and the rest be answered as if all; and a
// parameter given twice, of which only one would count, unless its name
// is marked repeatable with a trailing "*" (attr*).
func allowParams(r *http.Request, names ...string) error {
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		return badRequest("the query string does not parse: %v", err)
	}
	for p, vs := range r.URL.Query() {
		known, repeatable := false, false
		for _, n := range names {
			name, many := strings.CutSuffix(n, "*")
			if p == name {
				known, repeatable = true, many
			}
		}
		if !known {
			takes := make([]string, len(names))
			for i, n := range names {
				takes[i] = strings.TrimSuffix(n, "*")
			}
			return badRequest("unknown parameter %q: this call takes %v", p, takes)
		}
		if len(vs) > 1 && !repeatable {
			return badRequest("parameter %q is given %d times: this call takes one", p, len(vs))
		}
	}
	return nil
}

func (s *service) httpServices(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r); err != nil {
		return err
	}
	resp, err := s.GetServices(ctx, &jaegerpb.GetServicesRequest{})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Services []string `json:"services"`
	}{append([]string{}, resp.Services...)})
}

type operationJSON struct {
	Name     string `json:"name"`
	SpanKind string `json:"span_kind"`
}

func (s *service) httpOperations(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r, "service", "span_kind"); err != nil {
		return err
	}
	// service= (empty) is the service of resources without service.name,
	// which the services list names as "".
	if !r.URL.Query().Has("service") {
		return badRequest("service is required")
	}
	service := r.URL.Query().Get("service")
	resp, err := s.GetOperations(ctx, &jaegerpb.GetOperationsRequest{Service: service, SpanKind: r.URL.Query().Get("span_kind")})
	if err != nil {
		return err
	}
	ops := []operationJSON{}
	for _, op := range resp.Operations {
		ops = append(ops, operationJSON{op.Name, op.SpanKind})
	}
	return writeJSON(w, http.StatusOK, struct {
		Operations []operationJSON `json:"operations"`
	}{ops})
}

// summaryJSON is one trace found by a search.
type summaryJSON struct {
	TraceID       string        `json:"trace_id"`
	Start         string        `json:"start"`
	StartUnixNano string        `json:"start_unix_nano"`
	DurationNS    uint64        `json:"duration_ns"`
	RootService   string        `json:"root_service"`
	RootOperation string        `json:"root_operation"`
	Spans         int32         `json:"spans"`
	Errors        int32         `json:"errors"`
	Orphans       int32         `json:"orphans"`
	Services      []serviceJSON `json:"services"`
}

type serviceJSON struct {
	Name   string `json:"name"`
	Spans  int32  `json:"spans"`
	Errors int32  `json:"errors"`
}

func (s *service) httpSearch(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r, "service", "operation", "attr*", "errors", "min_duration", "max_duration", "start", "end", "since", "limit"); err != nil {
		return err
	}
	p, err := searchParams(r, time.Now())
	if err != nil {
		return err
	}
	traces := []summaryJSON{}
	err = s.summaries(ctx, p, func(ts *jaegerpb.TraceSummary) error {
		sum := summaryJSON{
			TraceID:       hex.EncodeToString(ts.TraceId),
			Start:         unixNano(ts.MinStartTimeUnixNano).UTC().Format(time.RFC3339Nano),
			StartUnixNano: strconv.FormatUint(ts.MinStartTimeUnixNano, 10),
			RootService:   ts.RootServiceName,
			RootOperation: ts.RootOperationName,
			Spans:         ts.SpanCount,
			Errors:        ts.ErrorSpanCount,
			Orphans:       ts.OrphanSpanCount,
			Services:      []serviceJSON{},
		}
		if ts.MaxEndTimeUnixNano > ts.MinStartTimeUnixNano {
			sum.DurationNS = ts.MaxEndTimeUnixNano - ts.MinStartTimeUnixNano
		}
		for _, ss := range ts.Services {
			sum.Services = append(sum.Services, serviceJSON{ss.Name, ss.SpanCount, ss.ErrorSpanCount})
		}
		traces = append(traces, sum)
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Traces []summaryJSON `json:"traces"`
	}{traces})
}

// searchParams reads a search's parameters into the gRPC API's query, which
// the search then checks as it checks any.
func searchParams(r *http.Request, now time.Time) (*jaegerpb.TraceQueryParameters, error) {
	v := r.URL.Query()
	p := &jaegerpb.TraceQueryParameters{ServiceName: v.Get("service"), OperationName: v.Get("operation")}
	for _, a := range v["attr"] {
		kv, err := ParseAttribute(a)
		if err != nil {
			return nil, badRequest("attr: %v", err)
		}
		p.Attributes = append(p.Attributes, kv)
	}
	if e := v.Get("errors"); e != "" {
		only, err := strconv.ParseBool(e)
		if err != nil {
			return nil, badRequest("errors %q is not true or false", e)
		}
		if only {
			p.Attributes = append(p.Attributes, &jaegerpb.KeyValue{Key: "error", Value: &jaegerpb.AnyValue{Value: &jaegerpb.AnyValue_BoolValue{BoolValue: true}}})
		}
	}
	for _, d := range []struct {
		name string
		dst  **durationpb.Duration
	}{{"min_duration", &p.DurationMin}, {"max_duration", &p.DurationMax}, {"since", nil}} {
		if v.Get(d.name) == "" {
			continue
		}
		dur, err := time.ParseDuration(v.Get(d.name))
		if err != nil {
			return nil, badRequest("%s %q is not a duration such as 250ms or 1h", d.name, v.Get(d.name))
		}
		if d.dst == nil { // since
			if v.Get("start") != "" || v.Get("end") != "" {
				return nil, badRequest("give since or start/end, not both")
			}
			if dur < 0 {
				return nil, badRequest("since %v is negative", dur)
			}
			p.StartTimeMin, p.StartTimeMax = timestamppb.New(now.Add(-dur)), timestamppb.New(now)
			continue
		}
		*d.dst = durationpb.New(dur)
	}
	for _, t := range []struct {
		name string
		dst  **timestamppb.Timestamp
	}{{"start", &p.StartTimeMin}, {"end", &p.StartTimeMax}} {
		if v.Get(t.name) == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, v.Get(t.name))
		if err != nil {
			return nil, badRequest("%s %q is not an RFC 3339 time such as 2026-11-21T10:00:00Z", t.name, v.Get(t.name))
		}
		*t.dst = timestamppb.New(at)
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.ParseInt(l, 10, 32)
		if err != nil || n < 1 {
			return nil, badRequest("limit %q is not a positive number", l)
		}
		p.SearchDepth = int32(n)
	}
	return p, nil
}

// readTrace reads the trace named by the request's path, within a read
// slot, calling fn with each chunk as GetTraces would send it. It reports
// whether any chunk was read.
func (s *service) readTrace(ctx context.Context, r *http.Request, fn func(*tracepb.TracesData) error) (bool, error) {
	raw, err := hex.DecodeString(r.PathValue("id"))
	if err != nil || len(raw) != 16 {
		return false, badRequest("trace ID %q is not 32 hex digits", r.PathValue("id"))
	}
	leave, err := s.reads.enter(ctx)
	if err != nil {
		return false, err
	}
	defer leave()
	found := false
	out := &sender{s: s, ctx: ctx, emit: func(b []byte) error {
		defer chunkBuffers.Put(&b) // Unmarshal copies what it keeps
		td := &tracepb.TracesData{}
		if err := proto.Unmarshal(b, td); err != nil {
			return status.Errorf(codes.Internal, "decode stored spans: %v", err)
		}
		found = true
		return fn(td)
	}}
	defer out.close()
	return found, s.sendTrace(ctx, out, storage.TraceID(raw), storage.TimeRange{})
}

func notFound(r *http.Request) error {
	return status.Errorf(codes.NotFound, "trace %s not found", r.PathValue("id"))
}

// httpTraceOTLP streams a trace as one OTLP/JSON TracesData document, a
// chunk at a time, however large the trace is.
func (s *service) httpTraceOTLP(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r); err != nil {
		return err
	}
	// The document opens with the first resource's spans, so that a trace
	// not found, or failing at once, is answered with a status instead.
	sep := []byte(`{"resourceSpans":[`)
	found, err := s.readTrace(ctx, r, func(td *tracepb.TracesData) error {
		for _, rs := range td.ResourceSpans {
			b, err := otlpjson.Marshal(rs)
			if err != nil {
				return err
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			if _, err := w.Write(append(sep, b...)); err != nil {
				return err
			}
			sep = []byte{','}
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case !found:
		return notFound(r)
	}
	_, err = w.Write([]byte("]}\n"))
	return err
}

func (s *service) httpTrace(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r); err != nil {
		return err
	}
	tj := newTraceJSON(r.PathValue("id"))
	found, err := s.readTrace(ctx, r, tj.add)
	switch {
	case errors.Is(err, errTraceJSONFull):
		tj.Truncated = true
	case err != nil:
		return err
	case !found:
		return notFound(r)
	}
	b, err := tj.marshal()
	if err != nil {
		return status.Errorf(codes.Internal, "encode trace: %v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(b)
	return err
}

var errTraceJSONFull = fmt.Errorf("trace over %d bytes of JSON", traceJSONLimit)
