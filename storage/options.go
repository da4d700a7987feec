package storage

import (
	"log/slog"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"cairn/internal/bulk"
)

// Options configures a DB. The zero value is valid: EnsureDefaults fills in
// every field left zero.
type Options struct {
	// BufferBytes bounds the memory the live buffer holds before it is cut
	// into a block: its requests' encoded bytes and its spans' and traces'
	// in-memory form, which for traces of a few spans is more than the
	// requests. While one cut is being written and the next buffer is
	// full, writers wait: this is cairn's backpressure.
	//
	// The default is 80 MiB, about 56 MiB of requests of the bench's
	// workload and 25 of two-span traces. 96 MiB, the bench's 64 MiB of
	// requests before the heap counted, ingested the bench's workload
	// about a tenth slower (three alternated pairs): the more live traces,
	// the more the collector marks.
	BufferBytes int

	// FlushInterval is the longest a span stays in the live buffer (and
	// write-ahead log) before it is cut into a block. Shorter means smaller
	// blocks; longer means more memory and a longer replay after a crash.
	//
	// The default is 10s.
	FlushInterval time.Duration

	// Retention is how long spans are kept, by their start time. Spans that
	// started longer ago are rejected at ingest and never returned, and the
	// hour partitions that hold only such spans are dropped whole, so disk
	// use stays flat under steady ingest.
	//
	// The default is 72h.
	Retention time.Duration

	// FutureTolerance is how far in the future a span may start: spans
	// that start later are rejected at ingest and dropped at replay, as
	// spans older than Retention are, so that a sender with a wrong clock
	// cannot create partitions that retention and MaxDiskBytes would
	// treat as the newest data.
	//
	// The default is 1h.
	FutureTolerance time.Duration

	// MaxDiskBytes, if positive, bounds the store's size on disk. Every
	// second, while the store retains more (Pebble's live files and the
	// write-ahead log), its oldest data is dropped, whatever its age: whole
	// blocks, oldest hour partition first and within a partition oldest
	// block first, so that no span is dropped while an older one is kept,
	// and the current hour is dropped from if it is all there is. The newest
	// block is never dropped. The store thus stays within MaxDiskBytes plus
	// about one cut's worth (the newest block and the write-ahead log, under
	// BufferBytes of requests, compressed), once the second's check has run;
	// a trace whose spans were cut into a dropped and a kept block keeps the
	// latter, as at the retention horizon. Each drop is logged and counted.
	//
	// The default is 0: no bound.
	MaxDiskBytes int64

	// DiskReserveBytes is how much of its file system the store leaves free.
	// Write-ahead log appends and recompression that would leave less, and
	// cuts that would leave less than half, fail as if the disk were full,
	// and are retried, so that what Pebble must still write (its manifest
	// and log, whose failed writes it takes for fatal) has room. A negative
	// value reserves nothing.
	//
	// The default is 128 MiB.
	DiskReserveBytes int64

	// RecompressAfter is how long ingest must pause before span data cut
	// since the last pause is recompressed, at a stronger compression level
	// than cuts can afford at full rate. Under ingest that never pauses,
	// blocks that have waited two minutes are recompressed while the
	// process leaves half the CPUs free, and whatever the load once their
	// partition's hour has passed. A negative value turns recompression
	// off.
	//
	// The default is 2s.
	RecompressAfter time.Duration

	// DictionaryCache is how many resources, scopes and (resource, scope)
	// pairs are kept in memory, each; the others are read from the index
	// store when needed. Resources are stored once, and dropped once no
	// retained partition has spans of them.
	//
	// The default is 65536.
	DictionaryCache int

	// SpanMetricsMaxSeries bounds the span metrics series (service, span
	// name, kind, status code) of one block's partition, of the answer to
	// one SpanMetrics call and of the process's Prometheus totals; spans of
	// further series count into an overflow series of their service and
	// status code (at most as many again), past those into one overflow
	// series per status code, and in
	// cairn_span_metrics_overflow_spans_total.
	//
	// The default is 10000.
	SpanMetricsMaxSeries int

	// CacheBytes is the size of Pebble's block cache, shared by trace reads.
	//
	// The default is 32 MiB.
	CacheBytes int64

	// Logger receives background errors and Pebble's events.
	//
	// The default is slog.Default().
	Logger *slog.Logger

	// PairingWindow is how far apart, in the times of the cuts that bring
	// them, a span and its parent may arrive and still make an edge of the
	// service graph; a span whose parent comes later is a straggler. A
	// client or producer span naming its peer becomes an edge to that peer
	// once the window passes with no child from another service.
	//
	// The default is 5m.
	PairingWindow time.Duration

	// PairingMaxSpans bounds the spans held in memory for pairing, about
	// 16 bytes each (client and producer spans waiting for a child 32
	// more). Past it the oldest cuts' spans are let go before their window
	// passes, and counted.
	//
	// The default is 250,000.
	PairingMaxSpans int

	// FS is the file system that the write-ahead log, both Pebble stores
	// and the sstables of cuts and recompression are written through. It
	// must store files where the operating system's file system has them:
	// the directory lock and the disk usage metric use that directly. Tests
	// wrap vfs.Default to inject write errors.
	//
	// The default is vfs.Default.
	FS vfs.FS

	// Bulk runs the CPU-heavy parts of writes (preparing a request for the
	// buffer, compressing it for the log, inserting it into the buffer) and
	// of cuts (building data and index sstables), at a priority below
	// reads'; Pebble's flushes and compactions, and the store's maintenance
	// (retention, the disk bound, recompression), run at its priority too. Its
	// workers are taken for the number of CPUs: a cut writes with as many
	// goroutines, recompression compacts with half as many.
	//
	// The default, nil, runs them on the calling goroutines, at normal
	// priority, and takes GOMAXPROCS for the number of CPUs.
	Bulk *bulk.Pool

	// Now returns the current time; tests replace it.
	//
	// The default is time.Now.
	Now func() time.Time
}

// EnsureDefaults returns a copy of o (which may be nil) with every zero field
// set to its default.
func (o *Options) EnsureDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.BufferBytes <= 0 {
		c.BufferBytes = 80 << 20
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 10 * time.Second
	}
	if c.Retention <= 0 {
		c.Retention = 72 * time.Hour
	}
	if c.DiskReserveBytes == 0 {
		c.DiskReserveBytes = 128 << 20
	}
	if c.FutureTolerance <= 0 {
		c.FutureTolerance = time.Hour
	}
	if c.RecompressAfter == 0 {
		c.RecompressAfter = 2 * time.Second
	}
	if c.DictionaryCache <= 0 {
		c.DictionaryCache = 1 << 16
	}
	if c.SpanMetricsMaxSeries <= 0 {
		c.SpanMetricsMaxSeries = 10000
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = 32 << 20
	}
	if c.PairingWindow <= 0 {
		c.PairingWindow = 5 * time.Minute
	}
	if c.PairingMaxSpans <= 0 {
		c.PairingMaxSpans = 250_000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// cpus is how many CPUs the store's background work may spread over.
func (o *Options) cpus() int {
	if o.Bulk != nil {
		return o.Bulk.Workers()
	}
	return runtime.GOMAXPROCS(0)
}
