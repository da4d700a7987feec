// Package index owns the encodings of cairn's indexes over stored spans.
//
// The trace index maps each trace to the blocks that hold a fragment of it;
// its value, a TraceSummary, describes the fragment (span count, earliest
// start, latest end) so that a lookup can bound a trace's extent without
// reading span data. Keys are laid out by the storage package; see
// storage/FORMAT.md.
package index
