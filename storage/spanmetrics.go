package storage

import (
	"cmp"
	"context"
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"time"

	"cairn/storage/internal/codec"
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
// their service, kind and status code, of which there are at most
// maxSeries too, and past those into the overflow series of their status
// code. A service's calls, errors and latencies by kind thus stay exact
// however many operations it names with IDs. Cuts build one per partition of a block,
// and merge the builders of their data writers; reads merge stored ones
// into one.
type spanMetrics struct {
	maxSeries int
	index     map[string]int // seriesKey or overflowKey → series
	series    []*seriesMetrics
	// serviceOverflows counts the services' overflow series in index.
	serviceOverflows int
	overflow         [3]int // by status code: index in series + 1; 0 for none yet
	// overflowed counts spans that went to an overflow series because
	// their own would have passed maxSeries.
	overflowed uint64
	key, okey  []byte // scratch
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

// overflowKey identifies a service's overflow series in spanMetrics.index:
// where seriesKey has the kind, a kind no span has, then the kind.
func overflowKey[S string | []byte](dst []byte, service S, kind, status uint8) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(service)))
	return append(append(dst, service...), 0xff, kind, status)
}

// find returns the series of a key, creating it with what series returns,
// or, past maxSeries, an overflow series of its service, kind and status
// code, reporting that it overflowed.
func find[S string | []byte](m *spanMetrics, key []byte, service S, kind, status uint8, series func() SpanSeries) (sm *seriesMetrics, overflowed bool) {
	if i, ok := m.index[string(key)]; ok {
		return m.series[i], false
	}
	if len(m.index)-m.serviceOverflows >= m.maxSeries {
		return serviceOverflow(m, service, kind, status), true
	}
	m.index[string(key)] = len(m.series)
	sm = &seriesMetrics{SpanMetricsSeries: SpanMetricsSeries{SpanSeries: series()}}
	m.series = append(m.series, sm)
	return sm, false
}

