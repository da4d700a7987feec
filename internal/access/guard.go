package access

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Guard checks one port's requests against its tokens.
type Guard struct {
	// Tokens are those the port accepts; nil accepts every request.
	Tokens *Tokens
	// Open reports whether a gRPC method (its full name) or an HTTP request
	// needs no token, such as health checks. Either may be nil.
	OpenMethod  func(fullMethod string) bool
	OpenRequest func(*http.Request) bool
	// Refused, if set, is called for every refused request.
	Refused func(reason string)
}

func (g *Guard) refuse(err error) {
	if g.Refused == nil {
		return
	}
	reason := "invalid_token"
	if err == errNoToken {
		reason = "missing_token"
	}
	g.Refused(reason)
}

func (g *Guard) checkGRPC(ctx context.Context, method string) error {
	if g.Tokens == nil || g.OpenMethod != nil && g.OpenMethod(method) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	auth := ""
	if v := md.Get("authorization"); len(v) > 0 {
		auth = v[0]
	}
	if err := g.Tokens.check(auth); err != nil {
		g.refuse(err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return nil
}

// ServerOptions returns the interceptors that refuse gRPC calls without a
// valid token with Unauthenticated.
func (g *Guard) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := g.checkGRPC(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := g.checkGRPC(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

// HTTP wraps h so that requests without a valid token are refused with 401,
// answered by deny, which writes the body the port's clients expect.
func (g *Guard) HTTP(h http.Handler, deny func(w http.ResponseWriter, r *http.Request, msg string)) http.Handler {
	if g.Tokens == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.OpenRequest == nil || !g.OpenRequest(r) {
			if err := g.Tokens.check(r.Header.Get("Authorization")); err != nil {
				g.refuse(err)
				w.Header().Set("WWW-Authenticate", `Bearer realm="cairn"`)
				deny(w, r, err.Error())
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// IsPreflight reports whether r is a CORS preflight request, which browsers
// send without credentials by design.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}

// IsHealthMethod reports whether a gRPC method is a health check.
func IsHealthMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}
