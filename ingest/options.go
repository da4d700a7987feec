package ingest

import (
	"cairn/internal/bulk"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Options configures a Service. The zero value is valid: EnsureDefaults
// fills in every field left zero.
type Options struct {
	// MaxRequestBytes bounds an export request after decompression, on
	// both protocols. A larger request is refused whole: gRPC
	// ResourceExhausted, HTTP 413, which clients do not retry.
	//
	// The default is 64 MiB.
	MaxRequestBytes int

	// MaxInflightBytes bounds the memory of the requests being taken in at
	// once, over every protocol: their bodies as they arrive and decompress,
	// their decoding, and their wait for the store. A gRPC request reserves
	// twice MaxRequestBytes before its message is read, since neither its
	// size nor what it inflates to is known until then, and gives back all
	// but what its decoded message holds once that is in; an OTLP/HTTP
	// request grows its reservation as its body arrives and inflates. A
	// request that does not fit waits up to AdmitWait for others to finish,
	// and is then refused with a code clients retry after RetryAfter (gRPC
	// ResourceExhausted with RetryInfo, HTTP 429 with Retry-After), instead
	// of queueing in memory while the store is behind. A request alone in
	// flight is never refused, so the bound refuses nothing MaxRequestBytes
	// allows.
	//
	// The default is 192 MiB: a 64 MiB gRPC request being read, and half
	// as much again of requests waiting for the store. With 256 MiB the
	// requests' memory, beside the live buffers and what lives outside
	// Go's heap, took the process past 512 MiB: 555–560 MiB with 8 MiB
	// requests, 534 MiB with 64 requests of 1.4 MB in flight, 625 MiB
	// under cairn bench --overload. With 192 MiB: 470, 473 and 518 MiB, at
	// the same or a higher rate; 160 MiB cost a quarter of the
	// throughput under overload.
	MaxInflightBytes int64

	// AdmitWait is the longest a request that does not fit in
	// MaxInflightBytes waits for others to finish before it is refused; no
	// more than half of what is left of its deadline, if it has one. A
	// client that keeps a few large requests in flight is better served by
	// a wait as long as the store takes to drain them than by a refusal and
	// its retry delay: with 8 MiB requests, 1s refused one request in ten
	// and cost a third of the throughput.
	//
	// The default is 5s.
	AdmitWait time.Duration

	// BodyTimeout is how long a request body may take to arrive once it is
	// admitted, plus a second per MiB of its declared length (OTLP/HTTP) or
	// of MaxRequestBytes (gRPC, whose messages declare none before they are
	// read, and OTLP/HTTP bodies that declare none). A client that sends
	// headers and then stalls would otherwise hold its stream or
	// connection, and its share of MaxInflightBytes, for ever; one that
	// takes longer gets 408 or DeadlineExceeded.
	//
	// The default is 10s.
	BodyTimeout time.Duration

	// MaxStreamsPerConn bounds the Export calls one gRPC connection may
	// have open at once. Each may have buffered 64 KiB (its flow-control
	// window) before it is admitted. OpenTelemetry Collectors export with
	// 10 at once by default.
	//
	// The default is 32.
	MaxStreamsPerConn int

	// IdleTimeout is how long a gRPC connection with no call open stays
	// open. (An idle OTLP/HTTP connection is its server's business.)
	//
	// The default is 5m.
	IdleTimeout time.Duration

	// RetryAfter is the delay suggested to clients that were refused for a
	// reason that passes: overload, or a store that cannot write just now.
	//
	// The default is 1s.
	RetryAfter time.Duration

	// CORSAllowedOrigins lists the origins whose web pages may export over
	// OTLP/HTTP from a browser: exact origins such as
	// https://shop.example.com, or patterns with one wildcard such as
	// https://*.example.com; "*" allows any origin.
	//
	// The default is none: browsers may not export across origins.
	CORSAllowedOrigins []string

	// Bulk parses requests, at a priority below reads'.
	//
	// The default, nil, parses them on the handling goroutine.
	Bulk *bulk.Pool

	// Authorize, if set, vets each OTLP/HTTP export before its body is
	// read; one it refuses is answered 401 with the error's message, with
	// CORS headers, so that browsers can tell. (Over gRPC, the server's
	// options do this.)
	Authorize func(*http.Request) error
}

// Validate reports an option that cannot work: an allowed origin that no
// browser would send.
func (o *Options) Validate() error {
	for _, origin := range o.CORSAllowedOrigins {
		if origin == "*" {
			continue
		}
		u, err := url.Parse(strings.Replace(origin, "*.", "wildcard.", 1))
		if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil ||
			strings.Contains(u.Host, "*") || strings.Count(origin, "*") > 1 ||
			strings.Contains(origin, "*") && !strings.HasPrefix(origin, u.Scheme+"://*.") {
			return fmt.Errorf("CORS origin %q is not SCHEME://HOST[:PORT], *, or SCHEME://*.DOMAIN[:PORT]", origin)
		}
	}
	return nil
}

// EnsureDefaults returns a copy of o (which may be nil) with every zero field
// set to its default.
func (o *Options) EnsureDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 64 << 20
	}
	if c.MaxInflightBytes <= 0 {
		c.MaxInflightBytes = 192 << 20
	}
	if c.AdmitWait <= 0 {
		c.AdmitWait = 5 * time.Second
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = 10 * time.Second
	}
	if c.MaxStreamsPerConn <= 0 {
		c.MaxStreamsPerConn = 32
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Second
	}
	return c
}