// serviceOverflow returns the overflow series of a service, kind and
// status code, creating it, or, past maxSeries of them, the overflow
// series of the status code.
func serviceOverflow[S string | []byte](m *spanMetrics, service S, kind, status uint8) *seriesMetrics {
	m.okey = overflowKey(m.okey[:0], service, kind, status)
	if i, ok := m.index[string(m.okey)]; ok {
		return m.series[i]
	}
	if len(service) == 0 || m.serviceOverflows >= m.maxSeries {
		return m.overflowSeries(status)
	}
	m.index[string(m.okey)] = len(m.series)
	m.serviceOverflows++
	sm := &seriesMetrics{SpanMetricsSeries: SpanMetricsSeries{SpanSeries: SpanSeries{Service: string(service), Kind: kind, Status: status, Overflow: true}}}
	m.series = append(m.series, sm)
	return sm
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
	series, over := find(m, m.key, s.group.service, s.kind, s.status, func() SpanSeries {
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

// seriesOf returns m's series for s, creating it, or, past maxSeries, an
// overflow series (see find); over reports the latter for a series that
// was not an overflow series.
func (m *spanMetrics) seriesOf(s *SpanSeries) (series *seriesMetrics, over bool) {
	if s.Overflow {
		return serviceOverflow(m, s.Service, s.Kind, s.Status), false
	}
	m.key = seriesKey(m.key[:0], []byte(s.Service), []byte(s.Name), s.Kind, s.Status)
	return find(m, m.key, s.Service, s.Kind, s.Status, func() SpanSeries { return *s })
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

// SpanMetricsQuery says which span metrics SpanMetrics merges, and how.
type SpanMetricsQuery struct {
	// From and To bound the minutes read: those that start in [From, To).
	From, To time.Time
	// Step is the length of the answer's steps, in whole minutes; at
	// least one.
	Step time.Duration
	// Service, if not empty, is the service whose series are read, with
	// the overflow series of status codes, which may hold spans of any
	// service.
	Service string
	// Operation, if not empty, is the name of the series read, with the
	// overflow series, which may hold spans of any name.
	Operation string
	// Keep, if not nil, accepts the series read, overflow series
	// included; it must not keep the series it is given.
	Keep func(*SpanSeries) bool
	// ByService merges each service's series of a status code, its
	// overflow series included, into one, with no name and kind 0, so
	// that Options.SpanMetricsMaxSeries bounds services, not operations:
	// past it, the least called services merge into the overflow series
	// of no service.
	// Keep sees the series before they merge; without an Operation, they
	// are each service's totals by kind and status code, with no name.
	ByService bool
}

// SpanMetrics returns the span metrics that q asks for, by series and
// step, over the minutes within the retention period, merged from the
// aggregates stored with each block: spans count once their block is cut,
// at most Options.FlushInterval after they were acknowledged. Steps start
// at the minute of q.From; each SpanMinute is a step, named by its first
// minute, so that an answer holds a histogram per series and step, not
// per minute. The series are ordered by service, name, kind and status,
// overflow series last, their steps ascending; at most
// Options.SpanMetricsMaxSeries of them, past which the rest merge into
// overflow series.
func (db *DB) SpanMetrics(ctx context.Context, q SpanMetricsQuery) ([]SpanMetricsSeries, error) {
	lo, hi := unixNanos(q.From)/minuteNanos, unixNanos(q.To)/minuteNanos
	perStep := max(uint64(q.Step/time.Minute), 1)
	bound := db.opts.SpanMetricsMaxSeries
	if q.ByService {
		// A service's series by status code: as many services as the
		// bound, each with its three, fit.
		bound *= 3
	}
	merged := newSpanMetrics(bound)
	var byService SpanSeries // scratch
	runs, keep := metricsRuns, q.Keep
	if keep == nil {
		keep = allSeries
	}
	if operation := q.Operation; operation != "" {
		inner := keep
		keep = func(s *SpanSeries) bool { return (s.Name == operation || s.Overflow) && inner(s) }
	}
	if service := q.Service; service != "" {
		// Other services share the shard.
		runs = []aggregateKey{metricsKey(serviceShard(service)), metricsKey(shardOverflow)}
		inner := keep
		keep = func(s *SpanSeries) bool { return (s.Service == service || s.Service == "" && s.Overflow) && inner(s) }
	}
	if q.ByService && q.Operation == "" {
		runs = []aggregateKey{totalsRun}
	}
	err := db.scanAggregates(ctx, lo*minuteNanos, hi*minuteNanos, codec.SectionSpanMetrics, runs, func(notBefore uint64, payload []byte) error {
		first := max(lo, (notBefore+minuteNanos-1)/minuteNanos)
		return codec.DecodeSpanMetrics(payload, keep, func(s *SpanSeries, minute uint64) *SpanMinute {
			if minute < first || minute >= hi {
				return nil
			}
			if q.ByService {
				byService = SpanSeries{Service: s.Service, Status: s.Status, Overflow: s.Service == "" && s.Overflow}
				s = &byService
			}
			series, _ := merged.seriesOf(s)
			return series.minute(minute - (minute-lo)%perStep)
		})
	})
	if err != nil {
		return nil, err
	}
	if q.ByService {
		merged.byService(db.opts.SpanMetricsMaxSeries)
	}
	return merged.sorted(), nil
}

// byService makes m, series read by service (no name or kind), an
// answer of at most maxServices services, each once a status code: a
// service's overflow series merges into its series of the same status
// code, or becomes it, where it would otherwise come twice, part of its
// calls in each; past maxServices, the services with the fewest calls
// merge into the overflow series of no service.
func (m *spanMetrics) byService(maxServices int) {
	type key struct {
		service string
		status  uint8
	}
	own := map[key]*seriesMetrics{}
	var kept []*seriesMetrics
	for _, overflow := range []bool{false, true} {
		for _, sm := range m.series {
			if sm.Overflow != overflow {
				continue
			}
			k := key{sm.Service, sm.Status}
			if sm.Service == "" && sm.Overflow {
				k.service = "\x00overflow" // of no service
			}
			into, ok := own[k]
			if !ok {
				// A service's overflow becomes its series; that of no
				// service stays.
				sm.Overflow = sm.Overflow && sm.Service == ""
				own[k] = sm
				kept = append(kept, sm)
				continue
			}
			into.merge(sm)
		}
	}
	calls := map[string]uint64{}
	for _, sm := range kept {
		if !sm.Overflow {
			for i := range sm.Minutes {
				calls[sm.Service] += sm.Minutes[i].Latency.Count()
			}
		}
	}
	if len(calls) > maxServices {
		services := slices.Collect(maps.Keys(calls))
		slices.SortFunc(services, func(a, b string) int { return cmp.Or(cmp.Compare(calls[b], calls[a]), strings.Compare(a, b)) })
		past := map[string]bool{}
		for _, name := range services[maxServices:] {
			past[name] = true
		}
		m.series = kept
		kept = kept[:0]
		for _, sm := range m.series {
			if sm.Overflow || !past[sm.Service] {
				kept = append(kept, sm)
				continue
			}
			k := key{"\x00overflow", sm.Status}
			into, ok := own[k]
			if !ok {
				into = &seriesMetrics{SpanMetricsSeries: SpanMetricsSeries{SpanSeries: SpanSeries{Status: sm.Status, Overflow: true}}}
				own[k] = into
				kept = append(kept, into)
			}
			into.merge(sm)
		}
	}
	m.series = kept
}

// merge adds o's minutes into sm.
func (sm *seriesMetrics) merge(o *seriesMetrics) {
	for i := range o.Minutes {
		sm.minute(o.Minutes[i].Minute).Merge(&o.Minutes[i])
	}
}
