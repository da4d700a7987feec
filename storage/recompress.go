package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"

	"cairn/storage/internal/keys"
)

// sealDelay is how long after its hour ends a partition is taken to receive
// no more spans, so that its blocks are recompressed even under load.
const sealDelay = 5 * time.Minute

// backlogAge is how long a partition's blocks wait for a pause in ingest
// before they are recompressed anyway, if the process has left the CPUs
// room (see cpuRoom). Under a steady load below what the machine takes,
// ingest may never pause, and span data would stay in the cuts' larger
// form until its hour had passed.
const backlogAge = 2 * time.Minute

// roomWindow is how long cpuRoom measures the process's CPU use over.
const roomWindow = 30 * time.Second

// cpuRoom tells whether the process left its CPUs room over the last
// window it measured: whether it used at most half of them, so that a
// recompression pass, one compaction per two CPUs, can run beside ingest
// without taking what ingest needs. At full rate ingest uses more, and
// recompression waits for a pause or the hour's end as before.
type cpuRoom struct {
	start time.Time
	used  time.Duration // the process's CPU time at start
	room  atomic.Bool
}

// sample closes the window once it is roomWindow long, given the time and
// the process's CPU time. Only the maintainer calls it.
func (c *cpuRoom) sample(now time.Time, used time.Duration, cpus int) {
	elapsed := now.Sub(c.start)
	switch {
	case c.start.IsZero() || elapsed < 0:
	case elapsed < roomWindow:
		return
	default:
		c.room.Store(2*(used-c.used) <= time.Duration(cpus)*elapsed)
	}
	c.start, c.used = now, used
}

// recompressRetry is how long the maintainer waits after a failed
// recompression before it tries again; each further failure doubles it, up to
// maxRecompressRetry.
const (
	recompressRetry    = 2 * time.Second
	maxRecompressRetry = time.Minute
)

// recompressPass runs a recompression pass unless one failed too recently.
// Span data stays readable whatever a failed pass left, so failures cost only
// disk space: they are retried with backoff, logged once, and their end is
// logged too. Only the maintainer calls it.
func (db *DB) recompressPass(ctx context.Context) {
	if time.Now().Before(db.recompressAt) {
		return
	}
	err := db.recompress(ctx)
	if err == nil {
		if db.recompressBackoff > 0 {
			db.opts.Logger.Info("span data is recompressed again")
		}
		db.recompressBackoff, db.recompressAt = 0, time.Time{}
		return
	}
	if db.recompressBackoff == 0 {
		db.opts.Logger.Error("recompress span data; retrying with backoff", "err", err)
	}
	db.recompressBackoff = min(max(2*db.recompressBackoff, recompressRetry), maxRecompressRetry)
	db.recompressAt = time.Now().Add(db.recompressBackoff)
}

