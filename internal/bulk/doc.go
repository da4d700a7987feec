// Package bulk runs ingest's CPU-heavy work — parsing requests, preparing
// them for the log, inserting them into the buffer, building blocks — on a
// few dedicated threads that the operating system schedules at a lower
// priority than the rest of the process, and lowers the threads of other
// background work (Pebble's flushes and compactions) to the same priority.
//
// Ingest at full rate keeps every core busy, and a read, which needs only a
// fraction of a millisecond of CPU, then waited behind it three times: in
// Go's run queues, behind goroutines that each run up to 10 ms before they
// are preempted; for the network poll, which a runtime whose processors
// are all busy makes only every 10 ms; and in the kernel's run queues,
// behind the threads that run them. Bulk work confined to a pool of as many
// threads as there are cores, with more processors (GOMAXPROCS) than the
// pool and Pebble's background work can hold, leaves reads a processor to
// run on at once, whose thread polls the network while it is idle; the
// lower priority makes the kernel give that thread a core at once too.
// Ingest loses nothing while nothing else wants the CPU: priority only
// decides who waits.
package bulk
