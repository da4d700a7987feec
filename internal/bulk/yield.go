package bulk

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// lowered is set once a worker has lowered its thread's priority: only
// then is yielding of use. It is the process's, not the thread's: asking
// the kernel which thread Step runs on would cost what a yield does.
var lowered atomic.Bool

// yieldEvery is how many units of work a Yielder lets pass between
// yields. The units are spans, about 0.5 µs (parsing) to 3 µs (encoding)
// of work each, so a bulk thread yields every 30–200 µs; a yield that
// finds no thread waiting costs about a third of a microsecond.
const yieldEvery = 64

// Yielder lets threads of normal priority that wake while a bulk thread
// runs take the core from it. The kernel lets a running thread use up its
// slice, 1.4 ms or more, before a thread that wakes gets the core, however
// low the running thread's priority: so a read's threads waited behind
// bulk work for up to that long at each step. Long loops of bulk work call
// Step as they go. Until a pool has lowered a worker, Step only counts;
// after, it yields whichever thread it runs on, which in the server is a
// worker's, and elsewhere (a replay at start-up) costs a third of a
// microsecond every 64 spans.
//
// The zero value is ready to use; a Yielder must not be shared between
// goroutines.
type Yielder struct{ n int }

// Step counts n units of work and yields the thread's core once
// yieldEvery have passed since the last yield.
func (y *Yielder) Step(n int) {
	y.n += n
	if y.n < yieldEvery {
		return
	}
	y.n = 0
	if lowered.Load() {
		_, _, _ = unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
}
