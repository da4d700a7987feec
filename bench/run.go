package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"cairn/internal/access"
)

// Options configures a run. The zero value is valid except for Target.
type Options struct {
	// Target is the OTLP endpoint: HOST:PORT for gRPC; for OTLP/HTTP,
	// HOST:PORT too or an http or https URL, whose path defaults to
	// /v1/traces.
	Target string

	// Protocol is how requests are sent: ProtocolGRPC (the default),
	// ProtocolHTTPProtobuf or ProtocolHTTPJSON.
	Protocol string

	// Compression is how requests are compressed: CompressionNone (the
	// default), CompressionGzip, CompressionZstd or CompressionSnappy, as
	// the Collector's exporters offer them. The run compresses each request
	// as it sends it, on the machine it measures.
	Compression string

	// Reader, if set, is a jaeger.storage.v2 endpoint that serves what Target
	// stores; the run then measures visibility, trace reads, searches and
	// completeness too.
	Reader string

	// TargetAccess and ReaderAccess are how to reach Target and Reader when
	// they speak TLS or want a token. The zero value is plaintext without a
	// token.
	TargetAccess, ReaderAccess access.Client

	// Spans is how many spans to send. The default is 1,000,000, unless
	// Duration is set.
	Spans int64

	// Duration, if set, sends for this long instead (bounded by Spans if
	// that is set too).
	Duration time.Duration

	// Seed selects the workload. The default is 1.
	Seed uint64

	// Batch is the number of spans per Export request. The default is 1024.
	Batch int

	// Exporters sends the workload as SDK exporters would, each request one
	// service instance's spans (see Config.Exporters).
	Exporters bool

	// Conns is the number of gRPC connections. The default is 4.
	Conns int

	// Inflight is the number of requests in flight per connection. The
	// default is 4. Over OTLP/HTTP, which carries one request at a time per
	// connection, Conns × Inflight requests are in flight on as many
	// connections.
	Inflight int

	// StallTimeout is how long exports may keep failing, with none
	// acknowledged, before the run gives up, and how long one attempt may
	// go unanswered. The default is 30s.
	StallTimeout time.Duration

	// Rate caps the spans sent per second; 0 sends as fast as they are
	// acknowledged.
	Rate float64

	// PoolSpans is how many distinct spans are encoded before the run and
	// replayed, with new IDs and times, in rounds. The default is
	// min(Spans, 1,000,000).
	PoolSpans int

	// LargeTraceEvery makes every n-th trace one of 10,000+ spans. The
	// default is 5000.
	LargeTraceEvery int

	// Queries is the number of reads timed per trace-size class and per
	// search shape. The default is 300.
	Queries int

	// Settle is the pause between sending and reading, so that reads are
	// timed on a store that has absorbed the load: a store that cuts what it
	// buffered into blocks, or compacts, right after a burst competes with
	// the first reads for CPU. The default is 0: read at once.
	Settle time.Duration

	// Activity, if set, measures the target's background work, such as the
	// size of its store on disk; after a non-zero Settle, reads wait until
	// it has not changed for QuietFor, for at most MaxSettle in all, so that
	// they are timed on a store that has finished what the load left,
	// however long that takes.
	Activity func() (int64, error)

	// Progress, if set, is called about twice a second while spans are sent.
	Progress func(Progress)
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.Protocol == "" {
		c.Protocol = ProtocolGRPC
	}
	if c.Compression == "" {
		c.Compression = CompressionNone
	}
	if c.Spans <= 0 && c.Duration <= 0 {
		c.Spans = 1_000_000
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Batch <= 0 {
		c.Batch = 1024
	}
	if c.Conns <= 0 {
		c.Conns = 4
	}
	if c.Inflight <= 0 {
		c.Inflight = 4
	}
	if c.PoolSpans <= 0 {
		c.PoolSpans = 1_000_000
		if c.Spans > 0 && c.Spans < int64(c.PoolSpans) {
			c.PoolSpans = int(c.Spans)
		}
	}
	if c.LargeTraceEvery <= 0 {
		c.LargeTraceEvery = 5000
	}
	if c.Queries <= 0 {
		c.Queries = 300
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 30 * time.Second
	}
	return c
}

// Progress is a snapshot of a run while it sends.
type Progress struct {
	Acked       int64 // spans acknowledged
	SpansPerSec float64
	Errors      int64 // requests that failed or were retried
	Elapsed     time.Duration
}

// Run generates the workload, sends it to o.Target and, if o.Reader is set,
// reads it back. Only acknowledged spans count as ingested.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Target == "" {
		return nil, errors.New("bench: no target")
	}
	o = o.withDefaults()
	switch o.Protocol {
	case ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON:
	default:
		return nil, fmt.Errorf("bench: unknown protocol %q: want %s, %s or %s", o.Protocol, ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON)
	}
	if err := checkCompression(o); err != nil {
		return nil, err
	}
	// Connect before encoding the workload, which takes seconds, so that a
	// wrong address fails at once.
	exps, rd, err := connect(ctx, o)
	if err != nil {
		return nil, err
	}
	defer closeAll(exps)
	if rd != nil {
		defer rd.close()
	}

	t0 := time.Now()
	pool, err := NewPool(Config{Seed: o.Seed, BatchSpans: o.Batch, LargeTraceEvery: o.LargeTraceEvery,
		TracesPerSecond: 10_000, Exporters: o.Exporters}, o.PoolSpans)
	if err != nil {
		return nil, err
	}
	if o.Protocol == ProtocolHTTPJSON {
		if err := pool.EncodeJSON(); err != nil {
			return nil, err
		}
	}
	rep := &Report{Started: t0.UTC().Truncate(time.Second), Host: thisHost(),
		Target: o.Target, Protocol: o.Protocol, Compression: o.Compression, Reader: o.Reader, Seed: o.Seed, Batch: o.Batch, Exporters: o.Exporters,
		Conns: o.Conns, Inflight: o.Inflight, Rate: o.Rate, Settle: o.Settle.Seconds(), PoolSeconds: time.Since(t0).Seconds()}

	u := &unacked{}
	sent, start, err := send(ctx, o, exps, pool, rd, u, rep)
	if err != nil {
		return nil, err
	}
	if rd != nil {
		// The encoded requests are no longer needed; collect them now, so
		// that the client's own garbage collection does not show in the
		// read latencies.
		pool.dropRequests()
		runtime.GC()
		sendEnd := start.Add(time.Duration(rep.Seconds * float64(time.Second)))
		settled := time.Now()
		var bg *background
		if o.Settle > 0 {
			bg = rd.readInBackground(ctx, o.Seed, pool, func() uint64 { return sent }, u)
		}
		busyUntil, err := settle(ctx, o)
		if bg != nil {
			if ph := bg.finish(start, sendEnd, busyUntil); len(ph.GetTraces) > 0 || len(ph.Searches) > 0 || ph.Failed > 0 {
				rep.ReadsAfterIngest = ph
			}
		}
		if err != nil {
			return nil, err
		}
		rep.Settle = time.Since(settled).Seconds()
		if err := rd.measure(ctx, o, pool, sent, u, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// connect returns the exporters to o.Target and, if o.Reader is set, a
// reader, once each has answered a probe.
func connect(ctx context.Context, o Options) (_ []exporter, _ *reader, err error) {
	exps, addr, err := newExporters(o)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			closeAll(exps)
		}
	}()
	err = probe(ctx, fmt.Sprintf("OTLP endpoint %s over %s", o.Target, o.Protocol), addr, "an empty export",
		func(ctx context.Context) error {
			_, err := exps[0].export(ctx, emptyExport(o.Protocol))
			return err
		})
	if err != nil {
		return nil, nil, err
	}
	if o.Reader == "" {
		return exps, nil, nil
	}
	rd, err := newReader(o.Reader, o.ReaderAccess)
	if err != nil {
		return nil, nil, err
	}
	if err = probe(ctx, "reader "+o.Reader, o.Reader, "GetServices", rd.services); err != nil {
		rd.close()
		return nil, nil, err
	}
	return exps, rd, nil
}

