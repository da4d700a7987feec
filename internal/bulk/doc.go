// Package bulk runs ingest's CPU-heavy work — parsing requests, preparing
// them for the log, building blocks — on a few dedicated threads that the
// operating system schedules at a lower priority than the rest of the
// process.
//
// Ingest at full rate keeps every core busy, and a read, which needs only a
// fraction of a millisecond of CPU, then waited behind it twice: in Go's run
// queues, behind goroutines that each run up to 10 ms before they are
// preempted, and in the kernel's, behind the threads that run them. Bulk
// work confined to a pool of as many threads as there are cores, with one
// more processor (GOMAXPROCS) than that for everything else, leaves reads a
// processor to run on at once; the pool's lower priority makes the kernel
// give that processor's thread a core at once too. Ingest loses nothing
// while nothing else wants the CPU: priority only decides who waits.
package bulk
