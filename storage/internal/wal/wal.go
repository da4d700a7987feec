// Package wal is cairn's write-ahead log: numbered segment files of
// CRC-checked records, appended by many writers and made durable by one
// goroutine that fsyncs each group of concurrent appends once.
//
// A segment (version 2) is a header and a sequence of records:
//
//	segment := "cairnwal"  version=2:uint32le  record*
//	record  := length:uint32le  crc32c(payload):uint32le  crc32c(length, payload crc):uint32le
//	           payload[length]
//
// Replay checks every record and skips a damaged one, resynchronising on the
// next intact frame: it tries each following byte offset in turn. The header
// checksum makes each try cost one checksum of 8 bytes, so a scan is linear in
// the bytes skipped; without it, every offset whose 4 bytes read as a
// plausible length would cost a checksum of up to that many bytes: for
// random bytes, about 2^45 bytes of checksumming to cross a damaged 64 MiB
// segment. A false frame
// in damaged bytes must match both checksums: 2^-64 per offset tried.
//
// A failed write or sync fails the appends of its group only: the next group
// is written from the end of the last good one, over whatever failed writes
// left, and zeros what they left beyond it. A segment thus holds records of
// groups that were written whole, then possibly the remains of failed or
// torn writes since the last good one. Those may hold whole records that
// were never acknowledged, after partial ones: replay returns them, as it
// would any write the disk kept but the writer never heard was durable
// (a client that retries such an export has it stored twice, and reads
// drop the duplicate spans).
// After a failure the log also tries the disk by itself, every second, by
// writing and syncing zeros where the next group goes, so that it finds out
// it has recovered without waiting for an append; zeros at the end of a
// segment are therefore not a loss.
//
// Version 1 segments (no segment header; record headers of length and payload
// checksum only) are replayed up to their first damaged record.
package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const (
	suffix = ".wal"
	// MaxRecord bounds a record's payload so that a corrupt length cannot make
	// replay allocate without limit.
	MaxRecord = 1 << 30

	version      = 2
	headerSize   = 12 // record header
	segmentStart = 12 // segment header: magic and version
	v1HeaderSize = 8
)

// magic opens every segment of version 2 or later. Read as a version 1
// record length, its first four bytes exceed MaxRecord, so a version 1
// segment never starts with it.
var magic = []byte("cairnwal")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bufs recycles group buffers: every group would otherwise allocate and grow
// one the size of all its records.
var bufs = sync.Pool{New: func() any { return new([]byte) }}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("wal: closed")

// Options configures a Log.
type Options struct {
	// FS is the file system the log's segments live on.
	//
	// The default is vfs.Default.
	FS vfs.FS

	// KeepFree is how many bytes of its file system the log leaves free: a
	// group that would leave less fails as if the disk were full, so that
	// what must still be written when it is (Pebble's metadata, whose
	// failed writes Pebble takes for fatal) has room.
	//
	// The default is 0: the log writes until the disk is full.
	KeepFree int64

	// OnWrite, if not nil, is told, from one goroutine and in order, how
	// each group of appends fared: the latency of the sync that made it
	// durable, or the error that failed it.
	OnWrite func(sync time.Duration, err error)

	// After is the newest segment number the log's owner has recorded as
	// done with (replayed into durable storage, or removed), whose file may
	// be gone: new segments are numbered after it as well as after every
	// segment in the directory. Without it, a log whose owner removed every
	// segment would number the next one 1 again, and the owner, which
	// takes records of segments up to After as done, would drop them.
	//
	// The default is 0.
	After uint64
}

// Log is an open write-ahead log.
type Log struct {
	dir      string
	fs       vfs.FS
	keepFree int64
	onWrite  func(time.Duration, error)

	mu      sync.Mutex
	wake    *sync.Cond
	queue   []*batch // appended, not yet taken by the writer
	seg     uint64   // segment that new appends go to
	closed  bool
	stopped chan struct{}
	// probeDue is set by retry, a timer started after a failed write, to
	// have the writer try the disk again although nothing is appended.
	probeDue bool
	retry    *time.Timer
	// closeErr is the writer's error closing the last segment, read after
	// stopped is closed.
	closeErr error

	// Owned by the writer goroutine.
	f    vfs.File
	fseg uint64
	off  int64 // where the next group is written in f: the end of the last good one
	// dirty is how far failed writes may have left bytes in f past off.
	dirty int64
	// need is the size of the last group that found too little space: a
	// probe must find room for it before the log counts as writable again.
	need int
}

