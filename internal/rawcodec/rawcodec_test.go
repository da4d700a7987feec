package rawcodec

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Size must agree with what Marshal sends, for every type Marshal takes,
// and refuse the rest.
func TestSizeIsMarshalledLength(t *testing.T) {
	for _, v := range []any{Message(nil), Message("\x0a\x03abc"), mem.SliceBuffer("\x0a\x03abc"), wrapperspb.String(""), wrapperspb.String("a longer value")} {
		n, ok := Size(v)
		b, err := Codec{}.Marshal(v)
		if err != nil || !ok || n != b.Len() {
			t.Errorf("%T %v: Size %d, %v; Marshal %d bytes, %v", v, v, n, ok, b.Len(), err)
		}
	}
	if n, ok := Size(struct{}{}); ok {
		t.Errorf("Size of a type Codec cannot marshal: %d, true", n)
	}
}

// TestReusedKeepsItsBuffer checks that a message received into a Reused
// is a copy of the one sent, and that a smaller one after it is received
// into the same buffer.
func TestReusedKeepsItsBuffer(t *testing.T) {
	var r Reused
	first := bytes.Repeat([]byte{1}, 100<<10)
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(first[:60<<10]), mem.SliceBuffer(first[60<<10:])}, &r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.B, first) {
		t.Fatalf("received %d bytes, not the %d sent", len(r.B), len(first))
	}
	buf := &r.B[0]
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte("second"))}, &r); err != nil {
		t.Fatal(err)
	}
	if string(r.B) != "second" || &r.B[0] != buf {
		t.Fatalf("received %q, in the first's buffer %v", r.B, &r.B[0] == buf)
	}
}