// recompress rewrites span data at the spans store's bottom-level
// compression once it has settled: the blocks of each partition cut since
// its last recompression, when ingest has paused for
// Options.RecompressAfter, when they have waited backlogAge and the CPUs
// have room, or whatever the load once the partition's hour has passed.
// Cuts write a compression cheap enough for full-rate ingest; this pass
// takes span data about a quarter smaller, and merges the search-index
// sstables cuts wrote.
func (db *DB) recompress(ctx context.Context) error {
	if db.opts.RecompressAfter < 0 {
		return nil
	}
	now := db.opts.Now()
	idle := now.Sub(time.Unix(0, db.lastWrite.Load())) >= db.opts.RecompressAfter
	room := db.cpuRoom.room.Load()
	type pending struct {
		p        uint32
		from, to uint64
	}
	db.maintMu.Lock()
	defer db.maintMu.Unlock()
	var behind, work, sealed []pending
	db.mu.Lock()
	for p, newest := range db.partitions {
		if db.damaged[p] {
			continue
		}
		done := db.recompressed[p]
		isSealed := unixNanos(now) >= partitionEnd(p) && unixNanos(now)-partitionEnd(p) >= uint64(sealDelay)
		since, waiting := db.waitingSince[p]
		if newest > done {
			behind = append(behind, pending{p, done + 1, newest})
			if !waiting {
				since = now
				db.waitingSince[p] = now
			}
		}
		aged := room && now.Sub(since) >= backlogAge
		switch {
		case newest > done && (idle || isSealed || aged):
			work = append(work, pending{p, done + 1, newest})
		case newest == done && isSealed && !db.merged[p]:
			sealed = append(sealed, pending{p, 1, newest})
		}
	}
	for p := range db.waitingSince {
		if newest, ok := db.partitions[p]; !ok || newest <= db.recompressed[p] {
			delete(db.waitingSince, p)
		}
	}
	db.mu.Unlock()
	var backlog uint64
	for _, b := range behind {
		if n, err := db.spans.EstimateDiskUsage(keys.DataBlock(b.p, b.from), keys.DataBlock(b.p, b.to+1)); err == nil {
			backlog += n
		}
	}
	db.backlog.Store(int64(backlog))
	byPartition := func(a, b pending) int { return cmp.Compare(a.p, b.p) }
	slices.SortFunc(work, byPartition)
	slices.SortFunc(sealed, byPartition)
	for _, w := range sealed {
		if err := db.mergeSealed(ctx, w.p, w.to); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if IsCorruption(err) {
				db.leaveDamaged(w.p, err)
				continue
			}
			return fmt.Errorf("merge partition %d: %w", w.p, err)
		}
	}
	for _, w := range work {
		if err := ctx.Err(); err != nil {
			return nil
		}
		start := time.Now()
		if err := db.recompressBlocks(ctx, w.p, w.from, w.to); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if IsCorruption(err) {
				db.leaveDamaged(w.p, err)
				continue
			}
			return fmt.Errorf("partition %d, blocks %d to %d: %w", w.p, w.from, w.to, err)
		}
		// Blocks cut while the pass ran wait from its end.
		delete(db.waitingSince, w.p)
		db.opts.Logger.Debug("recompressed span data", "partition_start",
			partitionTime(w.p), "blocks", fmt.Sprintf("%d-%d", w.from, w.to),
			"took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// leaveDamaged stops recompressing a partition whose span data a damaged
// file holds: each attempt would fail on the same block, after Pebble spent
// a second of CPU looking for the flipped bit. cairn repair, on a stopped
// store, drops the damaged block; the partition is recompressed after the
// next start. The caller holds maintMu.
func (db *DB) leaveDamaged(p uint32, err error) {
	db.damaged[p] = true
	db.opts.Logger.Warn("span data of a partition is damaged: it is not recompressed until the store is repaired",
		"partition_start", partitionName(p), "err", firstLine(err))
}

// mergeSealed rewrites the whole of a sealed, recompressed partition if its
// span data lies in many more sstables than its size needs: passes after
// short pauses in a trickle of ingest each recompress a block or two into
// sstables of their own. Afterwards it holds about one sstable per
// recompressBytes, and its search index as few.
func (db *DB) mergeSealed(ctx context.Context, p uint32, newest uint64) error {
	lo, hi := keys.PartitionPrefix(keys.KindData, p), keys.PartitionPrefix(keys.KindData, p+1)
	levels, err := db.spans.SSTables(pebble.WithKeyRangeFilter(lo, hi))
	if err != nil {
		return err
	}
	tables := 0
	for _, l := range levels {
		tables += len(l)
	}
	size, err := db.spans.EstimateDiskUsage(lo, hi)
	if err != nil {
		return err
	}
	if need := int(size/recompressBytes) + 1; tables > 2*need+db.opts.cpus() {
		start := time.Now()
		if err := db.recompressBlocks(ctx, p, 1, newest); err != nil {
			return err
		}
		db.opts.Logger.Info("merged span data", "partition_start",
			partitionTime(p), "sstables", tables,
			"took", time.Since(start).Round(time.Millisecond))
	}
	db.merged[p] = true
	return nil
}

// recompressBytes is about how much span data one compaction of a
// recompression rewrites: a few seconds of work, which bounds how long Close
// waits for compactions under way, since Pebble lets them finish.
const recompressBytes = 32 << 20

// recompressBlocks rewrites the span data of blocks from..to of partition p
// and merges their search-index sstables, which cuts write one per
// partition and block, into a few. It works through contiguous ranges of
// blocks, recompressWorkers at a time, and records its progress after each
// batch. The caller holds maintMu.
func (db *DB) recompressBlocks(ctx context.Context, p uint32, from, to uint64) error {
	size, err := db.spans.EstimateDiskUsage(keys.DataBlock(p, from), keys.DataBlock(p, to+1))
	if err != nil {
		return fmt.Errorf("estimate size: %w", err)
	}
	// Before the ranges are rewritten, so that traces that straddle two
	// ranges are merged too.
	merged, err := db.mergeFragments(ctx, p, from, to)
	db.metrics.fragmentsMerged.Add(float64(merged))
	if err != nil {
		return fmt.Errorf("merge fragments: %w", err)
	}
	workers := recompressWorkers(&db.opts)
	ranges := splitBlocks(from, to, max(workers, int(size/recompressBytes)+1))
	for len(ranges) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch := ranges[:min(workers, len(ranges))]
		ranges = ranges[len(batch):]
		lo, hi := batch[0][0], batch[len(batch)-1][1]
		batchBytes := size * (hi - lo + 1) / (to - from + 1)
		// Compactions write a batch anew before they delete it.
		if err := db.checkSpace(int64(batchBytes), db.opts.DiskReserveBytes); err != nil {
			return err
		}
		var data [][2][]byte
		for _, r := range batch {
			data = append(data, [2][]byte{keys.DataBlock(p, r[0]), keys.DataBlock(p, r[1]+1)})
		}
		if err := db.rewrite(ctx, db.spans, data); err != nil {
			return fmt.Errorf("span data: %w", err)
		}
		search := [][2][]byte{
			{keys.Rows(p, lo), keys.Rows(p, hi+1)},
			{keys.Postings(p, lo, 0), keys.Postings(p, hi+1, 0)},
		}
		if err := db.rewrite(ctx, db.idx, search); err != nil {
			return fmt.Errorf("search index: %w", err)
		}
		db.metrics.recompressed.Add(float64(batchBytes))
		done := max(db.recompressed[p], hi) // a merge rewrites blocks done before
		if err := db.spans.Set(keys.Recompressed(p), binary.AppendUvarint(nil, done), pebble.Sync); err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		db.recompressed[p] = done
	}
	return nil
}

