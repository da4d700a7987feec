// Package otlpjson converts OTLP trace messages to and from the OTLP/JSON
// encoding: the protobuf JSON mapping with lowerCamelCase names, except that
// trace and span IDs are hex strings rather than base64, and enums are
// integers. protojson does the mapping; this package rewrites the ID fields
// on the way, in one pass over the document, without building a token tree.
package otlpjson
