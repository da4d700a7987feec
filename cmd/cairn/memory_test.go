package main

import "testing"

func TestSoftLimit(t *testing.T) {
	const MiB = 1 << 20
	for _, c := range []struct {
		name                               string
		base, held, ceiling, outside, live int64
		want                               int64
	}{
		{"requests raise the limit below the ceiling", 320 * MiB, 20 * MiB, 480 * MiB, 90 * MiB, 200 * MiB, 340 * MiB},
		{"the ceiling stops the raise", 320 * MiB, 146 * MiB, 480 * MiB, 90 * MiB, 250 * MiB, 390 * MiB},
		{"nothing outside the heap", 320 * MiB, 146 * MiB, 480 * MiB, 0, 250 * MiB, 466 * MiB},
		{"memory outside the heap takes it below base", 320 * MiB, 0, 480 * MiB, 200 * MiB, 100 * MiB, 280 * MiB},
		{"with requests in flight too", 320 * MiB, 146 * MiB, 480 * MiB, 300 * MiB, 100 * MiB, 180 * MiB},
		{"nor below a quarter above the live heap", 320 * MiB, 300 * MiB, 480 * MiB, 90 * MiB, 400 * MiB, 500 * MiB},
		{"at least 64 MiB above a small live heap", 100 * MiB, 300 * MiB, 300 * MiB, 90 * MiB, 180 * MiB, 244 * MiB},
		{"the floor never raises it past what requests ask", 320 * MiB, 100 * MiB, 480 * MiB, 90 * MiB, 400 * MiB, 420 * MiB},
	} {
		if got := softLimit(c.base, c.held, c.ceiling, c.outside, c.live); got != c.want {
			t.Errorf("%s: softLimit = %d MiB, want %d MiB", c.name, got/MiB, c.want/MiB)
		}
	}
}

func TestResidentBytes(t *testing.T) {
	if rss := residentBytes(); rss <= 0 {
		t.Skip("no /proc/self/statm")
	} else if rss < 1<<20 || rss > 1<<40 {
		t.Fatalf("resident memory %d bytes", rss)
	}
}
