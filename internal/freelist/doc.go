// Package freelist keeps a few large scratch buffers for reuse across
// garbage collections, where a sync.Pool would drop them. Reads of large
// traces keep their decoding and encoding buffers in them: megabytes of
// fresh memory cost a page fault for each page first written.
package freelist
