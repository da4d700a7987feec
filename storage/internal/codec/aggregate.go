package codec

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"

	"cairn/internal/binread"
	"cairn/internal/histogram"
)

// Section types of an aggregate record, ascending in a record. Readers skip
// sections of types they do not know, so a new kind of aggregate takes a
// new type rather than a new format version.
const (
	SectionSpanMetrics byte = 1
	// Service graph sections are added below.
)

// aggregateV1 is the version byte that starts every aggregate record.
const aggregateV1 = 1

// Section is one kind of aggregate of a block's spans in one partition.
type Section struct {
	Type    byte
	Payload []byte
}

// AppendAggregate appends an aggregate record of sections, which must be
// in ascending type order:
//
//	version=1 | section* ; section := type:u8 uvarint(len) payload
func AppendAggregate(dst []byte, sections ...Section) []byte {
	dst = append(dst, aggregateV1)
	for _, s := range sections {
		dst = append(dst, s.Type)
		dst = binary.AppendUvarint(dst, uint64(len(s.Payload)))
		dst = append(dst, s.Payload...)
	}
	return dst
}

// AggregateSection returns the payload of the section of type typ of an
// aggregate record, aliasing src; nil if the record has none.
func AggregateSection(src []byte, typ byte) ([]byte, error) {
	r := binread.New(src, ErrCorrupt)
	if v := r.Byte(); r.Err == nil && v != aggregateV1 {
		return nil, fmt.Errorf("%w: aggregate record version %d", ErrCorrupt, v)
	}
	last := -1
	for len(r.B) > 0 && r.Err == nil {
		t := r.Byte()
		payload := r.Bytes(r.Count(1))
		if int(t) <= last {
			r.Fail("aggregate sections out of order")
		}
		if r.Err != nil {
			break
		}
		last = int(t)
		if t == typ {
			return payload, nil
		}
	}
	return nil, r.Done("aggregate record")
}

// MaxExemplars is how many exemplars a span metrics minute keeps.
const MaxExemplars = 2

// SpanSeries names a span metrics series: spans of one service, name, kind
// and status code. Spans past a block's bound on series count into an
// overflow series of their service, kind and status code, with no name,
// and past as many of those, into one of their status code, with no
// service or kind either.
type SpanSeries struct {
	Service, Name string
	Kind          uint8 // opentelemetry.proto.trace.v1.Span.SpanKind
	Status        uint8 // opentelemetry.proto.trace.v1.Status.StatusCode
	Overflow      bool
}

// SpanMinute is a series' spans that started in one minute: their count
// and latencies, and the slowest of them.
type SpanMinute struct {
	Minute  uint64 // since the Unix epoch
	Latency histogram.Histogram
	Slowest []Exemplar // at most MaxExemplars, slowest first
}

// Merge adds the spans of o, a minute of the same series, to m: their
// latencies, and the slowest of their exemplars.
func (m *SpanMinute) Merge(o *SpanMinute) {
	m.Latency.Merge(&o.Latency)
	for _, e := range o.Slowest {
		m.AddExemplar(e)
	}
}

// AddExemplar keeps e among the minute's exemplars if it is one of the
// MaxExemplars slowest spans of distinct traces; a trace keeps the
// duration of its slowest span, and ties keep the earlier.
func (m *SpanMinute) AddExemplar(e Exemplar) {
	ex := m.Slowest
	for i := range ex {
		if ex[i].TraceID == e.TraceID {
			ex[i].Duration = max(ex[i].Duration, e.Duration)
			sortSlowest(ex)
			return
		}
	}
	switch {
	case len(ex) < MaxExemplars:
		ex = append(ex, e)
	case e.Duration > ex[len(ex)-1].Duration:
		ex[len(ex)-1] = e
	default:
		return
	}
	sortSlowest(ex)
	m.Slowest = ex
}

func sortSlowest(ex []Exemplar) {
	slices.SortStableFunc(ex, func(a, b Exemplar) int { return cmp.Compare(b.Duration, a.Duration) })
}

