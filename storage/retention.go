package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"cairn/storage/internal/keys"
)

// retentionInterval is how often expired partitions are looked for.
const retentionInterval = time.Minute

// maintainInterval is how often the maintenance goroutine looks for span
// data to recompress.
const maintainInterval = time.Second

// NotBefore is the start of the retention period, in unix nanoseconds: spans
// that started earlier are not accepted and not returned.
func (db *DB) NotBefore() uint64 {
	return uint64(max(0, db.opts.Now().Add(-db.opts.Retention).UnixNano()))
}

// maintainer enforces retention and recompresses span data.
func (db *DB) maintainer() {
	defer db.maintainerWG.Done()
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
		if now := db.opts.Now(); now.Sub(retained) >= retentionInterval {
			retained = now
			if err := db.enforceRetention(); err != nil {
				db.opts.Logger.Error("enforce retention", "err", err)
			}
		}
		if err := db.recompress(ctx); err != nil {
			db.opts.Logger.Error("recompress span data", "err", err)
		}
		select {
		case <-db.stop:
			return
		case <-t.C:
		}
	}
}

// enforceRetention drops every partition whose hour ended before the
// retention period began, then, while the store is larger than MaxDiskBytes,
// the oldest remaining partitions but the newest.
func (db *DB) enforceRetention() error {
	horizon := db.NotBefore()
	db.mu.Lock()
	parts := make([]uint32, 0, len(db.partitions))
	for p := range db.partitions {
		parts = append(parts, p)
	}
	db.mu.Unlock()
	slices.Sort(parts)

	for len(parts) > 0 && (uint64(parts[0])+1)*partitionNanos <= horizon {
		if err := db.dropPartition(parts[0]); err != nil {
			return err
		}
		parts = parts[1:]
	}
	if db.opts.MaxDiskBytes <= 0 {
		return nil
	}
	for len(parts) > 1 {
		size, err := db.diskBytes()
		if err != nil {
			return err
		}
		if size <= db.opts.MaxDiskBytes {
			break
		}
		db.opts.Logger.Warn("store over its disk bound: dropping the oldest partition",
			"disk_bytes", size, "max_disk_bytes", db.opts.MaxDiskBytes,
			"partition_start", time.Unix(0, int64(uint64(parts[0])*partitionNanos)).UTC())
		if err := db.dropPartition(parts[0]); err != nil {
			return err
		}
		parts = parts[1:]
	}
	return nil
}

// dropPartition deletes a partition's trace index, search index and span
// data with range deletions and compacts the ranges, so that their sstables
// are deleted, not rewritten, and the space is returned at once. The index
// goes first: span data that a crash leaves behind is unreachable, and is
// deleted at the next open.
func (db *DB) dropPartition(p uint32) error {
	db.maintMu.Lock()
	defer db.maintMu.Unlock()
	db.mu.Lock()
	delete(db.partitions, p)
	db.mu.Unlock()
	delete(db.recompressed, p)
	delete(db.merged, p)
	delete(db.damaged, p)

	partition := func(kind byte) [2][]byte {
		return [2][]byte{keys.PartitionPrefix(kind, p), keys.PartitionPrefix(kind, p+1)}
	}
	indexRanges := [][2][]byte{partition(keys.KindTrace), partition(keys.KindRows), partition(keys.KindPostings)}
	if err := dropRanges(db.idx, indexRanges, keys.Partition(p)); err != nil {
		return fmt.Errorf("drop partition %d: %w", p, err)
	}
	if err := dropRanges(db.spans, [][2][]byte{partition(keys.KindData)}, keys.Recompressed(p)); err != nil {
		return fmt.Errorf("drop partition %d: %w", p, err)
	}
	return nil
}

// dropRanges deletes key ranges and one key of a store, then compacts the
// ranges.
func dropRanges(store *pebble.DB, ranges [][2][]byte, key []byte) error {
	b := store.NewBatch()
	defer b.Close()
	for _, r := range ranges {
		if err := b.DeleteRange(r[0], r[1], nil); err != nil {
			return err
		}
	}
	if err := b.Delete(key, nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	for _, r := range ranges {
		if err := store.Compact(context.Background(), r[0], r[1], false); err != nil {
			return fmt.Errorf("compact: %w", err)
		}
	}
	return nil
}

// diskBytes is the size of the store: Pebble's files and the write-ahead log.
func (db *DB) diskBytes() (int64, error) {
	wal, err := db.walBytes()
	return int64(db.idx.Metrics().DiskSpaceUsage()+db.spans.Metrics().DiskSpaceUsage()) + wal, err
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
