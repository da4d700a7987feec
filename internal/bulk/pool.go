package bulk

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Options configure a Pool.
type Options struct {
	// Workers is how many threads run bulk work at once.
	// The default is runtime.NumCPU().
	Workers int
	// Nice is how much lower the workers' scheduling priority is than a
	// normal thread's, as a Linux nice value from 0 to 19. Lowering a
	// thread's own priority needs no privilege, and where it fails the
	// workers run at normal priority.
	// The default is 10: a normal thread then gets about ten times a
	// worker's share of a contended core. A negative value keeps the
	// workers at normal priority.
	Nice int
}

// EnsureDefaults returns a copy of o with every zero field set to its
// default.
func (o *Options) EnsureDefaults() Options {
	out := *o
	if out.Workers <= 0 {
		out.Workers = runtime.NumCPU()
	}
	if out.Nice == 0 {
		out.Nice = 10
	}
	out.Nice = min(max(out.Nice, 0), 19)
	return out
}

// Pool runs functions on its worker threads. A nil *Pool runs them on the
// caller's goroutine, so that a component used without one works alike.
type Pool struct {
	jobs    chan job
	workers int
	nice    int
	wg      sync.WaitGroup
	once    sync.Once
}

type job struct {
	f    func()
	done chan struct{}
}

// New starts a pool's workers. Close stops them.
func New(o *Options) *Pool {
	opts := o.EnsureDefaults()
	p := &Pool{jobs: make(chan job), workers: opts.Workers, nice: opts.Nice}
	p.wg.Add(opts.Workers)
	for range opts.Workers {
		go p.work(opts.Nice)
	}
	return p
}

// work runs jobs on a thread of its own, never released: the lowered
// priority belongs to the thread, and an unprivileged process cannot raise
// it back for the next goroutine that would run there.
func (p *Pool) work(nice int) {
	defer p.wg.Done()
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice)
	for j := range p.jobs {
		j.f()
		close(j.done)
	}
}

// Workers is how many functions the pool runs at once; 1 for a nil pool.
func (p *Pool) Workers() int {
	if p == nil {
		return 1
	}
	return p.workers
}

// Do runs f on a worker and returns when it has. f must not call Do: a
// worker waiting for a worker can wait for itself.
func (p *Pool) Do(f func()) {
	if p == nil {
		f()
		return
	}
	done := make(chan struct{})
	p.jobs <- job{f, done}
	<-done
}

// Close stops the workers once the running functions return. Do must not
// be called after Close. Close is safe to call twice.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		close(p.jobs)
		p.wg.Wait()
	})
}

// Demote moves the calling goroutine's thread to the workers' priority for
// the rest of the goroutine's life. It is for background work that runs on
// goroutines the pool does not start, such as Pebble's compactions: the
// goroutine is locked to its thread, which the runtime ends when the
// goroutine ends, so the lowered priority never passes to other work. A
// nil pool, or one at normal priority, does nothing.
func (p *Pool) Demote() {
	if p == nil || p.nice == 0 {
		return
	}
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), p.nice)
}