// QuietFor is how long Options.Activity must stay unchanged for the target
// to count as settled, and MaxSettle the longest reads wait for it.
const (
	QuietFor  = 3 * time.Second
	MaxSettle = 5 * time.Minute
)

// Settle waits pause, then until activity, if not nil, has been quiet for
// QuietFor, as Run does before its settled reads.
func Settle(ctx context.Context, pause time.Duration, activity func() (int64, error)) error {
	_, err := settle(ctx, Options{Settle: pause, Activity: activity})
	return err
}

// settle waits Settle, then until Activity has been quiet for QuietFor. It
// returns when the target was last seen busy: when Activity last changed,
// or the end of the pause if there is no Activity to watch. A zero Settle
// reads at once.
func settle(ctx context.Context, o Options) (time.Time, error) {
	start := time.Now()
	if o.Settle == 0 {
		return start, nil
	}
	pause := time.After(o.Settle)
	if o.Activity == nil {
		select {
		case <-pause:
			return time.Now(), nil
		case <-ctx.Done():
			return time.Now(), ctx.Err()
		}
	}
	deadline := start.Add(MaxSettle)
	last, err := o.Activity()
	if err != nil {
		return start, err
	}
	changed, paused := start, false
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for !paused || time.Since(changed) < QuietFor && time.Now().Before(deadline) {
		select {
		case <-t.C:
		case <-pause:
			paused = true
		case <-ctx.Done():
			return changed, ctx.Err()
		}
		v, err := o.Activity()
		if err != nil {
			return changed, err
		}
		if v != last {
			last, changed = v, time.Now()
		}
	}
	return changed, nil
}

