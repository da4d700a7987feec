// Package spanindex finds a trace's spans by span ID while a cut handles
// the trace: the fragment encoder turns parent IDs into references to other
// spans of the fragment, and pairing finds each span's parent. It is an
// open-addressing table reused from trace to trace and cleared only as far
// as each trace needs, so that a small trace after a huge one costs no
// more than it would alone.
package spanindex
