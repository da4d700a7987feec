// Package otlpjson converts OTLP trace messages to and from the OTLP/JSON
// encoding: the protobuf JSON mapping with lowerCamelCase names, except that
// trace and span IDs are hex strings rather than base64, and enums are
// integers. Requests in the shape SDKs and the Collector write are
// transcoded straight to protobuf in one pass (transcode.go); the rest, and
// every encoding, go through protojson, with the ID fields rewritten on the
// way in one pass over the document, without building a token tree.
package otlpjson