// ack is an acknowledged export.
type ack struct {
	at      time.Duration // since sending started
	latency time.Duration
	spans   int64 // acknowledged, not rejected
}

// deadlineGrace is how long requests in flight when Duration is up may take
// to be answered; those that take longer are cancelled and count for
// nothing.
const deadlineGrace = 2 * time.Second

// sender holds what the senders share.
type sender struct {
	o        Options
	pool     *Pool
	next     atomic.Uint64 // next request to send
	unsent   atomic.Uint64 // the first request not sent: all below were
	requests uint64        // requests to send; 0 for no bound
	deadline time.Time     // when sending stops; zero for no bound
	start    time.Time

	acked, rejected, failed, retries, bytes atomic.Int64
	errs                                    atomic.Int64
	unacked                                 *unacked // requests sent but not acknowledged whole

	mu           sync.Mutex
	acks         []ack
	lastAcked    int64     // the latest request acknowledged, -1 before any
	lastAck      time.Time // when it was
	firstErr     error
	lastErr      error
	failingSince time.Time // since when every export has failed; zero if none has since lastAck
	stalled      error     // why the run gave up, if it did
}

// send sends the workload, and reads meanwhile if rd is set; it returns how
// many requests were sent and when sending started.
func send(ctx context.Context, o Options, exps []exporter, pool *Pool, rd *reader, u *unacked, rep *Report) (uint64, time.Time, error) {
	s := &sender{o: o, pool: pool, lastAcked: -1, unacked: u}
	s.unsent.Store(^uint64(0))
	if o.Spans > 0 {
		s.requests = uint64((o.Spans + int64(o.Batch) - 1) / int64(o.Batch))
	}

	s.start = time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sendCtx := runCtx
	if o.Duration > 0 {
		s.deadline = s.start.Add(o.Duration)
		var cancelSend context.CancelFunc
		sendCtx, cancelSend = context.WithDeadline(runCtx, s.deadline.Add(deadlineGrace))
		defer cancelSend()
	}

	var bg sync.WaitGroup
	stop := make(chan struct{})
	bg.Go(func() { s.watch(stop, cancel) })
	var (
		lags  []time.Duration
		reads *background
	)
	if rd != nil {
		bg.Go(func() { lags = rd.probeVisibility(runCtx, s, stop) })
		reads = rd.readInBackground(runCtx, o.Seed, pool, s.wholeRequests, u)
	}

	var wg sync.WaitGroup
	for i := range o.Conns * o.Inflight {
		wg.Go(func() { s.worker(sendCtx, exps[i%len(exps)]) })
	}
	wg.Wait()
	elapsed := time.Since(s.start)
	close(stop)
	bg.Wait()
	if reads != nil {
		rep.ReadsDuringIngest = reads.finish(s.start, s.start, s.start.Add(elapsed))
	}
	if s.stalled != nil {
		return 0, s.start, s.stalled
	}
	if ctx.Err() != nil && s.acked.Load() == 0 {
		return 0, s.start, ctx.Err()
	}

	sent := min(s.unsent.Load(), s.next.Load())
	rep.Spans = s.acked.Load()
	rep.Requests = int64(len(s.acks))
	rep.Seconds = elapsed.Seconds()
	rep.SpansPerSec = float64(rep.Spans) / elapsed.Seconds()
	rep.MBPerSec = float64(s.bytes.Load()) / 1e6 / elapsed.Seconds()
	rep.RejectedSpans = s.rejected.Load()
	rep.FailedSpans = s.failed.Load()
	rep.Retries = s.retries.Load()
	for _, a := range s.acks {
		rep.exportLatencies = append(rep.exportLatencies, a.latency)
	}
	rep.ExportP50Ms, rep.ExportP99Ms, rep.ExportMaxMs = percentiles(rep.exportLatencies)
	rep.Timeline = newTimeline(s.acks, elapsed)
	if s.firstErr != nil {
		rep.FirstError = s.firstErr.Error()
	}
	if len(lags) > 0 {
		rep.VisibilityProbes = len(lags)
		rep.VisibilityP50Ms, rep.VisibilityP99Ms, rep.VisibilityMaxMs = percentiles(lags)
	}
	if rep.Spans == 0 {
		if rep.FirstError == "" && s.lastErr != nil {
			rep.FirstError = s.lastErr.Error()
		}
		return 0, s.start, fmt.Errorf("no span was acknowledged in %.1fs: %s", rep.Seconds, cmp.Or(rep.FirstError, "no answer"))
	}
	return sent, s.start, nil
}

