package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/klauspost/compress/s2"

	"cairn/index"
	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
	"cairn/storage/internal/wal"
)

// FormatVersion is the version of the on-disk format this code reads and
// writes. It is stored under the meta key "format" when a store is created.
const FormatVersion = 12

// TraceID is a 16-byte OTLP trace ID.
type TraceID = [16]byte

// recordBufs recycles the buffers that requests are compressed into for the
// write-ahead log: one per request would be the largest source of garbage.
var recordBufs = sync.Pool{New: func() any { return new([]byte) }}

// ErrClosed is returned by operations on a closed DB.
var ErrClosed = errors.New("storage: closed")

// DB is an open cairn store. It is safe for concurrent use.
type DB struct {
	opts Options
	dir  string
	// idx holds everything but span data: block records, the trace and
	// search indexes, the catalog and the dictionary.
	idx *pebble.DB
	// spans holds span data, whose sstables are written once by a cut and
	// rewritten once more by recompression; its bottom level is compressed
	// harder than idx's, which keeps small blocks and fast compression.
	spans *pebble.DB
	wal   *wal.Log
	// lock keeps other processes off dir while the DB is open; nil where
	// the platform has no flock.
	lock *os.File
	dict *dictCache
	// groups numbers the (resource, scope) pairs fragments refer to.
	groups *groupTable
	// resources maps resource attributes to the resources that have them.
	resources *resourceIndex

	// Guarded by mu.
	catalog *catalog
	// graph pairs the spans of cuts into service graph edges.
	graph *serviceGraph

	// writerTurn lets one writer at a time wait for mu: a reader then
	// queues behind at most one writer's log append, not behind every
	// request in flight (sync.Mutex hands over in arrival order once
	// waiters have waited 1 ms, and reads waited 8-15 ms behind writers at
	// full ingest). Writers insert their spans outside mu (see buffer).
	writerTurn sync.Mutex
	mu         sync.Mutex
	live       *buffer
	frozen     *buffer       // being cut into a block; nil when no cut runs
	flushed    chan struct{} // closed and replaced when a cut succeeds or fails
	cutErr     error         // why the last cut failed; nil once one succeeds
	// partitions maps each partition that holds persisted data to the
	// newest block with data in it.
	partitions map[uint32]uint64
	closed     bool
	// v6Traces is one past the newest partition that may hold trace-index
	// keys of format version 6 (whole trace IDs), which reads of it look
	// up too; 0 if none does. It is set when the store is upgraded and
	// never changes.
	v6Traces uint64

	// lastWrite is when Write was last called with spans, in unix
	// nanoseconds.
	lastWrite atomic.Int64
	// backlog is the bytes of span data awaiting recompression, as the
	// maintainer last estimated them.
	backlog atomic.Int64
	metrics *metrics
	faults  faults
	// damage lists the files Pebble found damaged since Open.
	damage damage
	// searchSkipped is set once a search has passed over damage.
	searchSkipped atomic.Bool
	// maintMu serializes recompression with partition drops, which would
	// otherwise race to rewrite and delete the same span data. It guards
	// recompressed, which maps partitions to the newest block whose span
	// data has been recompressed, merged, the sealed partitions whose
	// sstables need no merging, and damaged. It is taken before mu.
	maintMu      sync.Mutex
	recompressed map[uint32]uint64
	merged       map[uint32]bool
	// waitingSince maps partitions with blocks not yet recompressed to
	// when recompression first saw them waiting; maintMu guards it too.
	waitingSince map[uint32]time.Time
	// rolledUp is, by partition and group size, the first block whose
	// aggregate records rollUpAggregates has yet to look at; maintMu
	// guards it too.
	rolledUp map[rollupProgress]uint64
	// cpuRoom is the maintainer's measure of the process's CPU use.
	cpuRoom cpuRoom
	// recompressBackoff is the wait after the last failed recompression,
	// 0 once one succeeds; no pass starts before recompressAt. Only the
	// maintainer uses them.
	recompressBackoff time.Duration
	recompressAt      time.Time
	// partMu serializes cuts with partition drops: a cut decides which
	// partitions are new before it ingests their data, and a drop in
	// between would delete the key of a partition the cut then writes
	// into. It is taken after maintMu, before mu.
	partMu sync.Mutex
	// boundStuck is set while the store is over MaxDiskBytes with nothing
	// it may drop, so that this is logged once.
	boundStuck atomic.Bool
	// partitionDropped is set when a partition is dropped whole, for the
	// maintainer to evict the resources only it used.
	partitionDropped atomic.Bool
	damaged          map[uint32]bool // partitions recompression failed on for damage

	// scratch keeps data writers' buffers from one cut to the next (see
	// dataScratch): a cut comes about every second under load, after the
	// collector has emptied a sync.Pool.
	scratchMu sync.Mutex
	scratch   []*dataScratch
	// segScratch is what cuts finish their search index segments in, one
	// after another; a cut holds partMu while it writes them.
	segScratch index.Scratch

	kick         chan struct{}
	stop         chan struct{}
	flusherWG    sync.WaitGroup
	maintainerWG sync.WaitGroup
	// reading is read-locked by each read that holds Pebble iterators;
	// Close write-locks it, for good, to wait for them and refuse new ones.
	reading   sync.RWMutex
	layout    atomic.Pointer[layout]
	closeOnce sync.Once
	closeErr  error
}

