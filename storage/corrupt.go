package storage

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"cairn/storage/internal/codec"
	"cairn/storage/internal/keys"
)

// CorruptionError is returned by reads of data that a damaged file held:
// the file failed its checksums where the read needed it. Everything else
// is still served; cairn check names the damage and cairn repair drops it.
type CorruptionError struct {
	What string // what could not be read, such as "trace 4bf9…"
	Path string // the damaged file, if known
	Err  error
}

func (e *CorruptionError) Error() string {
	msg := e.What + " is unreadable: "
	if e.Path != "" {
		msg += e.Path + " is damaged: "
	}
	// Pebble joins a carrier of the corruption's details to its error,
	// whose message is only noise after the first line.
	cause, _, _ := strings.Cut(e.Err.Error(), "\n")
	return msg + cause
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// IsCorruption reports whether err is about data that failed its checksums.
func IsCorruption(err error) bool {
	var ce *CorruptionError
	return errors.As(err, &ce) || pebble.IsCorruptionError(err)
}

// contain turns a Pebble corruption error into a CorruptionError naming
// what the read was for; other errors it wraps with what.
func contain(err error, what string) error {
	if err == nil {
		return nil
	}
	var ce *CorruptionError
	if errors.As(err, &ce) || !pebble.IsCorruptionError(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	ce = &CorruptionError{What: what, Err: err}
	if info := pebble.ExtractDataCorruptionInfo(err); info != nil {
		ce.Path = info.Path
	}
	return ce
}

// damage is what has been found damaged since the store opened: files,
// and the keys of their damaged blocks.
type damage struct {
	mu    sync.Mutex
	files []string // sorted
	// blocks is read on every seek that could meet damage, so it is
	// replaced, not changed, under mu, and loaded without it.
	blocks atomic.Pointer[[]damagedBlock]
}

type damagedBlock struct {
	store  string
	lo, hi []byte // keys from lo up to hi
	path   string
	cause  error // a Pebble corruption error
}

// add records a damaged file and reports whether it is new, with the
// files known so far.
func (d *damage) add(path string) (fresh bool, files []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, found := slices.BinarySearch(d.files, path)
	if !found {
		d.files = slices.Insert(d.files, i, path)
	}
	return !found, slices.Clone(d.files)
}

// covering returns the damaged block of a store that holds key k, if any.
func (d *damage) covering(store string, k []byte) *damagedBlock {
	if bs := d.blocks.Load(); bs != nil {
		for i, b := range *bs {
			if b.store == store && bytes.Compare(k, b.lo) >= 0 && bytes.Compare(k, b.hi) < 0 {
				return &(*bs)[i]
			}
		}
	}
	return nil
}

// overlapping returns a damaged block of a store that holds keys in
// [lo, hi), if any.
func (d *damage) overlapping(store string, lo, hi []byte) *damagedBlock {
	if bs := d.blocks.Load(); bs != nil {
		for i, b := range *bs {
			if b.store == store && bytes.Compare(b.lo, hi) < 0 && bytes.Compare(lo, b.hi) < 0 {
				return &(*bs)[i]
			}
		}
	}
	return nil
}

// below returns the damaged block of a store that a reverse seek from k
// would read first, if any: one holding keys just below k.
func (d *damage) below(store string, k []byte) *damagedBlock {
	if bs := d.blocks.Load(); bs != nil {
		for i, b := range *bs {
			if b.store == store && bytes.Compare(b.lo, k) < 0 && bytes.Compare(k, b.hi) <= 0 {
				return &(*bs)[i]
			}
		}
	}
	return nil
}

// findBlocks records the damaged data blocks of a file, so that reads of
// their keys fail at once. Pebble, on each read of a damaged block, looks
// for the one flipped bit that would explain it by trying every bit of the
// block: about a second of CPU for a block of span data or a large
// postings list, which every read that meets the block would cost again.
func (d *damage) findBlocks(store, path string, lo, hi []byte, cause error) {
	found := checkTable(table{store: store, path: path, smallest: lo, largest: hi})
	d.mu.Lock()
	defer d.mu.Unlock()
	var bs []damagedBlock
	if old := d.blocks.Load(); old != nil {
		bs = slices.Clone(*old)
	}
	for _, f := range found {
		if !f.Whole {
			bs = append(bs, damagedBlock{store: store, lo: f.lo, hi: f.hi, path: path, cause: cause})
		}
	}
	d.blocks.Store(&bs)
}

// err is the error of a read that would meet the block.
func (b *damagedBlock) err(what string) error {
	return &CorruptionError{What: what, Path: b.path, Err: b.cause}
}

// listener is the event listener of one of the Pebble stores. Pebble's
// default answer to a failed checksum is Logger.Fatalf, which would end the
// process on the first read of a damaged block, and again on every later
// one; cairn records the damage instead, and the read returns an error.
func (db *DB) listener(store string) *pebble.EventListener {
	return &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			db.metrics.corruptions.WithLabelValues(store).Inc()
			bounds := fmt.Sprintf("%v to %v", keys.Comparer.FormatKey(info.Bounds.Start), keys.Comparer.FormatKey(info.Bounds.End.Key))
			if db.noteDamage(store, info.Path, bounds, info.Details) && !info.IsRemote {
				db.damage.findBlocks(store, info.Path, info.Bounds.Start, info.Bounds.End.Key, info.Details)
			}
		},
		// A compaction that meets a damaged block fails, and Pebble tries
		// its tables again minutes later.
		BackgroundError: func(err error) {
			db.opts.Logger.Error("pebble background error", "store", store, "err", firstLine(err))
		},
		// Pebble calls these on the goroutine that then does the work and
		// ends with it: flushes and compactions, recompression's included,
		// run below reads as ingest's heavy work does.
		FlushBegin:      func(pebble.FlushInfo) { db.opts.Bulk.Demote() },
		CompactionBegin: func(pebble.CompactionInfo) { db.opts.Bulk.Demote() },
	}
}