// worker sends requests until the run is over.
func (s *sender) worker(ctx context.Context, exp exporter) {
	var buf []byte
	for {
		seq, ok := s.claim(ctx)
		if !ok {
			return
		}
		buf = s.pool.Request(buf, seq)
		if !s.deliver(ctx, exp, seq, buf) {
			s.markUnsent(seq)
			return
		}
	}
}

// claim returns the next request to send once Rate allows, or false when
// the run is over.
func (s *sender) claim(ctx context.Context) (uint64, bool) {
	seq := s.next.Add(1) - 1
	if s.requests > 0 && seq >= s.requests || s.pastDeadline(time.Now()) {
		s.markUnsent(seq)
		return 0, false
	}
	if s.o.Rate > 0 {
		due := s.start.Add(time.Duration(float64(seq) * float64(s.o.Batch) / s.o.Rate * float64(time.Second)))
		if s.pastDeadline(due) || !sleep(ctx, time.Until(due)) {
			s.markUnsent(seq)
			return 0, false
		}
	}
	return seq, true
}

// deliver sends request seq, again while it is refused for the time being,
// until it is acknowledged or fails. It returns false if the run ended
// first: the request then counts for nothing.
func (s *sender) deliver(ctx context.Context, exp exporter, seq uint64, req []byte) bool {
	spans := int64(s.pool.Spans(seq))
	backoff := 10 * time.Millisecond
	for {
		t := time.Now()
		attempt, cancel := context.WithTimeout(ctx, s.o.StallTimeout)
		rejected, err := exp.export(attempt, req)
		cancel()
		if err == nil {
			s.acknowledged(seq, spans, rejected, len(req), time.Since(t))
			if rejected > 0 {
				s.unacked.add(seq)
			}
			return true
		}
		// A request given up on may be stored in part, whole, or not at
		// all.
		if ended(ctx) {
			s.unacked.add(seq)
			return false
		}
		var r *retryableError
		retry := errors.As(err, &r)
		s.attemptFailed(t, err, spans, !retry)
		if !retry {
			s.unacked.add(seq)
			return true
		}
		wait := backoff
		if r.after > 0 {
			wait = r.after
		}
		if s.pastDeadline(time.Now().Add(wait)) || !sleep(ctx, wait) {
			s.unacked.add(seq)
			return false
		}
		s.retries.Add(1)
		backoff = min(2*backoff, time.Second)
	}
}

