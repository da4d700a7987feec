package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"cairn/internal/respwriter"
)

// A panic in one call is a bug in that call's code, and must not end the
// process: the server's other calls, its ingest and what it has
// acknowledged but not yet cut would go with it. The call fails with
// Internal (500 over HTTP), and the panic is logged with its stack.

// recovered logs a panic value recovered from call and returns the error
// the call fails with.
func recovered(log *slog.Logger, call string, v any) error {
	log.Error("a call panicked; it failed, and the server goes on", "call", call, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s failed on an internal error (a bug; the server's log has its stack): %v", call, v)
}

// recoverOptions are gRPC server options that turn a handler's panic into
// an Internal error. They go first, so that they also cover every other
// interceptor.
func recoverOptions(log *slog.Logger) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(recoverUnary(log)), grpc.ChainStreamInterceptor(recoverStream(log))}
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (_ any, err error) {
		defer func() {
			if v := recover(); v != nil {
				err = recovered(log, info.FullMethod, v)
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = recovered(log, info.FullMethod, v)
			}
		}()
		return handler(srv, ss)
	}
}

// recoverHTTP answers a request whose handler panicked with 500 if nothing
// was written yet, and logs the panic; net/http would only drop the
// connection. http.ErrAbortHandler, a handler's way to end a response it
// has started, passes through.
func recoverHTTP(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &respwriter.Watched{ResponseWriter: w}
		defer func() {
			v := recover()
			switch {
			case v == nil:
				return
			case v == http.ErrAbortHandler:
				panic(v)
			}
			err := recovered(log, r.Method+" "+r.URL.Path, v)
			if sw.Started {
				panic(http.ErrAbortHandler)
			}
			http.Error(w, status.Convert(err).Message(), http.StatusInternalServerError)
		}()
		h.ServeHTTP(sw, r)
	})
}
