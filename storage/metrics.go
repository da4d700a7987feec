package storage

import (
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics returns the store's Prometheus metrics, to register. Most are read
// from the store when scraped; the latencies of write-ahead log syncs and
// cuts are recorded as they happen.
func (db *DB) Metrics() prometheus.Collector { return db.metrics }

// metrics is the store's prometheus.Collector.
type metrics struct {
	db *DB

	walSync      prometheus.Histogram
	cut          prometheus.Histogram
	cutSpans     prometheus.Counter
	recompressed prometheus.Counter
	// fragmentsMerged counts fragments recompression merged into another
	// block's fragment of their trace.
	fragmentsMerged prometheus.Counter
	// droppedBytes and droppedBlocks count what retention and the disk
	// bound delete, by reason (dropReasons); a block counts once per
	// partition it has data in.
	droppedBytes, droppedBlocks *prometheus.CounterVec
	evictedResources            prometheus.Counter
	corruptions                 *prometheus.CounterVec
	spanTotals                  *spanTotals

	liveBytes, liveSpans, diskBytes, partitions, backlog *prometheus.Desc
	compactions, compactionDebt, l0Files, readAmp        *prometheus.Desc
	cacheHits, cacheMisses, cacheBytes                   *prometheus.Desc
	fault                                                *prometheus.Desc
}

func newMetrics(db *DB) *metrics {
	store := []string{"store"}
	m := &metrics{
		db:         db,
		spanTotals: newSpanTotals(db.opts.SpanMetricsMaxSeries),
		walSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cairn_storage_wal_fsync_duration_seconds",
			Help:    "Latency of the write-ahead log's group-commit fsyncs, each of which acknowledges every export of its group.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		cut: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cairn_storage_cut_duration_seconds",
			Help:    "Time to cut the live buffer into a block: build its sstables and ingest them.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		cutSpans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_storage_cut_spans_total",
			Help: "Spans written into blocks by cuts.",
		}),
		recompressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_storage_recompressed_bytes_total",
			Help: "Bytes of span data rewritten by recompression, as they were before, merges of recompressed data included.",
		}),
		fragmentsMerged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_storage_merged_fragments_total",
			Help: "Fragments of a trace that recompression merged into the trace's fragment of a later block: its spans that arrived in earlier cuts.",
		}),
		droppedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_storage_dropped_bytes_total",
			Help: "Bytes on disk of the data deleted, as estimated before deletion, by reason: retention (older than the retention period), disk_bound (oldest data past --max-disk-bytes), future (partitions too far in the future, from before such spans were rejected).",
		}, []string{"reason"}),
		droppedBlocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_storage_dropped_blocks_total",
			Help: "Blocks of one hour partition deleted, by reason, as cairn_storage_dropped_bytes_total.",
		}, []string{"reason"}),
		evictedResources: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_storage_evicted_resources_total",
			Help: "Resources deleted from the dictionary because no retained partition has spans of them.",
		}),
		corruptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_storage_corruption_errors_total",
			Help: "Times Pebble found data failing its checksums, in reads and compactions, by store; each failed the read or compaction, not the process.",
		}, store),
		liveBytes: prometheus.NewDesc("cairn_storage_live_buffer_bytes",
			"Memory held in the live buffers, the one filling and the one being cut: their requests' encoded bytes and their spans' and traces' in-memory form.", nil, nil),
		liveSpans: prometheus.NewDesc("cairn_storage_live_buffer_spans",
			"Spans held in the live buffers.", nil, nil),
		diskBytes: prometheus.NewDesc("cairn_storage_disk_bytes",
			"Bytes on disk, by store: index (indexes and catalogs), spans (span data) and wal.", store, nil),
		partitions: prometheus.NewDesc("cairn_storage_partitions",
			"Hour partitions holding data on disk.", nil, nil),
		backlog: prometheus.NewDesc("cairn_storage_recompression_backlog_bytes",
			"Bytes of span data cut but not yet recompressed, as of the last maintenance pass; 0 when recompression is off.", nil, nil),
		compactions: prometheus.NewDesc("cairn_pebble_compactions_total",
			"Compactions Pebble ran, by store.", store, nil),
		compactionDebt: prometheus.NewDesc("cairn_pebble_compaction_debt_bytes",
			"Bytes Pebble estimates it must compact to reach a steady shape, by store.", store, nil),
		l0Files: prometheus.NewDesc("cairn_pebble_l0_files",
			"sstables in level 0, by store; many slow reads down.", store, nil),
		readAmp: prometheus.NewDesc("cairn_pebble_read_amplification",
			"Sorted runs a point read may consult, by store.", store, nil),
		cacheHits: prometheus.NewDesc("cairn_pebble_block_cache_hits_total",
			"Block cache hits; the cache is shared by both stores.", nil, nil),
		cacheMisses: prometheus.NewDesc("cairn_pebble_block_cache_misses_total",
			"Block cache misses.", nil, nil),
		cacheBytes: prometheus.NewDesc("cairn_pebble_block_cache_bytes",
			"Bytes held in the block cache.", nil, nil),
		fault: prometheus.NewDesc("cairn_storage_fault",
			"1 for each fault the store is in now, by kind: wal (the write-ahead log cannot be written), cut (blocks cannot be written), corruption (data on disk failed its checksums).", []string{"kind"}, nil),
	}
	for _, r := range dropReasons {
		m.droppedBytes.WithLabelValues(r)
		m.droppedBlocks.WithLabelValues(r)
	}
	return m
}

