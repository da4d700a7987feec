// Package binread decodes the records of cairn's on-disk formats: a Reader
// takes field after field with a sticky error, so that a decoder checks once,
// at the end, and corrupt input can neither panic nor make it allocate more
// than the input's size.
package binread

import (
	"encoding/binary"
	"fmt"
)

// Reader reads from B. After the first failure every read returns zero
// values and Err keeps the failure, wrapping Corrupt.
type Reader struct {
	B       []byte
	Err     error
	Corrupt error
}

// New returns a Reader of b whose errors wrap corrupt.
func New(b []byte, corrupt error) *Reader { return &Reader{B: b, Corrupt: corrupt} }

// Fail records a failure, unless one is recorded already, and returns Err.
func (r *Reader) Fail(what string) error {
	if r.Err == nil {
		r.Err = fmt.Errorf("%w: %s", r.Corrupt, what)
	}
	r.B = nil
	return r.Err
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.B) < 1 {
		r.Fail("truncated")
		return 0
	}
	c := r.B[0]
	r.B = r.B[1:]
	return c
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Fail("truncated varint")
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.B)
	if n <= 0 {
		r.Fail("truncated varint")
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Count reads a length or element count, each element taking at least min
// bytes, and fails if the bytes left cannot hold that many.
func (r *Reader) Count(min int) int {
	v := r.Uvarint()
	if v > uint64(len(r.B)/min) {
		r.Fail("count larger than the record")
		return 0
	}
	return int(v)
}

// Bytes reads n bytes, aliasing B. On failure it returns n zero bytes, so
// that fixed-width reads need no check of their own.
func (r *Reader) Bytes(n int) []byte {
	if n < 0 || len(r.B) < n {
		r.Fail("truncated")
		return make([]byte, max(n, 0))
	}
	v := r.B[:n:n]
	r.B = r.B[n:]
	return v
}

// Done returns the first failure, or a failure if bytes are left over.
func (r *Reader) Done(what string) error {
	if r.Err == nil && len(r.B) > 0 {
		return fmt.Errorf("%w: %d trailing bytes in %s", r.Corrupt, len(r.B), what)
	}
	if r.Err != nil {
		return fmt.Errorf("%s: %w", what, r.Err)
	}
	return nil
}
