package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"cairn/internal/access"
)

// pki is a test certificate authority with a server certificate for
// loopback and a client certificate, all as PEM files in a directory.
type pki struct {
	dir                           string
	ca, serverCert, serverKey     string
	clientCert, clientKey         string
	caCert                        *x509.Certificate
	caKey                         *ecdsa.PrivateKey
	rogueClientCert, rogueClientK string // signed by another CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	p.caCert, p.caKey, p.ca = p.authority(t, "ca")
	p.serverCert, p.serverKey = p.leaf(t, "server", p.caCert, p.caKey, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = p.leaf(t, "client", p.caCert, p.caKey, x509.ExtKeyUsageClientAuth)
	rogue, rogueKey, _ := p.authority(t, "rogue-ca")
	p.rogueClientCert, p.rogueClientK = p.leaf(t, "rogue-client", rogue, rogueKey, x509.ExtKeyUsageClientAuth)
	return p
}

var serial int64

// authority makes a self-signed CA certificate.
func (p *pki) authority(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	tmpl := &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	cert, key, certFile, _ := p.issue(t, name, tmpl, nil, nil)
	return cert, key, certFile
}

// leaf makes a certificate for loopback that ca signs.
func (p *pki) leaf(t *testing.T, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	tmpl := &x509.Certificate{
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	_, _, certFile, keyFile = p.issue(t, name, tmpl, ca, caKey)
	return certFile, keyFile
}

// issue signs tmpl, valid for an hour either side of now, with a new key,
// by parent, or by itself if parent is nil, and writes both as PEM files.
func (p *pki) issue(t *testing.T, name string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber, tmpl.Subject = big.NewInt(serial), pkix.Name{CommonName: name}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

func (p *pki) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dialWith connects to a gRPC port as c until the test ends.
func dialWith(t *testing.T, addr string, c access.Client) *grpc.ClientConn {
	t.Helper()
	opts, err := c.DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// httpsClient trusts p's CA and presents cert, if any.
func httpsClient(t *testing.T, c access.Client) *http.Client {
	t.Helper()
	cfg, err := c.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func httpStatus(t *testing.T, client *http.Client, method, url, token string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return -1
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestTLSAndTokens runs a server with TLS on every port and both token
// files, and checks each token rule on each port, with the CLI among the
// clients.
func TestTLSAndTokens(t *testing.T) {
	p := newPKI(t)
	ingestTokens := writeTestFile(t, p.dir, "ingest-tokens", "# exporters\ningest-secret\n\n  second-ingest  \n")
	queryTokens := writeTestFile(t, p.dir, "query-tokens", "query-secret\n")
	ingestToken := writeTestFile(t, p.dir, "ingest-token", "ingest-secret\n")
	secondIngestToken := writeTestFile(t, p.dir, "second-ingest-token", "second-ingest")
	queryToken := writeTestFile(t, p.dir, "query-token", "query-secret\n")

	cfg := testConfig(t.TempDir())
	cfg.tls = access.ServerTLS{CertFile: p.serverCert, KeyFile: p.serverKey}
	cfg.ingestTokenFile, cfg.queryTokenFile = ingestTokens, queryTokens
	s := startConfigured(t, cfg)
	defer s.shutdown()

	export := func(c access.Client) error {
		_, err := collectorpb.NewTraceServiceClient(dialWith(t, s.otlpAddr.String(), c)).Export(context.Background(), sampleTrace())
		return err
	}
	if err := export(access.Client{TokenFile: ingestToken}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext export to a TLS port: %v, want Unavailable", err)
	}
	for _, c := range []struct {
		token string
		want  codes.Code
	}{{"", codes.Unauthenticated}, {queryToken, codes.Unauthenticated}, {ingestToken, codes.OK}, {secondIngestToken, codes.OK}} {
		if err := export(access.Client{CAFile: p.ca, TokenFile: c.token}); status.Code(err) != c.want {
			t.Fatalf("OTLP/gRPC export with token file %q: %v, want %v", filepath.Base(c.token), err, c.want)
		}
	}

	body, _ := proto.Marshal(sampleTrace())
	tlsClient := httpsClient(t, access.Client{CAFile: p.ca})
	otlpHTTP := "https://" + s.otlpHTTPAddr.String() + "/v1/traces"
	if code := httpStatus(t, http.DefaultClient, "POST", "http://"+s.otlpHTTPAddr.String()+"/v1/traces", "ingest-secret", body); code == http.StatusOK {
		t.Fatal("plaintext OTLP/HTTP export to a TLS port succeeded")
	}
	for token, want := range map[string]int{"": 401, "query-secret": 401, "ingest-secret": 200, "second-ingest": 200} {
		if code := httpStatus(t, tlsClient, "POST", otlpHTTP, token, body); code != want {
			t.Fatalf("OTLP/HTTP export with token %q: %d, want %d", token, code, want)
		}
	}

	query := s.queryAddr.String()
	var out, errOut bytes.Buffer
	if err := run([]string{"services", "--addr", query, "--tls-ca-file", p.ca, "--token-file", queryToken}, &out, &errOut); err != nil || out.String() != "frontend\npayment\n" {
		t.Fatalf("services with the query token: %v, %q", err, out.String())
	}
	for _, token := range []string{ingestToken, ""} {
		args := []string{"services", "--addr", query, "--tls-ca-file", p.ca}
		if token != "" {
			args = append(args, "--token-file", token)
		}
		err := run(args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "refused the request") || !strings.Contains(err.Error(), "--token-file") {
			t.Fatalf("services with token file %q: %v", filepath.Base(token), err)
		}
	}
	if err := run([]string{"services", "--addr", query, "--token-file", queryToken}, &out, &errOut); err == nil {
		t.Fatal("plaintext query of a TLS port succeeded")
	} else if !strings.Contains(err.Error(), "--tls-ca-file") {
		t.Fatalf("plaintext query of a TLS port: %v does not suggest --tls-ca-file", err)
	}
	health, err := healthpb.NewHealthClient(dialWith(t, query, access.Client{CAFile: p.ca})).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check without a token: %v, %v", health, err)
	}

	admin := "https://" + s.httpAddr.String()
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", 200}, {"/readyz", "", 200},
		{"/metrics", "", 401}, {"/metrics", "ingest-secret", 401}, {"/metrics", "query-secret", 200},
		{"/debug/pprof/", "", 401}, {"/debug/pprof/", "query-secret", 200},
		// The UI's page and scripts hold no data; the API they call does.
		{"/", "", 200}, {"/assets/app.js", "", 200},
		{"/api/v1/services", "", 401}, {"/api/v1/services", "ingest-secret", 401}, {"/api/v1/services", "query-secret", 200},
	} {
		if code := httpStatus(t, tlsClient, "GET", admin+c.path, c.token, nil); code != c.want {
			t.Fatalf("GET %s with token %q: %d, want %d", c.path, c.token, code, c.want)
		}
	}
	m := scrape(t, tlsClient, admin, http.Header{"Authorization": {"Bearer query-secret"}})
	if n := metricValue(t, m, "cairn_unauthenticated_requests_total", "port", "otlp_grpc", "reason", "missing_token"); n != 1 {
		t.Errorf("refusals of OTLP/gRPC exports without a token: %v, want 1", n)
	}
	if n := metricValue(t, m, "cairn_unauthenticated_requests_total", "port", "otlp_http", "reason", "invalid_token"); n != 1 {
		t.Errorf("refusals of OTLP/HTTP exports with a query token: %v, want 1", n)
	}
	if n := metricValue(t, m, "cairn_ingest_accepted_spans_total"); n != 4*5 {
		t.Errorf("accepted %v spans, want 20 (two gRPC and two HTTP exports of 5)", n)
	}

	// cairn bench reaches a secured cairn with the same flags.
	for _, c := range []struct{ protocol, target string }{{"grpc", s.otlpAddr.String()}, {"http/protobuf", s.otlpHTTPAddr.String()}} {
		out.Reset()
		err := run([]string{"bench", "--protocol", c.protocol, "--target", c.target, "--reader", query, "--tls-ca-file", p.ca,
			"--token-file", ingestToken, "--reader-token-file", queryToken, "--spans", "2000", "--batch", "100", "--queries", "2", "--settle", "0"}, &out, &errOut)
		if err != nil || !strings.Contains(out.String(), "complete traces") {
			t.Fatalf("bench over %s with TLS and tokens: %v\n%s", c.protocol, err, out.String())
		}
	}
}

// TestMutualTLS checks that a server with a client CA takes only clients
// with a certificate that CA signed, on every port.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	cfg := testConfig(t.TempDir())
	cfg.tls = access.ServerTLS{CertFile: p.serverCert, KeyFile: p.serverKey, ClientCAFile: p.ca}
	s := startConfigured(t, cfg)
	defer s.shutdown()

	body, _ := proto.Marshal(sampleTrace())
	for _, c := range []struct {
		name   string
		client access.Client
		ok     bool
	}{
		{"no client certificate", access.Client{CAFile: p.ca}, false},
		{"a certificate of another CA", access.Client{CAFile: p.ca, CertFile: p.rogueClientCert, KeyFile: p.rogueClientK}, false},
		{"a certificate of the client CA", access.Client{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}, true},
	} {
		_, err := collectorpb.NewTraceServiceClient(dialWith(t, s.otlpAddr.String(), c.client)).Export(context.Background(), sampleTrace())
		if (err == nil) != c.ok {
			t.Fatalf("OTLP/gRPC with %s: %v", c.name, err)
		}
		code := httpStatus(t, httpsClient(t, c.client), "POST", "https://"+s.otlpHTTPAddr.String()+"/v1/traces", "", body)
		if (code == http.StatusOK) != c.ok {
			t.Fatalf("OTLP/HTTP with %s: %d", c.name, code)
		}
		code = httpStatus(t, httpsClient(t, c.client), "GET", "https://"+s.httpAddr.String()+"/metrics", "", nil)
		if (code == http.StatusOK) != c.ok {
			t.Fatalf("/metrics with %s: %d", c.name, code)
		}
		// Probes of health present no certificate.
		if code := httpStatus(t, httpsClient(t, c.client), "GET", "https://"+s.httpAddr.String()+"/healthz", "", nil); code != http.StatusOK {
			t.Fatalf("/healthz with %s: %d", c.name, code)
		}
		args := []string{"services", "--addr", s.queryAddr.String(), "--tls-ca-file", p.ca, "--timeout", "5s"}
		if c.client.CertFile != "" {
			args = append(args, "--tls-cert-file", c.client.CertFile, "--tls-key-file", c.client.KeyFile)
		}
		var out, errOut bytes.Buffer
		if err := run(args, &out, &errOut); (err == nil) != c.ok {
			t.Fatalf("cairn services with %s: %v", c.name, err)
		}
	}
}

// TestTokenFiles checks what a token file may hold and that a server
// refuses to start on a bad one.
func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		content string
		ok      bool
	}{{"", false}, {"# only a comment\n\n", false}, {"tok\n", true}} {
		cfg := testConfig(t.TempDir())
		cfg.ingestTokenFile = writeTestFile(t, dir, "tokens", c.content)
		s, err := startServer(cfg)
		if (err == nil) != c.ok {
			t.Fatalf("token file %q: %v", c.content, err)
		}
		if err == nil {
			s.shutdown()
		} else if !strings.Contains(err.Error(), "holds no token") {
			t.Fatalf("token file %q: %v", c.content, err)
		}
	}
	cfg := testConfig(t.TempDir())
	cfg.queryTokenFile = filepath.Join(dir, "missing")
	if _, err := startServer(cfg); err == nil || !strings.Contains(err.Error(), "read token file") {
		t.Fatalf("a missing token file: %v", err)
	}
	cfg = testConfig(t.TempDir())
	cfg.tls = access.ServerTLS{CertFile: filepath.Join(dir, "tokens")}
	if _, err := startServer(cfg); err == nil {
		t.Fatal("a certificate without a key was accepted")
	}
}

// TestLoopback checks which listener addresses count as this machine only.
func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "0.0.0.0:1": false, "[::]:1": false, "192.0.2.7:1": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := loopback(a); got != want {
			t.Errorf("loopback(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestLocalOnly checks that the HTTP port, on loopback without tokens,
// answers only requests addressed to localhost or a loopback address (not
// a rebinding web page's name), and with tokens any name; and that its
// answers may not be framed or sniffed.
func TestLocalOnly(t *testing.T) {
	get := func(s *server, host, token string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+s.httpAddr.String()+"/api/v1/services", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	s := startTestServer(t, t.TempDir())
	defer s.shutdown()
	_, port, _ := net.SplitHostPort(s.httpAddr.String())
	for host, want := range map[string]int{
		"localhost:" + port: 200, "LOCALHOST.:" + port: 200, "ui.localhost:" + port: 200, "127.0.0.1:" + port: 200,
		"127.8.9.10": 200, "[::1]:" + port: 200,
		"attacker.example:" + port: http.StatusMisdirectedRequest, "192.0.2.7:" + port: http.StatusMisdirectedRequest,
		"localhost.attacker.example": http.StatusMisdirectedRequest,
	} {
		resp := get(s, host, "")
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
		if want == 200 && (resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Content-Type-Options") != "nosniff") {
			t.Errorf("Host %s: headers %v", host, resp.Header)
		}
	}
	cfg := testConfig(t.TempDir())
	cfg.queryTokenFile = writeTestFile(t, t.TempDir(), "query.tokens", "secret\n")
	st := startConfigured(t, cfg)
	defer st.shutdown()
	if resp := get(st, "traces.example.com", "secret"); resp.StatusCode != 200 {
		t.Errorf("with tokens, another name: %d, want 200", resp.StatusCode)
	}
}

// TestTLSMistakesExplained checks that the CLI says in one line what to
// change when its TLS flags do not fit the server's.
func TestTLSMistakesExplained(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	cfg := testConfig(t.TempDir())
	cfg.tls = access.ServerTLS{CertFile: p.serverCert, KeyFile: p.serverKey, ClientCAFile: p.ca}
	s := startConfigured(t, cfg)
	defer s.shutdown()
	plain := startTestServer(t, t.TempDir())
	defer plain.shutdown()
	clientCert := []string{"--tls-cert-file", p.clientCert, "--tls-key-file", p.clientKey}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", s.queryAddr.String(), "--tls-ca-file", p.ca}, "pass --tls-cert-file and --tls-key-file"},
		{append([]string{"--addr", s.queryAddr.String(), "--tls-ca-file", other.ca}, clientCert...), "--tls-ca-file must name the CA"},
		{[]string{"--addr", s.queryAddr.String()}, "if it speaks TLS, pass --tls-ca-file"},
		{[]string{"--addr", plain.queryAddr.String(), "--tls-ca-file", p.ca}, "does not speak TLS"},
	} {
		var out, errOut bytes.Buffer
		err := run(append([]string{"services"}, c.args...), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("services %v: %v; want one line saying %q", c.args, err, c.want)
		}
	}
}
