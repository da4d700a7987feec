// Package keys encodes and decodes cairn's Pebble keys. The layout is
// described in storage/FORMAT.md; every integer is big-endian so that byte
// order is numeric order.
package keys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
)

// Key kinds, the first byte of every key. Span data (KindData) and
// recompression progress (KindRecompressed) live in the spans store, every
// other kind in the index store.
const (
	KindMeta         byte = 0x01 // 0x01 name                       -> meta value
	KindBlock        byte = 0x10 // 0x10 block                      -> block record
	KindPartition    byte = 0x11 // 0x11 partition                  -> empty
	KindService      byte = 0x12 // 0x12 service                    -> newest partition
	KindOperation    byte = 0x13 // 0x13 uvarint(len(service)) service kind name -> newest partition
	KindRecompressed byte = 0x14 // 0x14 partition              -> newest block recompressed
	KindResource     byte = 0x20 // 0x20 id(16)                     -> resource record
	KindScope        byte = 0x21 // 0x21 id(16)                     -> scope record
	KindGroup        byte = 0x22 // 0x22 number:u32                 -> resource id(16) scope id(16)
	KindGroupNumber  byte = 0x23 // 0x23 resource id(16) scope id(16) -> number:u32
	KindResourceAttr byte = 0x24 // 0x24 attribute term:u64 resource id(16) -> service term:u64
	KindResourceUse  byte = 0x25 // 0x25 resource id(16) partition:u32 -> empty
	KindTrace        byte = 0x2f // 0x2f partition fingerprint block -> empty
	KindTraceV6      byte = 0x30 // 0x30 partition trace(16) block  -> empty; format 6 and older, read only to upgrade
	KindRows         byte = 0x31 // 0x31 partition block            -> segment rows
	KindPostings     byte = 0x32 // 0x32 partition block shard      -> segment postings shard
	KindAggregate    byte = 0x33 // 0x33 partition shard block      -> aggregate record (span metrics)
	KindGraph        byte = 0x34 // 0x34 partition block            -> aggregate record (service graph)
	KindData         byte = 0x40 // 0x40 partition block trace(16)  -> fragment
)

// Sizes of the fixed-width keys.
const (
	BlockLen        = 1 + 8
	PartitionLen    = 1 + 4
	DictLen         = 1 + 16
	GroupLen        = 1 + 4
	GroupNumberLen  = 1 + 32
	ResourceAttrLen = 1 + 8 + 16
	ResourceUseLen  = 1 + 16 + 4
	TracePrefixLen  = 1 + 4 + 8
	TraceLen        = TracePrefixLen + 8
	TraceV6Len      = 1 + 4 + 16 + 8
	DataLen         = 1 + 4 + 8 + 16
	DataPartLen     = DataLen + 4
)

// ErrBadKey is wrapped by every decoding error.
var ErrBadKey = errors.New("bad key")

// TraceID is a 16-byte OTLP trace ID.
type TraceID = [16]byte

// Meta names a metadata key.
func Meta(name string) []byte { return append([]byte{KindMeta}, name...) }

// Block is the key of a block record.
func Block(block uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{KindBlock}, block)
}

