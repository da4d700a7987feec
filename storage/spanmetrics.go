package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// Span metrics, as stored with each block and merged by SpanMetrics.
type (
	SpanSeries        = codec.SpanSeries
	SpanMinute        = codec.SpanMinute
	Exemplar          = codec.Exemplar
	SpanMetricsSeries = codec.SpanMetricsSeries
)

// MaxExemplars is how many exemplars, the slowest spans, a series keeps
// per minute.
const MaxExemplars = codec.MaxExemplars

// minuteNanos is the resolution of aggregates.
const minuteNanos = uint64(60 * 1e9)

// spanMetrics aggregates spans by series and minute, with at most maxSeries
// series; spans of any further series count into the overflow series of
// their status code. Cuts build one per partition of a block, and merge the
// builders of their data writers; reads merge stored ones into one.
type spanMetrics struct {
	maxSeries int
	index     map[string]int // seriesKey → series
	series    []*seriesMetrics
	overflow  [3]int // by status code: index in series + 1; 0 for none yet
	// overflowed counts spans that went to an overflow series because
	// their own would have passed maxSeries.
	overflowed uint64
	key        []byte // scratch
}

// seriesMetrics is one series: its minutes, and its spans by Prometheus
// bucket (promBucketsMs) for the process's totals.
type seriesMetrics struct {
	SpanMetricsSeries
	prom [len(promBucketsMs) + 1]uint64
}

func newSpanMetrics(maxSeries int) *spanMetrics {
	return &spanMetrics{maxSeries: maxSeries, index: map[string]int{}}
}

// seriesKey identifies a series in spanMetrics.index.
func seriesKey(dst []byte, service, name []byte, kind, status uint8) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(service)))
	dst = append(append(dst, service...), kind, status)
	return append(dst, name...)
}

// find returns the series of a key, creating it with what series returns,
// or, past maxSeries, the overflow series of its status code, reporting
// that it overflowed.
func (m *spanMetrics) find(key []byte, status uint8, series func() SpanSeries) (sm *seriesMetrics, overflowed bool) {
	if i, ok := m.index[string(key)]; ok {
		return m.series[i], false
	}
	if len(m.index) >= m.maxSeries {
		return m.overflowSeries(status), true
	}
	m.index[string(key)] = len(m.series)
	sm = &seriesMetrics{SpanMetricsSeries: SpanMetricsSeries{SpanSeries: series()}}
	m.series = append(m.series, sm)
	return sm, false
}

func (m *spanMetrics) overflowSeries(status uint8) *seriesMetrics {
	if i := m.overflow[status]; i > 0 {
		return m.series[i-1]
	}
	sm := &seriesMetrics{SpanMetricsSeries: SpanMetricsSeries{SpanSeries: SpanSeries{Status: status, Overflow: true}}}
	m.series = append(m.series, sm)
	m.overflow[status] = len(m.series)
	return sm
}

// add counts a span of trace id.
func (m *spanMetrics) add(id TraceID, s *liveSpan) {
	m.key = seriesKey(m.key[:0], s.group.service, s.spanName(), s.kind, s.status)
	series, over := m.find(m.key, s.status, func() SpanSeries {
		return SpanSeries{Service: string(s.group.service), Name: string(s.spanName()), Kind: s.kind, Status: s.status}
	})
	if over {
		m.overflowed++
	}
	d := s.duration()
	mi := series.minute(s.start / minuteNanos)
	mi.Latency.Add(d)
	mi.AddExemplar(Exemplar{TraceID: id, Duration: d})
	series.prom[promBucket(d)]++
}

// minute returns the series' minute, adding it in order if new. A block's
// spans mostly started in its last minute or two, and reads take blocks
// oldest first, so the search starts at the end.
func (sm *seriesMetrics) minute(minute uint64) *SpanMinute {
	i := len(sm.Minutes)
	for i > 0 && sm.Minutes[i-1].Minute > minute {
		i--
	}
	if i > 0 && sm.Minutes[i-1].Minute == minute {
		return &sm.Minutes[i-1]
	}
	sm.Minutes = slices.Insert(sm.Minutes, i, SpanMinute{Minute: minute})
	return &sm.Minutes[i]
}

// seriesOf returns m's series for s, creating it, or, past maxSeries, the
// overflow series of its status code; over reports the latter for a
// series that was not an overflow series.
func (m *spanMetrics) seriesOf(s *SpanSeries) (series *seriesMetrics, over bool) {
	if s.Overflow {
		return m.overflowSeries(s.Status), false
	}
	m.key = seriesKey(m.key[:0], []byte(s.Service), []byte(s.Name), s.Kind, s.Status)
	return m.find(m.key, s.Status, func() SpanSeries { return *s })
}