// Open opens the store in dir, creating it if needed, and replays the
// write-ahead log of spans acknowledged but not yet cut into blocks.
//
// Spans are often sensitive, so the directories the store creates are
// mode 0700 and its lock file 0600; the write-ahead log's and Pebble's
// files, created through Options.FS, are 0666 less the process umask (cairn
// serve sets it to 077), inside those directories.
// An existing directory keeps its mode.
func Open(dir string, o *Options) (*DB, error) {
	opts := o.EnsureDefaults()
	if err := opts.FS.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if _, err := opts.FS.Stat(filepath.Join(dir, "pebble")); err == nil {
		return nil, fmt.Errorf("%s holds a store of format version 2 or older; this cairn reads version %d", dir, FormatVersion)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	db := &DB{
		opts:         opts,
		dir:          dir,
		lock:         lock,
		dict:         newDictCache(opts.DictionaryCache),
		resources:    newResourceIndex(),
		catalog:      newCatalog(),
		flushed:      make(chan struct{}),
		partitions:   make(map[uint32]uint64),
		recompressed: make(map[uint32]uint64),
		rolledUp:     make(map[rollupProgress]uint64),
		merged:       make(map[uint32]bool),
		waitingSince: make(map[uint32]time.Time),
		damaged:      make(map[uint32]bool),
		kick:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	db.graph = newServiceGraph(&opts)
	db.metrics = newMetrics(db)
	// Both stores share one block cache, sized by Options.CacheBytes.
	cache := pebble.NewCache(opts.CacheBytes)
	defer cache.Unref()
	if db.idx, err = db.openStore("index", indexOptions(opts, cache, db.listener("index"))); err != nil {
		return nil, errors.Join(err, db.closeStores())
	}
	db.groups = newGroupTable(db.idx, opts.DictionaryCache)
	if db.spans, err = db.openStore("spans", spansOptions(opts, cache, db.listener("spans"))); err != nil {
		return nil, errors.Join(err, db.closeStores())
	}
	if err := db.recover(); err != nil {
		if IsCorruption(err) {
			// The block records, partition list, catalog and dictionary
			// groups are read whole at open; without them nothing is
			// served right.
			err = fmt.Errorf("%w; the store is damaged where it must be read to open: run cairn check %s, then cairn repair %[2]s", err, dir)
		}
		return nil, errors.Join(err, db.closeStores())
	}
	// A reserve that takes most of the volume refuses every export
	// for want of space, while nothing else looks wrong.
	if u, err := opts.FS.GetDiskUsage(dir); err == nil && opts.DiskReserveBytes > 0 && int64(u.TotalBytes) < 2*opts.DiskReserveBytes {
		opts.Logger.Warn("the data directory's volume is small beside the space kept free: exports are refused whenever less than that is free",
			"volume_mib", u.TotalBytes>>20, "free_mib", u.AvailBytes>>20, "kept_free_mib", opts.DiskReserveBytes>>20)
	}
	db.mu.Lock()
	db.setLayout()
	db.mu.Unlock()
	db.lastWrite.Store(opts.Now().UnixNano())
	db.flusherWG.Add(1)
	go db.flusher()
	db.maintainerWG.Add(1)
	go db.maintainer()
	if db.live.spans > 0 {
		db.kick <- struct{}{} // cut what was replayed without waiting for the interval
	}
	return db, nil
}

func indexOptions(o Options, cache *pebble.Cache, l *pebble.EventListener) *pebble.Options {
	po := &pebble.Options{
		EventListener: l,
		Comparer:      keys.Comparer,
		Cache:         cache,
		// Cuts are ingested as sstables, so the memtable only ever holds a
		// few metadata keys.
		MemTableSize:       4 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{o.Logger},
		FS:                 o.FS,
	}
	// Every cut ingests a trace-index sstable that overlaps all of the
	// current partition's keys (fingerprints are random), and each L0
	// compaction rewrites the level below it whole. Letting twelve cuts,
	// not four, gather before one merges them took the index store's
	// compactions from 15% of the CPU to a third as many runs: one-span
	// traces 171k-172k -> 193k-210k spans/s, two-span 302k-308k ->
	// 352k-357k. A lookup probes one more bloom filter per cut waiting.
	po.L0CompactionThreshold = 12
	po.L0StopWritesThreshold = 36
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.ZstdCompression }
	}
	return po
}

