package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"cairn/index"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// dataBlockSize is the uncompressed size of the sstable blocks that hold span
// data. zstd finds more repetition between neighbouring traces in larger
// blocks (1M spans of the bench workload: 53.9 bytes/span at 64 KiB, 48.4 at
// 256 KiB, 46.2 at 1 MiB), while a trace read that misses the cache
// decompresses one block, about 0.2 ms at 256 KiB.
const dataBlockSize = 256 << 10

// cutBlockSize is the size of the blocks cuts write span data in, until
// recompression rewrites them at dataBlockSize. A cut's blocks are read
// while ingest runs, when nearly every read misses the block cache, because
// a cut holds far more than the cache; each miss decompresses a whole block
// on a machine already busy. Half of dataBlockSize cost about 1.5
// bytes/span in the meantime when cuts wrote zstd level 3 (36.6 -> 38.2 on
// the bench workload).
const cutBlockSize = 128 << 10

// cutCompression compresses what cuts write and is rewritten later: span
// data and the fragments a merge writes, the search index's rows and
// postings (both rewritten by recompression), and the trace-index sstable,
// which compactions merge down. A read during ingest mostly misses the
// cache on a fresh cut's blocks; MinLZ decompresses one in Go, twice as
// fast as zstd level 3 (a 128 KiB block of the bench workload: 40 against
// 77 us), where zstd's cgo call may leave the read waiting for a processor
// afterwards. It compresses 1.8 times as fast. Until rewritten, span data is
// about an eighth larger (38.4 -> 43.5 bytes/span) and indexes a sixth (5.4
// -> 6.2); what recompression and compactions write is the same.
var cutCompression = sstable.MinLZCompression

// cutRetry is how long after a failed cut the first retry comes; each
// further failure doubles it, up to the flush interval.
const cutRetry = 100 * time.Millisecond

func (db *DB) flusher() {
	defer db.flusherWG.Done()
	t := time.NewTicker(db.opts.FlushInterval)
	defer t.Stop()
	var backoff time.Duration // while cuts fail
	for {
		if backoff == 0 {
			select {
			case <-db.stop:
				return
			case <-t.C:
			case <-db.kick:
			}
		} else if !db.sleep(backoff) {
			return
		}
		err := db.cut()
		if db.cutFailing() {
			backoff = min(max(2*backoff, cutRetry), max(db.opts.FlushInterval, cutRetry))
			continue // cut logged it
		}
		backoff = 0
		if err != nil {
			db.opts.Logger.Error("cut block", "err", err)
		}
	}
}

// cutFailing reports whether the last cut failed to write its block.
func (db *DB) cutFailing() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.cutErr != nil
}

// sleep waits for d, and reports false if the store closes first.
func (db *DB) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-db.stop:
		return false
	case <-t.C:
		return true
	}
}