// ended reports whether the run's context is done or past its deadline: a
// gRPC server told the deadline times the call out itself, and its answer
// may arrive before the client's own timer fires.
func ended(ctx context.Context) bool {
	deadline, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && !time.Now().Before(deadline)
}

func (s *sender) acknowledged(seq uint64, spans, rejected int64, bytes int, latency time.Duration) {
	s.acked.Add(spans - rejected)
	s.rejected.Add(rejected)
	s.bytes.Add(int64(bytes))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks = append(s.acks, ack{at: time.Since(s.start), latency: latency, spans: spans - rejected})
	if int64(seq) > s.lastAcked {
		s.lastAcked, s.lastAck = int64(seq), time.Now()
	}
	s.failingSince = time.Time{}
}

// attemptFailed records an attempt, started at t, that failed; if final,
// its request failed and its spans count as failed.
func (s *sender) attemptFailed(t time.Time, err error, spans int64, final bool) {
	s.errs.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
	if s.failingSince.IsZero() {
		s.failingSince = t
		if t.Before(s.lastAck) {
			s.failingSince = s.lastAck
		}
	}
	if final {
		s.failed.Add(spans)
		if s.firstErr == nil {
			s.firstErr = err
		}
	}
}

// markUnsent records that request seq was not sent, nor any after it that
// was not sent before.
func (s *sender) markUnsent(seq uint64) {
	for {
		u := s.unsent.Load()
		if seq >= u || s.unsent.CompareAndSwap(u, seq) {
			return
		}
	}
}

func (s *sender) pastDeadline(t time.Time) bool {
	return !s.deadline.IsZero() && !t.Before(s.deadline)
}

// sleep waits d, or returns false if ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// watch reports progress, and gives up the run, calling abort, once every
// export has failed for StallTimeout, until stop closes.
func (s *sender) watch(stop <-chan struct{}, abort func()) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	prevAcked, prevAt := int64(0), s.start
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			acked := s.acked.Load()
			if s.o.Progress != nil {
				s.o.Progress(Progress{Acked: acked, Errors: s.errs.Load(), Elapsed: now.Sub(s.start),
					SpansPerSec: float64(acked-prevAcked) / now.Sub(prevAt).Seconds()})
			}
			prevAcked, prevAt = acked, now
			s.mu.Lock()
			if !s.failingSince.IsZero() && now.Sub(s.failingSince) >= s.o.StallTimeout && s.stalled == nil {
				s.stalled = fmt.Errorf("gave up: no export acknowledged for %s, each failing; the last: %w", s.o.StallTimeout, s.lastErr)
				abort()
			}
			s.mu.Unlock()
		}
	}
}

// wholeRequests returns how many of the first requests are all but surely
// acknowledged: those below the latest acknowledged but for as many as can
// be in flight at once, which may be acknowledged out of order.
func (s *sender) wholeRequests() uint64 {
	latest, _ := s.latestAck()
	return uint64(max(0, latest+1-int64(s.o.Conns*s.o.Inflight)))
}

// latestAck returns the latest request acknowledged and when.
func (s *sender) latestAck() (int64, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAcked, s.lastAck
}
