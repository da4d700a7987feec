package radix

import (
	"fmt"
	"reflect"
	"slices"
	"unsafe"
)

// Sort sorts s by key, stably, a byte at a time from the lowest, using
// scratch, which it grows to the length of s. T's key is its first eight
// bytes, which must be a field of uint64 kind first in T (or first in T's
// first field, and so on), or T itself; Sort panics if they are not. The
// key is read from there rather than through a function, which a sort of
// a million records would call sixteen million times.
//
// One read of the keys counts all eight bytes, and a pass over a byte
// that every key shares is skipped (a trace's span starts share their
// high bytes), so the sorted records end up in whichever of s and
// scratch the last pass filled: Sort returns them, and the other buffer
// for reuse.
func Sort[T any](s, scratch []T) (sorted, spare []T) {
	mustBeKeyed[T]()
	scratch = slices.Grow(scratch[:0], len(s))[:len(s)]
	if len(s) < 2 {
		return s, scratch
	}
	var counts [8][256]int
	for i := range s {
		k := key(&s[i])
		counts[0][byte(k)]++
		counts[1][byte(k>>8)]++
		counts[2][byte(k>>16)]++
		counts[3][byte(k>>24)]++
		counts[4][byte(k>>32)]++
		counts[5][byte(k>>40)]++
		counts[6][byte(k>>48)]++
		counts[7][byte(k>>56)]++
	}
	src, dst := s, scratch
	for pass := range counts {
		shift := 8 * pass
		offsets := &counts[pass]
		if offsets[byte(key(&src[0])>>shift)] == len(src) {
			continue
		}
		sum := 0
		for d, n := range offsets {
			offsets[d] = sum
			sum += n
		}
		for i := range src {
			d := byte(key(&src[i]) >> shift)
			dst[offsets[d]] = src[i]
			offsets[d]++
		}
		src, dst = dst, src
	}
	return src, dst
}

// key is a record's first field.
func key[T any](r *T) uint64 { return *(*uint64)(unsafe.Pointer(r)) }

// mustBeKeyed panics unless T is a uint64 kind or starts with one, at any
// depth of first fields.
func mustBeKeyed[T any]() {
	t := reflect.TypeFor[T]()
	for t.Kind() == reflect.Struct && t.NumField() > 0 {
		t = t.Field(0).Type
	}
	if t.Kind() != reflect.Uint64 {
		panic(fmt.Sprintf("radix: %v does not start with a uint64 key", reflect.TypeFor[T]()))
	}
}
