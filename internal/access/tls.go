package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ServerTLS names a server's certificate files.
type ServerTLS struct {
	CertFile, KeyFile string
	// ClientCAFile, if set, makes TLS mutual: clients must present a
	// certificate signed by one of its CAs.
	ClientCAFile string
}

// Config returns the TLS configuration of the files, or nil if no
// certificate is named.
func (s ServerTLS) Config() (*tls.Config, error) {
	if s.CertFile == "" && s.KeyFile == "" {
		if s.ClientCAFile != "" {
			return nil, errors.New("a client CA needs a server certificate and key too")
		}
		return nil, nil
	}
	if s.CertFile == "" || s.KeyFile == "" {
		return nil, errors.New("TLS needs both a certificate file and a key file")
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.ClientCAFile != "" {
		if cfg.ClientCAs, err = loadCAs(s.ClientCAFile); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Client is how a client reaches a port: TLS, if the server speaks it, and
// a token, if the port needs one.
type Client struct {
	// CAFile verifies the server's certificate and turns TLS on; without
	// it, TLS is on if a client certificate is named, verified against the
	// system's roots.
	CAFile string
	// CertFile and KeyFile are the client's certificate, for mutual TLS.
	CertFile, KeyFile string
	// TokenFile holds the bearer token to send, on its first line.
	TokenFile string
}

// TLS returns the client's TLS configuration, or nil for plaintext.
func (c Client) TLS() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" && c.KeyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var err error
	if c.CAFile != "" {
		if cfg.RootCAs, err = loadCAs(c.CAFile); err != nil {
			return nil, err
		}
	}
	if c.CertFile != "" || c.KeyFile != "" {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, errors.New("a client certificate needs both its certificate file and its key file")
		}
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Token returns the token to send, or "" for none.
func (c Client) Token() (string, error) {
	if c.TokenFile == "" {
		return "", nil
	}
	return ReadToken(c.TokenFile)
}

// DialOptions returns the gRPC dial options that carry the client's TLS and
// token.
func (c Client) DialOptions() ([]grpc.DialOption, error) {
	cfg, err := c.TLS()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	token, err := c.Token()
	if err != nil {
		return nil, err
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token, cfg != nil}))
	}
	return opts, nil
}

// bearer sends a token with every call. Unlike gRPC's OAuth credentials it
// works without TLS too, for ports on a trusted network.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }
