package ingest

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"cairn/internal/otlpjson"
)

// TracesPath is where OTLP/HTTP clients post traces.
const TracesPath = "/v1/traces"

const (
	contentProtobuf = "application/x-protobuf"
	contentJSON     = "application/json"
)

// HTTPHandler returns the OTLP/HTTP receiver: POST /v1/traces with a
// binary protobuf or JSON ExportTraceServiceRequest, optionally gzip-, zstd-
// or deflate-compressed. Responses follow the OTLP/HTTP specification: 200
// with an ExportTraceServiceResponse (carrying partial_success), or a
// google.rpc.Status with 400, 405, 413, 415, 429 or 503, in the encoding of
// the request.
func (svc *Service) HTTPHandler() http.Handler {
	return &httpHandler{svc: svc, cors: newCORSPolicy(svc.opts.CORSAllowedOrigins)}
}

type httpHandler struct {
	svc  *Service
	cors corsPolicy
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != TracesPath {
		writeStatus(w, contentProtobuf, http.StatusNotFound, status.New(codes.NotFound,
			fmt.Sprintf("cairn receives OTLP traces at %s; it keeps no metrics or logs", TracesPath)))
		return
	}
	if h.cors.handle(w, r) {
		return
	}
	content := mediaType(r.Header.Get("Content-Type"))
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeStatus(w, responseType(content), http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented,
			"%s %s is not allowed: OTLP/HTTP exports with POST", r.Method, TracesPath))
		return
	}
	var proto string
	switch content {
	case contentProtobuf:
		proto = protoHTTPProtobuf
	case contentJSON:
		proto = protoHTTPJSON
	default:
		h.svc.metrics.refused.WithLabelValues("http", causeUnsupported).Inc()
		writeStatus(w, contentProtobuf, http.StatusUnsupportedMediaType, status.Newf(codes.InvalidArgument,
			"Content-Type %q is not supported: send %s or %s", r.Header.Get("Content-Type"), contentProtobuf, contentJSON))
		return
	}
	received := time.Now()
	body, res, err := h.read(proto, r)
	if err != nil {
		h.fail(w, proto, content, err)
		return
	}
	defer res.release()
	req := body
	if proto == protoHTTPJSON {
		if req, err = otlpjson.DecodeRequest(body); err != nil {
			h.svc.metrics.refused.WithLabelValues(proto, causeMalformed).Inc()
			h.fail(w, proto, content, status.Error(codes.InvalidArgument, err.Error()))
			return
		}
	}
	resp, err := h.svc.export(r.Context(), proto, req, received)
	if err != nil {
		h.fail(w, proto, content, err)
		return
	}
	writeMessage(w, content, http.StatusOK, resp)
}

// httpError is a refusal decided before the request reaches export, with
// its HTTP status.
type httpError struct {
	code  int
	cause string
	st    *status.Status
}

func (e *httpError) Error() string { return e.st.Message() }

// read admits the request and reads its body, decompressed and within
// Options.MaxRequestBytes.
func (h *httpHandler) read(proto string, r *http.Request) ([]byte, *reservation, error) {
	limit := h.svc.opts.MaxRequestBytes
	tooLarge := &httpError{http.StatusRequestEntityTooLarge, causeTooLarge,
		status.Newf(codes.ResourceExhausted, "request body is larger than the limit of %d bytes (--otlp-max-request-bytes)", limit)}
	if r.ContentLength > int64(limit) {
		return nil, nil, tooLarge
	}
	decode, err := decompressor(r.Header.Get("Content-Encoding"))
	if err != nil {
		return nil, nil, &httpError{http.StatusUnsupportedMediaType, causeUnsupported, status.New(codes.InvalidArgument, err.Error())}
	}
	// Until the body is read, its length on the wire is the best guess of
	// its size; a compressed one grows the reservation as it decompresses.
	guess := r.ContentLength
	if guess < 0 {
		guess = 1 << 20
	}
	res, err := h.svc.admit(proto, guess)
	if err != nil {
		return nil, nil, err
	}
	body, err := decode(r.Body, int(guess), limit, res)
	if err != nil {
		res.release()
		switch {
		case errors.Is(err, errTooLarge):
			return nil, nil, tooLarge
		case r.Context().Err() != nil:
			return nil, nil, &httpError{http.StatusServiceUnavailable, causeCanceled, status.FromContextError(r.Context().Err())}
		}
		return nil, nil, &httpError{http.StatusBadRequest, causeMalformed, status.Newf(codes.InvalidArgument, "read request body: %v", err)}
	}
	h.svc.metrics.bytes.WithLabelValues(proto).Add(float64(len(body)))
	return body, res, nil
}

