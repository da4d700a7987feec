package codec

import (
	"encoding/binary"

	"cairn/internal/binread"
	"cairn/internal/histogram"
)

// SectionServiceGraph is the aggregate section of service graph edges.
const SectionServiceGraph byte = 2

// GraphEdge is the calls of one edge of the service graph whose child
// started in one minute: of the child spans, or of the client spans for an
// edge to a virtual node.
type GraphEdge struct {
	Parent, Child string
	Virtual       bool   // Child is a peer that sends no spans
	Minute        uint64 // since the Unix epoch
	Errors        uint64
	Latency       histogram.Histogram // its count is the calls
}

// AppendServiceGraph appends the payload of a service graph section:
//
//	uvarint(nedges) ( str(parent) str(child) flags:u8 uvarint(minute) uvarint(errors) histogram )*
//
// flags bit 0 marks an edge to a virtual node.
func AppendServiceGraph(dst []byte, edges []GraphEdge) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(edges)))
	for i := range edges {
		e := &edges[i]
		for _, name := range [2]string{e.Parent, e.Child} {
			dst = append(binary.AppendUvarint(dst, uint64(len(name))), name...)
		}
		flags := byte(0)
		if e.Virtual {
			flags = 1
		}
		dst = append(dst, flags)
		dst = binary.AppendUvarint(dst, e.Minute)
		dst = binary.AppendUvarint(dst, e.Errors)
		dst = e.Latency.Append(dst)
	}
	return dst
}

// EdgeHeader is an edge as DecodeServiceGraph reads it, but its latency:
// its names alias the section, so that summing many sections allocates
// nothing per edge.
type EdgeHeader struct {
	Parent, Child []byte
	Virtual       bool
	Minute        uint64
	Errors        uint64
}

// DecodeServiceGraph decodes the payload of a service graph section. For
// each edge it calls fn with the edge's header, whose memory it reuses for
// the next, and adds the edge's latencies to the histogram fn returns, or
// only counts them if it is nil, and its calls to the count fn returns, if
// not nil. An edge's latencies touch only the buckets they count in, so
// that summing many minutes costs what they hold, not their range.
func DecodeServiceGraph(src []byte, fn func(*EdgeHeader) (latency *histogram.Histogram, calls *uint64)) error {
	r := binread.New(src, ErrCorrupt)
	var e EdgeHeader
	for range r.Count(5) {
		e.Parent = r.Bytes(r.Count(1))
		e.Child = r.Bytes(r.Count(1))
		flags := r.Byte()
		e.Minute = r.Uvarint()
		e.Errors = r.Uvarint()
		if r.Err == nil && flags > 1 {
			r.Fail("service graph edge flags")
		}
		if r.Err != nil {
			break
		}
		e.Virtual = flags == 1
		latency, calls := fn(&e)
		n := latency.DecodeAdd(r)
		if r.Err == nil && e.Errors > n {
			r.Fail("service graph edge with more errors than calls")
		}
		if calls != nil {
			*calls += n
		}
	}
	return r.Done("service graph")
}
