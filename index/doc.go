// Package index owns the encodings of cairn's indexes over stored spans.
//
// The trace index maps each trace to the blocks that hold a fragment of it;
// its value, a TraceSummary, describes the fragment (span count, earliest
// start, latest end). The search index describes each segment (the spans of
// one block in one partition): a rows record, one row per trace newest first,
// and postings of rows by Term, the hashed facts a span can be searched by.
// Terms over-approximate on purpose (attribute values are bucketed, duration
// buckets are coarse), so storage checks candidates against their spans.
// Keys are laid out by the storage package; see storage/FORMAT.md.
package index
