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
	case codes.ResourceExhausted:
		return fmt.Errorf("%s is busy: %s", addr, msg)
	case codes.Unavailable, codes.DeadlineExceeded:
		// The server's own time limit names the flag that sets it.
		if strings.Contains(msg, "--query-timeout") {
			return fmt.Errorf("%s stopped the query: %s", addr, msg)
		}
		if cause, notGRPC, ok := connectFailure(msg, timeout); ok {
			switch {
			case notGRPC:
				return notQueryPort(addr, "it does not speak gRPC")
			case strings.Contains(cause, "tls:") || strings.Contains(cause, "x509:"):
				return fmt.Errorf("TLS with %s failed (%s); %s", addr, cause, tlsHint(cause))
			case strings.Contains(cause, "server preface"):
				return fmt.Errorf("%s closed the connection (%s); if it speaks TLS, pass --tls-ca-file (and --tls-cert-file, --tls-key-file if it wants a client certificate)", addr, cause)
			}
			return fmt.Errorf("cannot reach cairn at %s (%s); is 'cairn serve' running? (--addr sets the address)", addr, cause)
		}
		if st.Code() == codes.DeadlineExceeded {
			return fmt.Errorf("no answer from %s within %v (--timeout)", addr, timeout)
		}
		// A TLS 1.3 server checks the client's certificate after the client
		// has finished its handshake, so a client without one may see only
		// the connection closing under its first write.
		if strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") {
			return fmt.Errorf("%s closed the connection (%s); if it wants a client certificate, pass --tls-cert-file and --tls-key-file", addr, lastPart(msg))
		}
	case codes.Unimplemented:
		return notQueryPort(addr, "it does not serve jaeger.storage.v2")
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
		return errors.New(msg)
	case codes.DataLoss:
		return fmt.Errorf("%s (stop cairn, then run cairn check and cairn repair on its data directory)", msg)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s refused the request: %s (pass a query token with --token-file)", addr, msg)
	}
	return fmt.Errorf("%s failed the request: %s", addr, msg)
}

// tlsHint says what to change when a TLS handshake fails for cause.
func tlsHint(cause string) string {
	switch {
	case strings.Contains(cause, "does not look like a TLS handshake"):
		return "the server does not speak TLS: leave out the --tls-* flags"
	case strings.Contains(cause, "certificate required") || strings.Contains(cause, "bad certificate") || strings.Contains(cause, "unknown certificate authority"):
		return "the server wants a client certificate its CA signed: pass --tls-cert-file and --tls-key-file"
	case strings.Contains(cause, "x509:"):
		return "--tls-ca-file must name the CA that signed the server's certificate, which must name the host of --addr"
	}
	return "check the --tls-* flags"
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
	// TLS failures keep their reason, which names the layer.
	if i := strings.Index(desc, "tls: "); i >= 0 {
		return desc[i:], false, true
	}
	if i := strings.Index(desc, "x509: "); i >= 0 {
		return desc[i:], false, true
	}
	if i := strings.Index(desc, "error reading server preface"); i >= 0 {
		return desc[i:], false, true
	}
	return lastPart(desc), false, true
}

// lastPart is what follows the last ": " of an error's text, its most
// specific part, or all of it.
func lastPart(msg string) string {
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+len(": "):]
	}
	return msg
}
