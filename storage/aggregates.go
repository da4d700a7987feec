package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"cairn/internal/histogram"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// A block's aggregates of a partition are stored as records of their own:
// its span metrics series by service, in serviceShards shards (0x33 keys,
// a shard's blocks together), the overflow series of status codes in one
// more, each service's totals by kind and status in one more, and the
// service graph's edges apart (0x34 keys). A query of one service's span
// metrics reads its shard and the overflow series, not every service's,
// and none lands on another's record: with 300 services and 10,000 series
// a block, one service's span metrics over a store's first 40 seconds read
// 44 MB of records and took 58–80 ms. A query by service reads the totals
// alone: the same fleet's services page read every shard, 0.20–0.25 s.
const (
	serviceShards = 64
	shardOverflow = uint8(serviceShards)
	shardTotals   = shardOverflow + 1
)

// serviceShard is the shard of the span metrics series of a service: the
// 32-bit FNV-1a hash of its name, modulo serviceShards. It is part of the
// format.
func serviceShard(service string) uint8 {
	h := uint32(2166136261)
	for i := 0; i < len(service); i++ {
		h = (h ^ uint32(service[i])) * 16777619
	}
	return uint8(h % serviceShards)
}

// seriesShard is the shard of a series: its service's, or, for the
// overflow series of a status code, which have no service, shardOverflow.
func seriesShard(s *SpanSeries) uint8 {
	if s.Service == "" && s.Overflow {
		return shardOverflow
	}
	return serviceShard(s.Service)
}

// aggregateKey is the key of a partition's aggregate record of a block in
// one run of records: a shard of span metrics, or the service graph.
type aggregateKey func(p uint32, block uint64) []byte

func metricsKey(shard uint8) aggregateKey {
	return func(p uint32, block uint64) []byte { return keys.Aggregate(p, shard, block) }
}

var (
	// metricsRuns are the runs of a partition's span metrics records, a
	// shard each, ascending.
	metricsRuns = func() []aggregateKey {
		runs := make([]aggregateKey, 0, serviceShards+1)
		for s := range serviceShards + 1 {
			runs = append(runs, metricsKey(uint8(s)))
		}
		return runs
	}()
	// totalsRun is the run of a partition's records of services' totals.
	totalsRun = metricsKey(shardTotals)
	// aggregateRuns are every run of a partition's aggregate records.
	aggregateRuns = append(slices.Clip(metricsRuns), totalsRun, keys.Graph)
)

// aggregateRecord encodes an aggregate record of span metrics series, if
// any, and encoded service graph edges, if any.
func aggregateRecord(series []SpanMetricsSeries, edges []byte) []byte {
	var sections []codec.Section
	if len(series) > 0 {
		sections = append(sections, codec.Section{Type: codec.SectionSpanMetrics, Payload: codec.AppendSpanMetrics(nil, series)})
	}
	if edges != nil {
		sections = append(sections, codec.Section{Type: codec.SectionServiceGraph, Payload: edges})
	}
	return codec.AppendAggregate(nil, sections...)
}

// metricsRecords encodes span metrics sm into a record per shard, and one
// of their services' totals, and calls set with each, shards ascending.
func metricsRecords(sm *spanMetrics, set func(shard uint8, rec []byte) error) error {
	series := sm.sorted()
	shards := make([]uint8, len(series))
	order := make([]int, len(series))
	for i := range series {
		shards[i], order[i] = seriesShard(&series[i].SpanSeries), i
	}
	// Stable, so that each shard's series stay in the record's order.
	slices.SortStableFunc(order, func(a, b int) int { return int(shards[a]) - int(shards[b]) })
	run := make([]SpanMetricsSeries, 0, len(series))
	for i, j := range order {
		run = append(run, series[j])
		if i+1 < len(order) && shards[order[i+1]] == shards[j] {
			continue
		}
		if err := set(shards[j], aggregateRecord(run, nil)); err != nil {
			return err
		}
		run = run[:0]
	}
	if len(series) == 0 {
		return nil
	}
	return set(shardTotals, aggregateRecord(serviceTotals(series).sorted(), nil))
}