// merge adds the series of o into m.
func (m *spanMetrics) merge(o *spanMetrics) {
	m.overflowed += o.overflowed
	for _, os := range o.series {
		series, over := m.seriesOf(&os.SpanSeries)
		for i := range os.Minutes {
			series.minute(os.Minutes[i].Minute).Merge(&os.Minutes[i])
			if over {
				m.overflowed += os.Minutes[i].Latency.Count()
			}
		}
		for b, n := range os.prom {
			series.prom[b] += n
		}
	}
}

// sorted returns the series ordered by service, name, kind and status,
// overflow series last; their minutes ascend already.
func (m *spanMetrics) sorted() []SpanMetricsSeries {
	out := make([]SpanMetricsSeries, len(m.series))
	for i, s := range m.series {
		out[i] = s.SpanMetricsSeries
	}
	slices.SortFunc(out, func(a, b SpanMetricsSeries) int { return compareSeries(&a.SpanSeries, &b.SpanSeries) })
	return out
}

func compareSeries(a, b *SpanSeries) int {
	if a.Overflow != b.Overflow {
		if a.Overflow {
			return 1
		}
		return -1
	}
	return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Name, b.Name),
		cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Status, b.Status))
}

// aggregateRecord encodes a partition's aggregates of a block: its span
// metrics, if it has spans, and its encoded service graph edges, if any.
func aggregateRecord(sm *spanMetrics, edges []byte) []byte {
	var sections []codec.Section
	if sm != nil {
		sections = append(sections, codec.Section{Type: codec.SectionSpanMetrics, Payload: codec.AppendSpanMetrics(nil, sm.sorted())})
	}
	if edges != nil {
		sections = append(sections, codec.Section{Type: codec.SectionServiceGraph, Payload: edges})
	}
	return codec.AppendAggregate(nil, sections...)
}

// SpanMetrics returns the span metrics of the series keep accepts, by
// series and step, over the minutes that start in [from, to) and within
// the retention period, merged from the aggregates stored with each block:
// spans count once their block is cut, at most Options.FlushInterval after
// they were acknowledged. Steps are step long (whole minutes, at least
// one) from the minute of from; each SpanMinute is a step, named by its
// first minute, so that an answer holds a histogram per series and step,
// not per minute. The series are ordered by service, name, kind and
// status, overflow series last, their steps ascending; at most
// Options.SpanMetricsMaxSeries of them, past which the rest merge into
// overflow series. keep must not keep the series it is given.
func (db *DB) SpanMetrics(ctx context.Context, from, to time.Time, step time.Duration, keep func(*SpanSeries) bool) ([]SpanMetricsSeries, error) {
	lo, hi := unixNanos(from)/minuteNanos, unixNanos(to)/minuteNanos
	perStep := max(uint64(step/time.Minute), 1)
	merged := newSpanMetrics(db.opts.SpanMetricsMaxSeries)
	err := db.scanAggregates(ctx, lo*minuteNanos, hi*minuteNanos, codec.SectionSpanMetrics, func(notBefore uint64, payload []byte) error {
		first := max(lo, (notBefore+minuteNanos-1)/minuteNanos)
		return codec.DecodeSpanMetrics(payload, keep, func(s *SpanSeries, minute uint64) *SpanMinute {
			if minute < first || minute >= hi {
				return nil
			}
			series, _ := merged.seriesOf(s)
			return series.minute(minute - (minute-lo)%perStep)
		})
	})
	if err != nil {
		return nil, err
	}
	return merged.sorted(), nil
}

// scanAggregates calls fn with the payload of the section of type typ of
// the aggregate record of every block with spans in a partition that
// [from, to) (unix nanoseconds) overlaps, oldest partition first, and the
// retention horizon: what fn takes from them must start at or after it.
func (db *DB) scanAggregates(ctx context.Context, from, to uint64, typ byte, fn func(notBefore uint64, payload []byte) error) error {
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
		prefix := keys.PartitionPrefix(keys.KindAggregate, p)
		for ok := it.SeekGE(prefix); ok && bytes.HasPrefix(it.Key(), prefix); ok = it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return fmt.Errorf("aggregates of partition %s: %w", partitionName(p), err)
			}
			payload, err := codec.AggregateSection(v, typ)
			if err == nil && payload != nil {
				err = fn(notBefore, payload)
			}
			if err != nil {
				return fmt.Errorf("aggregates of partition %s: %w", partitionName(p), err)
			}
		}
		if err := it.Error(); err != nil {
			return fmt.Errorf("aggregates of partition %s: %w", partitionName(p), err)
		}
	}
	return nil
}