// ParseBlock decodes a block key.
func ParseBlock(k []byte) (uint64, error) {
	if len(k) != BlockLen || k[0] != KindBlock {
		return 0, fmt.Errorf("%w: block key %x", ErrBadKey, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// Partition is the key that records that a partition exists.
func Partition(p uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{KindPartition}, p)
}

// ParsePartition decodes a partition key.
func ParsePartition(k []byte) (uint32, error) {
	if len(k) != PartitionLen || k[0] != KindPartition {
		return 0, fmt.Errorf("%w: partition key %x", ErrBadKey, k)
	}
	return binary.BigEndian.Uint32(k[1:]), nil
}

// Service is the catalog key of a service.
func Service(name string) []byte { return append([]byte{KindService}, name...) }

// ParseService decodes a service key.
func ParseService(k []byte) (string, bool) {
	if len(k) < 1 || k[0] != KindService {
		return "", false
	}
	return string(k[1:]), true
}

// Operation is the catalog key of an operation of a service; op is the span
// kind as one byte followed by the span name.
func Operation(service, op string) []byte {
	k := binary.AppendUvarint([]byte{KindOperation}, uint64(len(service)))
	return append(append(k, service...), op...)
}

// ParseOperation decodes an operation key.
func ParseOperation(k []byte) (service, op string, err error) {
	if len(k) < 1 || k[0] != KindOperation {
		return "", "", fmt.Errorf("%w: operation key %x", ErrBadKey, k)
	}
	n, m := binary.Uvarint(k[1:])
	rest := k[1:]
	// Only the shortest encoding of the length is a key cairn writes.
	if m <= 0 || m != len(binary.AppendUvarint(nil, n)) || n >= uint64(len(rest)-m) {
		return "", "", fmt.Errorf("%w: operation key %x", ErrBadKey, k)
	}
	rest = rest[m:]
	return string(rest[:n]), string(rest[n:]), nil
}

// Dict is the key of a resource (KindResource) or scope (KindScope) record.
func Dict(kind byte, id [16]byte) []byte {
	return append([]byte{kind}, id[:]...)
}

// Group is the key of the (resource, scope) pair that fragments call n.
func Group(n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{KindGroup}, n)
}

// ParseGroup decodes a group key.
func ParseGroup(k []byte) (uint32, error) {
	if len(k) != GroupLen || k[0] != KindGroup {
		return 0, fmt.Errorf("%w: group key %x", ErrBadKey, k)
	}
	return binary.BigEndian.Uint32(k[1:]), nil
}

// GroupNumber is the key of the number of the (resource, scope) pair k.
func GroupNumber(k [32]byte) []byte {
	return append([]byte{KindGroupNumber}, k[:]...)
}

// ParseGroupNumber decodes a group number key.
func ParseGroupNumber(k []byte) ([32]byte, error) {
	if len(k) != GroupNumberLen || k[0] != KindGroupNumber {
		return [32]byte{}, fmt.Errorf("%w: group number key %x", ErrBadKey, k)
	}
	return [32]byte(k[1:]), nil
}

// ResourceAttrPrefix is the prefix of the keys of the resources that have
// an attribute, given as its service-less attribute term.
func ResourceAttrPrefix(term uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{KindResourceAttr}, term)
}

// ResourceAttr is the key that says resource id has the attribute of term.
func ResourceAttr(term uint64, id [16]byte) []byte {
	return append(ResourceAttrPrefix(term), id[:]...)
}

// ParseResourceAttr decodes a resource attribute key.
func ParseResourceAttr(k []byte) (term uint64, id [16]byte, err error) {
	if len(k) != ResourceAttrLen || k[0] != KindResourceAttr {
		return 0, id, fmt.Errorf("%w: resource attribute key %x", ErrBadKey, k)
	}
	return binary.BigEndian.Uint64(k[1:]), [16]byte(k[9:]), nil
}

// ResourceUse is the key that says partition p holds spans of resource id.
func ResourceUse(id [16]byte, p uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte{KindResourceUse}, id[:]...), p)
}

// ParseResourceUse decodes a resource use key.
func ParseResourceUse(k []byte) (id [16]byte, p uint32, err error) {
	if len(k) != ResourceUseLen || k[0] != KindResourceUse {
		return id, 0, fmt.Errorf("%w: resource use key %x", ErrBadKey, k)
	}
	return [16]byte(k[1:17]), binary.BigEndian.Uint32(k[17:]), nil
}

// PartitionPrefix is the prefix of the keys of a kind that a partition has:
// trace index, segment rows and postings, and span data.
func PartitionPrefix(kind byte, p uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{kind}, p)
}

// partitionBlock is a key of kind naming a block in partition p.
func partitionBlock(kind byte, p uint32, block uint64) []byte {
	return binary.BigEndian.AppendUint64(PartitionPrefix(kind, p), block)
}

// parsePartitionBlock decodes a key that partitionBlock made of kind; what
// names the key in its error.
func parsePartitionBlock(k []byte, kind byte, what string) (p uint32, block uint64, err error) {
	if len(k) != 13 || k[0] != kind {
		return 0, 0, fmt.Errorf("%w: %s key %x", ErrBadKey, what, k)
	}
	return binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(k[5:]), nil
}

// Rows is the key of the rows record of a segment.
func Rows(p uint32, block uint64) []byte { return partitionBlock(KindRows, p, block) }

// ParseRows decodes a rows key.
func ParseRows(k []byte) (p uint32, block uint64, err error) {
	return parsePartitionBlock(k, KindRows, "rows")
}

// Aggregate is the key of the span metrics record of a shard of a block in
// partition p.
func Aggregate(p uint32, shard uint8, block uint64) []byte {
	return binary.BigEndian.AppendUint64(append(PartitionPrefix(KindAggregate, p), shard), block)
}

