package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"

	"cairn/internal/rawcodec"
)

// The protocols Options.Protocol names, as OTEL_EXPORTER_OTLP_PROTOCOL does.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
	ProtocolHTTPJSON     = "http/json"
)

// exportMethod is OTLP's trace Export RPC.
const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// exporter sends encoded Export requests over one protocol. It is safe for
// concurrent use.
type exporter interface {
	// export sends req and returns how many of its spans the target
	// rejected. It returns once it no longer uses req.
	export(ctx context.Context, req []byte) (rejected int64, err error)
	close()
}

// retryableError is a failed export that may succeed if sent again, after
// the delay the target asked for, if it did.
type retryableError struct {
	err   error
	after time.Duration
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// newExporters returns the exporters of o's protocol for the senders to
// share round-robin, and the TCP address they reach.
func newExporters(o Options) ([]exporter, string, error) {
	if o.Protocol == ProtocolGRPC {
		opts, err := o.TargetAccess.DialOptions()
		if err != nil {
			return nil, "", err
		}
		call := []grpc.CallOption{grpc.ForceCodecV2(rawcodec.Codec{})}
		if o.Compression != CompressionNone {
			call = append(call, grpc.UseCompressor(o.Compression))
		}
		opts = append(opts, grpc.WithDefaultCallOptions(call...))
		var exps []exporter
		for range o.Conns {
			// One connection each: gRPC would otherwise share a single one.
			c, err := grpc.NewClient(o.Target, opts...)
			if err != nil {
				closeAll(exps)
				return nil, "", fmt.Errorf("dial %s: %w", o.Target, err)
			}
			exps = append(exps, grpcExporter{c})
		}
		return exps, o.Target, nil
	}
	tlsConfig, err := o.TargetAccess.TLS()
	if err != nil {
		return nil, "", err
	}
	token, err := o.TargetAccess.Token()
	if err != nil {
		return nil, "", err
	}
	u, err := exportURL(o.Target, tlsConfig != nil)
	if err != nil {
		return nil, "", err
	}
	// HTTP/1.1 carries one request at a time per connection: keep as many
	// open as there are requests in flight, so that none is dialled twice.
	n := o.Conns * o.Inflight
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: probeTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: probeTimeout,
		MaxIdleConns:        n,
		MaxIdleConnsPerHost: n,
		MaxConnsPerHost:     n,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig:     tlsConfig,
	}
	compressor, err := newBodyCompressor(o.Compression)
	if err != nil {
		return nil, "", err
	}
	e := &httpExporter{client: &http.Client{Transport: tr}, url: u.String(), json: o.Protocol == ProtocolHTTPJSON, compressor: compressor}
	if token != "" {
		e.authorization = "Bearer " + token
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return []exporter{e}, net.JoinHostPort(u.Hostname(), port), nil
}

func closeAll(exps []exporter) {
	for _, e := range exps {
		e.close()
	}
}

// exportURL is the OTLP/HTTP trace endpoint of target: HOST:PORT, which
// is https if secure, or an http or https URL whose path defaults to
// /v1/traces.
func exportURL(target string, secure bool) (*url.URL, error) {
	if !strings.Contains(target, "://") {
		if secure {
			target = "https://" + target
		} else {
			target = "http://" + target
		}
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("OTLP/HTTP target: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("OTLP/HTTP target %q is neither HOST:PORT nor an http(s) URL", target)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u, nil
}

type grpcExporter struct{ conn *grpc.ClientConn }

func (e grpcExporter) export(ctx context.Context, req []byte) (int64, error) {
	var resp rawcodec.Message
	if err := e.conn.Invoke(ctx, exportMethod, rawcodec.Message(req), &resp); err != nil {
		if c := status.Code(err); c == codes.ResourceExhausted || c == codes.Unavailable {
			return 0, &retryableError{err: err}
		}
		return 0, err
	}
	return rejectedSpans(resp), nil
}

func (e grpcExporter) close() { e.conn.Close() }

// httpExporter speaks OTLP/HTTP: a POST of the request, answered 200 with
// an ExportTraceServiceResponse in the request's encoding, or with a
// google.rpc.Status.
type httpExporter struct {
	client        *http.Client
	url           string
	json          bool
	authorization string          // the Authorization header, if any
	compressor    *bodyCompressor // nil sends bodies as they are
}

// maxResponseBytes bounds what is read of a response: OTLP's are a few
// bytes, and an error page need not be read whole.
const maxResponseBytes = 64 << 10

func (e *httpExporter) export(ctx context.Context, req []byte) (int64, error) {
	if e.compressor != nil {
		compressed, err := e.compressor.body(req)
		if err != nil {
			return 0, err
		}
		// export returns once the transport is done with the body.
		defer e.compressor.put(compressed)
		req = compressed.Bytes()
	}
	body := &requestBody{Reader: bytes.NewReader(req)}
	body.open.Add(1)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, body)
	if err != nil {
		return 0, err
	}
	hr.ContentLength = int64(len(req))
	hr.Header.Set("Content-Type", e.contentType())
	if e.compressor != nil {
		hr.Header.Set("Content-Encoding", e.compressor.name)
	}
	if e.authorization != "" {
		hr.Header.Set("Authorization", e.authorization)
	}
	resp, err := e.client.Do(hr)
	// The transport may close the body after Do returns; until then it may
	// still read req, which the caller reuses.
	defer body.open.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return 0, err
		}
		// Nothing was answered, as with gRPC's UNAVAILABLE: the connection
		// broke or could not be made.
		return 0, &retryableError{err: err}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if err != nil {
		return 0, &retryableError{err: fmt.Errorf("read response: %w", err)}
	}
	switch code := resp.StatusCode; {
	case code/100 == 2:
		return e.rejectedSpans(b), nil
	case code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		return 0, &retryableError{err: statusError(resp, b), after: retryAfter(resp.Header)}
	default:
		return 0, statusError(resp, b)
	}
}

func (e *httpExporter) contentType() string {
	if e.json {
		return "application/json"
	}
	return "application/x-protobuf"
}

func (e *httpExporter) close() { e.client.CloseIdleConnections() }

// requestBody is a request's body that tells when the transport has closed
// it.
type requestBody struct {
	*bytes.Reader
	once sync.Once
	open sync.WaitGroup
}

func (b *requestBody) Close() error {
	b.once.Do(b.open.Done)
	return nil
}

// rejectedSpans reads partial_success.rejected_spans of a 200 response. A
// body that does not decode rejected nothing: the status said it was taken.
func (e *httpExporter) rejectedSpans(b []byte) int64 {
	if !e.json {
		return rejectedSpans(b)
	}
	var resp collectorpb.ExportTraceServiceResponse
	if (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &resp) != nil {
		return 0
	}
	return resp.GetPartialSuccess().GetRejectedSpans()
}

// statusError describes a failed response with the message of the
// google.rpc.Status it carries, or the start of whatever else it carries.
func statusError(resp *http.Response, body []byte) error {
	msg := ""
	switch ct := resp.Header.Get("Content-Type"); {
	case strings.HasPrefix(ct, "application/json"):
		var st struct{ Message string }
		if json.Unmarshal(body, &st) == nil {
			msg = st.Message
		}
	case strings.HasPrefix(ct, "application/x-protobuf"):
		_ = eachField(body, 0, len(body), func(num protowire.Number, typ protowire.Type, s, e int) error {
			if num == 2 && typ == protowire.BytesType { // Status.message
				msg = string(body[s:e])
			}
			return nil
		})
	default:
		msg, _, _ = strings.Cut(strings.TrimSpace(string(body)), "\n")
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
	}
	if msg == "" {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return fmt.Errorf("HTTP %s: %s", resp.Status, msg)
}

// retryAfter is the delay a Retry-After header asks for in seconds, or 0.
func retryAfter(h http.Header) time.Duration {
	s, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || s < 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

// rejectedSpans reads partial_success.rejected_spans of an encoded Export
// response.
func rejectedSpans(resp []byte) int64 {
	var n int64
	_ = eachField(resp, 0, len(resp), func(num protowire.Number, typ protowire.Type, s, e int) error {
		if num != 1 || typ != protowire.BytesType {
			return nil
		}
		return eachField(resp, s, e, func(num protowire.Number, typ protowire.Type, s, e int) error {
			if num == 1 && typ == protowire.VarintType {
				v, _ := protowire.ConsumeVarint(resp[s:e])
				n = int64(v)
			}
			return nil
		})
	})
	return n
}

// probeTimeout bounds each check, before the clock starts, that the target
// and the reader answer.
const probeTimeout = 5 * time.Second

// emptyExport is an Export request with no spans in each encoding: valid
// OTLP, which receivers acknowledge.
func emptyExport(protocol string) []byte {
	if protocol == ProtocolHTTPJSON {
		return []byte("{}")
	}
	return nil
}

// probe checks that something listens at addr and then that call succeeds,
// both within probeTimeout, and says what failed in one line naming what is
// probed.
func probe(ctx context.Context, what, addr, call string, do func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %s", what, reason(err))
	}
	conn.Close()
	if err := do(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("cannot reach %s: no answer to %s within %s", what, call, probeTimeout)
		}
		return fmt.Errorf("%s failed %s: %w", what, call, err)
	}
	return nil
}

// reason is the part of a connection error that tells a person what went
// wrong.
func reason(err error) string {
	var dnsErr *net.DNSError
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %s", probeTimeout)
	case errors.As(err, &dnsErr):
		return dnsErr.Error()
	case errors.As(err, &errno):
		return errno.Error()
	}
	return err.Error()
}