// serviceTotals merges series into a series of each service, kind and
// status code, without a name: a service's overflow series merge into its
// totals, and the overflow series of status codes, which have no service,
// stay as they are.
func serviceTotals(series []SpanMetricsSeries) *spanMetrics {
	totals := newSpanMetrics(math.MaxInt)
	for i := range series {
		s := &series[i]
		t, _ := totals.seriesOf(&SpanSeries{Service: s.Service, Kind: s.Kind, Status: s.Status, Overflow: s.Service == "" && s.Overflow})
		for m := range s.Minutes {
			t.minute(s.Minutes[m].Minute).Merge(&s.Minutes[m])
		}
	}
	return totals
}

// scanAggregates calls fn with the payload of the section of type typ of
// the aggregate records of runs of every block with spans in a partition
// that [from, to) (unix nanoseconds) overlaps, oldest partition first, and
// the retention horizon: what fn takes from them must start at or after
// it.
func (db *DB) scanAggregates(ctx context.Context, from, to uint64, typ byte, runs []aggregateKey, fn func(notBefore uint64, payload []byte) error) error {
	if to <= from {
		return nil
	}
	if !db.reading.TryRLock() {
		return ErrClosed
	}
	defer db.reading.RUnlock()
	notBefore := db.NotBefore()
	lo, hi := max(partitionOf(from), partitionOf(notBefore)), partitionOf(to-1)
	parts := db.layout.Load().partsWithin(lo, hi)
	// Made after the layout was taken, the iterator holds the aggregates
	// of every block of the partitions it lists (see openView).
	it, err := db.idx.NewIter(nil)
	if err != nil {
		return fmt.Errorf("open index iterator: %w", err)
	}
	defer it.Close()
	for _, p := range parts {
		for _, key := range runs {
			if err := scanRun(ctx, it, key(p, 0), key(p, math.MaxUint64), typ, func(payload []byte) error { return fn(notBefore, payload) }); err != nil {
				return fmt.Errorf("aggregates of partition %s: %w", partitionName(p), err)
			}
		}
	}
	return nil
}

// scanRun calls fn with the payload of the section of type typ of the
// aggregate records in [lower, upper).
func scanRun(ctx context.Context, it *pebble.Iterator, lower, upper []byte, typ byte, fn func(payload []byte) error) error {
	it.SetBounds(lower, upper)
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		payload, err := codec.AggregateSection(v, typ)
		if err == nil && payload != nil {
			err = fn(payload)
		}
		if err != nil {
			return err
		}
	}
	return it.Error()
}

// decodeAggregates decodes aggregate records into the span metrics of
// their series, unbounded, and their service graph edges by minute.
func decodeAggregates(records [][]byte) (*spanMetrics, map[string]*codec.GraphEdge, error) {
	metrics := newSpanMetrics(math.MaxInt)
	edges := map[string]*codec.GraphEdge{}
	var key []byte
	for _, rec := range records {
		payload, err := codec.AggregateSection(rec, codec.SectionSpanMetrics)
		if err != nil {
			return nil, nil, err
		}
		if payload != nil {
			if err := codec.DecodeSpanMetrics(payload, allSeries, func(s *SpanSeries, minute uint64) *SpanMinute {
				series, _ := metrics.seriesOf(s)
				return series.minute(minute)
			}); err != nil {
				return nil, nil, err
			}
		}
		if payload, err = codec.AggregateSection(rec, codec.SectionServiceGraph); err != nil || payload == nil {
			if err != nil {
				return nil, nil, err
			}
			continue
		}
		if err := codec.DecodeServiceGraph(payload, func(e *codec.EdgeHeader) (*histogram.Histogram, *uint64) {
			key = edgeKey(key[:0], e)
			g := edges[string(key)]
			if g == nil {
				g = &codec.GraphEdge{Parent: string(e.Parent), Child: string(e.Child), Virtual: e.Virtual, Minute: e.Minute}
				edges[string(key)] = g
			}
			g.Errors += e.Errors
			return &g.Latency, nil
		}); err != nil {
			return nil, nil, err
		}
	}
	return metrics, edges, nil
}

// isDamaged reports whether err says that stored bytes cannot be decoded.
func isDamaged(err error) bool {
	return errors.Is(err, codec.ErrCorrupt) || errors.Is(err, histogram.ErrCorrupt) || IsCorruption(err)
}