// cut turns the live buffer into a block: it freezes the buffer and rotates
// the write-ahead log under the lock, so that every record in the sealed
// segments is in the frozen buffer or an older block, then writes the block
// and removes the sealed segments. A frozen buffer whose write failed is
// kept, with its segments, and retried first: a failed cut loses nothing.
// While cuts fail, FaultCut is set and writers that find the next buffer
// full are refused rather than kept waiting. An empty buffer is cut only
// when the service graph's pairing is due (pairing.Pairer.Due): calls to
// virtual nodes are counted by cuts, and a store that receives nothing
// more would otherwise never count the last of them.
func (db *DB) cut() error {
	db.mu.Lock()
	if db.frozen == nil {
		if db.live.spans == 0 && !db.graph.pairer.Due(uint64(db.opts.Now().UnixNano())) {
			db.mu.Unlock()
			return nil
		}
		db.frozen = db.live
		db.frozen.walSegment = db.wal.Rotate()
		db.frozen.catalog = db.catalog.takePending()
		db.live = newBuffer(db.frozen.block + 1)
		db.setLayout()
	}
	frozen := db.frozen
	db.mu.Unlock()
	frozen.writers.Wait()

	start := time.Now()
	// What a cut writes is about what the log holds of the buffer, both
	// compressed, and its indexes add a sixth or so (the bench workload:
	// span data 43.5 bytes/span, indexes 6.2). Asked for the requests'
	// own size, four times what it wrote, a cut on a small disk never
	// found room again once space came back, and after a restart, whose
	// replay joins the buffers, asked for twice that. A cut may use half
	// the reserve, which the log has stopped short of: it frees more, the
	// log segments it replaces, than it writes. An estimate short of the
	// truth costs a cut that fails on ENOSPC, and is retried.
	err := db.checkSpace(int64(frozen.logged)*3/2, db.opts.DiskReserveBytes/2)
	var parts []uint32
	if err == nil {
		// Held to the end of the cut: a partition drop must not delete
		// the key of a partition this block is writing into.
		db.partMu.Lock()
		defer db.partMu.Unlock()
		parts, err = db.writeBlock(frozen)
	}
	if err != nil {
		err = fmt.Errorf("write block %d: %w", frozen.block, err)
		db.mu.Lock()
		db.cutErr = err
		db.finishCut()
		db.mu.Unlock()
		if db.faults.set(FaultCut, cause(err)+err.Error()) {
			db.opts.Logger.Error("cannot cut the live buffer into a block; retrying, and refusing exports once the next buffer is full",
				"err", err)
		}
		return err
	}
	db.metrics.cut.Observe(time.Since(start).Seconds())
	db.metrics.cutSpans.Add(float64(frozen.spans))

	db.resources.persisted(frozen.block)
	db.mu.Lock()
	for _, p := range parts {
		db.partitions[p] = frozen.block
	}
	db.frozen = nil
	db.setLayout()
	db.cutErr = nil
	db.finishCut()
	db.mu.Unlock()
	if db.faults.clear(FaultCut) {
		db.opts.Logger.Info("blocks are cut again", "block", frozen.block)
	}

	if err := db.wal.RemoveThrough(frozen.walSegment); err != nil {
		return fmt.Errorf("block %d: %w", frozen.block, err)
	}
	return nil
}

// finishCut wakes the writers waiting for a cut. The caller holds mu.
func (db *DB) finishCut() {
	close(db.flushed)
	db.flushed = make(chan struct{})
}

// cutProcs is how many goroutines a cut writes span data with. A cut of a
// full buffer races the next one to fill, which writers would then wait
// for, so it takes every CPU; one that the flush interval brought about,
// under light load or once ingest pauses, leaves one to reads, which would
// otherwise queue behind the cut's goroutines for up to a time slice each.
func (db *DB) cutProcs(full bool) int {
	n := db.opts.cpus()
	if !full {
		n--
	}
	return max(1, n)
}

// minTracesPerWriter keeps a small block from being split among data
// writers, where starting goroutines and files would cost more than it saves.
const minTracesPerWriter = 2048

