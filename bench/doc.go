// Package bench measures trace stores end to end, as `cairn bench` does.
//
// It owns a realistic OTLP workload (Generator): microservice call graphs
// with server, client, internal, producer/consumer and database spans,
// semantic-convention attributes with realistic cardinality, long-tailed
// trace sizes and durations, errors with exception events, several resources
// per service and clock skew between hosts, deterministic for a seed. A Pool
// encodes it ahead of time and replays it in rounds with fresh IDs and times,
// so that generating load never limits what it measures.
//
// Run sends a pool to any OTLP endpoint, over gRPC or HTTP with protobuf or
// JSON, counting only acknowledged spans, and, given a jaeger.storage.v2
// reader, measures how soon spans are visible, how fast traces and searches
// come back, and whether every trace sampled is complete. A Report prints
// as a table, JSON or an HTML page.
package bench
