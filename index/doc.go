// Package index owns the encoding of cairn's search index over stored spans.
//
// The search index describes each segment (the spans of one block in one
// partition): a rows record, one row per trace newest first, and postings of
// rows by Term, the hashed facts a span can be searched by. Terms
// over-approximate on purpose (attribute values are bucketed, duration
// buckets are coarse), so storage checks candidates against their spans.
// Keys, and the trace index that maps trace IDs to blocks, are laid out by
// the storage package; see storage/FORMAT.md.
package index