// shardAggregates rewrites the aggregate records of format version 10 and
// older, one a block and partition, into the shards and service graph
// records of version 11, each with its old record's deletion in one batch: an upgrade that a crash
// interrupts goes on where it stopped. A record that cannot be decoded is
// dropped, logged: every query of its partition failed on it.
func (db *DB) shardAggregates() error {
	it, err := db.idx.NewIter(keys.KindRange(keys.KindAggregate))
	if err != nil {
		return err
	}
	defer it.Close()
	b := db.idx.NewBatch()
	defer func() { b.Close() }()
	rewritten, dropped := 0, 0
	for valid := it.First(); valid; valid = it.Next() {
		p, block, err := keys.ParseAggregateV10(it.Key())
		if err != nil {
			continue // rewritten before a crash
		}
		v, err := it.ValueAndErr()
		var (
			metrics *spanMetrics
			edges   map[string]*codec.GraphEdge
		)
		if err == nil {
			metrics, edges, err = decodeAggregates([][]byte{v})
		}
		switch {
		case isDamaged(err):
			dropped++
			db.opts.Logger.Warn("upgrade dropped a damaged aggregate record: span metrics and the service graph leave out its block",
				"partition_start", partitionTime(p), "block", block, "err", err)
		case err != nil:
			return err
		default:
			if err := metricsRecords(metrics, func(shard uint8, rec []byte) error {
				return b.Set(keys.Aggregate(p, shard, block), rec, nil)
			}); err != nil {
				return err
			}
			if edges := edgesSection(edges); edges != nil {
				if err := b.Set(keys.Graph(p, block), aggregateRecord(nil, edges), nil); err != nil {
					return err
				}
			}
			rewritten++
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			return err
		}
		if b.Len() >= 4<<20 {
			if err := b.Commit(nil); err != nil {
				return err
			}
			b.Close()
			b = db.idx.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := b.Commit(nil); err != nil {
		return err
	}
	if rewritten+dropped > 0 {
		db.opts.Logger.Info("aggregate records sharded", "records", rewritten, "dropped", dropped)
	}
	return nil
}

// upgradeTo12 writes the records of services' totals, which format version
// 12 adds, from a store's span metrics records, and sets its version. A
// partition's totals are written in one batch that first deletes any an
// interrupted upgrade wrote, under the keys of the records they come from,
// so that retention drops them with those. A damaged record is left out,
// logged: queries of its shard fail on it already.
func (db *DB) upgradeTo12() error {
	it, err := db.idx.NewIter(keys.KindRange(keys.KindAggregate))
	if err != nil {
		return err
	}
	defer it.Close()
	var (
		p      uint32
		totals = map[uint64]*spanMetrics{} // of partition p, by block
	)
	write := func() error {
		if len(totals) == 0 {
			return nil
		}
		b := db.idx.NewBatch()
		defer b.Close()
		if err := b.DeleteRange(totalsRun(p, 0), totalsRun(p, math.MaxUint64), nil); err != nil {
			return err
		}
		for block, t := range totals {
			if err := b.Set(totalsRun(p, block), aggregateRecord(t.sorted(), nil), nil); err != nil {
				return err
			}
		}
		clear(totals)
		return b.Commit(pebble.NoSync) // the version, set last, is synced
	}
	for valid := it.First(); valid; valid = it.Next() {
		kp, shard, block, err := keys.ParseAggregate(it.Key())
		if err != nil {
			return err
		}
		if shard == shardTotals {
			continue // an interrupted upgrade's: written again
		}
		if kp != p {
			if err := write(); err != nil {
				return err
			}
			p = kp
		}
		v, err := it.ValueAndErr()
		var rec *spanMetrics
		if err == nil {
			rec, _, err = decodeAggregates([][]byte{v})
		}
		switch {
		case isDamaged(err):
			db.opts.Logger.Warn("upgrade left a damaged span metrics record out of the services' totals",
				"partition_start", partitionTime(kp), "shard", shard, "block", block, "err", err)
			continue
		case err != nil:
			return err
		}
		if totals[block] == nil {
			totals[block] = newSpanMetrics(math.MaxInt)
		}
		totals[block].merge(serviceTotals(rec.sorted()))
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := write(); err != nil {
		return err
	}
	return db.idx.Set(keys.Meta("format"), []byte{FormatVersion}, pebble.Sync)
}
