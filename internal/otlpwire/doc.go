// Package otlpwire walks encoded OTLP trace messages without unmarshalling
// them.
//
// An Export request is validated field by field down to every attribute value
// (wire format, expected wire types, UTF-8 of strings, nesting depth), and the
// spans, resources and scopes it holds are returned as sub-slices of the
// request itself. Walking is about ten times faster than proto.Unmarshal and
// allocates nothing per span, and it lets cairn store and later serve the
// exact bytes a client sent: the round trip is lossless by construction.
package otlpwire
