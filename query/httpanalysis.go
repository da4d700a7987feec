package query

import (
	"context"
	"encoding/hex"
	"net/http"
	"strconv"

	"cairn/query/analysispb"
)

// criticalPathJSON is the critical path of a trace: the segments of the
// spans that held it up, in time order, and the time each operation spent
// on it.
type criticalPathJSON struct {
	TraceID    string              `json:"trace_id"`
	DurationMS float64             `json:"duration_ms"`
	Segments   []pathSegmentJSON   `json:"segments"`
	Operations []operationSelfJSON `json:"operations"`
}

type pathSegmentJSON struct {
	SpanID        string `json:"span_id"`
	Service       string `json:"service"`
	Operation     string `json:"operation"`
	StartUnixNano string `json:"start_unix_nano"`
	EndUnixNano   string `json:"end_unix_nano"`
}

type operationSelfJSON struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	SelfMS    float64 `json:"self_ms"`
	Share     float64 `json:"share"`
}

func (s *service) httpCriticalPath(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := allowParams(r); err != nil {
		return err
	}
	raw, err := hex.DecodeString(r.PathValue("id"))
	if err != nil || len(raw) != 16 {
		return badRequest("trace ID %q is not 32 hex digits", r.PathValue("id"))
	}
	resp, err := rootCause{service: s}.CriticalPath(ctx, &analysispb.CriticalPathRequest{TraceId: raw})
	if err != nil {
		return err
	}
	out := criticalPathJSON{TraceID: hex.EncodeToString(resp.TraceId), DurationMS: resp.DurationMs,
		Segments: []pathSegmentJSON{}, Operations: []operationSelfJSON{}}
	for _, sg := range resp.Segments {
		out.Segments = append(out.Segments, pathSegmentJSON{hex.EncodeToString(sg.SpanId), sg.Service, sg.Operation,
			strconv.FormatUint(sg.StartUnixNano, 10), strconv.FormatUint(sg.EndUnixNano, 10)})
	}
	for _, o := range resp.Operations {
		out.Operations = append(out.Operations, operationSelfJSON{o.Service, o.Operation, o.SelfMs, o.Share})
	}
	return writeJSON(w, http.StatusOK, out)
}
