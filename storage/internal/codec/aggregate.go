package codec

import (
	"encoding/binary"
	"fmt"

	"cairn/internal/binread"
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