// recorded returns the metrics recorded as they happen, rather than read
// from the store when scraped.
func (m *metrics) recorded() []prometheus.Collector {
	return []prometheus.Collector{m.walSync, m.cut, m.cutSpans, m.recompressed, m.fragmentsMerged, m.droppedBytes, m.droppedBlocks, m.evictedResources, m.corruptions, m.db.graph}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.recorded() {
		c.Describe(ch)
	}
	for _, d := range []*prometheus.Desc{m.liveBytes, m.liveSpans, m.diskBytes, m.partitions, m.backlog,
		m.compactions, m.compactionDebt, m.l0Files, m.readAmp, m.cacheHits, m.cacheMisses, m.cacheBytes, m.fault} {
		ch <- d
	}
	m.spanTotals.describe(ch)
}

// Collect implements prometheus.Collector. Pebble's figures are read only
// while the store is open.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.recorded() {
		c.Collect(ch)
	}
	m.spanTotals.collect(ch)
	db := m.db
	active := db.Faults()
	for _, kind := range []string{FaultWAL, FaultCut, FaultCorruption} {
		v := 0.0
		if slices.ContainsFunc(active, func(f Fault) bool { return f.Kind == kind }) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.fault, prometheus.GaugeValue, v, kind)
	}
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return
	}
	liveBytes, liveSpans := db.live.size(), db.live.spans
	if db.frozen != nil {
		liveBytes += db.frozen.size()
		liveSpans += db.frozen.spans
	}
	partitions := len(db.partitions)
	// Close waits for readers before closing the stores.
	if !db.reading.TryRLock() {
		db.mu.Unlock()
		return
	}
	db.mu.Unlock()
	defer db.reading.RUnlock()

	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(m.liveBytes, float64(liveBytes))
	gauge(m.liveSpans, float64(liveSpans))
	gauge(m.partitions, float64(partitions))
	gauge(m.backlog, float64(db.backlog.Load()))
	if wal, err := db.walBytes(); err == nil {
		gauge(m.diskBytes, float64(wal), "wal")
	}
	for _, s := range []struct {
		name string
		db   *pebble.DB
	}{{"index", db.idx}, {"spans", db.spans}} {
		pm := s.db.Metrics()
		gauge(m.diskBytes, float64(pm.DiskSpaceUsage()), s.name)
		counter(m.compactions, float64(pm.Compact.Count), s.name)
		gauge(m.compactionDebt, float64(pm.Compact.EstimatedDebt), s.name)
		gauge(m.l0Files, float64(pm.Levels[0].TablesCount), s.name)
		gauge(m.readAmp, float64(pm.ReadAmp()), s.name)
		if s.name == "index" { // one cache serves both stores
			counter(m.cacheHits, float64(pm.BlockCache.Hits))
			counter(m.cacheMisses, float64(pm.BlockCache.Misses))
			gauge(m.cacheBytes, float64(pm.BlockCache.Size))
		}
	}
}