// ParseAggregate decodes a span metrics record's key.
func ParseAggregate(k []byte) (p uint32, shard uint8, block uint64, err error) {
	if len(k) != 14 || k[0] != KindAggregate {
		return 0, 0, 0, fmt.Errorf("%w: aggregate key %x", ErrBadKey, k)
	}
	return binary.BigEndian.Uint32(k[1:]), k[5], binary.BigEndian.Uint64(k[6:]), nil
}

// Graph is the key of the service graph record of a block in partition p.
func Graph(p uint32, block uint64) []byte { return partitionBlock(KindGraph, p, block) }

// ParseGraph decodes a service graph record's key.
func ParseGraph(k []byte) (p uint32, block uint64, err error) {
	return parsePartitionBlock(k, KindGraph, "service graph")
}

// ParseAggregateV10 decodes an aggregate key of format version 10 and
// older, which had no shard; read only to upgrade.
func ParseAggregateV10(k []byte) (p uint32, block uint64, err error) {
	return parsePartitionBlock(k, KindAggregate, "aggregate")
}

// Postings is the key of a postings shard of a segment.
func Postings(p uint32, block uint64, shard uint8) []byte {
	return append(partitionBlock(KindPostings, p, block), shard)
}

// Fingerprint is what the trace index keeps of a trace ID: 8 bytes where
// the ID has 16, which saves about 10 of the 22 bytes a trace's key took
// on disk (half of what a two-span trace stored besides its spans). A
// read finds the trace's fragments by their keys, which hold the whole
// ID, so two traces that share a fingerprint cost each other a seek, not a
// wrong answer. It hashes the whole ID because some tracers leave half of
// it constant (64-bit IDs, time-prefixed IDs). It is a variable so that
// tests can have traces share fingerprints, which 64 bits of hash make
// too rare to meet otherwise.
var Fingerprint = func(id TraceID) uint64 { return xxhash.Sum64(id[:]) }

// TracePrefix is the prefix of every trace-index key of a trace in a
// partition, and of those of traces that share its fingerprint.
func TracePrefix(p uint32, id TraceID) []byte {
	k := make([]byte, 0, TraceLen)
	k = binary.BigEndian.AppendUint32(append(k, KindTrace), p)
	return binary.BigEndian.AppendUint64(k, Fingerprint(id))
}

// Trace is the trace-index key of the fragment of trace id in block.
func Trace(p uint32, id TraceID, block uint64) []byte {
	return binary.BigEndian.AppendUint64(TracePrefix(p, id), block)
}

// TraceKey is the trace-index key of block for the traces of partition p
// with fingerprint fp.
func TraceKey(p uint32, fp, block uint64) []byte {
	k := make([]byte, 0, TraceLen)
	k = binary.BigEndian.AppendUint32(append(k, KindTrace), p)
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(k, fp), block)
}

// ParseTrace decodes a trace-index key.
func ParseTrace(k []byte) (p uint32, fp, block uint64, err error) {
	if len(k) != TraceLen || k[0] != KindTrace {
		return 0, 0, 0, fmt.Errorf("%w: trace key %x", ErrBadKey, k)
	}
	return binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(k[5:]), binary.BigEndian.Uint64(k[13:]), nil
}

// TraceBlock is the block that a trace-index key of this version or of
// version 6 names: both end with it.
func TraceBlock(k []byte) (uint64, error) {
	if _, _, b, err := ParseTrace(k); err == nil {
		return b, nil
	}
	_, _, b, err := ParseTraceV6(k)
	return b, err
}

// TraceV6Prefix is the prefix of the trace-index keys of format version 6
// or older of a trace in a partition.
func TraceV6Prefix(p uint32, id TraceID) []byte {
	k := make([]byte, 0, TraceV6Len)
	k = binary.BigEndian.AppendUint32(append(k, KindTraceV6), p)
	return append(k, id[:]...)
}

// TraceV6 is the trace-index key of format version 6 or older of the
// fragment of trace id in block.
func TraceV6(p uint32, id TraceID, block uint64) []byte {
	return binary.BigEndian.AppendUint64(TraceV6Prefix(p, id), block)
}

// ParseTraceV6 decodes a trace-index key of format version 6 or older,
// which held the whole trace ID.
func ParseTraceV6(k []byte) (p uint32, id TraceID, block uint64, err error) {
	if len(k) != TraceV6Len || k[0] != KindTraceV6 {
		return 0, id, 0, fmt.Errorf("%w: trace key %x", ErrBadKey, k)
	}
	copy(id[:], k[5:21])
	return binary.BigEndian.Uint32(k[1:]), id, binary.BigEndian.Uint64(k[21:]), nil
}