type batch struct {
	seg  uint64
	buf  []byte
	done chan struct{}
	err  error
}

// Waiter reports when an appended record is durable.
type Waiter struct{ b *batch }

// Wait blocks until the record is on stable storage or the write failed. A
// failed record may still be replayed after a restart, as an unacknowledged
// write may be.
func (w Waiter) Wait() error {
	<-w.b.done
	return w.b.err
}

// Open opens the log in dir, creating dir if needed. Existing segments are
// left for Replay; new records go to a segment after all of them and after
// o.After.
func Open(dir string, o Options) (*Log, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if err := o.FS.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create wal dir: %w", err)
	}
	segs, err := segments(o.FS, dir)
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, fs: o.FS, keepFree: o.KeepFree, onWrite: o.OnWrite, seg: 1, stopped: make(chan struct{})}
	if len(segs) > 0 {
		l.seg = segs[len(segs)-1] + 1
	}
	l.seg = max(l.seg, o.After+1)
	l.wake = sync.NewCond(&l.mu)
	go l.writer()
	return l, nil
}

// Segment is the number of the segment that new appends go to.
func (l *Log) Segment() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seg
}

// Append queues a record and returns a Waiter for its durability. Records
// appended before a Rotate land in segments up to the one Rotate returns.
func (l *Log) Append(payload []byte) (Waiter, error) {
	if len(payload) == 0 || len(payload) > MaxRecord {
		return Waiter{}, fmt.Errorf("wal: record of %d bytes", len(payload))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Waiter{}, ErrClosed
	}
	var b *batch
	if n := len(l.queue); n > 0 && l.queue[n-1].seg == l.seg {
		b = l.queue[n-1]
	} else {
		b = &batch{seg: l.seg, buf: (*bufs.Get().(*[]byte))[:0], done: make(chan struct{})}
		l.queue = append(l.queue, b)
	}
	b.buf = appendRecord(b.buf, payload)
	l.wake.Signal()
	return Waiter{b}, nil
}

func appendRecord(dst, payload []byte) []byte {
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(h[8:], crc32.Checksum(h[:8], castagnoli))
	return append(append(dst, h[:]...), payload...)
}

// Rotate starts a new segment for subsequent appends and returns the number of
// the last segment that holds records appended before it.
func (l *Log) Rotate() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	sealed := l.seg
	l.seg++
	return sealed
}

// RemoveThrough deletes every segment numbered seg or lower. The caller
// guarantees their records are persisted elsewhere.
func (l *Log) RemoveThrough(seg uint64) error {
	segs, err := segments(l.fs, l.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range segs {
		if s > seg {
			break
		}
		if err := l.fs.Remove(l.path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove wal segment: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close waits for queued records to be written and synced, then closes the
// log. It is safe to call more than once.
func (l *Log) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		if l.retry != nil {
			l.retry.Stop()
		}
		l.wake.Signal()
	}
	l.mu.Unlock()
	<-l.stopped
	return l.closeErr
}

// probeInterval is how soon after a failed write the log tries the disk
// again by itself, and then how often while it keeps failing: a store whose
// readiness is false may get no appends to find out it has recovered.
const probeInterval = time.Second

// probeSize is how many zero bytes a probe writes and syncs.
const probeSize = 4 << 10

var zeros [probeSize]byte

func (l *Log) writer() {
	defer close(l.stopped)
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed && !l.probeDue {
			l.wake.Wait()
		}
		taken, seg := l.queue, l.seg
		l.queue, l.probeDue = nil, false
		closed := l.closed
		l.mu.Unlock()
		if len(taken) == 0 && closed {
			l.closeErr = l.closeFile()
			return
		}

		var (
			took time.Duration
			err  error
		)
		if len(taken) > 0 {
			took, err = l.write(taken)
		} else {
			took, err = l.probe(seg)
		}
		if l.onWrite != nil {
			l.onWrite(took, err)
		}
		l.scheduleProbe(err != nil)
		for _, b := range taken {
			buf := b.buf
			bufs.Put(&buf)
			b.buf = nil
			b.err = err
			close(b.done)
		}
	}
}

// scheduleProbe arms the probe timer after a failure and disarms it after a
// success.
func (l *Log) scheduleProbe(failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case !failed || l.closed:
		if l.retry != nil {
			l.retry.Stop()
		}
	case l.retry == nil:
		l.retry = time.AfterFunc(probeInterval, l.dueProbe)
	default:
		l.retry.Reset(probeInterval)
	}
}

