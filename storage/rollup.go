package storage

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"cairn/storage/internal/codec"
)

// rollupGroups are the sizes, in blocks, of the groups of consecutive
// blocks whose aggregate records of a partition are merged into one once
// the last block of the group is cut, smallest first; groups are aligned
// (blocks g·size to (g+1)·size − 1), so that each group of a size holds
// whole groups of the sizes before it. A query of span metrics or of the
// service graph reads every record of its window, and under full ingest a
// block is cut every second or so: a workload of 1,752 series, whose
// records of 36 blocks held 12.9 MB, took 160–300 ms to answer from them,
// and an hour of such blocks would take seconds. Merged, the same minutes
// and series took 4.6 MB in groups of 8 blocks and 1.7 MB in one record,
// and a query reads at most 7 records of each size and 7 of blocks not
// yet merged: 28 for an hour of 3,600 blocks. A variable only so that
// tests can make groups small.
var rollupGroups = []uint64{8, 64, 512}

// rollupMaxBytes bounds the records of a group that are merged, so that
// a merge holds little memory beside ingest: it holds what they hold, many
// times their size in allocations (a group of seven blocks of a fleet of
// 300 services, with 10,000 series and 25,000 service graph edges each,
// 14 MB in all, took 0.3 s and 120 MB). A variable only so that tests can
// make it small.
var rollupMaxBytes int64 = 4 << 20

// rollupProgress is where rollUpAggregates has got to in a partition, in
// groups of one size.
type rollupProgress struct {
	partition uint32
	size      uint64
}

// rollUpAggregates merges, in each partition and run of records (a shard
// of span metrics, or the service graph), the aggregate records of every
// group of rollupGroups whose last block has been cut into one record
// under the key of the newest of them (see mergeAggregates), smaller
// groups first. A group of damaged records is left as it is, and
// logged. Only the maintainer calls it.
func (db *DB) rollUpAggregates(ctx context.Context) error {
	// A merge writes a record before its range deletion frees any: with
	// the disk near full it waits, quietly, for space as ingest does.
	if db.checkSpace(rollupMaxBytes, db.opts.DiskReserveBytes) != nil {
		return nil
	}
	db.mu.Lock()
	cut := db.live.block // every block before it is stored
	if db.frozen != nil {
		cut = db.frozen.block
	}
	parts := make([]uint32, 0, len(db.partitions))
	for p := range db.partitions {
		parts = append(parts, p)
	}
	db.mu.Unlock()
	slices.Sort(parts)
	db.maintMu.Lock()
	defer db.maintMu.Unlock()
	for k := range db.rolledUp {
		if _, ok := slices.BinarySearch(parts, k.partition); !ok {
			delete(db.rolledUp, k)
		}
	}
	for _, size := range rollupGroups {
		complete := cut / size * size // the blocks of complete groups are below it
		for _, p := range parts {
			if ctx.Err() != nil {
				return nil
			}
			k := rollupProgress{p, size}
			if db.rolledUp[k] >= complete {
				continue
			}
			if err := db.rollUpPartition(p, size, db.rolledUp[k], complete); err != nil {
				return fmt.Errorf("roll up the aggregates of partition %s: %w", partitionName(p), err)
			}
			db.rolledUp[k] = complete
		}
	}
	return nil
}

// rollUpPartition merges the records of partition p's groups of size
// blocks from block from to block to, both multiples of size, exclusive,
// in each run of records.
func (db *DB) rollUpPartition(p uint32, size, from, to uint64) error {
	for _, key := range aggregateRuns {
		if err := db.rollUpRun(p, key, size, from, to); err != nil {
			return err
		}
	}
	return nil
}