// writeBlock builds the sstables of a frozen buffer and ingests them: data
// sstables into the spans store, then into the index store one sstable with
// the block record, new partitions, new dictionary entries and groups and
// the trace index, and per partition two with its search index. The block
// exists once its record does; span data a crash leaves without one is
// deleted at open. It returns the partitions written.
//
// A cut is the one part of ingest that does not run on the writers'
// goroutines, and writers wait for it when the next buffer fills, so a cut
// of a full buffer uses every CPU: the traces are split into contiguous
// ranges, each written to its own data sstables (one per partition) by its
// own goroutine, while the search index is finished beside them. Any other
// cut leaves a CPU to reads (see cutProcs). The sstables are built on the
// bulk pool's workers, if there is one.
func (db *DB) writeBlock(buf *buffer) ([]uint32, error) {
	dir := filepath.Join(db.dir, "ingest")
	if err := db.opts.FS.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ingest dir: %w", err)
	}
	defer db.opts.FS.RemoveAll(dir)

	traces := buf.inOrder()
	// Pairing runs beside the writers. A retried cut reuses what the first
	// attempt paired: the pairer has taken the block's spans in already.
	paired := make(chan struct{})
	if buf.paired {
		close(paired)
	} else {
		buf.created = uint64(db.opts.Now().UnixNano())
		go func() {
			defer close(paired)
			db.opts.Bulk.Do(func() { buf.edges = db.graph.cut(buf.created, buf.spans, traces) })
		}()
		defer func() { <-paired; buf.paired = true }()
	}

	// Each partition's rows are counted first, by the partition of each
	// trace's first span, where almost all traces lie, to size their lists.
	rowsIn := map[uint32]int{}
	for _, t := range traces {
		rowsIn[t.partition]++
	}
	// The trace index and search index rows take one light pass; the
	// search index is then finished while the data is written.
	traceIndex := map[uint32][]uint64{} // fingerprints by partition
	segments := map[uint32]*index.SegmentBuilder{}
	addRow := func(t *traceState, p uint32, spans []liveSpan) error {
		if traceIndex[p] == nil {
			traceIndex[p] = make([]uint64, 0, rowsIn[p])
		}
		traceIndex[p] = append(traceIndex[p], keys.Fingerprint(t.id))
		seg := segments[p]
		if seg == nil {
			seg = new(index.SegmentBuilder)
			seg.Grow(rowsIn[p])
			segments[p] = seg
		}
		// The trace's terms cover all its spans; a split row is verified.
		seg.Add(fragmentRow(t.id, spans, t.multiPartition), nil)
		for run := range t.terms.all {
			seg.AddTerms(run)
		}
		for _, s := range spans {
			seg.SpanDuration(s.group.serviceTerm, s.duration())
		}
		return nil
	}
	byPart := map[uint32][]liveSpan{}
	for _, t := range traces {
		_ = eachPartition(byPart, t, addRow) // addRow does not fail
	}
	var (
		segPaths  []string
		segErr    error
		indexDone = make(chan struct{})
	)
	finishIndex := func() {
		defer close(indexDone)
		db.opts.Bulk.Do(func() { segPaths, segErr = db.writeSegments(dir, buf.block, segments) })
	}
	// A cut that leaves a processor to reads finishes the search index
	// first rather than beside the data writers.
	full := buf.size() >= db.opts.BufferBytes
	if full {
		go finishIndex()
	} else {
		finishIndex()
	}
	defer func() { <-indexDone }()

	writers := min(db.cutProcs(full), max(1, len(traces)/minTracesPerWriter))
	results := make([]dataResult, writers)
	var wg sync.WaitGroup
	for w, r := range splitTraces(traces, writers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db.opts.Bulk.Do(func() { results[w] = db.writeData(dir, w, buf.block, r) })
		}()
	}
	wg.Wait()
	<-indexDone

	var (
		errs    = []error{segErr}
		paths   []string
		parts   []uint32
		written = map[groupKey]*group{}
		uses    = map[resourceUse]bool{}
		metrics = map[uint32]*spanMetrics{}
	)
	for _, r := range results {
		errs = append(errs, r.err)
		paths = append(paths, r.paths...)
		parts = append(parts, r.parts...)
		maps.Copy(written, r.written)
		maps.Copy(uses, r.uses)
		for p, m := range r.metrics {
			if metrics[p] == nil {
				metrics[p] = m
				continue
			}
			metrics[p].merge(m)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(parts)
	parts = slices.Compact(parts)

	ipath := filepath.Join(dir, "index.sst")
	// Only cuts number groups, so the snapshot holds until the ingest.
	first, pending := db.groups.unpersisted()
	if err := writeTable(db.opts.FS, db.idx, ipath, 0, true, cutCompression, func(w *sstable.Writer) error {
		return db.writeIndex(w, buf, parts, traceIndex, written, uses, first, pending)
	}); err != nil {
		return nil, err
	}
	<-paired
	// Aggregates go into the index store in the same ingest as the block
	// record, so that they are stored exactly when the block is: a span
	// replayed from the log after a crash counts once, when its block is
	// cut. Their keys follow the search index's, so they take an sstable
	// of their own, as sstables ingested together must not overlap.
	apath := filepath.Join(dir, "aggregates.sst")
	if err := writeTable(db.opts.FS, db.idx, apath, 0, false, sstable.ZstdCompression, func(w *sstable.Writer) error {
		return db.writeAggregates(w, buf, parts, metrics)
	}); err != nil {
		return nil, err
	}
	if err := db.spans.Ingest(context.Background(), paths); err != nil {
		return nil, fmt.Errorf("ingest span data: %w", err)
	}
	if err := db.idx.Ingest(context.Background(), append(segPaths, ipath, apath)); err != nil {
		return nil, fmt.Errorf("ingest index: %w", err)
	}
	db.graph.stored(buf.edges)
	db.groups.markPersisted(first + uint32(len(pending)))
	for _, g := range written {
		db.dict.markPersisted(g)
	}
	for _, m := range metrics {
		db.metrics.spanTotals.add(m)
	}
	db.openTables(buf.block, parts, results)
	return parts, nil
}

// openTables reads one key of each sstable a cut ingested, so that Pebble
// opens them (file, footer, index and filter blocks) now, in the background,
// rather than on the first read that needs each of them.
func (db *DB) openTables(block uint64, parts []uint32, results []dataResult) {
	if it, err := db.idx.NewIter(nil); err == nil {
		it.SeekGE(keys.Block(block))
		for _, p := range parts {
			it.SeekGE(keys.Rows(p, block))
			it.SeekGE(keys.Postings(p, block, 0))
		}
		it.Close()
	}
	it, err := db.spans.NewIter(nil)
	if err != nil {
		return
	}
	defer it.Close()
	for _, r := range results {
		for i, p := range r.parts {
			it.SeekGE(keys.Data(p, block, r.first[i]))
		}
	}
}

// writeSegments finishes the search index of each partition of a block and
// writes its rows and its postings into two sstables of their own. Their
// keys are new and sort after every key of their kind and partition, so
// unlike the trace index, which spreads over all trace IDs, they do not
// overlap anything already stored: Pebble ingests them into the bottom
// level, where only recompression rewrites them.
func (db *DB) writeSegments(dir string, block uint64, segments map[uint32]*index.SegmentBuilder) ([]string, error) {
	var paths []string
	for p, seg := range segments {
		rows, shards := seg.Finish(&db.segScratch)
		rpath := filepath.Join(dir, fmt.Sprintf("rows-%d.sst", p))
		if err := writeTable(db.opts.FS, db.idx, rpath, 0, false, cutCompression, func(w *sstable.Writer) error {
			return w.Set(keys.Rows(p, block), rows)
		}); err != nil {
			return nil, err
		}
		paths = append(paths, rpath)
		if !slices.ContainsFunc(shards[:], func(sh []byte) bool { return sh != nil }) {
			continue
		}
		ppath := filepath.Join(dir, fmt.Sprintf("postings-%d.sst", p))
		if err := writeTable(db.opts.FS, db.idx, ppath, 0, false, cutCompression, func(w *sstable.Writer) error {
			for i, sh := range shards {
				if sh == nil {
					continue
				}
				if err := w.Set(keys.Postings(p, block, uint8(i)), sh); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
		paths = append(paths, ppath)
	}
	// One cut of huge traces' terms is not kept for every cut after it.
	if db.segScratch.Bytes() > maxSegScratch {
		db.segScratch = index.Scratch{}
	}
	return paths, nil
}

// maxSegScratch bounds the scratch kept from one cut's search index
// segments to the next; the bench's cuts take about 16 MiB.
const maxSegScratch = 64 << 20

// eachPartition calls fn with t's spans in each partition they fall in,
// until it fails. Nearly every trace lies in one partition, and most came
// in one request: their run is passed, uncopied, and fn must not change
// it. The spans of the others are gathered by partition into byPart,
// scratch kept between calls.
func eachPartition(byPart map[uint32][]liveSpan, t *traceState, fn func(t *traceState, p uint32, spans []liveSpan) error) error {
	if !t.multiPartition && t.spans.more == nil {
		return fn(t, t.partition, t.spans.first)
	}
	for p, s := range byPart {
		byPart[p] = s[:0]
	}
	for s := range t.spans.each {
		p := partitionOf(s.start)
		byPart[p] = append(byPart[p], *s)
	}
	for p, spans := range byPart {
		if len(spans) == 0 {
			delete(byPart, p)
			continue
		}
		if err := fn(t, p, spans); err != nil {
			return err
		}
	}
	return nil
}

// splitTraces cuts traces, in order, into n ranges of about as many spans.
func splitTraces(traces []*traceState, n int) [][]*traceState {
	total := 0
	for _, t := range traces {
		total += int(t.count)
	}
	out := make([][]*traceState, 0, n)
	start, acc := 0, 0
	for i, t := range traces {
		acc += int(t.count)
		if len(out) < n-1 && acc >= total*(len(out)+1)/n {
			out = append(out, traces[start:i+1])
			start = i + 1
		}
	}
	return append(out, traces[start:])
}

// dataResult is what one data writer produced.
type dataResult struct {
	paths   []string
	parts   []uint32
	first   []TraceID // by part: the first trace written
	written map[groupKey]*group
	uses    map[resourceUse]bool
	metrics map[uint32]*spanMetrics // by partition
	err     error
}

// dataScratch is what a data writer reuses from trace to trace, and from
// cut to cut: buffers as large as the largest trace, which cuts otherwise
// allocated again and again.
type dataScratch struct {
	byPart map[uint32][]liveSpan
	order  []int32 // groupSpans'
	groups []codec.Group
	frag   []byte
	enc    codec.FragmentEncoder
}

// maxScratchSpans bounds the spans a kept dataScratch or asmScratch has
// room for, a few MiB, so that one huge trace does not hold its buffers'
// memory for good.
const maxScratchSpans = 1 << 14

// takeScratch returns a data writer's buffers, kept from an earlier cut if
// there are any.
func (db *DB) takeScratch() *dataScratch {
	db.scratchMu.Lock()
	defer db.scratchMu.Unlock()
	if n := len(db.scratch); n > 0 {
		sc := db.scratch[n-1]
		db.scratch = db.scratch[:n-1]
		return sc
	}
	return &dataScratch{byPart: map[uint32][]liveSpan{}}
}

// keepScratch takes sc back for the next cut, without the references to
// requests its buffers hold, which would keep them alive, and without the
// buffers a huge trace grew.
func (db *DB) keepScratch(sc *dataScratch) {
	for p, spans := range sc.byPart {
		if cap(spans) > maxScratchSpans {
			delete(sc.byPart, p)
			continue
		}
		clear(spans[:cap(spans)])
		sc.byPart[p] = spans[:0]
	}
	// Group span lists grow each to the largest group at its place in a
	// trace: bounded together.
	all, room := sc.groups[:cap(sc.groups)], 0
	for i := range all {
		room += cap(all[i].Spans)
	}
	if room > maxScratchSpans {
		sc.groups = nil
	} else {
		for i := range all {
			clear(all[i].Spans[:cap(all[i].Spans)])
		}
		sc.groups = sc.groups[:0]
	}
	if cap(sc.order) > maxScratchSpans {
		sc.order = nil
	}
	sc.enc.Reset(maxScratchSpans)
	if cap(sc.frag) > maxScratchSpans*256 { // bytes of as many typical spans
		sc.frag = nil
	}
	db.scratchMu.Lock()
	db.scratch = append(db.scratch, sc)
	db.scratchMu.Unlock()
}

// partBytes bounds the spans of one value of span data: a larger fragment
// is stored as parts of about this size, each a fragment of its own, under
// keys.DataPart. Pebble keeps a value whole in one block, and decompresses
// a block whole into memory allocated for it; the few megabytes of a large
// trace's fragment in one value made each read of it allocate that much at
// once, all of it fresh pages (on this kind of machine, 14 µs of page fault
// per 4 KiB) whenever the C allocator had given its memory back.
var partBytes = 64 << 10 // a variable for tests that write a store as version 8 did

// appendParts encodes the spans of groups, trace id's, as one fragment or,
// over partBytes, as consecutive parts of about partBytes each, and
// calls set with each part's number and encoding, which is valid until set
// returns. A group whose spans straddle two parts is in both. The
// encodings are built in buf, which it returns for reuse.
func appendParts(enc *codec.FragmentEncoder, buf []byte, id TraceID, groups []codec.Group, set func(n uint32, frag []byte) error) ([]byte, error) {
	total, spans := 0, 0
	for _, g := range groups {
		spans += len(g.Spans)
		for _, raw := range g.Spans {
			total += len(raw)
		}
	}
	if total <= partBytes {
		buf = enc.Append(buf[:0], id, groups)
		return buf, set(0, buf)
	}
	var (
		part []codec.Group
		n    uint32
		size int
		left = spans // not yet in a part
	)
	flush := func() error {
		buf = enc.Append(buf[:0], id, part)
		for _, g := range part {
			left -= len(g.Spans)
		}
		if left > 0 {
			codec.MarkContinued(buf)
		}
		err := set(n, buf)
		part, size = part[:0], 0
		n++
		return err
	}
	for _, g := range groups {
		from := 0
		for i, raw := range g.Spans {
			size += len(raw)
			if size < partBytes {
				continue
			}
			part = append(part, subGroup(g, from, i+1))
			from = i + 1
			if err := flush(); err != nil {
				return buf, err
			}
		}
		if from < len(g.Spans) {
			part = append(part, subGroup(g, from, len(g.Spans)))
		}
	}
	if len(part) > 0 {
		if err := flush(); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// subGroup is spans i..j of g.
func subGroup(g codec.Group, i, j int) codec.Group {
	s := codec.Group{Num: g.Num, Spans: g.Spans[i:j], Back: g.Back}
	if g.Ordered != nil {
		s.Ordered = g.Ordered[i:j]
	}
	if g.Keys != nil {
		s.Keys = g.Keys[i:j]
	}
	return s
}

// writeData writes the fragments of a range of traces, in order, into data
// sstables of their own, one per partition.
func (db *DB) writeData(dir string, worker int, block uint64, traces []*traceState) dataResult {
	res := dataResult{written: map[groupKey]*group{}, uses: map[resourceUse]bool{}, metrics: map[uint32]*spanMetrics{}}
	data := map[uint32]*sstWriter{}
	defer func() {
		for _, w := range data {
			w.abort()
		}
	}()
	first := map[uint32]TraceID{}
	sc := db.takeScratch()
	defer db.keepScratch(sc)
	byPart := sc.byPart
	write := func(t *traceState, p uint32, spans []liveSpan) error {
		w := data[p]
		if w == nil {
			var err error
			if w, err = newSSTWriter(db.opts.FS, db.spans, filepath.Join(dir, fmt.Sprintf("data-%d-%d.sst", p, worker)), cutBlockSize, false, cutCompression); err != nil {
				return err
			}
			first[p] = t.id
			data[p] = w
			res.metrics[p] = newSpanMetrics(db.opts.SpanMetricsMaxSeries)
		}
		var err error
		if sc.groups, sc.order, err = db.groupSpans(sc.groups[:0], sc.order, spans, p, &res); err != nil {
			return err
		}
		if sc.frag, err = appendParts(&sc.enc, sc.frag[:0], t.id, sc.groups, func(n uint32, frag []byte) error {
			return w.w.Set(keys.DataPart(p, block, t.id, n), frag)
		}); err != nil {
			return err
		}
		// After the fragment, which brought the spans' names into the
		// cache.
		m := res.metrics[p]
		for i := range spans {
			m.add(t.id, &spans[i])
		}
		return nil
	}
	for _, t := range traces {
		if res.err = eachPartition(byPart, t, write); res.err != nil {
			return res
		}
	}
	for p, w := range data {
		delete(data, p)
		if res.err = w.close(); res.err != nil {
			return res
		}
		res.paths = append(res.paths, w.path)
		res.parts = append(res.parts, p)
		res.first = append(res.first, first[p])
	}
	return res
}

// writeAggregates writes the aggregate records of a block, in key order:
// the span metrics of each partition it has spans in, a record a shard,
// then the service graph edges of each partition it has them of. Edges
// whose partition has been dropped (one neither stored nor in this block)
// are left out.
func (db *DB) writeAggregates(w *sstable.Writer, buf *buffer, parts []uint32, metrics map[uint32]*spanMetrics) error {
	parts = slices.Sorted(slices.Values(parts))
	for _, p := range parts {
		if metrics[p] == nil {
			continue
		}
		if err := metricsRecords(metrics[p], func(shard uint8, rec []byte) error {
			return w.Set(keys.Aggregate(p, shard, buf.block), rec)
		}); err != nil {
			return err
		}
	}
	var graphed []uint32
	db.mu.Lock()
	for p := range buf.edges {
		if _, ok := db.partitions[p]; ok || slices.Contains(parts, p) {
			graphed = append(graphed, p)
		}
	}
	db.mu.Unlock()
	slices.Sort(graphed)
	for _, p := range graphed {
		if edges := buf.edges.section(p); edges != nil {
			if err := w.Set(keys.Graph(p, buf.block), aggregateRecord(nil, edges)); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeIndex fills the index sstable of a block, in key order: everything
// but the search index and aggregates.
// newGroups are the pairs numbered from firstGroup on that Pebble lacks.
func (db *DB) writeIndex(iw *sstable.Writer, buf *buffer, parts []uint32, traceIndex map[uint32][]uint64, groups map[groupKey]*group, uses map[resourceUse]bool, firstGroup uint32, newGroups []groupKey) error {
	rec := codec.BlockRecord{
		WALSegment: buf.walSegment,
		Spans:      uint64(buf.spans),
		Created:    buf.created,
	}
	if err := iw.Set(keys.Block(buf.block), codec.AppendBlockRecord(nil, rec)); err != nil {
		return err
	}
	db.mu.Lock()
	var newParts []uint32
	for _, p := range parts {
		if _, ok := db.partitions[p]; !ok {
			newParts = append(newParts, p)
		}
	}
	db.mu.Unlock()
	for _, p := range newParts {
		if err := iw.Set(keys.Partition(p), nil); err != nil {
			return err
		}
	}
	for _, c := range buf.catalog {
		set := iw.Set
		if c.value == nil {
			set = func(k, _ []byte) error { return iw.Delete(k) }
		}
		if err := set(c.key, c.value); err != nil {
			return err
		}
	}
	newResources, err := db.writeDict(iw, groups)
	if err != nil {
		return err
	}
	for i, k := range newGroups {
		if err := iw.Set(keys.Group(firstGroup+uint32(i)), k[:]); err != nil {
			return err
		}
	}
	byPair := make([]uint32, len(newGroups)) // indexes into newGroups
	for i := range byPair {
		byPair[i] = uint32(i)
	}
	slices.SortFunc(byPair, func(a, b uint32) int { return bytes.Compare(newGroups[a][:], newGroups[b][:]) })
	for _, i := range byPair {
		if err := iw.Set(keys.GroupNumber(newGroups[i]), binary.BigEndian.AppendUint32(nil, firstGroup+i)); err != nil {
			return err
		}
	}
	if err := writeResourceAttrs(iw, newResources); err != nil {
		return err
	}
	useKeys := make([][]byte, 0, len(uses))
	for u := range uses {
		useKeys = append(useKeys, keys.ResourceUse(u.id, u.p))
	}
	slices.SortFunc(useKeys, bytes.Compare)
	for _, k := range useKeys {
		if err := iw.Set(k, nil); err != nil {
			return err
		}
	}
	for _, p := range parts {
		fps := traceIndex[p]
		slices.Sort(fps)
		for _, fp := range slices.Compact(fps) {
			if err := iw.Set(keys.TraceKey(p, fp, buf.block), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeDict writes the resources and scopes of the block that are not known
// to be persisted already, in key order, and returns the groups of the
// resources it wrote.
func (db *DB) writeDict(iw *sstable.Writer, groups map[groupKey]*group) ([]*group, error) {
	type entry struct {
		key []byte
		val codec.Dict
	}
	seen := map[string]bool{}
	var (
		entries   []entry
		resources []*group
	)
	add := func(kind byte, id dictID, d codec.Dict) bool {
		k := keys.Dict(kind, id)
		if seen[string(k)] || db.dict.persisted(kind, id) {
			return false
		}
		seen[string(k)] = true
		entries = append(entries, entry{k, d})
		return true
	}
	for _, g := range groups {
		if add(keys.KindResource, g.resID, g.res) {
			resources = append(resources, g)
		}
		add(keys.KindScope, g.scopeID, g.scope)
	}
	slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.key, b.key) })
	var v []byte
	for _, e := range entries {
		v = codec.AppendDict(v[:0], e.val)
		if err := iw.Set(e.key, v); err != nil {
			return nil, err
		}
	}
	return resources, nil
}

// writeResourceAttrs writes the attribute index keys of new resources, in
// key order.
func writeResourceAttrs(iw *sstable.Writer, resources []*group) error {
	type attr struct {
		key     []byte
		service index.Term
	}
	var (
		h     index.Hasher
		attrs []attr
	)
	for _, g := range resources {
		svc := h.Service(g.service)
		for _, t := range resourceTerms(&h, g.res.Raw) {
			attrs = append(attrs, attr{keys.ResourceAttr(uint64(t), g.resID), svc})
		}
	}
	slices.SortFunc(attrs, func(a, b attr) int { return bytes.Compare(a.key, b.key) })
	for i, a := range attrs {
		if i > 0 && bytes.Equal(a.key, attrs[i-1].key) {
			continue // a resource with an attribute twice
		}
		if err := iw.Set(a.key, binary.BigEndian.AppendUint64(nil, uint64(a.service))); err != nil {
			return err
		}
	}
	return nil
}

// resourceUse is a resource with spans in a partition.
type resourceUse struct {
	id dictID
	p  uint32
}

// groupSpans groups a trace's spans in partition p by (resource, scope),
// groups ordered by key and spans by name, then start time (alike spans side
// by side compress better), and records every group and resource use in
// res. It leaves spans as they are, ordering their positions in order,
// scratch it returns for reuse.
func (db *DB) groupSpans(dst []codec.Group, order []int32, spans []liveSpan, p uint32, res *dataResult) ([]codec.Group, []int32, error) {
	// Sorting positions rather than the spans moves 4 bytes a swap, not 88.
	order = order[:0]
	for i := range spans {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &spans[i], &spans[j]
		if a.group != b.group {
			if c := bytes.Compare(a.group.resID[:], b.group.resID[:]); c != 0 {
				return c
			}
			if c := bytes.Compare(a.group.scopeID[:], b.group.scopeID[:]); c != 0 {
				return c
			}
		}
		if c := bytes.Compare(a.spanName(), b.spanName()); c != 0 {
			return c
		}
		return cmp.Compare(a.start, b.start)
	})
	var prevGroup *group
	for _, i := range order {
		s := &spans[i]
		if s.group != prevGroup {
			prevGroup = s.group
			k := s.group.key()
			res.written[k] = s.group
			res.uses[resourceUse{s.group.resID, p}] = true
			n, err := db.groups.number(k)
			if err != nil {
				return dst, order, err
			}
			// The next group's span list, reused if dst has held one.
			if len(dst) < cap(dst) {
				dst = dst[:len(dst)+1]
				prev := &dst[len(dst)-1]
				*prev = codec.Group{Num: n, Spans: prev.Spans[:0], Ordered: prev.Ordered[:0]}
			} else {
				dst = append(dst, codec.Group{Num: n})
			}
		}
		g := &dst[len(dst)-1]
		g.Spans = append(g.Spans, s.raw)
		g.Ordered = append(g.Ordered, s.ordered)
	}
	return dst, order, nil
}

// fragmentRow describes a trace's spans in one partition of a block: its
// search-index row.
func fragmentRow(id TraceID, spans []liveSpan, split bool) index.Row {
	r := index.Row{TraceID: id, MinStart: spans[0].start, MaxStart: spans[0].start, MaxEnd: spans[0].end,
		Spans: uint32(len(spans)), Split: split}
	for _, sp := range spans {
		r.MinStart, r.MaxStart, r.MaxEnd = min(r.MinStart, sp.start), max(r.MaxStart, sp.start), max(r.MaxEnd, sp.end)
		if sp.err {
			r.Errors++
		}
	}
	return r
}

type sstWriter struct {
	path string
	w    *sstable.Writer
}

// newSSTWriter creates an sstable to be ingested into store.
func newSSTWriter(fs vfs.FS, store *pebble.DB, path string, blockSize int, filter bool, compression *sstable.CompressionProfile) (*sstWriter, error) {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("create sstable: %w", err)
	}
	o := sstable.WriterOptions{
		Comparer:    keys.Comparer,
		TableFormat: store.TableFormat(),
		BlockSize:   blockSize,
		Compression: compression,
	}
	if filter {
		o.FilterPolicy = bloom.FilterPolicy(10)
	}
	return &sstWriter{path: path, w: sstable.NewWriter(objstorageprovider.NewFileWritable(f), o)}, nil
}

func (w *sstWriter) close() error {
	if err := w.w.Close(); err != nil {
		return fmt.Errorf("finish sstable: %w", err)
	}
	return nil
}

// abort closes a writer whose table will not be ingested; its file is removed
// with the ingest directory.
func (w *sstWriter) abort() { _ = w.w.Close() }

// writeTable writes an sstable to be ingested into store, with the keys that
// fill sets, in order.
func writeTable(fs vfs.FS, store *pebble.DB, path string, blockSize int, filter bool, compression *sstable.CompressionProfile, fill func(*sstable.Writer) error) error {
	w, err := newSSTWriter(fs, store, path, blockSize, filter, compression)
	if err != nil {
		return err
	}
	if err := fill(w.w); err != nil {
		w.abort()
		return err
	}
	return w.close()
}
