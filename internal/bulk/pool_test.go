package bulk

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDoRunsOnLowPriorityWorkers(t *testing.T) {
	p := New(&Options{Workers: 2, Nice: 7})
	defer p.Close()
	var nice int
	p.Do(func() {
		// The raw system call answers 20 - nice.
		prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
		if err != nil {
			t.Errorf("getpriority: %v", err)
		}
		nice = 20 - prio
	})
	if nice != 7 {
		t.Errorf("worker nice = %d, want 7", nice)
	}
}

func TestDoBoundsConcurrency(t *testing.T) {
	const workers = 3
	p := New(&Options{Workers: workers})
	defer p.Close()
	var running, most atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 10 {
		wg.Go(func() {
			p.Do(func() {
				n := running.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				<-release
				running.Add(-1)
			})
		})
	}
	for running.Load() < workers {
		runtime.Gosched() // until every worker holds a job
	}
	close(release)
	wg.Wait()
	if got := most.Load(); got != workers {
		t.Errorf("at most %d jobs ran at once, want %d", got, workers)
	}
}

func TestNilPoolRunsInline(t *testing.T) {
	var p *Pool
	ran := false
	p.Do(func() { ran = true })
	if !ran || p.Workers() != 1 {
		t.Errorf("nil pool: ran %v, workers %d", ran, p.Workers())
	}
	p.Close()
}

func TestCloseTwice(t *testing.T) {
	p := New(&Options{Workers: 1})
	p.Close()
	p.Close()
}

func TestDemoteLowersOnlyTheGoroutinesThread(t *testing.T) {
	p := New(&Options{Workers: 1, Nice: 5})
	defer p.Close()
	nice := func() int {
		prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
		if err != nil {
			t.Errorf("getpriority: %v", err)
		}
		return 20 - prio
	}
	before := nice()
	done := make(chan int)
	go func() {
		p.Demote()
		done <- nice()
	}()
	if got := <-done; got != 5 {
		t.Errorf("demoted goroutine runs at nice %d, want 5", got)
	}
	// The demoted thread ended with its goroutine; no goroutine runs on it.
	for range 100 {
		runtime.Gosched()
		if got := nice(); got != before {
			t.Fatalf("after the demoted goroutine ended, a goroutine runs at nice %d, want %d", got, before)
		}
	}
	var none *Pool
	none.Demote()
}