// Data is the key of the fragment of trace id in block of partition p.
func Data(p uint32, block uint64, id TraceID) []byte {
	k := make([]byte, 0, DataLen)
	k = binary.BigEndian.AppendUint32(append(k, KindData), p)
	k = binary.BigEndian.AppendUint64(k, block)
	return append(k, id[:]...)
}

// DataPart is the key of part n of the fragment of trace id in block of
// partition p: Data's key for part 0, with n appended for the others, so
// that a fragment's parts follow each other in order.
func DataPart(p uint32, block uint64, id TraceID, n uint32) []byte {
	k := Data(p, block, id)
	if n == 0 {
		return k
	}
	return binary.BigEndian.AppendUint32(k, n)
}

// IsLaterPart reports whether k is the key of a part after the first of
// the fragment whose first part's key is first.
func IsLaterPart(k, first []byte) bool {
	return len(k) == DataPartLen && len(first) == DataLen && bytes.HasPrefix(k, first)
}

// DataBlock is the prefix of the data keys of a block in partition p.
func DataBlock(p uint32, block uint64) []byte { return partitionBlock(KindData, p, block) }

// Recompressed is the key that records how far a partition's span data has
// been recompressed.
func Recompressed(p uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{KindRecompressed}, p)
}

// ParseRecompressed decodes a recompression progress key.
func ParseRecompressed(k []byte) (uint32, error) {
	if len(k) != PartitionLen || k[0] != KindRecompressed {
		return 0, fmt.Errorf("%w: recompressed key %x", ErrBadKey, k)
	}
	return binary.BigEndian.Uint32(k[1:]), nil
}

// ParseData decodes a data key, of any part.
func ParseData(k []byte) (p uint32, block uint64, id TraceID, err error) {
	p, block, id, _, err = ParseDataPart(k)
	return p, block, id, err
}

// ParseDataPart decodes a data key and its part number.
func ParseDataPart(k []byte) (p uint32, block uint64, id TraceID, n uint32, err error) {
	if (len(k) != DataLen && len(k) != DataPartLen) || k[0] != KindData {
		return 0, 0, id, 0, fmt.Errorf("%w: data key %x", ErrBadKey, k)
	}
	copy(id[:], k[13:DataLen])
	if len(k) == DataPartLen {
		if n = binary.BigEndian.Uint32(k[DataLen:]); n == 0 {
			return 0, 0, id, 0, fmt.Errorf("%w: data key %x numbers part 0", ErrBadKey, k)
		}
	}
	return binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint64(k[5:]), id, n, nil
}

// KindEnd is the exclusive upper bound of the keys of a kind.
func KindEnd(kind byte) []byte { return []byte{kind + 1} }

// KindRange bounds an iterator to the keys of a kind.
func KindRange(kind byte) *pebble.IterOptions {
	return &pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: KindEnd(kind)}
}

// Comparer orders keys bytewise, like Pebble's default, but splits trace-index
// keys after the fingerprint: Pebble's bloom filters then answer "does this
// sstable hold any fragment of trace X in partition P", which is what
// trace-by-ID asks of every partition. Keys of format 6's trace index are
// split after the trace ID as they were, as their sstables were written.
var Comparer = func() *pebble.Comparer {
	c := *pebble.DefaultComparer
	c.Name = "cairn.keys.v1"
	c.Split = func(k []byte) int {
		switch {
		case len(k) == TraceLen && k[0] == KindTrace:
			return TracePrefixLen
		case len(k) == TraceV6Len && k[0] == KindTraceV6:
			return TraceV6Len - 8
		}
		return len(k)
	}
	c.FormatKey = func(k []byte) fmt.Formatter { return formatted(k) }
	return &c
}()

type formatted []byte

func (k formatted) Format(s fmt.State, _ rune) {
	if p, fp, b, err := ParseTrace(k); err == nil {
		fmt.Fprintf(s, "trace/%d/%016x/%d", p, fp, b)
		return
	}
	if p, b, id, n, err := ParseDataPart(k); err == nil {
		fmt.Fprintf(s, "data/%d/%d/%x", p, b, id)
		if n > 0 {
			fmt.Fprintf(s, "/%d", n)
		}
		return
	}
	fmt.Fprintf(s, "%x", []byte(k))
}

// HasKind reports whether k is of kind.
func HasKind(k []byte, kind byte) bool { return len(k) > 0 && k[0] == kind }
