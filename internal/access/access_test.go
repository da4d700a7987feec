package access

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func tokenFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTokenFile checks what a token file holds: one token per line, blank
// lines and comments skipped, whitespace and CRLF line ends trimmed.
func TestTokenFile(t *testing.T) {
	tokens, err := LoadTokens(tokenFile(t, "# exporters\r\n  alpha  \r\n\r\nbeta\n#gamma\n"))
	if err != nil {
		t.Fatal(err)
	}
	for header, ok := range map[string]bool{
		"Bearer alpha": true, "Bearer beta": true, "bearer alpha": true, "BEARER beta": true, "Bearer  alpha ": true,
		"Bearer gamma": false, "Bearer #gamma": false, "Bearer alph": false, "Bearer alphaa": false,
		"Bearer ": false, "Bearer": false, "": false, "Basic alpha": false, "alpha": false,
	} {
		if err := tokens.check(header); (err == nil) != ok {
			t.Errorf("%q: %v", header, err)
		}
	}
	if err := tokens.check(""); err != errNoToken {
		t.Errorf("no header: %v, want %v", err, errNoToken)
	}
	if err := tokens.check("Bearer nope"); err != errBadToken {
		t.Errorf("a wrong token: %v, want %v", err, errBadToken)
	}
	var none *Tokens
	if err := none.check(""); err != nil {
		t.Errorf("no tokens configured refuses: %v", err)
	}
	if _, err := LoadTokens(tokenFile(t, "# nothing\n\n")); err == nil {
		t.Error("a file without tokens was taken")
	}
	if tok, err := ReadToken(tokenFile(t, "# mine\r\n s3cret \r\nother\n")); err != nil || tok != "s3cret" {
		t.Errorf("ReadToken: %q, %v", tok, err)
	}
}

// TestGuardHTTP checks the HTTP middleware: open paths, tokens, client
// certificates, and what refusals are counted as.
func TestGuardHTTP(t *testing.T) {
	tokens, err := LoadTokens(tokenFile(t, "secret\n"))
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	g := &Guard{Tokens: tokens, OpenPath: func(p string) bool { return p == "/healthz" }, RequireClientCert: true,
		Refused: func(r string) { reasons = append(reasons, r) }}
	h := g.HTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}
	for _, c := range []struct {
		path, auth string
		tls        *tls.ConnectionState
		want       int
	}{
		{"/healthz", "", nil, 200},
		{"/metrics", "Bearer secret", nil, 401},
		{"/metrics", "Bearer secret", &tls.ConnectionState{}, 401},
		{"/metrics", "", verified, 401},
		{"/metrics", "Bearer wrong", verified, 401},
		{"/metrics", "Bearer secret", verified, 200},
	} {
		req := httptest.NewRequest(http.MethodGet, c.path, nil)
		req.TLS = c.tls
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != c.want {
			t.Errorf("%s with %q, TLS %v: %d, want %d", c.path, c.auth, c.tls != nil, w.Code, c.want)
		}
	}
	want := []string{"missing_client_certificate", "missing_client_certificate", "missing_token", "invalid_token"}
	if len(reasons) != len(want) {
		t.Fatalf("refusals counted as %v, want %v", reasons, want)
	}
	for i := range want {
		if reasons[i] != want[i] {
			t.Fatalf("refusals counted as %v, want %v", reasons, want)
		}
	}
}

// TestClientTLS checks which client settings make TLS, and that a half
// named certificate is refused.
func TestClientTLS(t *testing.T) {
	if cfg, err := (Client{}).TLS(); cfg != nil || err != nil {
		t.Errorf("no TLS flags: %v, %v; want plaintext", cfg, err)
	}
	if _, err := (Client{CertFile: "c.pem"}).TLS(); err == nil {
		t.Error("a client certificate without its key was taken")
	}
	if _, err := (Client{CAFile: tokenFile(t, "not PEM")}).TLS(); err == nil {
		t.Error("a CA file without certificates was taken")
	}
	if _, err := (ServerTLS{ClientCAFile: "ca.pem"}).Config(); err == nil {
		t.Error("a client CA without a server certificate was taken")
	}
}