// rewrite has Pebble rewrite, in parallel, the sstables that hold the keys
// of each of ranges (disjoint, each from its start up to its end), with the
// options of the store's bottom level. Ingested sstables whose keys sort
// after everything stored land in the bottom level, and Pebble never
// compacts the bottom level into itself; so each range gets its first and
// last key ingested again, with the same values, which puts a small sstable
// spanning the range one level up, and a compaction of the range then
// merges it with the sstables below. Readers see the same keys and values
// throughout.
func (db *DB) rewrite(ctx context.Context, store *pebble.DB, ranges [][2][]byte) error {
	dir := filepath.Join(db.dir, "recompress")
	if err := db.opts.FS.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create recompress dir: %w", err)
	}
	defer db.opts.FS.RemoveAll(dir)

	it, err := store.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	var (
		paths  []string
		lifted [][2][]byte
	)
	for i, r := range ranges {
		if !it.SeekGE(r[0]) || bytes.Compare(it.Key(), r[1]) >= 0 {
			if err := it.Error(); err != nil {
				return err
			}
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("lift-%d.sst", i))
		first := bytes.Clone(it.Key())
		if err := writeTable(db.opts.FS, store, path, 0, false, sstable.ZstdCompression, func(w *sstable.Writer) error {
			err := w.Set(first, it.Value())
			if err == nil && it.SeekLT(r[1]) && !bytes.Equal(it.Key(), first) {
				err = w.Set(it.Key(), it.Value())
			}
			return errors.Join(err, it.Error())
		}); err != nil {
			return err
		}
		paths = append(paths, path)
		lifted = append(lifted, [2][]byte{first, r[1]})
	}
	if len(paths) == 0 {
		return nil
	}
	if err := store.Ingest(ctx, paths); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	// A manual compaction is never cancelled: Pebble (v2.1.7) panics when
	// one is cancelled after its scheduler picked it and before it runs
	// ("did not find manual compaction"). Close waits for this batch instead;
	// recompressBlocks checks ctx between batches.
	compactCtx := context.WithoutCancel(ctx)
	errs := make([]error, len(lifted))
	var wg sync.WaitGroup
	for i, r := range lifted {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = store.Compact(compactCtx, r[0], r[1], false)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// recompressWorkers is how many compactions recompression runs at once: one
// per two CPUs, so that half the machine stays with reads and ingest.
func recompressWorkers(o *Options) int { return max(1, o.cpus()/2) }

// splitBlocks cuts blocks from..to into at most n contiguous ranges of about
// as many blocks, each given by its first and last block.
func splitBlocks(from, to uint64, n int) [][2]uint64 {
	count := to - from + 1
	per := max(1, (count+uint64(n)-1)/uint64(n))
	var out [][2]uint64
	for b := from; b <= to; b += per {
		out = append(out, [2]uint64{b, min(to, b+per-1)})
	}
	return out
}

// loadRecompressed reads how far each partition has been recompressed.
// Partitions the index no longer lists were deleted by reconcileSpans.
func (db *DB) loadRecompressed() error {
	it, err := db.spans.NewIter(keys.KindRange(keys.KindRecompressed))
	if err != nil {
		return fmt.Errorf("load recompression progress: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		p, err := keys.ParseRecompressed(it.Key())
		if err != nil {
			return err
		}
		block, n := binary.Uvarint(it.Value())
		if n <= 0 {
			return fmt.Errorf("load recompression progress: partition %d: bad value %x", p, it.Value())
		}
		if newest, ok := db.partitions[p]; ok {
			db.recompressed[p] = min(block, newest)
		}
	}
	return it.Error()
}
