// Package ingest serves OTLP/gRPC: the
// opentelemetry.proto.collector.trace.v1.TraceService Export method that every
// OpenTelemetry SDK and Collector speaks. It validates each request, rejects
// spans with invalid IDs one by one through partial_success, and acknowledges
// a request only once the storage layer reports its spans durable.
package ingest
