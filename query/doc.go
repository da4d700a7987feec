// Package query serves cairn's read API: the Jaeger remote-storage API
// jaeger.storage.v2 (TraceReader and Capabilities) over gRPC, plus gRPC health
// and server reflection. Traces are streamed as
// opentelemetry.proto.trace.v1.TracesData chunks assembled from the stored
// encoded spans without re-encoding them. Metrics times every call.
package query
