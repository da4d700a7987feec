// Package query serves cairn's read API: the Jaeger remote-storage API
// jaeger.storage.v2 (TraceReader and Capabilities) over gRPC, cairn's own
// analysis API cairn.analysis.v1 (span metrics, from the aggregates stored
// with each block), plus gRPC health and server reflection. Traces are streamed as
// opentelemetry.proto.trace.v1.TracesData chunks assembled from the stored
// encoded spans without re-encoding them, a message's worth at a time. Calls
// are bounded so that queries cannot starve ingest: reads and searches each
// have a limited number of slots, every call a server-side timeout, and
// every response message a size, past which attribute values and lists are
// cut with a marker. Metrics times every call.
package query
