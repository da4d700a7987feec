//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package storage

import (
	"time"

	"golang.org/x/sys/unix"
)

// processCPU is the CPU time the process has used, user and system, and
// whether the system tells it.
func processCPU() (time.Duration, bool) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
