package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/keys"
)

// retentionInterval is how often partitions that have aged out are looked
// for.
const retentionInterval = time.Minute

// maintainInterval is how often the maintenance goroutine checks the disk
// bound and looks for span data to recompress. A second lets little more
// than a second of ingest past the bound before the oldest data goes.
const maintainInterval = time.Second

// Reasons for dropping data, as labels of the dropped metrics.
const (
	dropRetention = "retention" // older than the retention period
	dropDiskBound = "disk_bound"
	dropFuture    = "future" // a partition after Accepts().NotAfter
)

var dropReasons = []string{dropRetention, dropDiskBound, dropFuture}

// NotBefore is the start of the retention period, in unix nanoseconds: spans
// that started earlier are not accepted and not returned.
func (db *DB) NotBefore() uint64 {
	return unixNanos(db.opts.Now().Add(-db.opts.Retention))
}

// Accepts is the window of span start times the store takes: from the
// start of the retention period to Options.FutureTolerance from now.
func (db *DB) Accepts() otlpwire.Window {
	now := db.opts.Now()
	return otlpwire.Window{NotBefore: db.NotBefore(), NotAfter: unixNanos(now.Add(db.opts.FutureTolerance))}
}

// unixNanos is t in unix nanoseconds as span times count them, clamped to
// what a uint64 holds: 0 before 1970, the largest value after 2554.
// time.Time.UnixNano wraps past 2262.
func unixNanos(t time.Time) uint64 {
	sec, ns := t.Unix(), uint64(t.Nanosecond())
	switch {
	case sec < 0:
		return 0
	case uint64(sec) > (math.MaxUint64-ns)/1e9:
		return math.MaxUint64
	}
	return uint64(sec)*1e9 + ns
}

// maintainer enforces retention and the disk bound, and recompresses span
// data.
func (db *DB) maintainer() {
	defer db.maintainerWG.Done()
	// Maintenance is background work, below reads as Pebble's compactions
	// are: recompression's merge decodes and encodes every trace it finds
	// split, for seconds of CPU on a workload whose exporters send a
	// trace's spans apart, right while people read what was just sent.
	db.opts.Bulk.Demote()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-db.stop
		cancel()
	}()
	t := time.NewTicker(maintainInterval)
	defer t.Stop()
	var retained time.Time
	for {
		if now := db.opts.Now(); now.Sub(retained) >= retentionInterval || now.Before(retained) {
			retained = now
			if err := db.enforceRetention(); err != nil {
				db.opts.Logger.Error("enforce retention", "err", err)
			}
		}
		if err := db.enforceDiskBound(); err != nil {
			db.opts.Logger.Error("enforce disk bound", "err", err)
		}
		if err := db.rollUpAggregates(ctx); err != nil {
			db.opts.Logger.Error("roll up aggregates", "err", err)
		}
		if db.partitionDropped.Swap(false) {
			if err := db.evictResources(); err != nil {
				db.partitionDropped.Store(true) // try again
				db.opts.Logger.Error("evict resources", "err", err)
			}
		}
		// CPU time is measured against the wall clock, not Options.Now,
		// which tests move.
		if used, ok := processCPU(); ok {
			db.cpuRoom.sample(time.Now(), used, db.opts.cpus())
		}
		db.recompressPass(ctx)
		select {
		case <-db.stop:
			return
		case <-t.C:
		}
	}
}

