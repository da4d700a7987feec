package ingest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"cairn/internal/otlpjson"
	"cairn/internal/otlpwire"
	"cairn/storage"
)

// httpReceiver serves svc's OTLP/HTTP handler on loopback until the test
// ends and returns the URL of its traces path.
func httpReceiver(t *testing.T, svc *Service) string {
	t.Helper()
	srv := httptest.NewServer(svc.HTTPHandler())
	t.Cleanup(srv.Close)
	return srv.URL + TracesPath
}

func openDB(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type reply struct {
	code    int
	header  http.Header
	content string
	body    []byte
}

func post(t *testing.T, url string, header map[string]string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, resp.Header.Get("Content-Type"), b}
}

// rpcStatus decodes an error body in the encoding the reply declares.
func (r reply) rpcStatus(t *testing.T) *spb.Status {
	t.Helper()
	st := &spb.Status{}
	var err error
	if r.content == contentJSON {
		err = protojson.Unmarshal(r.body, st)
	} else {
		err = proto.Unmarshal(r.body, st)
	}
	if err != nil {
		t.Fatalf("%d reply %q is not a google.rpc.Status (%s): %v", r.code, r.body, r.content, err)
	}
	return st
}

func compress(t testing.TB, encoding string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch encoding {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	case "x-snappy-framed":
		w = snappy.NewBufferedWriter(&buf)
	case "snappy": // the block format
		return snappy.Encode(nil, b)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func protobuf(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func otlpJSON(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := otlpjson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHTTPExport sends the same request in each encoding and compression
// and checks the response's encoding, its partial success, and what was
// stored.
func TestHTTPExport(t *testing.T) {
	db := openDB(t)
	url := httpReceiver(t, NewService(db, nil))
	for i, c := range []struct {
		content, encoding string
	}{
		{contentProtobuf, ""}, {contentProtobuf, "gzip"}, {contentProtobuf, "zstd"}, {contentProtobuf, "deflate"},
		{contentProtobuf, "snappy"}, {contentProtobuf, "x-snappy-framed"},
		{contentJSON, ""}, {contentJSON + "; charset=utf-8", "gzip"},
	} {
		trace := byte(10 + i)
		m := request(trace)
		var body []byte
		if strings.HasPrefix(c.content, contentJSON) {
			body = otlpJSON(t, m)
		} else {
			body = protobuf(t, m)
		}
		header := map[string]string{"Content-Type": c.content}
		if c.encoding != "" {
			body = compress(t, c.encoding, body)
			header["Content-Encoding"] = c.encoding
		}
		r := post(t, url, header, body)
		if r.code != http.StatusOK {
			t.Fatalf("%s %s: %d %q", c.content, c.encoding, r.code, r.body)
		}
		resp := &collectorpb.ExportTraceServiceResponse{}
		if strings.HasPrefix(c.content, contentJSON) {
			if r.content != contentJSON {
				t.Fatalf("JSON request answered with %q", r.content)
			}
			if !bytes.Contains(r.body, []byte(`"rejectedSpans":"2"`)) && !bytes.Contains(r.body, []byte(`"rejectedSpans": "2"`)) {
				t.Fatalf("JSON response %s lacks partialSuccess.rejectedSpans", r.body)
			}
			if err := protojson.Unmarshal(r.body, resp); err != nil {
				t.Fatal(err)
			}
		} else {
			if r.content != contentProtobuf {
				t.Fatalf("protobuf request answered with %q", r.content)
			}
			if err := proto.Unmarshal(r.body, resp); err != nil {
				t.Fatal(err)
			}
		}
		if ps := resp.GetPartialSuccess(); ps.GetRejectedSpans() != 2 || !strings.Contains(ps.GetErrorMessage(), "invalid span_id") {
			t.Fatalf("%s %s: partial success %v", c.content, c.encoding, ps)
		}
		if tr, err := db.Trace(context.Background(), storage.TraceID{15: trace}, storage.TimeRange{}); err != nil || tr == nil || tr.Spans != 1 {
			t.Fatalf("%s %s: stored %v, %v; want the one valid span", c.content, c.encoding, tr, err)
		}
	}
	// An empty request is a success with no partial_success.
	if r := post(t, url, map[string]string{"Content-Type": contentJSON}, []byte(`{}`)); r.code != http.StatusOK || string(r.body) != "{}" {
		t.Fatalf("empty JSON request: %d %q", r.code, r.body)
	}
	if r := post(t, url, map[string]string{"Content-Type": contentProtobuf}, nil); r.code != http.StatusOK || len(r.body) != 0 {
		t.Fatalf("empty protobuf request: %d %q", r.code, r.body)
	}
}

// TestHTTPRefusals checks each way a request is refused whole: the status
// code, a google.rpc.Status body in the request's encoding saying why, and
// that nothing of the request was stored.
func TestHTTPRefusals(t *testing.T) {
	db := openDB(t)
	const limit = 1 << 20
	svc := NewService(db, &Options{MaxRequestBytes: limit})
	url := httpReceiver(t, svc)
	valid := protobuf(t, request(1))
	huge := bytes.Repeat([]byte{0}, 64<<20) // compresses to about 64 KiB
	large := huge[:4<<20]                   // snappy compresses it to about 200 KiB
	for _, c := range []struct {
		name    string
		method  string
		path    string
		header  map[string]string
		body    []byte
		code    int
		content string
		reason  string
	}{
		{"truncated protobuf", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf}, valid[:len(valid)-3], 400, contentProtobuf, "malformed OTLP trace request"},
		{"protobuf that is not OTLP", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf}, []byte{0x0a, 0x05, 0x01}, 400, contentProtobuf, "malformed"},
		{"JSON that is not JSON", "POST", TracesPath, map[string]string{"Content-Type": contentJSON}, []byte(`{"resourceSpans": [`), 400, contentJSON, "malformed OTLP/JSON"},
		{"JSON with a non-hex ID", "POST", TracesPath, map[string]string{"Content-Type": contentJSON},
			[]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not hex"}]}]}]}`), 400, contentJSON, "is not hex"},
		{"JSON of the wrong shape", "POST", TracesPath, map[string]string{"Content-Type": contentJSON}, []byte(`{"resourceSpans":7}`), 400, contentJSON, "malformed OTLP/JSON"},
		{"corrupt gzip", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": "gzip"}, valid, 400, contentProtobuf, "gzip"},
		{"gzip bomb", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": "gzip"}, compress(t, "gzip", huge), 413, contentProtobuf, "larger than the limit"},
		{"zstd bomb", "POST", TracesPath, map[string]string{"Content-Type": contentJSON, "Content-Encoding": "zstd"}, compress(t, "zstd", huge), 413, contentJSON, "larger than the limit"},
		{"corrupt snappy", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": "snappy"}, valid, 400, contentProtobuf, "snappy"},
		{"snappy bomb", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": "snappy"}, compress(t, "snappy", large), 413, contentProtobuf, "larger than the limit"},
		{"framed snappy bomb", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": "snappy"}, compress(t, "x-snappy-framed", large), 413, contentProtobuf, "larger than the limit"},
		{"body over the limit", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf}, make([]byte, limit+1), 413, contentProtobuf, "larger than the limit"},
		{"unknown encoding", "POST", TracesPath, map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": "br"}, valid, 415, contentProtobuf, `Content-Encoding "br"`},
		{"text", "POST", TracesPath, map[string]string{"Content-Type": "text/plain"}, valid, 415, contentProtobuf, `Content-Type "text/plain"`},
		{"no content type", "POST", TracesPath, nil, valid, 415, contentProtobuf, "Content-Type"},
		{"GET", "GET", TracesPath, map[string]string{"Content-Type": contentJSON}, nil, 405, contentJSON, "POST"},
		{"metrics", "POST", "/v1/metrics", map[string]string{"Content-Type": contentProtobuf}, valid, 404, contentProtobuf, "traces"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, strings.TrimSuffix(url, TracesPath)+c.path, bytes.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			r := do(t, req)
			if r.code != c.code || r.content != c.content {
				t.Fatalf("%d %s, want %d %s: %q", r.code, r.content, c.code, c.content, r.body)
			}
			if st := r.rpcStatus(t); !strings.Contains(st.GetMessage(), c.reason) {
				t.Fatalf("status message %q does not say %q", st.GetMessage(), c.reason)
			}
			if c.code == 405 && r.header.Get("Allow") != "POST" {
				t.Fatalf("405 without Allow: POST")
			}
		})
	}
	if tr, _ := db.Trace(context.Background(), storage.TraceID{15: 1}, storage.TimeRange{}); tr != nil {
		t.Fatal("a span of a refused request was stored")
	}
	// The pooled decompressors that met the bombs decode the next body.
	for _, enc := range []string{"gzip", "zstd", "snappy", "x-snappy-framed"} {
		if r := post(t, url, map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": enc}, compress(t, enc, valid)); r.code != http.StatusOK {
			t.Fatalf("a %s body after the bombs: %d %q", enc, r.code, r.body)
		}
	}
	if n := svc.InflightBytes(); n != 0 {
		t.Fatalf("%d bytes still reserved once every request is answered", n)
	}
}

// chunked hides a body's length, so that the client sends it chunked.
type chunked struct{ io.Reader }

// TestHTTPChunkedBodies checks bodies whose length is not declared: taken
// within the limit, refused past it, compressed or not.
func TestHTTPChunkedBodies(t *testing.T) {
	db := openDB(t)
	const limit = 256 << 10
	svc := NewService(db, &Options{MaxRequestBytes: limit})
	url := httpReceiver(t, svc)
	send := func(encoding string, body []byte) reply {
		req, _ := http.NewRequest(http.MethodPost, url, chunked{bytes.NewReader(body)})
		req.Header.Set("Content-Type", contentProtobuf)
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		if req.ContentLength != -1 && req.ContentLength != 0 {
			t.Fatalf("request declares its length %d", req.ContentLength)
		}
		return do(t, req)
	}
	valid := protobuf(t, request(1))
	if r := send("", valid); r.code != http.StatusOK {
		t.Fatalf("chunked body: %d %q", r.code, r.body)
	}
	if r := send("gzip", compress(t, "gzip", protobuf(t, request(2)))); r.code != http.StatusOK {
		t.Fatalf("chunked gzip body: %d %q", r.code, r.body)
	}
	if r := send("", make([]byte, limit+1)); r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over the limit: %d", r.code)
	}
	// Empty gzip members decompress to nothing, however many arrive.
	empty := compress(t, "gzip", nil)
	if r := send("gzip", bytes.Repeat(empty, limit/len(empty)+1)); r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("endless empty gzip members: %d", r.code)
	}
	if n := svc.InflightBytes(); n != 0 {
		t.Fatalf("%d bytes still reserved", n)
	}
}

// stalled sends part of a body and then nothing, until closed.
type stalled struct {
	sent   bool
	closed chan struct{}
}

func (s *stalled) Read(p []byte) (int, error) {
	if !s.sent {
		s.sent = true
		return copy(p, "\x0a\x05"), nil
	}
	<-s.closed
	return 0, io.EOF
}

// TestHTTPStalledBody checks that a body that stops arriving is given up on,
// and its reservation returned.
func TestHTTPStalledBody(t *testing.T) {
	db := openDB(t)
	svc := NewService(db, &Options{BodyTimeout: 200 * time.Millisecond})
	url := httpReceiver(t, svc)
	body := &stalled{closed: make(chan struct{})}
	defer close(body.closed)
	req, _ := http.NewRequest(http.MethodPost, url, body)
	req.ContentLength = 1000
	req.Header.Set("Content-Type", contentJSON)
	r := do(t, req)
	if r.code != http.StatusRequestTimeout {
		t.Fatalf("stalled body: %d %q, want 408", r.code, r.body)
	}
	if st := r.rpcStatus(t); !strings.Contains(st.GetMessage(), "did not arrive") {
		t.Fatalf("408 status %q", st.GetMessage())
	}
	if n := svc.InflightBytes(); n != 0 {
		t.Fatalf("%d bytes still reserved", n)
	}
}

// gate holds every Write until it is opened, so that requests stay in
// flight.
type gate struct {
	Writer
	entered chan struct{}
	open    chan struct{}
}

func (g *gate) Write(ctx context.Context, req []byte, b *otlpwire.Batch) error {
	g.entered <- struct{}{}
	<-g.open
	return g.Writer.Write(ctx, req, b)
}

// TestHTTPRetryable checks the refusals clients retry: 429 while the
// in-flight bound is taken, and 503 once the store is closed, both with
// Retry-After.
func TestHTTPRetryable(t *testing.T) {
	db := openDB(t)
	g := &gate{Writer: db, entered: make(chan struct{}, 8), open: make(chan struct{})}
	body := protobuf(t, request(1))
	url := httpReceiver(t, NewService(g, &Options{MaxInflightBytes: int64(len(body)) + 10, AdmitWait: 10 * time.Millisecond}))
	header := map[string]string{"Content-Type": contentProtobuf}

	var wg sync.WaitGroup
	wg.Add(1)
	var first reply
	go func() { defer wg.Done(); first = post(t, url, header, body) }()
	<-g.entered
	r := post(t, url, header, protobuf(t, request(2)))
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Fatalf("second request while the bound is taken: %d, Retry-After %q; want 429, 1", r.code, r.header.Get("Retry-After"))
	}
	if st := r.rpcStatus(t); !strings.Contains(st.GetMessage(), "retry") {
		t.Fatalf("429 status %q", st.GetMessage())
	}
	close(g.open)
	wg.Wait()
	if first.code != http.StatusOK {
		t.Fatalf("first request: %d %q", first.code, first.body)
	}
	if r := post(t, url, header, protobuf(t, request(3))); r.code != http.StatusOK {
		t.Fatalf("a request once the bound is free again: %d %q", r.code, r.body)
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r = post(t, url, header, protobuf(t, request(4)))
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("export to a closed store: %d, Retry-After %q; want 503 with Retry-After", r.code, r.header.Get("Retry-After"))
	}
}

// TestHTTPInflightBound checks that the bound counts what a request takes
// as it decompresses, not what it declares: while one request is held in
// flight, a small compressed body that inflates past the bound is refused
// with 429, and a request alone is taken whatever its size.
func TestHTTPInflightBound(t *testing.T) {
	db := openDB(t)
	g := &gate{Writer: db, entered: make(chan struct{}, 8), open: make(chan struct{})}
	const bound = 4 << 20
	svc := NewService(g, &Options{MaxInflightBytes: bound, AdmitWait: 10 * time.Millisecond})
	url := httpReceiver(t, svc)
	header := map[string]string{"Content-Type": contentProtobuf, "Content-Encoding": "gzip"}

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if r := post(t, url, header, compress(t, "gzip", protobuf(t, request(1)))); r.code != http.StatusOK {
			t.Errorf("held request: %d %q", r.code, r.body)
		}
	})
	<-g.entered
	inflate := bigRequest(5<<20, 2) // over the bound once inflated, a few KiB on the wire
	r := post(t, url, header, compress(t, "gzip", inflate))
	if r.code != http.StatusTooManyRequests {
		t.Fatalf("inflating request while another is held: %d %q, want 429", r.code, r.body)
	}
	close(g.open)
	wg.Wait()
	if r := post(t, url, header, compress(t, "gzip", inflate)); r.code != http.StatusOK {
		t.Fatalf("the same request alone: %d %q", r.code, r.body)
	}
	if n := svc.InflightBytes(); n != 0 {
		t.Fatalf("%d bytes still reserved", n)
	}
}

// bigRequest is a request of one span whose name makes it size bytes.
func bigRequest(size int, trace byte) []byte {
	m := request(trace)
	m.ResourceSpans[0].ScopeSpans[0].Spans = m.ResourceSpans[0].ScopeSpans[0].Spans[:1]
	m.ResourceSpans[0].ScopeSpans[0].Spans[0].Name = strings.Repeat("a", size)
	b, _ := proto.Marshal(m)
	return b
}

// TestHTTPUnauthorized checks the answer to a request Authorize refuses:
// 401, a google.rpc.Status in the request's encoding, WWW-Authenticate,
// and CORS headers for an allowed origin, so that a browser can tell.
func TestHTTPUnauthorized(t *testing.T) {
	db := openDB(t)
	url := httpReceiver(t, NewService(db, &Options{
		CORSAllowedOrigins: []string{"https://shop.example.com"},
		Authorize: func(r *http.Request) error {
			if r.Header.Get("Authorization") != "Bearer right" {
				return errors.New("no entry")
			}
			return nil
		},
	}))
	for _, content := range []string{contentProtobuf, contentJSON} {
		r := post(t, url, map[string]string{"Content-Type": content, "Origin": "https://shop.example.com"}, []byte("{}"))
		if r.code != http.StatusUnauthorized || r.content != content || r.header.Get("WWW-Authenticate") == "" ||
			r.header.Get("Access-Control-Allow-Origin") != "https://shop.example.com" {
			t.Fatalf("%s without a token: %d %s %v", content, r.code, r.content, r.header)
		}
		if st := r.rpcStatus(t); st.GetMessage() != "no entry" {
			t.Fatalf("401 status %q", st.GetMessage())
		}
	}
	if r := post(t, url, map[string]string{"Content-Type": contentJSON, "Authorization": "Bearer right"}, []byte("{}")); r.code != http.StatusOK {
		t.Fatalf("with the token: %d %q", r.code, r.body)
	}
	// A preflight carries no token, by design.
	req, _ := http.NewRequest(http.MethodOptions, url, nil)
	req.Header.Set("Origin", "https://shop.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	if r := do(t, req); r.code != http.StatusNoContent {
		t.Fatalf("preflight: %d", r.code)
	}
}

// TestCORS checks preflight answers and headers for allowed and other
// origins.
func TestCORS(t *testing.T) {
	db := openDB(t)
	url := httpReceiver(t, NewService(db, &Options{CORSAllowedOrigins: []string{"https://shop.example.com", "https://*.dev.example.com"}}))
	preflight := func(origin string) reply {
		req, _ := http.NewRequest(http.MethodOptions, url, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		return do(t, req)
	}
	for _, origin := range []string{"https://shop.example.com", "https://a.dev.example.com"} {
		r := preflight(origin)
		if r.code != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != origin ||
			r.header.Get("Access-Control-Allow-Methods") != "POST" || r.header.Get("Access-Control-Allow-Headers") != "content-type" {
			t.Fatalf("preflight from %s: %d %v", origin, r.code, r.header)
		}
	}
	for _, origin := range []string{"https://evil.example.com", "https://dev.example.com"} {
		if r := preflight(origin); r.code != http.StatusForbidden || r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight from %s: %d %v, want 403 without CORS headers", origin, r.code, r.header)
		}
	}
	r := post(t, url, map[string]string{"Content-Type": contentJSON, "Origin": "https://shop.example.com"}, otlpJSON(t, request(1)))
	if r.code != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != "https://shop.example.com" ||
		r.header.Get("Access-Control-Expose-Headers") != "Retry-After" {
		t.Fatalf("export from an allowed origin: %d %v", r.code, r.header)
	}
}

// TestCORSOriginsValidated checks which allowed origins Validate takes.
func TestCORSOriginsValidated(t *testing.T) {
	for origin, ok := range map[string]bool{
		"*": true, "https://shop.example.com": true, "http://localhost:3000": true, "https://*.example.com": true,
		"https://*.example.com:8443": true,
		"shop.example.com":           false, "https://shop.example.com/": false, "https://shop.example.com/app": false,
		"https://*example.com": false, "https://*.*.example.com": false, "https://shop.*.com": false, "*.example.com": false,
	} {
		err := (&Options{CORSAllowedOrigins: []string{origin}}).Validate()
		if (err == nil) != ok {
			t.Errorf("%q: %v", origin, err)
		}
	}
	p := newCORSPolicy([]string{"https://*.example.com"})
	for origin, want := range map[string]bool{"https://a.example.com": true, "https://a.b.example.com": true,
		"https://evilexample.com": false, "http://a.example.com": false, "https://example.com": false} {
		if p.allows(origin) != want {
			t.Errorf("allows(%q) = %v", origin, !want)
		}
	}
}

// TestHTTPJSONHalfSurrogate checks that a JSON request with half of a
// surrogate pair in one span's attribute, as the JavaScript SDK sends when
// it cuts a string through an emoji at its length limit, is stored whole,
// the half read as U+FFFD, as its protobuf exporters send it.
func TestHTTPJSONHalfSurrogate(t *testing.T) {
	db := openDB(t)
	url := httpReceiver(t, NewService(db, nil))
	now := time.Now().UnixNano()
	span := func(id int, attrs string) string {
		return fmt.Sprintf(`{"traceId":"000000000000000000000000000000%02x","spanId":"00000000000000%02x","name":"op","startTimeUnixNano":"%d","endTimeUnixNano":"%d"%s}`,
			id, id, now, now+1000, attrs)
	}
	body := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},"scopeSpans":[{"spans":[` +
		span(0x31, "") + "," + span(0x32, `,"attributes":[{"key":"note","value":{"stringValue":"ok \ud83d"}}]`) + "," + span(0x33, "") + `]}]}]}`
	r := post(t, url, map[string]string{"Content-Type": contentJSON}, []byte(body))
	if r.code != http.StatusOK || string(r.body) != "{}" {
		t.Fatalf("%d %s, want 200 and no partial success", r.code, r.body)
	}
	for _, id := range []byte{0x31, 0x32, 0x33} {
		tr, err := db.Trace(context.Background(), storage.TraceID{15: id}, storage.TimeRange{})
		if err != nil || tr == nil || tr.Spans != 1 {
			t.Fatalf("trace %x: %v, %v; want its span", id, tr, err)
		}
		if id == 0x32 && !bytes.Contains(tr.Groups[0].Spans[0], []byte("ok \ufffd")) {
			t.Errorf("the cut value is not stored as %q", "ok \ufffd")
		}
	}
}