// recompressedProfile compresses the bottom level of the spans store: zstd
// level 7 on whole 256 KiB blocks takes span data of the bench workload from
// about 43 (MinLZ in the cuts' 128 KiB blocks; zstd level 3 there, 38) to 32
// bytes per span, at four times the CPU of level 3, which is why cuts do not
// use it.
var recompressedProfile = func() *sstable.CompressionProfile {
	p := *sstable.ZstdCompression
	p.Name = "cairn-recompressed"
	p.DataBlocks.Level = 7
	return &p
}()

func spansOptions(o Options, cache *pebble.Cache, l *pebble.EventListener) *pebble.Options {
	po := &pebble.Options{
		EventListener:      l,
		Comparer:           keys.Comparer,
		Cache:              cache,
		MemTableSize:       4 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{o.Logger},
		FS:                 o.FS,
		// Recompression's compactions are the only ones of note.
		CompactionConcurrencyRange: func() (int, int) { n := recompressWorkers(&o); return n, n },
	}
	for i := range po.Levels {
		po.Levels[i].BlockSize = dataBlockSize
		po.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.ZstdCompression }
		// One recompressed range, one file: span data is read by point
		// lookups, which larger files do not slow down.
		po.TargetFileSizes[i] = 2 * recompressBytes
	}
	po.Levels[len(po.Levels)-1].Compression = func() *sstable.CompressionProfile { return recompressedProfile }
	return po
}

func (db *DB) recover() error {
	version, err := db.checkFormat()
	if err != nil {
		return err
	}
	// Left by a cut or a recompression that a crash interrupted; whatever
	// in them was ingested is in the stores already.
	for _, d := range []string{"ingest", "recompress"} {
		if err := db.opts.FS.RemoveAll(filepath.Join(db.dir, d)); err != nil {
			return fmt.Errorf("remove interrupted %s: %w", d, err)
		}
	}
	last, rec, err := db.lastBlock()
	if err != nil {
		return err
	}
	if err := db.loadPartitions(); err != nil {
		return err
	}
	if err := db.reconcileSpans(last); err != nil {
		return err
	}
	if err := db.loadRecompressed(); err != nil {
		return err
	}
	if err := db.catalog.load(db.idx); err != nil {
		return err
	}
	if err := db.loadV6Traces(version); err != nil {
		return err
	}
	switch version {
	case 3:
		err = db.upgradeFrom3()
	case 4:
		err = db.upgradeFrom4()
	case 5, 6, 7, 8, 9, 10:
		// Version 6 only adds aggregates, which blocks cut before have
		// not; version 7 keys the trace index by fingerprint, and
		// loadV6Traces has recorded which partitions have the old keys;
		// version 8 writes rows records of version 4, and reads both;
		// version 9 stores large fragments in parts, and reads whole ones;
		// version 10 says in merged fragments which cut each group's
		// spans came with, and reads merged fragments that do not;
		// version 11 shards aggregate records, which are rewritten;
		// version 12 adds records of services' totals, which are
		// written from the shards' (upgradeTo12).
		if err = db.shardAggregates(); err == nil {
			err = db.upgradeTo12()
		}
	case 11:
		err = db.upgradeTo12()
	}
	if err != nil {
		return fmt.Errorf("upgrade store from format version %d: %w", version, err)
	}
	if err := db.groups.open(); err != nil {
		return err
	}
	if err := db.replayPairing(); err != nil {
		return err
	}
	db.live = newBuffer(last + 1)
	if db.wal, err = wal.Open(filepath.Join(db.dir, "wal"), wal.Options{FS: db.opts.FS, KeepFree: db.opts.DiskReserveBytes, OnWrite: db.walWritten, After: rec.WALSegment}); err != nil {
		return err
	}
	if err := db.wal.RemoveThrough(rec.WALSegment); err != nil {
		return err
	}
	return db.replay(rec.WALSegment)
}

