package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zlib"
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

// protoHTTPUnknown labels the refusals of requests whose Content-Type is
// neither of OTLP's.
const protoHTTPUnknown = "http"

// HTTPHandler returns the OTLP/HTTP receiver: POST /v1/traces with a
// binary protobuf or JSON ExportTraceServiceRequest, optionally gzip-, zstd-,
// snappy- or deflate-compressed. Responses follow the OTLP/HTTP specification: 200
// with an ExportTraceServiceResponse (carrying partial_success), or a
// google.rpc.Status with 400, 401, 404, 405, 408, 413, 415, 429 or 503, in
// the encoding of the request, binary protobuf when that is neither of
// OTLP's.
func (svc *Service) HTTPHandler() http.Handler {
	return &httpHandler{svc: svc, cors: newCORSPolicy(svc.opts.CORSAllowedOrigins)}
}

type httpHandler struct {
	svc  *Service
	cors corsPolicy
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The body must arrive in time, also when the request is refused
	// before it is read: the server reads what is left of it before it
	// takes the connection's next request.
	rc := http.NewResponseController(w)
	timeout := h.svc.bodyTimeout(r.ContentLength)
	deadline := rc.SetReadDeadline(time.Now().Add(timeout)) == nil
	media := mediaType(r.Header.Get("Content-Type"))
	content := responseType(media)
	if r.URL.Path != TracesPath {
		writeStatus(w, content, http.StatusNotFound, status.New(codes.NotFound,
			fmt.Sprintf("cairn receives OTLP traces at %s; it keeps no metrics or logs", TracesPath)))
		return
	}
	// CORS goes first, so that a browser can read every answer, refusals
	// included; a preflight is answered here.
	if h.cors.handle(w, r) {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeStatus(w, content, http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented,
			"%s %s is not allowed: OTLP/HTTP exports with POST", r.Method, TracesPath))
		return
	}
	if authorize := h.svc.opts.Authorize; authorize != nil {
		if err := authorize(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cairn"`)
			writeStatus(w, content, http.StatusUnauthorized, status.New(codes.Unauthenticated, err.Error()))
			return
		}
	}
	proto := map[string]string{contentProtobuf: protoHTTPProtobuf, contentJSON: protoHTTPJSON}[media]
	if proto == "" {
		h.svc.metrics.refused.WithLabelValues(protoHTTPUnknown, causeUnsupported).Inc()
		writeStatus(w, content, http.StatusUnsupportedMediaType, status.Newf(codes.InvalidArgument,
			"Content-Type %q is not supported: send %s or %s", r.Header.Get("Content-Type"), contentProtobuf, contentJSON))
		return
	}
	res := h.svc.reserve(r.Context(), proto)
	defer res.release()
	req, err := h.read(w, r, res, timeout)
	if err != nil {
		h.fail(w, proto, content, err)
		return
	}
	if deadline {
		// The body is in; its deadline must not cut the connection while
		// the export waits to be durable.
		rc.SetReadDeadline(time.Time{})
	}
	received := time.Now()
	if proto == protoHTTPJSON {
		if req, err = h.decodeJSON(req, res); err != nil {
			h.fail(w, proto, content, err)
			return
		}
	}
	resp, err := h.svc.export(r.Context(), proto, req, res, received)
	if err != nil {
		h.fail(w, proto, content, err)
		return
	}
	writeMessage(w, content, http.StatusOK, resp)
}

// httpError is a refusal decided before the request reaches export, with
// its HTTP status and the cause metrics count it under.
type httpError struct {
	code  int
	cause string
	st    *status.Status
}

func (e *httpError) Error() string { return e.st.Message() }

// minBodyRate is the slowest, in bytes per second, a large body may arrive
// on average; see Options.BodyTimeout.
const minBodyRate = 1 << 20

// bodyTimeout is how long a body of size bytes may take to arrive; a size
// that is not known (negative) may be as large as MaxRequestBytes.
func (svc *Service) bodyTimeout(size int64) time.Duration {
	if size < 0 {
		size = int64(svc.opts.MaxRequestBytes)
	}
	return svc.opts.BodyTimeout + time.Duration(size)*time.Second/minBodyRate
}

// read reads the request's body, decompressed and within
// Options.MaxRequestBytes, growing res with the memory it takes.
func (h *httpHandler) read(w http.ResponseWriter, r *http.Request, res *reservation, timeout time.Duration) ([]byte, error) {
	limit := h.svc.opts.MaxRequestBytes
	tooLarge := &httpError{http.StatusRequestEntityTooLarge, causeTooLarge,
		status.Newf(codes.ResourceExhausted, "request body is larger than the limit of %d bytes", limit)}
	if r.ContentLength > int64(limit) {
		return nil, tooLarge
	}
	decode, err := decompressor(r.Header.Get("Content-Encoding"))
	if err != nil {
		return nil, &httpError{http.StatusUnsupportedMediaType, causeUnsupported, status.New(codes.InvalidArgument, err.Error())}
	}
	// Compressed bytes count against the limit too: a stream of empty
	// compressed frames would otherwise be read without end.
	body := http.MaxBytesReader(w, r.Body, int64(limit))
	b, err := decode(body, int(r.ContentLength), limit, res)
	switch {
	case err == nil:
		h.svc.metrics.bytes.WithLabelValues(res.proto).Add(float64(len(b)))
		return b, nil
	case errors.Is(err, errTooLarge) || errors.As(err, new(*http.MaxBytesError)):
		return nil, tooLarge
	case status.Code(err) == codes.ResourceExhausted || status.Code(err) == codes.Canceled ||
		status.Code(err) == codes.DeadlineExceeded: // refused, and counted, by the in-flight bound
		return nil, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &httpError{http.StatusRequestTimeout, causeTimeout,
			status.Newf(codes.DeadlineExceeded, "request body did not arrive within %v", timeout.Round(time.Second))}
	case r.Context().Err() != nil:
		return nil, &httpError{http.StatusServiceUnavailable, causeCanceled, status.FromContextError(r.Context().Err())}
	}
	return nil, &httpError{http.StatusBadRequest, causeMalformed, status.Newf(codes.InvalidArgument, "read request body: %v", err)}
}