func (l *Log) dueProbe() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.probeDue = true
	l.wake.Signal()
}

// probe finds out whether a group can be written again: it writes zeros
// where the next group goes, in the segment appends go to, and syncs them.
// Replay takes zeros at the end of a segment for space nothing was written
// to.
func (l *Log) probe(seg uint64) (time.Duration, error) {
	if err := l.checkSpace(max(probeSize, l.need)); err != nil {
		return 0, err
	}
	if l.f == nil || l.fseg != seg {
		if err := l.closeFile(); err != nil {
			return 0, err
		}
		if err := l.create(seg); err != nil {
			return 0, err
		}
	}
	// Zeros over all that failed writes left too, so that replay after a
	// crash takes it for space nothing was written to, not damage.
	z := zeros[:]
	if l.dirty-l.off > int64(len(z)) {
		z = make([]byte, l.dirty-l.off)
	}
	if n, err := l.f.WriteAt(z, l.off); err != nil {
		l.dirty = max(l.dirty, l.off+int64(n))
		return 0, fmt.Errorf("write wal segment: %w", err)
	}
	start := time.Now()
	if err := syncFile(l.f); err != nil {
		return 0, err
	}
	l.dirty, l.need = 0, 0
	return time.Since(start), nil
}

// write appends the batches in order, switching segment files as needed, and
// syncs every file it wrote to before returning the latency of its last
// sync. It advances the offset of the next group only once the whole group
// is durable, so that after a failure the next group overwrites what this
// one left, and zeros what it left beyond, so that unacknowledged records
// do not outlive a recovery.
func (l *Log) write(batches []*batch) (time.Duration, error) {
	size := 0
	for _, b := range batches {
		size += len(b.buf)
	}
	if err := l.checkSpace(size); err != nil {
		l.need = size
		return 0, err
	}
	l.need = 0
	pos := l.off
	for _, b := range batches {
		if l.f == nil || b.seg != l.fseg {
			if err := l.closeFile(); err != nil {
				return 0, err
			}
			if err := l.create(b.seg); err != nil {
				return 0, err
			}
			pos = l.off
		}
		n, err := l.f.WriteAt(b.buf, pos)
		if err != nil {
			l.dirty = max(l.dirty, pos+int64(n))
			return 0, fmt.Errorf("write wal segment: %w", err)
		}
		pos += int64(len(b.buf))
	}
	if l.dirty > pos {
		n, err := l.f.WriteAt(make([]byte, l.dirty-pos), pos)
		if err != nil {
			l.dirty = max(l.dirty, pos+int64(n))
			return 0, fmt.Errorf("write wal segment: %w", err)
		}
	}
	start := time.Now()
	if err := syncFile(l.f); err != nil {
		l.dirty = max(l.dirty, pos)
		return 0, err
	}
	l.off, l.dirty = pos, 0
	return time.Since(start), nil
}

// checkSpace fails, as a full disk would, if writing n bytes would leave
// less than keepFree free. A file system that cannot tell is let be.
func (l *Log) checkSpace(n int) error {
	if l.keepFree <= 0 {
		return nil
	}
	u, err := l.fs.GetDiskUsage(l.dir)
	if err != nil || int64(u.AvailBytes) >= int64(n)+l.keepFree {
		return nil
	}
	return fmt.Errorf("write wal segment: %d MiB free, under the %d MiB kept free: %w",
		u.AvailBytes>>20, l.keepFree>>20, syscall.ENOSPC)
}