// replay puts the records of the write-ahead log after segment after back
// into the live buffer. Damage costs only the records it touches: replay
// resumes at the next intact record, and every stretch skipped is logged
// with the segment file, how many bytes, at least how many records and why.
func (db *DB) replay(after uint64) error {
	var (
		batch   otlpwire.Batch
		records int
	)
	losses, err := db.wal.Replay(after, func(seg uint64, payload []byte) error {
		req, err := s2.Decode(nil, payload)
		if err == nil {
			// Spans that have aged out of the retention period since they
			// were acknowledged are dropped here as they would be at
			// ingest, and so are spans too far in the future, which a log
			// written before they were rejected may hold.
			err = otlpwire.Parse(req, &batch, db.Accepts())
		}
		if err != nil {
			// The record passed its checksum, so this cairn cannot read
			// what an earlier one wrote: refusing to start would not help.
			db.opts.Logger.Error("write-ahead log record cannot be read; its spans are lost",
				"segment", seg, "err", err)
			return nil
		}
		records++
		db.insert(req, len(payload), &batch, prepare(&batch, db.resources))
		return nil
	})
	for _, l := range losses {
		attrs := []any{"segment", l.Segment, "offset", l.Offset, "bytes", l.Bytes, "why", l.Why}
		if l.Tail {
			// What a crash or a failed write leaves; it was not acknowledged
			// unless the disk lost synced data.
			db.opts.Logger.Warn("write-ahead log ends in a partial or damaged write; skipped",
				append(attrs, "records_lost_at_least", l.Records)...)
			continue
		}
		db.opts.Logger.Error("write-ahead log damaged; skipped to the next intact record, acknowledged spans may be lost",
			append(attrs, "records_lost_at_least", max(1, l.Records))...)
	}
	if err != nil {
		return fmt.Errorf("replay wal: %w", err)
	}
	if records > 0 {
		db.opts.Logger.Info("replayed write-ahead log", "records", records, "spans", db.live.spans)
	}
	return nil
}

// walWritten follows the write-ahead log's health from the outcome of each
// group of appends: a failure sets FaultWAL and is logged once, the first
// write that succeeds again clears it.
func (db *DB) walWritten(sync time.Duration, err error) {
	if err != nil {
		if db.faults.set(FaultWAL, cause(err)+err.Error()) {
			db.opts.Logger.Error("write-ahead log cannot be written; exports fail with a retryable error until a write succeeds",
				"err", err)
		}
		return
	}
	db.metrics.walSync.Observe(sync.Seconds())
	if db.faults.clear(FaultWAL) {
		db.opts.Logger.Info("write-ahead log is written again; exports are accepted")
	}
}

// checkSpace fails, as a full disk would, when writing need bytes would
// leave less than keep free. A file system that cannot tell is let be: the
// write finds out.
func (db *DB) checkSpace(need, keep int64) error {
	if keep <= 0 {
		return nil
	}
	u, err := db.opts.FS.GetDiskUsage(db.dir)
	if err != nil || int64(u.AvailBytes) >= need+keep {
		return nil
	}
	return fmt.Errorf("%d MiB free, under the %d MiB needed and the %d MiB kept free: %w",
		u.AvailBytes>>20, need>>20, keep>>20, syscall.ENOSPC)
}

// cause names, for people, the condition behind a write error when it is
// one they can act on, as a prefix for its message.
func cause(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return "disk full: "
	case errors.Is(err, syscall.EDQUOT):
		return "disk quota exceeded: "
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "out of file descriptors: "
	}
	return ""
}

