// Package ingest receives OTLP traces: the
// opentelemetry.proto.collector.trace.v1.TraceService Export method over gRPC,
// and POST /v1/traces over HTTP with binary protobuf or JSON bodies, the two
// ways every OpenTelemetry SDK and Collector export. Both take one path: the
// request is validated, spans with invalid IDs or outside retention are
// rejected one by one through partial_success, and the request is
// acknowledged only once the storage layer reports its spans durable. It
// bounds the memory of the requests it takes in at once, over both
// protocols, taking a request's share before reading it (admission.go);
// a request that does not fit waits briefly, and is then refused with a
// code clients retry. It drops requests whose clients have gone, and
// counts what it takes and refuses in Prometheus metrics.
package ingest