// Decoding an OTLP/JSON body takes about twice its size when
// otlpjson.Transcode takes it (the protobuf encoding, as it grows), and
// about eight times when it is left to protojson: the rewritten document,
// the message tree protojson builds, and the protobuf encoding.
const (
	jsonTranscodeFactor = 2
	jsonDecodeFactor    = 8
)

// decodeJSON decodes an OTLP/JSON body into binary protobuf, reserving the
// memory that takes first.
func (h *httpHandler) decodeJSON(body []byte, res *reservation) ([]byte, error) {
	if err := res.grow(int64(len(body)) * jsonTranscodeFactor); err != nil {
		return nil, err
	}
	if req, ok := otlpjson.Transcode(body); ok {
		return req, nil
	}
	if err := res.grow(int64(len(body)) * jsonDecodeFactor); err != nil {
		return nil, err
	}
	req, err := otlpjson.DecodeRequest(body)
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, causeMalformed, status.New(codes.InvalidArgument, err.Error())}
	}
	return req, nil
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
	writeMessage(w, content, code, st.Proto())
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
// store keeps request bytes, so they are never pooled. wireLength is the
// body's Content-Length, or -1; more than limit bytes decompressed is
// errTooLarge; res grows with the buffer.
type readFunc func(body io.Reader, wireLength, limit int, res *reservation) ([]byte, error)

// decompressor returns the reader for a Content-Encoding.
func decompressor(encoding string) (readFunc, error) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return readAll, nil
	case "gzip", "x-gzip":
		return readGzip, nil
	case "zstd":
		return readZstd, nil
	case "snappy", "x-snappy-framed":
		return readSnappy, nil
	case "deflate", "zlib":
		return readZlib, nil
	}
	return nil, fmt.Errorf("Content-Encoding %q is not supported: send gzip, zstd, snappy, deflate or none", encoding)
}

// firstRead bounds the buffer a body starts in: memory is taken as bytes
// arrive, not as a client declares them.
const firstRead = 1 << 20

// readAll reads up to limit bytes of r. The buffer starts at size (if
// known, else small), at most firstRead, and doubles as needed, up to size
// when that is known; a byte to spare lets a body of exactly that size
// reach EOF without growing.
func readAll(r io.Reader, size, limit int, res *reservation) ([]byte, error) {
	if size < 0 {
		size = 64 << 10
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				return nil, errTooLarge
			}
			next := min(max(2*cap(buf), 512), limit+1)
			switch {
			case cap(buf) == 0:
				next = min(size, firstRead, limit) + 1
			case size >= len(buf) && size+1 < next:
				next = size + 1
			}
			if err := res.grow(int64(next)); err != nil {
				return nil, err
			}
			buf = slices.Grow(buf, next-len(buf))
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

// decompressedSize is the first guess of a compressed body's size.
func decompressedSize(wireLength int) int {
	if wireLength < 0 {
		return -1
	}
	return wireLength * compressionRatio
}

func readGzip(r io.Reader, wireLength, limit int, res *reservation) ([]byte, error) {
	zr, err := newGzipReader(r)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	defer zr.Close()
	return readAll(zr, decompressedSize(wireLength), limit, res)
}

var zlibReaders sync.Pool

func readZlib(r io.Reader, wireLength, limit int, res *reservation) ([]byte, error) {
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
	return readAll(zr, decompressedSize(wireLength), limit, res)
}

func readZstd(r io.Reader, wireLength, limit int, res *reservation) ([]byte, error) {
	zr, err := newZstdReader(r)
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer zr.Close()
	return readAll(zr, decompressedSize(wireLength), limit, res)
}

// snappyStreamMagic opens snappy's framed stream format.
const snappyStreamMagic = "\xff\x06\x00\x00sNaPpY"

// readSnappy reads snappy's block format, which the Collector's exporters
// send as "snappy", or its framed stream format, which they send as
// "x-snappy-framed" and older clients as "snappy". Either name takes both:
// a stream opens with a 10-byte magic chunk that no encoder's block starts
// with. The compressed body is read whole first, as a block must be.
func readSnappy(r io.Reader, wireLength, limit int, res *reservation) ([]byte, error) {
	compressed, err := readAll(r, wireLength, limit, res)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(compressed, []byte(snappyStreamMagic)) {
		zr := newSnappyReader(bytes.NewReader(compressed))
		defer zr.Close()
		b, err := readAll(zr, decompressedSize(len(compressed)), limit, res)
		if err != nil && !errors.Is(err, errTooLarge) {
			return nil, fmt.Errorf("snappy: %w", err)
		}
		return b, err
	}
	n, err := snappy.DecodedLen(compressed)
	switch {
	case err != nil:
		return nil, fmt.Errorf("snappy: %w", err)
	case n > limit:
		return nil, errTooLarge
	}
	if err := res.grow(int64(n)); err != nil {
		return nil, err
	}
	b, err := snappy.Decode(make([]byte, n), compressed)
	if err != nil {
		return nil, fmt.Errorf("snappy: %w", err)
	}
	return b, nil
}