// create starts segment seg with its header. A file left by an earlier
// failed create holds nothing acknowledged and is replaced.
func (l *Log) create(seg uint64) error {
	f, err := l.fs.Create(l.path(seg), vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("create wal segment: %w", err)
	}
	h := binary.LittleEndian.AppendUint32(slices.Clip(magic), version)
	if _, err := f.WriteAt(h, 0); err != nil {
		f.Close()
		return fmt.Errorf("create wal segment: %w", err)
	}
	// The new file's name must be durable before any record in it is
	// acknowledged; its header is synced with the first group.
	if err := l.syncDir(); err != nil {
		f.Close()
		return err
	}
	l.f, l.fseg, l.off, l.dirty = f, seg, segmentStart, 0
	return nil
}

func (l *Log) closeFile() error {
	if l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	err := syncFile(f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close wal segment: %w", cerr)
	}
	return err
}

func (l *Log) path(seg uint64) string {
	return l.fs.PathJoin(l.dir, segmentName(seg))
}

func segmentName(seg uint64) string { return fmt.Sprintf("%020d%s", seg, suffix) }

// Loss is a stretch of a segment that replay skipped because it held no
// intact record.
type Loss struct {
	Segment string // file name
	Offset  int64
	Bytes   int64
	// Records is how many records are known to be lost: those whose header
	// is intact in the stretch. A damaged header hides its record.
	Records int
	// Tail is set when no intact record follows the stretch: typically a
	// write cut short by a crash or a failed write, neither acknowledged.
	Tail bool
	Why  string
}

// Replay calls fn for every intact record of every segment numbered above
// after, in order, and returns the stretches of the segments it skipped.
// Segments are only read: they are never appended to after Open.
func (l *Log) Replay(after uint64, fn func(seg uint64, payload []byte) error) ([]Loss, error) {
	segs, err := segments(l.fs, l.dir)
	if err != nil {
		return nil, err
	}
	var losses []Loss
	for _, s := range segs {
		if s <= after {
			continue
		}
		data, err := l.read(s)
		if err != nil {
			return losses, err
		}
		lost, err := scan(data, func(p []byte) error { return fn(s, p) })
		for i := range lost {
			lost[i].Segment = segmentName(s)
		}
		losses = append(losses, lost...)
		if err != nil {
			return losses, err
		}
	}
	return losses, nil
}

func (l *Log) read(seg uint64) ([]byte, error) {
	f, err := l.fs.Open(l.path(seg))
	if err != nil {
		return nil, fmt.Errorf("open wal segment: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read wal segment: %w", err)
	}
	return data, nil
}

// Check returns the stretches of a segment's contents that Replay would
// skip, and why, without replaying them: for checking a log offline.
func Check(data []byte) []Loss {
	losses, _ := scan(data, func([]byte) error { return nil })
	return losses
}

// scan calls fn for each intact record of a segment's contents and returns
// the stretches it skipped. A segment without an intact header of this
// version is read as version 1 if its first record is an intact version 1
// record, and otherwise as a version 2 segment whose header was damaged or
// cut short.
func scan(data []byte, fn func([]byte) error) ([]Loss, error) {
	if len(data) >= segmentStart && bytes.HasPrefix(data, magic) && binary.LittleEndian.Uint32(data[len(magic):]) == version {
		return scanRecords(data, segmentStart, fn)
	}
	if _, ok := frameV1(data, 0); ok {
		return scanV1(data, fn)
	}
	losses, err := scanRecords(data, 0, fn)
	if len(losses) > 0 && losses[0].Offset == 0 {
		losses[0].Why = "segment header damaged or cut short"
	}
	return losses, err
}

