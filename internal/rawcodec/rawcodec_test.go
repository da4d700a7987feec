package rawcodec

import (
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
