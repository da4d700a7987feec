//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package storage

import "time"

// processCPU reports that the CPU time the process has used is not known
// here: the CPUs never have room, and blocks wait for a pause in ingest or
// their hour's end to be recompressed.
func processCPU() (time.Duration, bool) { return 0, false }
