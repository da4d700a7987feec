package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultQueryPort is the port `cairn serve` takes queries on unless told
// otherwise.
const defaultQueryPort = "17271"

// rpcError turns the error of a call to the query server at addr into one
// line that says what went wrong and what to do about it, instead of gRPC's
// "rpc error: code = … desc = …".
func rpcError(addr string, timeout time.Duration, err error) error {
	st := status.Convert(err)
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		if cause, notGRPC, ok := connectFailure(msg, timeout); ok {
			if notGRPC {
				return notQueryPort(addr, "it does not speak gRPC")
			}
			return fmt.Errorf("cannot reach cairn at %s (%s); is 'cairn serve' running? (--addr sets the address)", addr, cause)
		}
		if st.Code() == codes.DeadlineExceeded {
			return fmt.Errorf("no answer from %s within %v (--timeout)", addr, timeout)
		}
	case codes.Unimplemented:
		return notQueryPort(addr, "it does not serve jaeger.storage.v2")
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
		return errors.New(msg)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s refused the request: %s (pass a query token with --token-file)", addr, msg)
	}
	return fmt.Errorf("%s failed the request: %s", addr, msg)
}

func notQueryPort(addr, why string) error {
	return fmt.Errorf("%s is not a cairn query port (%s); the query port is %s by default", addr, why, defaultQueryPort)
}

// connectFailure tells from a status message whether the call failed for
// want of a connection, and why, in a few words. gRPC says so only in its
// messages: "connection error: desc = \"transport: Error while dialing: dial
// tcp …: connect: connection refused\"" and the like.
func connectFailure(msg string, timeout time.Duration) (cause string, notGRPC, ok bool) {
	switch {
	case strings.HasPrefix(msg, "name resolver error"):
		return "no such host", false, true
	case strings.Contains(msg, "while waiting for connections to become ready"):
		return fmt.Sprintf("no connection within %v", timeout), false, true
	case !strings.HasPrefix(msg, "connection error: desc = "):
		return "", false, false
	}
	desc := strings.TrimPrefix(msg, "connection error: desc = ")
	if d, err := strconv.Unquote(desc); err == nil {
		desc = d
	}
	// An HTTP/1 server answers the HTTP/2 preface with a status line, which
	// gRPC reads as a frame header.
	if strings.Contains(desc, "HTTP/1.1") {
		return "", true, true
	}
	return desc[strings.LastIndex(desc, ": ")+len(": "):], false, true
}
