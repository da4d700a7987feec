package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRecoverPanics checks that a call whose handler panics fails with
// Internal, or 500, and has its panic logged, rather than ending the
// process; and that a handler's abort of a started response still ends
// the connection.
func TestRecoverPanics(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	boom := func() { var s []int; _ = s[3] }

	_, err := recoverUnary(log)(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Unary"},
		func(context.Context, any) (any, error) { boom(); return nil, nil })
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "/x.Y/Unary") {
		t.Errorf("unary: %v, want Internal naming the method", err)
	}
	err = recoverStream(log)(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x.Y/Stream"},
		func(any, grpc.ServerStream) error { boom(); return nil })
	if status.Code(err) != codes.Internal {
		t.Errorf("stream: %v, want Internal", err)
	}
	if n := strings.Count(logged.String(), "index out of range"); n != 2 || !strings.Contains(logged.String(), "recover_test.go") {
		t.Errorf("log has %d panics, or no stack:\n%s", n, logged.String())
	}

	h := recoverHTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { boom() }), log)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/x", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "GET /api/v1/x") {
		t.Errorf("HTTP: %d %q, want 500 naming the call", rec.Code, rec.Body.String())
	}
	aborted := recoverHTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("part"))
		panic(http.ErrAbortHandler)
	}), log)
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("abort: recovered %v, want http.ErrAbortHandler", v)
			}
		}()
		aborted.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}()
}