// v6TraceMeta names the meta key that records, in stores upgraded from
// format version 6 or older, one past the newest partition that may hold
// their trace-index keys, as a uvarint.
const v6TraceMeta = "v6-trace-index"

// loadV6Traces reads which partitions have trace-index keys of format
// version 6, recording them first if the store is of an older version.
// Those keys stay until retention drops their partitions, rather than be
// rewritten at open, which on a large store would hold startup for
// minutes and fail on any damage they lie in.
func (db *DB) loadV6Traces(version byte) error {
	k := keys.Meta(v6TraceMeta)
	if version < 7 {
		var end uint64
		for p := range db.partitions {
			end = max(end, uint64(p)+1)
		}
		if err := db.idx.Set(k, binary.AppendUvarint(nil, end), pebble.Sync); err != nil {
			return fmt.Errorf("record the partitions of the format 6 trace index: %w", err)
		}
		db.v6Traces = end
		return nil
	}
	v, closer, err := db.idx.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the partitions of the format 6 trace index: %w", err)
	}
	defer closer.Close()
	end, n := binary.Uvarint(v)
	if n != len(v) {
		return fmt.Errorf("meta %q: %w", v6TraceMeta, codec.ErrCorrupt)
	}
	db.v6Traces = end
	return nil
}

// v6TraceIndex reports whether partition p may hold trace-index keys of
// format version 6.
func (db *DB) v6TraceIndex(p uint32) bool { return uint64(p) < db.v6Traces }

// tracePrefixes are the prefixes of the trace-index keys that may name the
// blocks of trace id in partition p: this version's, and version 6's in a
// partition that may have them.
func (db *DB) tracePrefixes(p uint32, id TraceID) [][]byte {
	if db.v6TraceIndex(p) {
		return [][]byte{keys.TracePrefix(p, id), keys.TraceV6Prefix(p, id)}
	}
	return [][]byte{keys.TracePrefix(p, id)}
}

// appendTraceKeys appends to dst the trace-index keys that may name block
// b for trace id in partition p, as tracePrefixes their prefixes.
func (db *DB) appendTraceKeys(dst [][]byte, p uint32, id TraceID, b uint64) [][]byte {
	dst = append(dst, keys.Trace(p, id, b))
	if db.v6TraceIndex(p) {
		dst = append(dst, keys.TraceV6(p, id, b))
	}
	return dst
}

// checkFormat returns the format version of the store, creating a new
// store at the current one. It refuses versions it cannot read; versions 3
// to FormatVersion−1 are upgraded once the store is open.
func (db *DB) checkFormat() (byte, error) {
	k := keys.Meta("format")
	v, closer, err := db.idx.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return FormatVersion, db.idx.Set(k, []byte{FormatVersion}, pebble.Sync)
	}
	if err != nil {
		return 0, fmt.Errorf("read format version: %w", err)
	}
	defer closer.Close()
	if len(v) != 1 || v[0] < 3 || v[0] > FormatVersion {
		return 0, fmt.Errorf("store has format version %v; this cairn reads versions 3 to %d", v, FormatVersion)
	}
	return v[0], nil
}

func (db *DB) lastBlock() (uint64, codec.BlockRecord, error) {
	it, err := db.idx.NewIter(keys.KindRange(keys.KindBlock))
	if err != nil {
		return 0, codec.BlockRecord{}, fmt.Errorf("find last block: %w", err)
	}
	defer it.Close()
	if !it.Last() {
		return 0, codec.BlockRecord{}, it.Error()
	}
	block, err := keys.ParseBlock(it.Key())
	if err != nil {
		return 0, codec.BlockRecord{}, err
	}
	rec, err := codec.DecodeBlockRecord(it.Value())
	return block, rec, err
}