// rollUpRun merges the records of a run of partition p's groups.
func (db *DB) rollUpRun(p uint32, key aggregateKey, size, from, to uint64) error {
	// Keys first: after a restart every group is looked at again, and
	// most hold one record already, which need not be copied.
	it, err := db.idx.NewIter(&pebble.IterOptions{LowerBound: key(p, from), UpperBound: key(p, to)})
	if err != nil {
		return err
	}
	defer it.Close()
	group, blocks := uint64(math.MaxUint64), []uint64(nil)
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		block := binary.BigEndian.Uint64(k[len(k)-8:]) // both kinds of key end in it
		if g := block / size; g != group {
			if err := db.mergeRecords(p, key, blocks); err != nil {
				return err
			}
			group, blocks = g, blocks[:0]
		}
		blocks = append(blocks, block)
	}
	if err := it.Error(); err != nil {
		return err
	}
	return db.mergeRecords(p, key, blocks)
}

// mergeRecords merges partition p's aggregate records of blocks in a run,
// if more than one and of at most rollupMaxBytes together, into one under
// the key of the last, in one batch. Damaged records are left as they are:
// a group whose merge fails on them is logged, not tried again until the
// next start.
func (db *DB) mergeRecords(p uint32, key aggregateKey, blocks []uint64) error {
	if len(blocks) < 2 {
		return nil
	}
	values := make([][]byte, len(blocks))
	size := 0
	var err error
	for i, b := range blocks {
		v, closer, getErr := db.idx.Get(key(p, b))
		if err = getErr; err != nil {
			break
		}
		if size += len(v); int64(size) > rollupMaxBytes {
			closer.Close()
			return nil // the rest need not be read
		}
		values[i] = slices.Clone(v)
		closer.Close()
	}
	var merged []byte
	if err == nil {
		merged, err = mergeAggregates(values)
	}
	last := blocks[len(blocks)-1]
	if isDamaged(err) {
		db.opts.Logger.Warn("aggregate records left unmerged: one is damaged; cairn check tells which",
			"partition_start", partitionTime(p), "blocks", fmt.Sprintf("%d-%d", blocks[0], last), "key", fmt.Sprintf("%x", key(p, last)), "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	b := db.idx.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(key(p, blocks[0]), key(p, last), nil); err != nil {
		return err
	}
	if err := b.Set(key(p, last), merged, nil); err != nil {
		return err
	}
	// Not synced: a merge that a crash loses left the records as they
	// were, and is made again after the restart. A synced one would wait
	// for the disk once a run, 66 times a group for a large fleet.
	return b.Commit(pebble.NoSync)
}

// mergeAggregates merges aggregate records into one that answers every
// query as they do together: span metrics by series and minute, the
// slowest exemplars of each minute, and service graph edges by minute.
// It bounds no series: a query bounds those its filter keeps, and a
// merged record bounded to --span-metrics-max-series folded into overflow
// the series of a service that a query of that service found before.
// What a merge holds is bounded by rollupMaxBytes instead.
func mergeAggregates(records [][]byte) ([]byte, error) {
	metrics, edges, err := decodeAggregates(records)
	if err != nil {
		return nil, err
	}
	return aggregateRecord(metrics.sorted(), edgesSection(edges)), nil
}

// allSeries accepts every span metrics series.
func allSeries(*SpanSeries) bool { return true }

// edgeKey identifies an edge of a minute.
func edgeKey(dst []byte, e *codec.EdgeHeader) []byte {
	dst = binary.AppendUvarint(dst, e.Minute)
	dst = binary.AppendUvarint(dst, uint64(len(e.Parent)))
	dst = append(append(dst, e.Parent...), boolByte(e.Virtual))
	return append(dst, e.Child...)
}

// compareEdges orders a record's edges: by minute, parent, child, and the
// edge to a virtual node after the real one.
func compareEdges(x, y codec.GraphEdge) int {
	return cmp.Or(cmp.Compare(x.Minute, y.Minute), cmp.Compare(x.Parent, y.Parent), cmp.Compare(x.Child, y.Child),
		compareBool(x.Virtual, y.Virtual))
}
