// Package bench generates realistic OTLP trace workloads: microservice call
// graphs with server, client, internal, producer/consumer and database spans,
// semantic-convention attributes with realistic cardinality, long-tailed trace
// sizes and durations, errors with exception events, several resources per
// service and clock skew between hosts. Output is deterministic for a seed and
// pre-encoded, so that generating load never limits what it measures.
package bench
