package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"cairn/internal/grpctest"
	"cairn/internal/otlptest"
	"cairn/query/jaegerpb"
)

// TestDiskFullAsClientsSeeIt serves a store whose disk is full (a reserve
// larger than any disk): exports are refused with a retryable code and a
// message that says why, over both protocols, readiness says why too, and
// queries keep working.
func TestDiskFullAsClientsSeeIt(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.diskReserve = 1 << 62
	s := startConfigured(t, cfg)
	defer func() {
		// Closing cuts the refused exports' spans, which fails as well.
		if err := s.shutdown(); err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Error(err)
		}
	}()

	req := otlptest.EveryField()
	_, err := collectorpb.NewTraceServiceClient(grpctest.Dial(t, s.otlpAddr.String())).Export(context.Background(), req)
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "disk full") ||
		len(st.Details()) != 1 || st.Details()[0].(*errdetails.RetryInfo).GetRetryDelay() == nil {
		t.Fatalf("gRPC export to a full disk: %v %q %v; want Unavailable saying disk full, with RetryInfo", st.Code(), st.Message(), st.Details())
	}

	body, _ := proto.Marshal(req)
	resp, err := http.Post("http://"+s.otlpHTTPAddr.String()+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP export to a full disk: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	if ok, why := s.readiness(); ok || !strings.Contains(why, "wal: disk full") {
		t.Fatalf("readiness with a full disk: %v %q", ok, why)
	}
	if _, err := jaegerpb.NewTraceReaderClient(grpctest.Dial(t, s.queryAddr.String())).GetServices(context.Background(), &jaegerpb.GetServicesRequest{}); err != nil {
		t.Fatalf("query with a full disk: %v", err)
	}
}
