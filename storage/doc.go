// Package storage is cairn's trace store: a write-ahead log, an in-memory
// buffer of live traces, and two Pebble stores on local disk: one for span
// data, one for everything that indexes it.
//
// Write path. A parsed Export request is appended to the write-ahead log
// (group-committed: one fsync per group of concurrent writers) and, once
// the log is synced, inserted into the live buffer, a B-tree of traces by
// ID that reads see at once. Write returns then, so an acknowledged span
// survives SIGKILL, and a request the log refused leaves nothing behind.
//
// Cuts. When the buffer reaches Options.BufferBytes or Options.FlushInterval
// passes, it is frozen and the log rotated, and the frozen buffer is written
// as a block: sstables built outside Pebble, per hour partition of span data
// sorted by trace ID, ingested into the spans store, then per partition its
// search index, one for the trace index, catalogs, dictionary and block
// record, and one for the block's aggregates (span metrics by series and
// minute, with latency histograms that merge exactly), ingested into the
// index store together, so that aggregates count each span once, even one
// replayed from the log. Span data and search-index keys
// start with partition and block number, which only grow, so their sstables
// go straight to the bottom level. Then
// the sealed log segments are deleted. Resources and scopes are stored once,
// content-addressed, not per span.
//
// Recompression. Cuts compress span data with MinLZ, cheap enough for full
// ingest rate and to read back while ingest runs. Once it has settled
// (ingest pauses; it has waited two minutes while the CPUs have room; or
// its hour has passed) Pebble rewrites it once with zstd, about a quarter
// smaller, and merges the search-index sstables of its blocks.
//
// Read path. A trace is assembled from the live buffers and, per partition,
// one prefix seek of the trace index (guarded by bloom filters) and one read
// per fragment. Fragments store span IDs, parents and times apart from the
// other fields, which compresses better, but only where the span's exact
// bytes can be rebuilt: reads return exactly what the client sent.
// TracePieces reads a trace the same way but hands it on a piece at a time,
// so that a huge trace is never held whole, decoding each piece over the
// last into a buffer kept for later reads.
//
// Search. Find looks through the live buffers' term sets, in chunks of
// their arrival order whose start-time bounds say which may hold the newest
// matches, then through the segments of the partitions in its time window,
// newest first, narrowing candidates with the search index and checking
// them against their spans, and stops at its limit. Services and operations
// come from an in-memory catalog persisted with each block.
//
// Retention. Spans older than Options.Retention, or starting more than
// Options.FutureTolerance ahead, are rejected and never returned; hour
// partitions that have aged out are dropped whole. Past
// Options.MaxDiskBytes the oldest blocks are dropped, oldest hour first,
// down to the newest block. Resources that no retained partition uses are
// then deleted from the dictionary, which is read from disk as needed,
// through bounded caches, rather than loaded at open.
//
// Write errors. No failure is kept: a failed log write fails the writes of
// its group, and the log tries again with the next group, or by itself a
// second later; a failed cut keeps its buffer and log segments and is
// retried with backoff; a failed recompression leaves span data as it was.
// While the log or cuts fail, DB.Faults reports it; each failure is logged
// once, and its end too. Replay skips damaged log records and keeps the
// intact ones after them.
//
// Corruption. A block that fails its checksum fails the reads that need it,
// with a CorruptionError naming what it held and the file, not the process:
// each store's event listener records the damaged file (the corruption
// fault) and, with one CRC pass over the file, its damaged blocks, so that
// later reads of their keys fail without reading them again. Search passes
// over what it cannot read; recompression leaves a damaged partition alone.
// Check and Repair, on a stopped store, find every damaged block and drop
// it, rebuilding what span data can give back (FORMAT.md, Repair).
//
// Span metrics. DB.SpanMetrics merges the aggregates of the blocks in a
// window, never reading spans; spans count once cut.
//
// Service graph. Each cut pairs its spans with their parents beside its
// data writers (package pairing): spans of recent cuts are held in memory
// for a pairing window, so that the two spans of a call pair whatever order
// and cuts they arrive in, and the calls a cut completes are stored in its
// aggregates. Open rebuilds what pairing held by pairing the spans of the
// last two windows' cuts again, each span with the cut that brought it,
// which a fragment merged from several blocks' records. DB.ServiceGraph
// sums a window's calls.
//
// Metrics. DB.Metrics is a Prometheus collector: write-ahead log syncs and
// cuts are timed as they happen, the rest (live buffers, disk, partitions,
// recompression backlog, Pebble's shape) is read when scraped.
//
// The on-disk format is versioned and documented in FORMAT.md.
package storage