func scanRecords(data []byte, off int, fn func([]byte) error) ([]Loss, error) {
	var losses []Loss
	for off < len(data) {
		if p, ok := frame(data, off); ok {
			if err := fn(p); err != nil {
				return losses, err
			}
			off += headerSize + len(p)
			continue
		}
		loss := Loss{Offset: int64(off), Why: damage(data, off)}
		if headerIntact(data, off) {
			loss.Records++
		}
		next := off + 1
		for ; next < len(data); next++ {
			// Most offsets of damaged bytes give a length past the end,
			// which is cheaper to rule out than a header checksum.
			if n := len(data) - next - headerSize; n <= 0 || int(binary.LittleEndian.Uint32(data[next:])) > n ||
				!headerIntact(data, next) {
				continue
			}
			if _, ok := frame(data, next); ok {
				break
			}
			loss.Records++
		}
		loss.Bytes = int64(next - off)
		loss.Tail = next == len(data)
		if !loss.Tail || slices.ContainsFunc(data[off:], func(b byte) bool { return b != 0 }) {
			losses = append(losses, loss)
		}
		off = next
	}
	return losses, nil
}

// headerIntact reports whether a record header at off passes its checksum
// and gives a possible length.
func headerIntact(data []byte, off int) bool {
	if len(data)-off < headerSize {
		return false
	}
	h := data[off : off+headerSize]
	n := binary.LittleEndian.Uint32(h[0:])
	return n > 0 && n <= MaxRecord && crc32.Checksum(h[:8], castagnoli) == binary.LittleEndian.Uint32(h[8:])
}

// frame returns the payload of the intact record at off, if there is one.
func frame(data []byte, off int) ([]byte, bool) {
	if !headerIntact(data, off) {
		return nil, false
	}
	n := int(binary.LittleEndian.Uint32(data[off:]))
	if len(data)-off-headerSize < n {
		return nil, false
	}
	p := data[off+headerSize : off+headerSize+n]
	return p, crc32.Checksum(p, castagnoli) == binary.LittleEndian.Uint32(data[off+4:])
}

// damage says why the record at off is not intact.
func damage(data []byte, off int) string {
	switch {
	case len(data)-off < headerSize:
		return "record header cut short"
	case !headerIntact(data, off):
		return "record header damaged"
	case len(data)-off-headerSize < int(binary.LittleEndian.Uint32(data[off:])):
		return "record cut short"
	}
	return "record checksum mismatch"
}

// scanV1 replays a version 1 segment up to its first damaged record.
func scanV1(data []byte, fn func([]byte) error) ([]Loss, error) {
	off := 0
	for off < len(data) {
		p, ok := frameV1(data, off)
		if !ok {
			return []Loss{{Offset: int64(off), Bytes: int64(len(data) - off), Tail: true,
				Why: "damaged record in a version 1 segment, which is not read past one"}}, nil
		}
		if err := fn(p); err != nil {
			return nil, err
		}
		off += v1HeaderSize + len(p)
	}
	return nil, nil
}

// frameV1 returns the payload of the intact version 1 record at off, if
// there is one.
func frameV1(data []byte, off int) ([]byte, bool) {
	if len(data)-off < v1HeaderSize {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(data[off:])
	if n == 0 || n > MaxRecord || len(data)-off-v1HeaderSize < int(n) {
		return nil, false
	}
	p := data[off+v1HeaderSize : off+v1HeaderSize+int(n)]
	return p, crc32.Checksum(p, castagnoli) == binary.LittleEndian.Uint32(data[off+4:])
}

func segments(fs vfs.FS, dir string) ([]uint64, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("list wal dir: %w", err)
	}
	var segs []uint64
	for _, name := range names {
		name, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 64); err == nil {
			segs = append(segs, n)
		}
	}
	slices.Sort(segs)
	return segs, nil
}

// syncFile uses fdatasync, which skips the inode metadata flush that fsync
// does; segment size changes are still made durable, which is all replay
// needs.
func syncFile(f vfs.File) error {
	if err := f.SyncData(); err != nil {
		return fmt.Errorf("sync wal segment: %w", err)
	}
	return nil
}

func (l *Log) syncDir() error {
	d, err := l.fs.OpenDir(l.dir)
	if err != nil {
		return fmt.Errorf("open wal dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync wal dir: %w", err)
	}
	return nil
}
