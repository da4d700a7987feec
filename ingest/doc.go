// Package ingest receives OTLP traces: the
// opentelemetry.proto.collector.trace.v1.TraceService Export method over gRPC,
// and POST /v1/traces over HTTP with binary protobuf or JSON bodies, the two
// ways every OpenTelemetry SDK and Collector export. Both take one path: the
// request is validated, spans with invalid IDs or outside retention are
// rejected one by one through partial_success, and the request is
// acknowledged only once the storage layer reports its spans durable. It
// bounds the request bytes it takes in at once, refusing excess requests
// with codes clients retry, and counts what it takes and refuses in
// Prometheus metrics.
package ingest
