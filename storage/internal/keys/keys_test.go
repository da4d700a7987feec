package keys

import (
	"bytes"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	id := TraceID{1, 2, 3, 15: 9}
	if p, fp, b, err := ParseTrace(Trace(7, id, 42)); err != nil || p != 7 || fp != Fingerprint(id) || b != 42 {
		t.Fatalf("ParseTrace(Trace) = %d %x %d %v", p, fp, b, err)
	}
	if p, gotID, b, err := ParseTraceV6(TraceV6(7, id, 42)); err != nil || p != 7 || gotID != id || b != 42 {
		t.Fatalf("ParseTraceV6(TraceV6) = %d %x %d %v", p, gotID, b, err)
	}
	for _, k := range [][]byte{Trace(7, id, 42), TraceV6(7, id, 42)} {
		if b, err := TraceBlock(k); err != nil || b != 42 {
			t.Fatalf("TraceBlock(%x) = %d %v", k, b, err)
		}
	}
	if _, err := TraceBlock(Data(7, 42, id)); err == nil {
		t.Fatal("TraceBlock took a data key")
	}
	if !bytes.HasPrefix(Trace(7, id, 42), TracePrefix(7, id)) || !bytes.HasPrefix(TraceV6(7, id, 42), TraceV6Prefix(7, id)) {
		t.Fatal("a trace prefix is not the prefix of its keys")
	}
	if p, b, gotID, err := ParseData(Data(7, 42, id)); err != nil || p != 7 || gotID != id || b != 42 {
		t.Fatalf("ParseData(Data) = %d %d %x %v", p, b, gotID, err)
	}
	if b, err := ParseBlock(Block(1 << 40)); err != nil || b != 1<<40 {
		t.Fatalf("ParseBlock(Block) = %d %v", b, err)
	}
	if p, err := ParsePartition(Partition(493000)); err != nil || p != 493000 {
		t.Fatalf("ParsePartition(Partition) = %d %v", p, err)
	}
	if n, err := ParseGroup(Group(1 << 30)); err != nil || n != 1<<30 {
		t.Fatalf("ParseGroup(Group) = %d %v", n, err)
	}
	if k, err := ParseGroupNumber(GroupNumber([32]byte{1, 31: 2})); err != nil || k != [32]byte{1, 31: 2} {
		t.Fatalf("ParseGroupNumber(GroupNumber) = %x %v", k, err)
	}
	if term, rid, err := ParseResourceAttr(ResourceAttr(1<<60, [16]byte{3})); err != nil || term != 1<<60 || rid != [16]byte{3} {
		t.Fatalf("ParseResourceAttr(ResourceAttr) = %x %x %v", term, rid, err)
	}
	if rid, p, err := ParseResourceUse(ResourceUse([16]byte{4}, 493000)); err != nil || p != 493000 || rid != [16]byte{4} {
		t.Fatalf("ParseResourceUse(ResourceUse) = %x %d %v", rid, p, err)
	}
	if p, err := ParseRecompressed(Recompressed(493000)); err != nil || p != 493000 {
		t.Fatalf("ParseRecompressed(Recompressed) = %d %v", p, err)
	}
	if k := DataBlock(7, 42); !bytes.HasPrefix(Data(7, 42, id), k) || len(k) != DataLen-16 {
		t.Fatalf("DataBlock(7, 42) = %x is not the prefix of Data(7, 42, id)", k)
	}
	if p, shard, b, err := ParseAggregate(Aggregate(7, 64, 42)); err != nil || p != 7 || b != 42 || shard != 64 {
		t.Fatalf("ParseAggregate(Aggregate) = %d %d %d %v", p, shard, b, err)
	}
	if _, _, err := ParseAggregateV10(Aggregate(7, 64, 42)); err == nil {
		t.Fatal("ParseAggregateV10 took a sharded key")
	}
	if p, b, err := ParseGraph(Graph(7, 42)); err != nil || p != 7 || b != 42 {
		t.Fatalf("ParseGraph(Graph) = %d %d %v", p, b, err)
	}
	if svc, op, err := ParseOperation(Operation("a\x00b", "\x03x")); err != nil || svc != "a\x00b" || op != "\x03x" {
		t.Fatalf("ParseOperation(Operation) = %q %q %v", svc, op, err)
	}
}

