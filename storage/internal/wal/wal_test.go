package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type rec struct {
	seg     uint64
	payload string
}

func replayAll(t testing.TB, l *Log, after uint64) ([]rec, []Loss) {
	t.Helper()
	var got []rec
	losses, err := l.Replay(after, func(seg uint64, p []byte) error {
		got = append(got, rec{seg, string(p)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, losses
}

func open(t testing.TB, dir string, o Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func appendWait(l *Log, p string) error {
	w, err := l.Append([]byte(p))
	if err != nil {
		return err
	}
	return w.Wait()
}

func TestAppendRotateReplay(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, Options{})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := appendWait(l, fmt.Sprintf("r%02d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	sealed := l.Rotate()
	if err := appendWait(l, "after"); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Append([]byte("x")); err != ErrClosed {
		t.Fatalf("Append after Close: %v", err)
	}

	l = open(t, dir, Options{})
	defer l.Close()
	got, losses := replayAll(t, l, 0)
	if len(got) != 51 || got[50] != (rec{sealed + 1, "after"}) || len(losses) > 0 {
		t.Fatalf("replayed %d records, last %+v, losses %v", len(got), got[len(got)-1], losses)
	}
	if after, _ := replayAll(t, l, sealed); len(after) != 1 {
		t.Fatalf("replay after sealed segment: %v", after)
	}
	if err := l.RemoveThrough(sealed); err != nil {
		t.Fatal(err)
	}
	if got, _ := replayAll(t, l, 0); len(got) != 1 {
		t.Fatalf("after RemoveThrough: %v", got)
	}
	if l.Segment() <= sealed+1 {
		t.Fatalf("reopened log appends to segment %d, not after existing ones", l.Segment())
	}
}

// TestNumbersFollowAfter checks that new segments come after Options.After
// even when the directory holds none, or only older ones: an owner that
// removed every segment it had replayed must not see their numbers again.
func TestNumbersFollowAfter(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, Options{After: 5})
	if err := appendWait(l, "a"); err != nil {
		t.Fatal(err)
	}
	if got := l.Segment(); got != 6 {
		t.Fatalf("empty log with After 5 appends to segment %d, want 6", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, dir, Options{After: 3}) // segment 6 is on disk
	defer l.Close()
	if got := l.Segment(); got != 7 {
		t.Fatalf("log holding segment 6, After 3, appends to segment %d, want 7", got)
	}
	if got, _ := replayAll(t, l, 5); len(got) != 1 || got[0] != (rec{6, "a"}) {
		t.Fatalf("replay after 5: %v", got)
	}
}

// writeSegment writes records, one append each, and returns the segment's
// path and where each record starts.
func writeSegment(t *testing.T, dir string, payloads []string) (string, []int) {
	t.Helper()
	l := open(t, dir, Options{})
	for _, p := range payloads {
		if err := appendWait(l, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	starts := []int{segmentStart}
	for _, p := range payloads {
		starts = append(starts, starts[len(starts)-1]+headerSize+len(p))
	}
	return l.path(1), starts
}

func payloadsOf(got []rec) []string {
	var out []string
	for _, r := range got {
		out = append(out, r.payload)
	}
	return out
}

func TestTornTailIsReported(t *testing.T) {
	dir := t.TempDir()
	path, starts := writeSegment(t, dir, []string{"one", "two", "three"})
	full, _ := os.ReadFile(path)
	for cut := starts[2] + 1; cut < len(full); cut++ {
		if err := os.WriteFile(path, full[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		l := open(t, dir, Options{})
		got, losses := replayAll(t, l, 0)
		l.Close()
		want := Loss{Segment: filepath.Base(path), Offset: int64(starts[2]), Bytes: int64(cut - starts[2]), Tail: true}
		if len(losses) == 1 {
			want.Records, want.Why = losses[0].Records, losses[0].Why
		}
		if !slices.Equal(payloadsOf(got), []string{"one", "two"}) || len(losses) != 1 || losses[0] != want {
			t.Fatalf("cut at %d: replayed %v, losses %+v; want %+v", cut, got, losses, want)
		}
	}
}

// Zeros after the last record are where a probe wrote, not a loss.
func TestZerosAtTheEndAreNoLoss(t *testing.T) {
	dir := t.TempDir()
	path, _ := writeSegment(t, dir, []string{"one", "two"})
	data, _ := os.ReadFile(path)
	os.WriteFile(path, append(data, make([]byte, probeSize)...), 0o644)
	l := open(t, dir, Options{})
	defer l.Close()
	got, losses := replayAll(t, l, 0)
	if !slices.Equal(payloadsOf(got), []string{"one", "two"}) || len(losses) > 0 {
		t.Fatalf("replayed %v, losses %+v", payloadsOf(got), losses)
	}
}

func TestDamagedRecordIsSkipped(t *testing.T) {
	var payloads []string
	for i := range 20 {
		payloads = append(payloads, fmt.Sprintf("record %02d %s", i, bytes.Repeat([]byte{'x'}, i*7)))
	}
	for _, tc := range []struct {
		name    string
		at      func(starts []int) int // byte to flip
		records int                    // known lost
		why     string
	}{
		{"payload", func(s []int) int { return s[5] + headerSize + 3 }, 1, "record checksum mismatch"},
		{"length", func(s []int) int { return s[5] + 1 }, 0, "record header damaged"},
		{"checksum", func(s []int) int { return s[5] + 5 }, 0, "record header damaged"},
		{"header checksum", func(s []int) int { return s[5] + 9 }, 0, "record header damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path, starts := writeSegment(t, dir, payloads)
			data, _ := os.ReadFile(path)
			data[tc.at(starts)] ^= 0x10
			os.WriteFile(path, data, 0o644)
			l := open(t, dir, Options{})
			defer l.Close()
			got, losses := replayAll(t, l, 0)
			want := slices.Delete(slices.Clone(payloads), 5, 6)
			if !slices.Equal(payloadsOf(got), want) {
				t.Fatalf("replayed %v", payloadsOf(got))
			}
			wantLoss := Loss{Segment: filepath.Base(path), Offset: int64(starts[5]), Bytes: int64(starts[6] - starts[5]),
				Records: tc.records, Why: tc.why}
			if len(losses) != 1 || losses[0] != wantLoss {
				t.Fatalf("losses %+v, want %+v", losses, wantLoss)
			}
		})
	}
}

func TestVersion1SegmentReplays(t *testing.T) {
	dir := t.TempDir()
	var seg []byte
	for _, p := range []string{"one", "two"} {
		seg = binary.LittleEndian.AppendUint32(seg, uint32(len(p)))
		seg = binary.LittleEndian.AppendUint32(seg, crc32.Checksum([]byte(p), castagnoli))
		seg = append(seg, p...)
	}
	seg = append(seg, 9, 0, 0) // torn
	os.WriteFile(filepath.Join(dir, segmentName(4)), seg, 0o644)
	l := open(t, dir, Options{})
	defer l.Close()
	got, losses := replayAll(t, l, 0)
	if !slices.Equal(payloadsOf(got), []string{"one", "two"}) || len(losses) != 1 || losses[0].Bytes != 3 || !losses[0].Tail {
		t.Fatalf("replayed %v, losses %+v", got, losses)
	}
	if l.Segment() != 5 {
		t.Fatalf("appends go to segment %d", l.Segment())
	}
}

// faultyFS fails writes and creates of files in the log while on, and
// syncs while syncs is, with err; a failed write first writes half its
// bytes, as a write that runs out of space does.
type faultyFS struct {
	vfs.FS
	on, syncs atomic.Bool
	err       error
}

type faultyFile struct {
	vfs.File
	fs *faultyFS
}

func (fs *faultyFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if fs.on.Load() {
		return nil, &os.PathError{Op: "open", Path: name, Err: fs.err}
	}
	f, err := fs.FS.Create(name, c)
	return &faultyFile{f, fs}, err
}

func (f *faultyFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.on.Load() {
		n, _ := f.File.WriteAt(p[:len(p)/2], off)
		return n, &os.PathError{Op: "write", Path: "segment", Err: f.fs.err}
	}
	return f.File.WriteAt(p, off)
}

func (f *faultyFile) SyncData() error {
	if f.fs.syncs.Load() {
		return &os.PathError{Op: "sync", Path: "segment", Err: f.fs.err}
	}
	return f.File.SyncData()
}

func TestFailedWritesAreNotSticky(t *testing.T) {
	for _, errno := range []error{syscall.ENOSPC, syscall.EMFILE} {
		t.Run(errno.Error(), func(t *testing.T) {
			dir := t.TempDir()
			fs := &faultyFS{FS: vfs.Default, err: errno}
			var failures, successes atomic.Int32
			l := open(t, dir, Options{FS: fs, OnWrite: func(_ time.Duration, err error) {
				if err != nil {
					failures.Add(1)
				} else {
					successes.Add(1)
				}
			}})
			var acked []string
			write := func(p string) error {
				err := appendWait(l, p)
				if err == nil {
					acked = append(acked, p)
				}
				return err
			}
			for i := range 3 {
				if err := write(fmt.Sprintf("before %d %s", i, bytes.Repeat([]byte{'b'}, 100))); err != nil {
					t.Fatal(err)
				}
			}
			fs.on.Store(true)
			for i := range 3 {
				err := write(fmt.Sprintf("failed %d %s", i, bytes.Repeat([]byte{'f'}, 300)))
				if !errors.Is(err, errno) {
					t.Fatalf("write while failing: %v", err)
				}
			}
			fs.on.Store(false)
			// The log finds out by itself that it can write again.
			for successes.Load() == 3 {
				time.Sleep(time.Millisecond)
			}
			if err := write("after"); err != nil {
				t.Fatalf("write after the fault cleared: %v", err)
			}
			// A new segment's create fails too, and is retried.
			l.Rotate()
			fs.on.Store(true)
			if err := write("new segment"); !errors.Is(err, errno) {
				t.Fatalf("write to a new segment while failing: %v", err)
			}
			fs.on.Store(false)
			if err := write("new segment, retried"); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if failures.Load() < 4 || successes.Load() < 6 {
				t.Fatalf("OnWrite saw %d failures and %d successes", failures.Load(), successes.Load())
			}
			l = open(t, dir, Options{})
			defer l.Close()
			got, losses := replayAll(t, l, 0)
			if !slices.Equal(payloadsOf(got), acked) {
				t.Fatalf("replayed %v, acknowledged %v", payloadsOf(got), acked)
			}
			// At most the remains of the failed writes past the last good
			// record.
			if len(losses) > 1 || len(losses) == 1 && !losses[0].Tail {
				t.Fatalf("losses %+v", losses)
			}
		})
	}
}

// A failed sync fails its group; the next group rewrites from the same
// offset and zeros what is left of the failed one: every acknowledged
// record replays, and the unacknowledged one does not.
func TestFailedSyncIsRetried(t *testing.T) {
	dir := t.TempDir()
	inj := &errorfs.Toggle{Injector: errorfs.ErrInjected}
	l := open(t, dir, Options{FS: errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind != errorfs.OpFileSyncData {
			return nil
		}
		return inj.MaybeError(op)
	}))})
	if err := appendWait(l, "one"); err != nil {
		t.Fatal(err)
	}
	inj.On()
	if err := appendWait(l, "unsynced"); err == nil {
		t.Fatal("append acknowledged despite a failed sync")
	}
	inj.Off()
	if err := appendWait(l, "two"); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = open(t, dir, Options{})
	defer l.Close()
	got, losses := replayAll(t, l, 0)
	if !slices.Equal(payloadsOf(got), []string{"one", "two"}) || len(losses) > 0 {
		t.Fatalf("replayed %v, losses %+v", payloadsOf(got), losses)
	}
}

// TestRandomFaultsLoseNothingAcknowledged appends from several goroutines
// while writes and syncs fail and recover at random and segments rotate,
// and checks against the list of what was appended and acknowledged that
// replay returns every acknowledged record and nothing that was not
// appended.
func TestRandomFaultsLoseNothingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	fs := &faultyFS{FS: vfs.Default, err: syscall.ENOSPC}
	l := open(t, dir, Options{FS: fs})
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		mu       sync.Mutex
		acked    = map[string]bool{}
		appended = map[string]bool{}
	)
	for step := range 300 {
		switch r := rng.IntN(20); {
		case r == 0:
			fs.on.Store(!fs.on.Load())
		case r == 1:
			fs.syncs.Store(!fs.syncs.Load())
		case r == 2:
			l.Rotate()
		}
		var wg sync.WaitGroup
		for i := range 1 + rng.IntN(4) {
			p := fmt.Sprintf("step %03d.%d %s", step, i, bytes.Repeat([]byte{'x'}, rng.IntN(600)))
			mu.Lock()
			appended[p] = true
			mu.Unlock()
			wg.Go(func() {
				if appendWait(l, p) == nil {
					mu.Lock()
					acked[p] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	fs.on.Store(false)
	fs.syncs.Store(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, dir, Options{})
	defer l.Close()
	got, losses := replayAll(t, l, 0)
	replayed := map[string]bool{}
	for _, r := range got {
		if !appended[r.payload] {
			t.Fatalf("replayed %q, never appended", r.payload)
		}
		replayed[r.payload] = true
	}
	for p := range acked {
		if !replayed[p] {
			t.Fatalf("acknowledged %q lost", p)
		}
	}
	t.Logf("%d appended, %d acknowledged, %d replayed, %d tails skipped", len(appended), len(acked), len(got), len(losses))
}

// FuzzReplay builds a segment from records (the payload bytes cut into
// records at the lengths given by sizes), damages it by xoring the given
// bytes at the given offsets and truncating it, and checks that replay
// neither fails nor panics, replays every record the damage did not touch,
// in order, and accounts for every byte. Raw segment contents are replayed
// too, which must neither fail nor panic.
func FuzzReplay(f *testing.F) {
	f.Add([]byte("abcdefghijklmnopqrstuvwxyz"), []byte{3, 5, 0, 7}, []byte{0, 20, 0xff}, uint16(0), false)
	f.Add([]byte("abcdefghijklmnopqrstuvwxyz"), []byte{1, 1, 1, 1, 1}, []byte{0, 13, 1, 0, 40, 0x80}, uint16(7), false)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, []byte{}, []byte{}, uint16(0), true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, []byte{}, []byte{}, uint16(0), true)
	f.Add([]byte("cairnwal\x02\x00\x00\x00\x03\x00\x00\x00"), []byte{}, []byte{}, uint16(0), true)
	f.Fuzz(func(t *testing.T, payload, sizes, damage []byte, trunc uint16, raw bool) {
		seg, starts := payload, []int(nil)
		if !raw {
			seg, starts = buildSegment(payload, sizes)
		}
		clean := slices.Clone(seg)
		touched := make([]bool, len(seg))
		for ; len(damage) >= 3; damage = damage[3:] {
			at := int(binary.LittleEndian.Uint16(damage)) % max(1, len(seg))
			if len(seg) > 0 && damage[2] != 0 {
				seg[at] ^= damage[2]
				touched[at] = true
			}
		}
		if int(trunc) < len(seg) && trunc > 0 {
			seg = seg[:len(seg)-int(trunc)]
		}
		var got [][]byte
		losses, err := scan(seg, func(p []byte) error {
			got = append(got, p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if raw {
			return
		}
		var want [][]byte
		for i := 0; i+1 < len(starts); i++ {
			a, b := starts[i], starts[i+1]
			if b <= len(seg) && !slices.Contains(touched[a:b], true) {
				want = append(want, clean[a+headerSize:b])
			}
		}
		if !isSubsequence(want, got) {
			t.Fatalf("replayed %q, want at least %q", got, want)
		}
		accounted := 0
		if bytes.Equal(seg[:min(len(seg), segmentStart)], clean[:segmentStart]) {
			accounted = segmentStart
		}
		for _, p := range got {
			accounted += headerSize + len(p)
		}
		for _, l := range losses {
			accounted += int(l.Bytes)
		}
		// Zeros at the end are space nothing was written to, not a loss.
		if accounted > len(seg) || slices.ContainsFunc(seg[accounted:], func(b byte) bool { return b != 0 }) {
			t.Fatalf("%d bytes of %d accounted for: losses %+v", accounted, len(seg), losses)
		}
	})
}

// buildSegment cuts payload into records of the given sizes (the rest in
// one) and returns a version 2 segment of them and where each starts, and
// the end.
func buildSegment(payload, sizes []byte) ([]byte, []int) {
	seg := binary.LittleEndian.AppendUint32(slices.Clone(magic), version)
	starts := []int{len(seg)}
	for len(payload) > 0 {
		n := len(payload)
		if len(sizes) > 0 {
			n = min(n, 1+int(sizes[0]))
			sizes = sizes[1:]
		}
		seg = appendRecord(seg, payload[:n])
		payload = payload[n:]
		starts = append(starts, len(seg))
	}
	return seg, starts
}

func isSubsequence(want, got [][]byte) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && bytes.Equal(g, want[i]) {
			i++
		}
	}
	return i == len(want)
}

// TestProbeZerosWhatFailedWritesLeft fails the syncs of two groups, the
// second of them over 8 KiB, then lets a probe succeed and closes the log:
// replay must find no damage, since nothing acknowledged was lost, only
// zeros and the end of the segment where the failed groups were.
func TestProbeZerosWhatFailedWritesLeft(t *testing.T) {
	dir := t.TempDir()
	var fail, blocking atomic.Bool
	block := make(chan struct{})
	recovered := make(chan struct{}, 16)
	l := open(t, dir, Options{
		FS: errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if op.Kind != errorfs.OpFileSyncData || !fail.Load() {
				return nil
			}
			if blocking.CompareAndSwap(true, false) {
				<-block
			}
			return errorfs.ErrInjected
		})),
		OnWrite: func(_ time.Duration, err error) {
			if err == nil {
				recovered <- struct{}{}
			}
		},
	})
	if err := appendWait(l, "acked"); err != nil {
		t.Fatal(err)
	}
	<-recovered
	fail.Store(true)
	blocking.Store(true)
	first, _ := l.Append([]byte("first failed"))
	time.Sleep(100 * time.Millisecond) // the writer waits in its sync
	big, _ := l.Append([]byte(strings.Repeat("b", 8<<10)))
	after, _ := l.Append([]byte("after the big one")) // the same group
	close(block)
	if first.Wait() == nil || big.Wait() == nil || after.Wait() == nil {
		t.Fatal("acknowledged despite failed syncs")
	}
	fail.Store(false)
	<-recovered // a probe
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, dir, Options{})
	defer l.Close()
	got, losses := replayAll(t, l, 0)
	if len(got) == 0 || got[0].payload != "acked" {
		t.Fatalf("replayed %v", payloadsOf(got))
	}
	for _, loss := range losses {
		if !loss.Tail {
			t.Errorf("replay reports damage %+v, though nothing acknowledged was lost", loss)
		}
	}
}
