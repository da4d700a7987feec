package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/klauspost/compress/s2"

	"cairn/internal/otlpwire"
	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
	"cairn/storage/internal/wal"
)

// FormatVersion is the version of the on-disk format this code reads and
// writes. It is stored under the meta key "format" when a store is created.
const FormatVersion = 3

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

	mu      sync.Mutex
	live    *buffer
	frozen  *buffer       // being cut into a block; nil when no cut runs
	flushed chan struct{} // closed and replaced when a cut finishes
	// partitions maps each partition that holds persisted data to the
	// newest block with data in it.
	partitions map[uint32]uint64
	closed     bool

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
	damaged      map[uint32]bool // partitions recompression failed on for damage

	kick         chan struct{}
	stop         chan struct{}
	flusherWG    sync.WaitGroup
	maintainerWG sync.WaitGroup
	readers      sync.WaitGroup // reads holding a Pebble iterator; Close waits for them
	closeOnce    sync.Once
	closeErr     error
}

// Open opens the store in dir, creating it if needed, and replays the
// write-ahead log of spans acknowledged but not yet cut into blocks.
func Open(dir string, o *Options) (*DB, error) {
	opts := o.EnsureDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pebble")); err == nil {
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
		dict:         newDictCache(),
		groups:       newGroupTable(),
		resources:    newResourceIndex(),
		catalog:      newCatalog(),
		flushed:      make(chan struct{}),
		partitions:   make(map[uint32]uint64),
		recompressed: make(map[uint32]uint64),
		merged:       make(map[uint32]bool),
		damaged:      make(map[uint32]bool),
		kick:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	db.metrics = newMetrics(db)
	// Both stores share one block cache, sized by Options.CacheBytes.
	cache := pebble.NewCache(opts.CacheBytes)
	defer cache.Unref()
	if db.idx, err = db.openStore("index", indexOptions(opts, cache, db.listener("index"))); err != nil {
		return nil, errors.Join(err, db.closeStores())
	}
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
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.ZstdCompression }
	}
	return po
}

// recompressedProfile compresses the bottom level of the spans store: zstd
// level 7 on whole 256 KiB blocks takes span data of the bench workload from
// about 36.5 to 32 bytes per span, at four times the CPU of level 3, which
// is why cuts do not use it.
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
		// Recompression's compactions are the only ones of note.
		CompactionConcurrencyRange: func() (int, int) { n := recompressWorkers(); return n, n },
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
	if err := db.checkFormat(); err != nil {
		return err
	}
	// Left by a cut or a recompression that a crash interrupted; whatever
	// in them was ingested is in the stores already.
	for _, d := range []string{"ingest", "recompress"} {
		if err := os.RemoveAll(filepath.Join(db.dir, d)); err != nil {
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
	if err := db.groups.load(db.idx); err != nil {
		return err
	}
	if err := db.resources.load(db.idx); err != nil {
		return err
	}
	db.live = newBuffer(last + 1)
	onSync := func(d time.Duration) { db.metrics.walSync.Observe(d.Seconds()) }
	if db.wal, err = wal.Open(filepath.Join(db.dir, "wal"), onSync); err != nil {
		return err
	}
	if err := db.wal.RemoveThrough(rec.WALSegment); err != nil {
		return err
	}
	var batch otlpwire.Batch
	return db.wal.Replay(rec.WALSegment, func(seg uint64, payload []byte) error {
		req, err := s2.Decode(nil, payload)
		if err != nil {
			return fmt.Errorf("replay wal segment %d: %w", seg, err)
		}
		// Spans that have aged out of the retention period since they were
		// acknowledged are dropped here as they would be at ingest.
		if err := otlpwire.Parse(req, &batch, db.NotBefore()); err != nil {
			return fmt.Errorf("replay wal segment %d: %w", seg, err)
		}
		db.live.insert(req, &batch, prepare(&batch, db.resources), db.catalog)
		return nil
	})
}

func (db *DB) checkFormat() error {
	k := keys.Meta("format")
	v, closer, err := db.idx.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return db.idx.Set(k, []byte{FormatVersion}, pebble.Sync)
	}
	if err != nil {
		return fmt.Errorf("read format version: %w", err)
	}
	defer closer.Close()
	if len(v) != 1 || v[0] != FormatVersion {
		return fmt.Errorf("store has format version %v; this cairn reads version %d", v, FormatVersion)
	}
	return nil
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
// deleted here. It also records the newest block of each partition.
//
// Partitions whose span data a damaged file holds are passed over, so that
// the store opens and serves the rest; their newest block stays unknown
// (0), which only keeps them from being recompressed.
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
	prep := prepare(batch, db.resources)
	// The log copies the record, so its buffer goes back to the pool at once.
	encBuf := recordBufs.Get().(*[]byte)
	defer recordBufs.Put(encBuf)
	*encBuf = slices.Grow((*encBuf)[:0], s2.MaxEncodedLen(len(req)))
	rec := s2.Encode((*encBuf)[:cap(*encBuf)], req)

	db.mu.Lock()
	for db.live.bytes >= db.opts.BufferBytes && db.frozen != nil && !db.closed {
		flushed := db.flushed
		db.mu.Unlock()
		select {
		case <-flushed:
		case <-ctx.Done():
			return fmt.Errorf("wait for buffer space: %w", ctx.Err())
		}
		db.mu.Lock()
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
	db.live.insert(req, batch, prep, db.catalog)
	full := db.live.bytes >= db.opts.BufferBytes
	db.mu.Unlock()

	if full {
		select {
		case db.kick <- struct{}{}:
		default:
		}
	}
	if err := w.Wait(); err != nil {
		return fmt.Errorf("sync wal: %w", err)
	}
	return nil
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
		db.readers.Wait()
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
