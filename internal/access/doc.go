// Package access decides who may use cairn's ports: TLS, optionally mutual,
// from certificate files, and bearer tokens, one set per role (ingest,
// query), checked in constant time by gRPC interceptors and HTTP
// middleware. Clients' TLS and token settings are built here too, so both
// ends read the same files the same way.
package access
