// Package wal is cairn's write-ahead log: numbered segment files of
// CRC-checked records, appended by many writers and made durable by one
// goroutine that fsyncs each group of concurrent appends once.
//
// A record is framed as
//
//	+-------------------+--------------------+-----------------+
//	| length uint32 LE  | crc32c uint32 LE   | payload (length)|
//	+-------------------+--------------------+-----------------+
//
// and a segment is a sequence of records. A record that is cut short or fails
// its checksum can only be a write that was never acknowledged, so replay
// stops at it and truncates the segment there.
package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	headerSize = 8
	suffix     = ".wal"
	// MaxRecord bounds a record's payload so that a corrupt length cannot make
	// replay allocate without limit.
	MaxRecord = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bufs recycles group buffers: every group would otherwise allocate and grow
// one the size of all its records.
var bufs = sync.Pool{New: func() any { return new([]byte) }}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("wal: closed")

// Log is an open write-ahead log.
type Log struct {
	dir    string
	onSync func(time.Duration) // told each group sync's latency; may be nil

	mu      sync.Mutex
	wake    *sync.Cond
	queue   []*batch // appended, not yet taken by the writer
	seg     uint64   // segment that new appends go to
	closed  bool
	err     error // sticky write error: the log accepts nothing after one
	stopped chan struct{}

	f    *os.File // owned by the writer goroutine
	fseg uint64
}

type batch struct {
	seg  uint64
	buf  []byte
	done chan struct{}
	err  error
}

// Waiter reports when an appended record is durable.
type Waiter struct{ b *batch }

// Wait blocks until the record is on stable storage or the write failed.
func (w Waiter) Wait() error {
	<-w.b.done
	return w.b.err
}

// Open opens the log in dir, creating dir if needed. Existing segments are
// left for Replay; new records go to a segment after all of them. onSync, if
// not nil, is told the latency of every sync that makes a group of appends
// durable.
func Open(dir string, onSync func(time.Duration)) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create wal dir: %w", err)
	}
	segs, err := segments(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, onSync: onSync, seg: 1, stopped: make(chan struct{})}
	if len(segs) > 0 {
		l.seg = segs[len(segs)-1] + 1
	}
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
	if l.err != nil {
		return Waiter{}, l.err
	}
	var b *batch
	if n := len(l.queue); n > 0 && l.queue[n-1].seg == l.seg {
		b = l.queue[n-1]
	} else {
		b = &batch{seg: l.seg, buf: (*bufs.Get().(*[]byte))[:0], done: make(chan struct{})}
		l.queue = append(l.queue, b)
	}
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(payload, castagnoli))
	b.buf = append(append(b.buf, h[:]...), payload...)
	l.wake.Signal()
	return Waiter{b}, nil
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
	segs, err := segments(l.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range segs {
		if s > seg {
			break
		}
		if err := os.Remove(l.path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
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
		l.wake.Signal()
	}
	l.mu.Unlock()
	<-l.stopped
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *Log) writer() {
	defer close(l.stopped)
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed {
			l.wake.Wait()
		}
		if len(l.queue) == 0 {
			err := l.closeFile()
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
			return
		}
		taken := l.queue
		l.queue = nil
		failed := l.err
		l.mu.Unlock()

		err := failed
		if err == nil {
			err = l.write(taken)
		}
		if err != nil {
			l.mu.Lock()
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
		}
		for _, b := range taken {
			buf := b.buf
			bufs.Put(&buf)
			b.buf = nil
			b.err = err
			close(b.done)
		}
	}
}

// write appends the batches in order, switching segment files as needed, and
// syncs every file it wrote to before returning.
func (l *Log) write(batches []*batch) error {
	for _, b := range batches {
		if l.f == nil || b.seg != l.fseg {
			if err := l.closeFile(); err != nil {
				return err
			}
			if err := l.create(b.seg); err != nil {
				return err
			}
		}
		if _, err := l.f.Write(b.buf); err != nil {
			return fmt.Errorf("write wal segment: %w", err)
		}
	}
	start := time.Now()
	err := syncFile(l.f)
	if l.onSync != nil {
		l.onSync(time.Since(start))
	}
	return err
}

func (l *Log) create(seg uint64) error {
	f, err := os.OpenFile(l.path(seg), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create wal segment: %w", err)
	}
	// The new file's name must be durable before any record in it is
	// acknowledged.
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	l.f, l.fseg = f, seg
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
	return filepath.Join(l.dir, fmt.Sprintf("%020d%s", seg, suffix))
}

// Replay calls fn for every intact record of every segment numbered above
// after, in order. A segment's torn tail is truncated away.
func (l *Log) Replay(after uint64, fn func(seg uint64, payload []byte) error) error {
	segs, err := segments(l.dir)
	if err != nil {
		return err
	}
	for _, s := range segs {
		if s <= after {
			continue
		}
		if err := replaySegment(l.path(s), func(p []byte) error { return fn(s, p) }); err != nil {
			return err
		}
	}
	return nil
}

func replaySegment(path string, fn func([]byte) error) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open wal segment: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var (
		off     int64
		h       [headerSize]byte
		payload []byte
	)
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			break // torn header
		}
		n := binary.LittleEndian.Uint32(h[0:])
		if n == 0 || n > MaxRecord {
			break // zeroed or garbage tail
		}
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			break
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
			break
		}
		if err := fn(payload); err != nil {
			return err
		}
		off += headerSize + int64(n)
	}
	if err := f.Truncate(off); err != nil {
		return fmt.Errorf("truncate torn wal segment: %w", err)
	}
	return syncFile(f)
}

func segments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list wal dir: %w", err)
	}
	var segs []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), suffix)
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

func syncFile(f *os.File) error {
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("sync wal segment: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open wal dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync wal dir: %w", err)
	}
	return nil
}