func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// partitionName is the hour a partition holds, for messages.
func partitionName(p uint32) string {
	return partitionTime(p).Format("2006-01-02T15Z")
}

// noteDamage records a damaged file: the corruption fault names every
// damaged file known, and each is logged once. It reports whether the file
// is new.
func (db *DB) noteDamage(store, path, bounds string, err error) bool {
	fresh, files := db.damage.add(path)
	if !fresh {
		return false
	}
	db.opts.Logger.Error("damaged file: the data it holds cannot be read; the rest is served. Stop cairn and run cairn check, then cairn repair",
		"store", store, "file", path, "keys", bounds, "err", firstLine(err))
	db.faults.set(FaultCorruption, fmt.Sprintf("%d damaged file(s): %s; stop cairn and run cairn check",
		len(files), strings.Join(files, ", ")))
	return true
}

// seekFragment positions it at the first part of the fragment of trace id
// in block b of partition p, and reports whether there is one; nextPart
// then moves to each later part. A part after the first counts as the
// start when the first is gone (cairn repair drops what it cannot read), so
// that the rest is still served.
func (db *DB) seekFragment(it *pebble.Iterator, p uint32, b uint64, id TraceID) (bool, error) {
	k := keys.Data(p, b, id)
	if d := db.damage.covering("spans", k); d != nil {
		return false, d.err(fragmentName(p, b, id))
	}
	if it.SeekGE(k) && (bytes.Equal(it.Key(), k) || keys.IsLaterPart(it.Key(), k)) {
		return db.partReadable(it, p, b, id)
	}
	return false, containIter(it, p, b, id)
}

// nextPart moves it, positioned at a part of the fragment of trace id in
// block b of partition p, to the fragment's next part, and reports
// whether there is one. It does not move past a part that says no other
// follows (codec.Continued): the next key may be in a block that is
// damaged, which this trace's read has no need of.
func (db *DB) nextPart(it *pebble.Iterator, p uint32, b uint64, id TraceID) (bool, error) {
	if !codec.Continued(it.Value()) {
		return false, nil
	}
	// A block known to be damaged is not read again.
	_, _, _, n, err := keys.ParseDataPart(it.Key())
	if err != nil {
		return false, err
	}
	next := keys.DataPart(p, b, id, n+1)
	if d := db.damage.covering("spans", next); d != nil {
		return false, d.err(fragmentName(p, b, id))
	}
	if it.Next() && keys.IsLaterPart(it.Key(), next[:keys.DataLen]) {
		return db.partReadable(it, p, b, id)
	}
	return false, containIter(it, p, b, id)
}

// partReadable checks the part it is at against the damage known.
func (db *DB) partReadable(it *pebble.Iterator, p uint32, b uint64, id TraceID) (bool, error) {
	if d := db.damage.covering("spans", it.Key()); d != nil {
		return false, d.err(fragmentName(p, b, id))
	}
	return true, nil
}

// containIter returns it's error, if any, as a read of the fragment's.
func containIter(it *pebble.Iterator, p uint32, b uint64, id TraceID) error {
	if err := it.Error(); err != nil {
		return contain(err, fragmentName(p, b, id))
	}
	return nil
}

func fragmentName(p uint32, b uint64, id TraceID) string {
	return fmt.Sprintf("trace %x (its spans in partition %s, block %d)", id, partitionName(p), b)
}
