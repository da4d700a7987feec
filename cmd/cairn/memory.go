package main

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"

	"cairn/ingest"
)

// memoryLimitPeriod is how often the soft memory limit is set, and
// memoryLimitWindow how long it keeps to the most requests held.
const (
	memoryLimitPeriod = 100 * time.Millisecond
	memoryLimitWindow = 2 * time.Second
)

// followInflight sets the Go runtime's soft memory limit, every
// memoryLimitPeriod until the server stops, to base plus the most that OTLP
// requests in flight held over the last memoryLimitWindow, but no higher
// than keeps the process's resident memory within ceiling (see softLimit).
//
// A fixed limit made the collector thrash without bounding memory under
// large requests: the heap they kept alive took it to the limit, and the
// collector ran back to back (8 MiB requests: 295k spans/s fell to 91k).
// The in-flight bound holds that memory instead; the limit only paces the
// collector above it. It follows the most held lately rather than what is
// held now, because a request's memory stays on the heap, as garbage, until
// the collector runs: a limit that fell as soon as requests were answered
// would start it at once (that alone halved large-request throughput).
// Without large requests the limit stays near base, and the heap with it.
func (s *server) followInflight(base, ceiling int64, svc *ingest.Service) {
	t := time.NewTicker(memoryLimitPeriod)
	defer t.Stop()
	defer debug.SetMemoryLimit(base)
	recent := make([]int64, memoryLimitWindow/memoryLimitPeriod)
	var m goMemory
	for i := 0; ; i++ {
		recent[i%len(recent)] = svc.HeldBytes()
		held := slices.Max(recent)
		limit := base + held
		if ceiling > 0 {
			if rss := residentBytes(); rss > 0 {
				m.read()
				limit = softLimit(base, held, ceiling, max(rss-m.resident(), 0), m.live())
			}
		}
		debug.SetMemoryLimit(limit)
		select {
		case <-t.C:
		case <-s.stop:
			return
		}
	}
}

// softLimit is the heap's soft limit: base raised by held, what requests
// in flight hold, as far as keeps the process's resident memory within
// ceiling, given outside, the resident memory that is not Go's (Pebble's
// block cache and memtables, zstd's contexts), and live, the heap the last
// collection kept. 8192-span requests, the Collector's default batch, 16 in
// flight, raised it to 466 MiB, which with about 90 MiB outside took the
// process to 560 MiB. The ceiling takes the limit below base too when
// what lives outside grows: after a burst of SDK-exporter ingest, reads and
// recompression took it from about 90 to 200 MiB (the block cache staying
// at 32 MiB), and a limit held at base let the process reach 495–517 MiB. It never takes the limit below
// a quarter above the live heap, where the collector would run back to
// back: past the ceiling, memory comes before throughput, but not at any
// price.
func softLimit(base, held, ceiling, outside, live int64) int64 {
	limit := base + held
	capped := min(limit, ceiling-outside)
	return max(capped, min(live+max(live/4, minHeadroom), limit))
}

// defaultCeilingAbove is how far above --memory-limit-mib the memory
// ceiling is unless set: 480 MiB with the default limit, which keeps the
// process within 512 MiB with what lives outside Go's heap.
const defaultCeilingAbove = 160 << 20

// minHeadroom is the least the soft limit leaves above the live heap.
const minHeadroom = 64 << 20

// goMemory reads what the Go runtime says of its memory.
type goMemory struct{ samples []metrics.Sample }

func (m *goMemory) read() {
	if m.samples == nil {
		m.samples = []metrics.Sample{
			{Name: "/memory/classes/total:bytes"},
			{Name: "/memory/classes/heap/released:bytes"},
			{Name: "/gc/heap/live:bytes"},
		}
	}
	metrics.Read(m.samples)
}

// resident is about the memory the runtime has mapped and not given back.
func (m *goMemory) resident() int64 {
	return int64(m.samples[0].Value.Uint64() - m.samples[1].Value.Uint64())
}

// live is the heap the last collection found live.
func (m *goMemory) live() int64 { return int64(m.samples[2].Value.Uint64()) }

// residentBytes is the process's resident memory, or 0 where
// /proc/self/statm cannot say.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
