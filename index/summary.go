package index

import (
	"encoding/binary"
	"errors"

	"cairn/internal/binread"
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt index value")

// TraceSummary describes one fragment of a trace.
type TraceSummary struct {
	Spans    uint64
	MinStart uint64 // unix nanoseconds
	MaxEnd   uint64 // unix nanoseconds
}

// Append appends uvarint spans | uvarint min_start | uvarint max_end.
func (s TraceSummary) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, s.Spans)
	dst = binary.AppendUvarint(dst, s.MinStart)
	return binary.AppendUvarint(dst, s.MaxEnd)
}

// DecodeTraceSummary decodes a summary.
func DecodeTraceSummary(b []byte) (TraceSummary, error) {
	r := binread.New(b, ErrCorrupt)
	s := TraceSummary{Spans: r.Uvarint(), MinStart: r.Uvarint(), MaxEnd: r.Uvarint()}
	return s, r.Done("trace summary")
}
