package access

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Guard checks one port's requests against its tokens.
type Guard struct {
	// Tokens are those the port accepts; nil accepts every request.
	Tokens *Tokens
	// OpenMethod reports whether a gRPC method, by its full name, needs no
	// token, such as health checks; nil opens none.
	OpenMethod func(fullMethod string) bool
	// OpenPath reports whether an HTTP path needs neither a token nor a
	// client certificate, such as health checks; nil opens none.
	OpenPath func(path string) bool
	// RequireClientCert makes HTTP requests to paths that are not open
	// present a verified client certificate: the port's TLS asks for one
	// without requiring it, so that open paths stay open to probes that
	// have none.
	RequireClientCert bool
	// Refused, if set, is called for every refused request with why:
	// missing_token, invalid_token or missing_client_certificate.
	Refused func(reason string)
}

// Check returns nil if an Authorization header value carries one of the
// tokens, and otherwise the error to answer with, counted as refused.
func (g *Guard) Check(authorization string) error {
	err := g.Tokens.check(authorization)
	if err != nil {
		g.refused(err)
	}
	return err
}

func (g *Guard) refused(err error) {
	if g.Refused == nil {
		return
	}
	switch {
	case errors.Is(err, errNoToken):
		g.Refused("missing_token")
	case errors.Is(err, errNoClientCert):
		g.Refused("missing_client_certificate")
	default:
		g.Refused("invalid_token")
	}
}

// ServerOption returns the gRPC option that refuses calls without a valid
// token with Unauthenticated. It checks a call's headers before its message
// is read, so a client without a token costs no more than its headers.
func (g *Guard) ServerOption() grpc.ServerOption {
	return grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if g.Tokens == nil || g.OpenMethod != nil && g.OpenMethod(info.FullMethodName) {
			return ctx, nil
		}
		auth := ""
		if v := info.Header.Get("authorization"); len(v) > 0 {
			auth = v[0]
		}
		if err := g.Check(auth); err != nil {
			return ctx, status.Error(codes.Unauthenticated, err.Error())
		}
		return ctx, nil
	})
}

var errNoClientCert = errors.New("this port needs a client certificate signed by its client CA")

// HTTP wraps h so that requests without a valid token, or without a client
// certificate where one is required, are refused with 401.
func (g *Guard) HTTP(h http.Handler) http.Handler {
	if g.Tokens == nil && !g.RequireClientCert {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.OpenPath == nil || !g.OpenPath(r.URL.Path) {
			if g.RequireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
				g.refused(errNoClientCert)
				http.Error(w, errNoClientCert.Error(), http.StatusUnauthorized)
				return
			}
			if err := g.Check(r.Header.Get("Authorization")); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cairn"`)
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// IsHealthMethod reports whether a gRPC method is a health check.
func IsHealthMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}