func (db *DB) loadPartitions() error {
	it, err := db.idx.NewIter(keys.KindRange(keys.KindPartition))
	if err != nil {
		return fmt.Errorf("load partitions: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		p, err := keys.ParsePartition(it.Key())
		if err != nil {
			return err
		}
		db.partitions[p] = 0
	}
	return it.Error()
}

// reconcileSpans makes the spans store agree with the index store. A cut
// ingests its span data before its index sstable, and a dropped partition
// loses its index before its span data, so a crash between the two leaves
// span data that nothing refers to: blocks newer than the last block record
// (the write-ahead log still holds their spans, and replay cuts them again
// under the same numbers) and partitions the index no longer lists. It is
// deleted here. (Span data of the oldest blocks of a partition whose drop a
// crash interrupted is deleted by the partition's next drop, which deletes
// span data from its first block.) It also records the newest block of each
// partition.
//
// Partitions whose span data a damaged file holds are passed over, so that
// the store opens and serves the rest; their newest block stays unknown
// (0), which keeps them from being recompressed, and the disk bound from
// dropping them whole (see drop).
func (db *DB) reconcileSpans(lastBlock uint64) error {
	it, err := db.spans.NewIter(keys.KindRange(keys.KindData))
	if err != nil {
		return fmt.Errorf("reconcile spans: %w", err)
	}
	defer it.Close()
	b := db.spans.NewBatch()
	defer b.Close()
	// pass moves the iterator past the partitions that a damaged file
	// holds keys of; it fails for other errors.
	pass := func() (bool, error) {
		err := it.Error()
		info := pebble.ExtractDataCorruptionInfo(err)
		if info == nil {
			return false, fmt.Errorf("reconcile spans: %w", err)
		}
		last, _, _, perr := keys.ParseData(info.Bounds.End.Key)
		if perr != nil {
			return false, fmt.Errorf("reconcile spans: %w", err)
		}
		db.opts.Logger.Warn("span data of damaged partitions not reconciled", "through_partition", partitionName(last), "err", firstLine(err))
		return it.SeekGE(keys.PartitionPrefix(keys.KindData, last+1)), nil
	}
	ok := it.First()
	for ok || it.Error() != nil {
		if !ok {
			if ok, err = pass(); err != nil {
				return err
			}
			continue
		}
		p, _, _, err := keys.ParseData(it.Key())
		if err != nil {
			return fmt.Errorf("reconcile spans: %w", err)
		}
		end := keys.PartitionPrefix(keys.KindData, p+1)
		if _, listed := db.partitions[p]; !listed {
			if err := b.DeleteRange(keys.PartitionPrefix(keys.KindData, p), end, nil); err != nil {
				return err
			}
			if err := b.Delete(keys.Recompressed(p), nil); err != nil {
				return err
			}
			ok = it.SeekGE(end)
			continue
		}
		if ok = it.SeekLT(keys.DataBlock(p, lastBlock+1)); !ok {
			if it.Error() != nil {
				continue
			}
			return fmt.Errorf("reconcile spans: partition %d lost its span data", p)
		}
		q, newest, _, err := keys.ParseData(it.Key())
		if err != nil {
			return fmt.Errorf("reconcile spans: %w", err)
		}
		if q != p {
			return fmt.Errorf("reconcile spans: partition %d has no span data at or below block %d", p, lastBlock)
		}
		db.partitions[p] = newest
		orphans := keys.DataBlock(p, lastBlock+1)
		if it.SeekGE(orphans) && bytes.Compare(it.Key(), end) < 0 {
			if err := b.DeleteRange(orphans, end, nil); err != nil {
				return err
			}
		} else if it.Error() != nil {
			ok = false
			continue
		}
		ok = it.SeekGE(end)
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("reconcile spans: %w", err)
	}
	return nil
}

// Write stores the spans of a parsed Export request and returns once they are
// durable. req is the encoded request that batch was parsed from; the DB keeps
// it, so the caller must not modify it afterwards.
func (db *DB) Write(ctx context.Context, req []byte, batch *otlpwire.Batch) error {
	if len(batch.Spans) == 0 {
		return nil
	}
	// A writer waiting for buffer space is load too.
	db.lastWrite.Store(db.opts.Now().UnixNano())
	// The log copies the record, so its buffer goes back to the pool at once.
	encBuf := recordBufs.Get().(*[]byte)
	defer recordBufs.Put(encBuf)
	var (
		prep *prepared
		rec  []byte
	)
	db.opts.Bulk.Do(func() {
		prep = prepare(batch, db.resources)
		*encBuf = slices.Grow((*encBuf)[:0], s2.MaxEncodedLen(len(req)))
		rec = s2.Encode((*encBuf)[:cap(*encBuf)], req)
	})

	db.lockForWrite()
	for db.live.size() >= db.opts.BufferBytes && db.frozen != nil && !db.closed {
		if db.cutErr != nil {
			// Waiting would only run into the client's deadline.
			err := db.cutErr
			db.mu.Unlock()
			return fmt.Errorf("buffer full while blocks cannot be written: %s%w", cause(err), err)
		}
		flushed := db.flushed
		db.mu.Unlock()
		select {
		case <-flushed:
		case <-ctx.Done():
			return fmt.Errorf("wait for buffer space: %w", ctx.Err())
		}
		db.lockForWrite()
	}
	if db.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	w, err := db.wal.Append(rec)
	if err != nil {
		db.mu.Unlock()
		return fmt.Errorf("append to wal: %w", err)
	}
	// The request's size counts in the buffer its log segment belongs to
	// at once, for the writers after it; that buffer's cut waits for the
	// rest.
	buf := db.live
	buf.addSize(len(req), len(rec), len(batch.Spans))
	buf.writers.Add(1)
	full := buf.size() >= db.opts.BufferBytes
	db.mu.Unlock()
	if full {
		select {
		case db.kick <- struct{}{}:
		default:
		}
	}
	defer prep.release()
	defer buf.writers.Done()
	// The rest waits until the log holds the request. A request the log
	// refused is answered with an error and sent again: taken in anyway,
	// each attempt was cut, stored and counted in span metrics and the
	// service graph, listed its services, and took more of a disk that was
	// full.
	if err := w.Wait(); err != nil {
		db.mu.Lock()
		buf.addSize(-len(req), -len(rec), -len(batch.Spans))
		db.mu.Unlock()
		return fmt.Errorf("write-ahead log: %s%w", cause(err), err)
	}
	db.mu.Lock()
	db.note(buf, batch, prep)
	if buf != db.live {
		// Frozen meanwhile: the changes go with its block, whose log
		// segment a cut deletes.
		buf.catalog = mergeCatalogWrites(buf.catalog, db.catalog.takePending())
	}
	db.mu.Unlock()
	// The spans go in outside mu, which the next writer waits for.
	db.opts.Bulk.Do(func() { buf.insert(batch, prep) })
	return nil
}

// lockForWrite locks mu for a writer, behind the writers ahead of it.
func (db *DB) lockForWrite() {
	db.writerTurn.Lock()
	db.mu.Lock()
	db.writerTurn.Unlock()
}

// note records a prepared request's services and operations in the
// catalog, and its resources as used by buf's block. The caller holds mu,
// and then inserts the spans into buf.
func (db *DB) note(buf *buffer, batch *otlpwire.Batch, prep *prepared) {
	services := make([]*serviceEntry, len(batch.Resources))
	for i, r := range batch.Resources {
		services[i] = db.catalog.service(r.Service)
	}
	retained := partitionOf(db.NotBefore())
	for _, o := range prep.ops {
		db.catalog.see(batch.Resources[o.resource].Service, services[o.resource], o.kind, o.name, o.partition, retained)
	}
	db.resources.use(buf.block, prep.resources, func(i int) []byte { return batch.Resources[i].Raw })
}

// insert adds a prepared request, whose log record is logged bytes, to
// the live buffer while nothing else runs: at open, replaying the log.
func (db *DB) insert(req []byte, logged int, batch *otlpwire.Batch, prep *prepared) {
	db.live.addSize(len(req), logged, len(batch.Spans))
	db.note(db.live, batch, prep)
	db.live.insert(batch, prep)
	prep.release()
}

// Close cuts what is buffered into a block, then closes the write-ahead log
// and both Pebble stores, and releases the data directory last. It is safe to
// call more than once.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.mu.Lock()
		db.closed = true
		db.mu.Unlock()
		close(db.stop)
		db.flusherWG.Wait()
		db.maintainerWG.Wait()
		db.reading.Lock()
		db.closeErr = errors.Join(db.cut(), db.closeStores())
	})
	return db.closeErr
}

// closeStores closes what Open opened: the write-ahead log, both Pebble
// stores, and last the directory's lock.
func (db *DB) closeStores() error {
	var errs []error
	if db.wal != nil {
		errs = append(errs, db.wal.Close())
	}
	for _, p := range []*pebble.DB{db.spans, db.idx} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	// Only once nothing writes to the directory may another process take it.
	if db.lock != nil {
		errs = append(errs, db.lock.Close())
	}
	return errors.Join(errs...)
}