// enforceRetention drops every partition whose hour ended before the
// retention period began, and every partition that starts after the
// newest start time the store accepts: stores written before such spans
// were rejected may hold them, and they would otherwise outlive everything.
func (db *DB) enforceRetention() error {
	horizon, future := db.NotBefore(), db.Accepts().NotAfter
	for _, p := range db.sortedPartitions() {
		reason := dropRetention
		switch {
		case partitionEnd(p) <= horizon:
		case partitionStart(p) > future:
			reason = dropFuture
		default:
			continue
		}
		if err := db.drop(p, math.MaxUint64, reason); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) sortedPartitions() []uint32 {
	db.mu.Lock()
	parts := slices.Collect(maps.Keys(db.partitions))
	db.mu.Unlock()
	slices.Sort(parts)
	return parts
}

// enforceDiskBound drops the oldest data while the store retains more than
// Options.MaxDiskBytes: whole blocks of a partition, oldest partition
// first, and blocks within it oldest first, down to but not including the
// newest block, which is never dropped.
func (db *DB) enforceDiskBound() error {
	if db.opts.MaxDiskBytes <= 0 {
		return nil
	}
	size, err := db.retainedBytes()
	if err != nil {
		return err
	}
	excess := size - db.opts.MaxDiskBytes
	if excess <= 0 {
		db.boundStuck.Store(false)
		return nil
	}
	plan, planned, err := db.planDrops(excess)
	if err != nil {
		return err
	}
	if len(plan) == 0 {
		if !db.boundStuck.Swap(true) {
			db.opts.Logger.Warn("store over its disk bound, with nothing left to drop but its newest block",
				"retained_bytes", size, "max_disk_bytes", db.opts.MaxDiskBytes)
		}
		return nil
	}
	last := plan[len(plan)-1]
	db.opts.Logger.Warn("store over its disk bound: dropping its oldest data",
		"retained_bytes", size, "max_disk_bytes", db.opts.MaxDiskBytes, "dropping_bytes", planned,
		"through_partition_start", partitionTime(last.p), "through_block", last.through)
	for _, d := range plan {
		if err := db.drop(d.p, d.through, dropDiskBound); err != nil {
			return err
		}
	}
	return nil
}

// dropTo names the blocks of partition p up to through.
type dropTo struct {
	p       uint32
	through uint64
}

// planDrops lists the oldest blocks whose data adds up to excess bytes, as
// Pebble estimates them, by partition and then block, stopping at the
// newest block and at partitions after the newest start time accepted,
// and the bytes they hold. The trace index is not counted: it is a small
// share, and what a drop leaves over the bound the next pass drops.
func (db *DB) planDrops(excess int64) ([]dropTo, int64, error) {
	db.mu.Lock()
	var newest uint64
	for _, b := range db.partitions {
		newest = max(newest, b)
	}
	db.mu.Unlock()
	future := partitionOf(db.Accepts().NotAfter)
	it, err := db.idx.NewIter(keys.KindRange(keys.KindRows))
	if err != nil {
		return nil, 0, fmt.Errorf("plan drops: %w", err)
	}
	defer it.Close()
	var (
		plan []dropTo
		sum  int64
	)
	for ok := it.First(); ok && sum < excess; ok = it.Next() {
		p, b, err := keys.ParseRows(it.Key())
		if err != nil {
			return nil, 0, fmt.Errorf("plan drops: %w", err)
		}
		if b >= newest || p > future {
			break
		}
		n, err := db.blocksBytes(p, b, b)
		if err != nil {
			return nil, 0, fmt.Errorf("plan drops: %w", err)
		}
		sum += n
		if len(plan) > 0 && plan[len(plan)-1].p == p {
			plan[len(plan)-1].through = b
		} else {
			plan = append(plan, dropTo{p, b})
		}
	}
	return plan, sum, it.Error()
}

// blocksBytes estimates the bytes on disk of the span data and search index
// of blocks from..to of partition p.
func (db *DB) blocksBytes(p uint32, from, to uint64) (int64, error) {
	var sum uint64
	for _, r := range []struct {
		store      *pebble.DB
		start, end []byte
	}{
		{db.spans, keys.DataBlock(p, from), blockEnd(keys.DataBlock, p, to)},
		{db.idx, keys.Rows(p, from), blockEnd(keys.Rows, p, to)},
		{db.idx, keys.Postings(p, from, 0), blockEnd(func(p uint32, b uint64) []byte { return keys.Postings(p, b, 0) }, p, to)},
	} {
		n, err := r.store.EstimateDiskUsage(r.start, r.end)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return int64(min(sum, math.MaxInt64)), nil
}

// blockEnd is the key that ends the keys of partition p's blocks up to to,
// made by key; past the last block it is the next partition's first key.
func blockEnd(key func(uint32, uint64) []byte, p uint32, to uint64) []byte {
	if to == math.MaxUint64 {
		return key(p+1, 0)
	}
	return key(p, to+1)
}

// drop deletes the trace index, search index and span data of partition p
// in blocks up to through, and the partition itself if no block of it is
// newer: with range deletions, then compactions of the ranges, so that
// sstables wholly inside them are deleted, not rewritten, and the space
// is returned at once. The index goes first: span data that a crash
// leaves behind is unreachable, and is deleted at the next open.
//
// A trace whose spans in the partition were cut into blocks on both sides
// of through keeps only the later ones, as a trace keeps only its spans
// within the retention period.
func (db *DB) drop(p uint32, through uint64, reason string) error {
	db.maintMu.Lock()
	defer db.maintMu.Unlock()
	blocks, traces, err := db.survey(p, through, through != math.MaxUint64)
	if err != nil {
		return fmt.Errorf("drop partition %d: %w", p, err)
	}
	size, err := db.blocksBytes(p, 0, through)
	if err != nil {
		return fmt.Errorf("drop partition %d: %w", p, err)
	}
	// A cut decides which partitions are new before it ingests their data;
	// partMu keeps a drop from deleting a partition's key in between.
	db.partMu.Lock()
	db.mu.Lock()
	newest, listed := db.partitions[p]
	// A partition whose span data was damaged at open has no known newest
	// block (0): only retention, which drops all of it, drops it whole.
	whole := through == math.MaxUint64 || newest != 0 && through >= newest
	if whole {
		delete(db.partitions, p)
		db.setLayout()
	}
	db.mu.Unlock()
	var ranges [2][][2][]byte // of the index store, then of the spans store
	switch {
	case !listed || (!whole && traces == nil):
		// Gone, or a cut has added a block since the survey: the next pass
		// plans again.
		db.partMu.Unlock()
		return nil
	case whole:
		delete(db.recompressed, p)
		delete(db.merged, p)
		delete(db.damaged, p)
		err = db.deletePartition(p, &ranges)
		db.partitionDropped.Store(true)
	default:
		err = db.deleteBlocks(p, through, traces, &ranges)
	}
	db.partMu.Unlock()
	if err != nil {
		return fmt.Errorf("drop partition %d: %w", p, err)
	}
	for i, store := range []*pebble.DB{db.idx, db.spans} {
		for _, r := range ranges[i] {
			if err := store.Compact(context.Background(), r[0], r[1], false); err != nil {
				return fmt.Errorf("drop partition %d: compact: %w", p, err)
			}
		}
	}
	db.metrics.droppedBytes.WithLabelValues(reason).Add(float64(size))
	db.metrics.droppedBlocks.WithLabelValues(reason).Add(float64(blocks))
	log := db.opts.Logger.Info
	if reason != dropRetention {
		log = db.opts.Logger.Warn
	}
	log("dropped data", "reason", reason, "partition_start", partitionTime(p), "blocks", blocks,
		"whole_partition", whole, "bytes", size)
	return nil
}

// survey counts the blocks of partition p up to through and, if withTraces,
// lists the trace index keys of their fragments, from their rows records.
func (db *DB) survey(p uint32, through uint64, withTraces bool) (blocks int, traces [][]byte, err error) {
	it, err := db.idx.NewIter(&pebble.IterOptions{
		LowerBound: keys.Rows(p, 0),
		UpperBound: blockEnd(keys.Rows, p, through),
	})
	if err != nil {
		return 0, nil, err
	}
	defer it.Close()
	if withTraces {
		traces = [][]byte{}
	}
	for ok := it.First(); ok; ok = it.Next() {
		blocks++
		if !withTraces {
			continue
		}
		_, b, err := keys.ParseRows(it.Key())
		if err != nil {
			return 0, nil, err
		}
		rows, err := index.DecodeRows(it.Value())
		if err != nil {
			return 0, nil, fmt.Errorf("rows of block %d: %w", b, err)
		}
		for _, r := range rows {
			traces = db.appendTraceKeys(traces, p, r.TraceID, b)
		}
	}
	return blocks, traces, it.Error()
}

// deletePartition deletes all of partition p, and sets ranges to the key
// ranges to compact.
func (db *DB) deletePartition(p uint32, ranges *[2][][2][]byte) error {
	partition := func(kind byte) [2][]byte {
		return [2][]byte{keys.PartitionPrefix(kind, p), keys.PartitionPrefix(kind, p+1)}
	}
	ranges[0] = [][2][]byte{partition(keys.KindTrace), partition(keys.KindRows), partition(keys.KindPostings), partition(keys.KindAggregate), partition(keys.KindGraph)}
	if db.v6TraceIndex(p) {
		ranges[0] = append(ranges[0], partition(keys.KindTraceV6))
	}
	ranges[1] = [][2][]byte{partition(keys.KindData)}
	if err := commitDeletes(db.idx, ranges[0], [][]byte{keys.Partition(p)}); err != nil {
		return err
	}
	return commitDeletes(db.spans, ranges[1], [][]byte{keys.Recompressed(p)})
}

// deleteBlocks deletes the blocks of partition p up to through, whose
// trace index keys are traces, and sets ranges to the key ranges to
// compact.
func (db *DB) deleteBlocks(p uint32, through uint64, traces [][]byte, ranges *[2][][2][]byte) error {
	ranges[0] = [][2][]byte{
		{keys.Rows(p, 0), keys.Rows(p, through+1)},
		{keys.Postings(p, 0, 0), keys.Postings(p, through+1, 0)},
	}
	deletes := slices.Clone(ranges[0])
	for _, key := range aggregateRuns {
		deletes = append(deletes, [2][]byte{key(p, 0), key(p, through+1)})
	}
	// One range to compact for the span metrics shards' many.
	ranges[0] = append(ranges[0], [2][]byte{keys.PartitionPrefix(keys.KindAggregate, p), keys.PartitionPrefix(keys.KindAggregate, p+1)},
		[2][]byte{keys.Graph(p, 0), keys.Graph(p, through+1)})
	ranges[1] = [][2][]byte{{keys.DataBlock(p, 0), keys.DataBlock(p, through+1)}}
	if err := commitDeletes(db.idx, deletes, traces); err != nil {
		return err
	}
	return commitDeletes(db.spans, ranges[1], nil)
}

// commitDeletes deletes key ranges and keys of a store in one synced batch.
func commitDeletes(store *pebble.DB, ranges [][2][]byte, points [][]byte) error {
	b := store.NewBatch()
	defer b.Close()
	for _, r := range ranges {
		if err := b.DeleteRange(r[0], r[1], nil); err != nil {
			return err
		}
	}
	for _, k := range points {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// retainedBytes is the size of what the store keeps: its Pebble files
// and write-ahead log, less what is on its way out: files Pebble has let
// go of, deleted as soon as no read holds them, and the sstables that
// compactions (recompression) are writing, which replace others.
func (db *DB) retainedBytes() (int64, error) {
	size, err := db.walBytes()
	for _, store := range []*pebble.DB{db.idx, db.spans} {
		m := store.Metrics()
		size += int64(m.DiskSpaceUsage()) - int64(m.Table.Local.ObsoleteSize+m.Table.Local.ZombieSize+m.WAL.ObsoletePhysicalSize) - m.Compact.InProgressBytes
	}
	return size, err
}

// walBytes is the size of the write-ahead log's segments.
func (db *DB) walBytes() (int64, error) {
	var size int64
	err := filepath.WalkDir(filepath.Join(db.dir, "wal"), func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if info, err := d.Info(); err == nil && !d.IsDir() {
			size += info.Size()
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("measure wal: %w", err)
	}
	return size, nil
}
