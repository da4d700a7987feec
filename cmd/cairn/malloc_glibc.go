//go:build linux && cgo

package main

// #include <malloc.h>
import "C"

// limitMallocArenas bounds the C heaps that glibc keeps, to two.
//
// Pebble compresses with zstd in C, and glibc gives each thread that
// allocates there an arena of its own, up to eight per core, each keeping
// what is freed in it. Compactions and cuts run on threads that come and go
// (see package bulk), so the arenas multiplied: 5M-span runs of cairn bench
// peaked at 493–540 MiB of RSS, and at 455–457 MiB with two arenas.
func limitMallocArenas() { C.mallopt(C.M_ARENA_MAX, 2) }