// Exemplar is one span: its trace and duration.
type Exemplar struct {
	TraceID  [16]byte
	Duration uint64 // nanoseconds
}

// SpanMetricsSeries is a series and its minutes.
type SpanMetricsSeries struct {
	SpanSeries
	Minutes []SpanMinute
}

// AppendSpanMetrics appends the payload of a span metrics section:
//
//	uvarint(nseries) series*
//	series  := str(service) str(name) kind:u8 status:u8 flags:u8 uvarint(len(minutes)) minutes
//	minutes := uvarint(nminutes) ( uvarint(minute) histogram uvarint(nexemplars) ( trace_id[16] uvarint(duration) )* )*
//
// flags bit 0 marks the overflow series; str(s) is uvarint(len(s)) s. The
// length before the minutes lets a reader skip the series it does not want.
func AppendSpanMetrics(dst []byte, series []SpanMetricsSeries) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(series)))
	var minutes []byte
	for _, s := range series {
		dst = appendStr(dst, s.Service)
		dst = appendStr(dst, s.Name)
		flags := byte(0)
		if s.Overflow {
			flags = 1
		}
		dst = append(dst, s.Kind, s.Status, flags)
		minutes = binary.AppendUvarint(minutes[:0], uint64(len(s.Minutes)))
		for i := range s.Minutes {
			m := &s.Minutes[i]
			minutes = binary.AppendUvarint(minutes, m.Minute)
			minutes = m.Latency.Append(minutes)
			minutes = binary.AppendUvarint(minutes, uint64(len(m.Slowest)))
			for _, e := range m.Slowest {
				minutes = append(minutes, e.TraceID[:]...)
				minutes = binary.AppendUvarint(minutes, e.Duration)
			}
		}
		dst = binary.AppendUvarint(dst, uint64(len(minutes)))
		dst = append(dst, minutes...)
	}
	return dst
}

func appendStr(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// DecodeSpanMetrics decodes the payload of a span metrics section. For each
// minute of each series that keep accepts, it adds the minute's spans to
// the minute that dst returns for it, unless that is nil. keep must not
// keep the series it is given, whose name is src's bytes: a query of one
// service passes over every other series of every record, and copied
// each name first, an allocation for each. Corrupt input fails, leaving
// part of it added.
func DecodeSpanMetrics(src []byte, keep func(*SpanSeries) bool, dst func(s *SpanSeries, minute uint64) *SpanMinute) error {
	r := binread.New(src, ErrCorrupt)
	n := r.Count(6)
	var (
		skipped SpanMinute
		service string
	)
	for range n {
		// Series are sorted by service: most share the previous one's.
		if b := r.Bytes(r.Count(1)); string(b) != service {
			service = string(b)
		}
		name := r.Bytes(r.Count(1))
		s := SpanSeries{
			Service: service,
			Name:    unsafe.String(unsafe.SliceData(name), len(name)),
			Kind:    r.Byte(),
			Status:  r.Byte(),
		}
		flags := r.Byte()
		s.Overflow = flags&1 != 0
		minutes := r.Bytes(r.Count(1))
		if r.Err == nil && (s.Kind > 5 || s.Status > 2 || flags > 1) {
			r.Fail("span metrics series")
		}
		if r.Err != nil {
			break
		}
		if !keep(&s) {
			continue
		}
		s.Name = string(name)
		mr := binread.New(minutes, ErrCorrupt)
		for range mr.Count(3) {
			m := dst(&s, mr.Uvarint())
			if m == nil {
				// Emptied each time: a histogram adds another at the
				// cost of the buckets it holds.
				skipped.Latency.Reset()
				skipped.Slowest = skipped.Slowest[:0]
				m = &skipped
			}
			m.Latency.DecodeAdd(mr)
			for range mr.Count(17) {
				m.AddExemplar(Exemplar{TraceID: [16]byte(mr.Bytes(16)), Duration: mr.Uvarint()})
			}
			if mr.Err != nil {
				break
			}
		}
		if err := mr.Done("span metrics minutes"); err != nil {
			return err
		}
	}
	return r.Done("span metrics")
}
