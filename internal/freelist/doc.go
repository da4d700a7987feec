// Package freelist keeps a few large scratch values for reuse across
// garbage collections, where a sync.Pool would drop them, and a bounded
// number of them, where a sync.Pool keeps as many as were ever in use at
// once: the batches of large requests, and reads' buffers for large
// traces, whose megabytes of fresh memory cost a page fault for each page
// first written.
package freelist