// fail answers a refused request with its status, counting refusals that
// export has not counted.
func (h *httpHandler) fail(w http.ResponseWriter, proto, content string, err error) {
	if he, ok := err.(*httpError); ok {
		h.svc.metrics.refused.WithLabelValues(proto, he.cause).Inc()
		writeStatus(w, content, he.code, he.st)
		return
	}
	st := status.Convert(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int((h.svc.opts.RetryAfter+time.Second-1)/time.Second)))
	}
	writeStatus(w, content, code, st)
}

// WriteUnauthenticated answers an OTLP/HTTP request refused for its
// bearer token: 401, with a google.rpc.Status in the request's encoding.
func WriteUnauthenticated(w http.ResponseWriter, r *http.Request, msg string) {
	writeStatus(w, mediaType(r.Header.Get("Content-Type")), http.StatusUnauthorized, status.New(codes.Unauthenticated, msg))
}

// mediaType is a Content-Type header's media type, without parameters.
func mediaType(header string) string {
	mt, _, err := mime.ParseMediaType(header)
	if err != nil {
		return ""
	}
	return mt
}

// responseType is the encoding of a response to a request of the given
// media type: its own if it is one of OTLP's, binary protobuf otherwise, as
// the specification makes the default.
func responseType(content string) string {
	if content == contentJSON {
		return contentJSON
	}
	return contentProtobuf
}

func writeStatus(w http.ResponseWriter, content string, code int, st *status.Status) {
	writeMessage(w, responseType(content), code, st.Proto())
}

func writeMessage(w http.ResponseWriter, content string, code int, m proto.Message) {
	var b []byte
	var err error
	if content == contentJSON {
		b, err = protojson.Marshal(m)
	} else {
		b, err = proto.Marshal(m)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", content)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

var errTooLarge = errors.New("request body too large")

// readFunc reads a body, decompressing it, into a buffer of its own: the
// store keeps request bytes, so they are never pooled. guess is the size to
// start from; more than limit bytes is errTooLarge; res grows with the body.
type readFunc func(body io.Reader, guess, limit int, res *reservation) ([]byte, error)

// decompressor returns the reader for a Content-Encoding.
func decompressor(encoding string) (readFunc, error) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return readAll, nil
	case "gzip", "x-gzip":
		return readGzip, nil
	case "zstd":
		return readZstd, nil
	case "deflate", "zlib":
		return readZlib, nil
	}
	return nil, fmt.Errorf("Content-Encoding %q is not supported: send gzip, zstd, deflate or none", encoding)
}

// readAll reads up to limit bytes of r into a buffer of guess bytes, grown
// as needed. A byte to spare lets a body of exactly the guessed length reach
// EOF without growing.
func readAll(r io.Reader, guess, limit int, res *reservation) ([]byte, error) {
	buf := make([]byte, 0, min(max(guess, 512)+1, limit+1))
	res.grow(int64(cap(buf)))
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				return nil, errTooLarge
			}
			buf = slices.Grow(buf, min(cap(buf), limit+1-len(buf)))
			res.grow(int64(cap(buf)))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return nil, errTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	// The store keeps the buffer for as long as the request's spans are
	// buffered: trim growth slack rather than hold it.
	if cap(buf)-len(buf) > len(buf)/8 {
		buf = slices.Clone(buf)
	}
	return buf, nil
}

// compressionRatio is the expansion a compressed body is first assumed to
// have; OTLP spans compress four to ten times.
const compressionRatio = 6

var gzipReaders sync.Pool

func readGzip(r io.Reader, guess, limit int, res *reservation) ([]byte, error) {
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(r)
	} else {
		err = zr.Reset(r)
	}
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	defer gzipReaders.Put(zr)
	return readAll(zr, guess*compressionRatio, limit, res)
}

var zlibReaders sync.Pool

func readZlib(r io.Reader, guess, limit int, res *reservation) ([]byte, error) {
	zr, _ := zlibReaders.Get().(io.ReadCloser)
	var err error
	if zr == nil {
		zr, err = zlib.NewReader(r)
	} else {
		err = zr.(zlib.Resetter).Reset(r, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("deflate: %w", err)
	}
	defer zlibReaders.Put(zr)
	return readAll(zr, guess*compressionRatio, limit, res)
}

// zstdMaxWindow bounds the history a zstd stream may ask the decoder to
// keep; encoders use 8 MiB or less unless told otherwise.
const zstdMaxWindow = 8 << 20

var zstdReaders sync.Pool

func readZstd(r io.Reader, guess, limit int, res *reservation) ([]byte, error) {
	zr, _ := zstdReaders.Get().(*zstd.Decoder)
	var err error
	if zr == nil {
		// One goroutine: a pooled decoder starts none of its own.
		zr, err = zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
	} else {
		err = zr.Reset(r)
	}
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer zstdReaders.Put(zr)
	return readAll(zr, guess*compressionRatio, limit, res)
}
