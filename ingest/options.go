package ingest

import "time"

// Options configures a Service. The zero value is valid: EnsureDefaults
// fills in every field left zero.
type Options struct {
	// MaxRequestBytes bounds an export request after decompression, on
	// both protocols. A larger request is refused whole: gRPC
	// ResourceExhausted, HTTP 413, which clients do not retry.
	//
	// The default is 64 MiB.
	MaxRequestBytes int

	// MaxInflightBytes bounds the bytes of the requests being decoded and
	// stored at once. A request that would go over it is refused with a
	// code clients retry after RetryAfter (gRPC ResourceExhausted with
	// RetryInfo, HTTP 429 with Retry-After), instead of queueing in memory
	// while the store is behind. A request is always admitted when none is
	// in flight, so the bound refuses nothing MaxRequestBytes allows.
	//
	// The default is 128 MiB.
	MaxInflightBytes int64

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
		c.MaxInflightBytes = 128 << 20
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Second
	}
	return c
}