func TestOrder(t *testing.T) {
	id := TraceID{15: 1}
	// Everything an index sstable holds sorts before all span data.
	index := [][]byte{Block(^uint64(0)), Partition(^uint32(0)), Service("\xff"), Operation("\xff", "\xff"), Dict(KindScope, [16]byte{0: 0xff}), Group(^uint32(0)), Trace(^uint32(0), TraceID{0: 0xff}, ^uint64(0)), Rows(^uint32(0), ^uint64(0)), Postings(^uint32(0), ^uint64(0), 0xff)}
	for _, k := range index {
		if bytes.Compare(k, Data(0, 0, TraceID{})) >= 0 {
			t.Fatalf("%x does not sort before data keys", k)
		}
	}
	// Trace-index keys of a trace sort by block; numbers sort numerically.
	if bytes.Compare(Trace(1, id, 255), Trace(1, id, 256)) >= 0 || bytes.Compare(Data(1, 255, id), Data(1, 256, id)) >= 0 {
		t.Fatal("big-endian order broken")
	}
	if n := Comparer.Split(Trace(1, id, 9)); n != TracePrefixLen {
		t.Fatalf("Split(trace key) = %d", n)
	}
	if n := Comparer.Split(TraceV6(1, id, 9)); n != TraceV6Len-8 {
		t.Fatalf("Split(format 6 trace key) = %d", n)
	}
	if k := Data(1, 2, id); Comparer.Split(k) != len(k) {
		t.Fatal("data keys have no suffix")
	}
}

func FuzzKeys(f *testing.F) {
	f.Add(Trace(1, TraceID{3}, 4))
	f.Add(TraceV6(1, TraceID{3}, 4))
	f.Add(Data(1, 2, TraceID{3}))
	f.Add(DataPart(1, 2, TraceID{3}, 4))
	f.Add(append(Data(1, 2, TraceID{3}), 0, 0, 0, 0)) // part 0 has no number
	f.Add(Block(5))
	f.Add(Partition(6))
	f.Add(Operation("svc", "\x02GET /"))
	f.Add(Service("svc"))
	f.Add(Rows(3, 4))
	f.Add(Aggregate(3, 4, 5))
	f.Add(Graph(3, 4))
	f.Add(Group(7))
	f.Add(Recompressed(8))
	f.Add(GroupNumber([32]byte{9}))
	f.Add(ResourceAttr(10, [16]byte{11}))
	f.Add(ResourceUse([16]byte{12}, 13))
	f.Add([]byte{KindOperation, 0x80, 0x00, 0x30}) // overlong length varint

	f.Fuzz(func(t *testing.T, k []byte) {
		if n := Comparer.Split(k); n < 0 || n > len(k) {
			t.Fatalf("Split = %d for %d-byte key", n, len(k))
		}
		_ = Comparer.FormatKey(k)
		if p, fp, b, err := ParseTrace(k); err == nil && !bytes.Equal(TraceKey(p, fp, b), k) {
			t.Fatalf("trace key %x does not round-trip", k)
		}
		if p, id, b, err := ParseTraceV6(k); err == nil && !bytes.Equal(TraceV6(p, id, b), k) {
			t.Fatalf("format 6 trace key %x does not round-trip", k)
		}
		if p, b, id, n, err := ParseDataPart(k); err == nil && !bytes.Equal(DataPart(p, b, id, n), k) {
			t.Fatalf("data key %x does not round-trip", k)
		}
		if b, err := ParseBlock(k); err == nil && !bytes.Equal(Block(b), k) {
			t.Fatalf("block key %x does not round-trip", k)
		}
		if n, err := ParseGroup(k); err == nil && !bytes.Equal(Group(n), k) {
			t.Fatalf("group key %x does not round-trip", k)
		}
		if p, err := ParseRecompressed(k); err == nil && !bytes.Equal(Recompressed(p), k) {
			t.Fatalf("recompressed key %x does not round-trip", k)
		}
		if g, err := ParseGroupNumber(k); err == nil && !bytes.Equal(GroupNumber(g), k) {
			t.Fatalf("group number key %x does not round-trip", k)
		}
		if term, id, err := ParseResourceAttr(k); err == nil && !bytes.Equal(ResourceAttr(term, id), k) {
			t.Fatalf("resource attribute key %x does not round-trip", k)
		}
		if id, p, err := ParseResourceUse(k); err == nil && !bytes.Equal(ResourceUse(id, p), k) {
			t.Fatalf("resource use key %x does not round-trip", k)
		}
		if p, err := ParsePartition(k); err == nil && !bytes.Equal(Partition(p), k) {
			t.Fatalf("partition key %x does not round-trip", k)
		}
		if p, b, err := ParseRows(k); err == nil && !bytes.Equal(Rows(p, b), k) {
			t.Fatalf("rows key %x does not round-trip", k)
		}
		if p, shard, b, err := ParseAggregate(k); err == nil && !bytes.Equal(Aggregate(p, shard, b), k) {
			t.Fatalf("aggregate key %x does not round-trip", k)
		}
		if p, b, err := ParseGraph(k); err == nil && !bytes.Equal(Graph(p, b), k) {
			t.Fatalf("service graph key %x does not round-trip", k)
		}
		if svc, ok := ParseService(k); ok && !bytes.Equal(Service(svc), k) {
			t.Fatalf("service key %x does not round-trip", k)
		}
		if n, err := ParseGroup(Group(1 << 30)); err != nil || n != 1<<30 {
			t.Fatalf("ParseGroup(Group) = %d %v", n, err)
		}
		if svc, op, err := ParseOperation(k); err == nil && (!bytes.Equal(Operation(svc, op), k) || op == "") {
			t.Fatalf("operation key %x does not round-trip", k)
		}
	})
}
