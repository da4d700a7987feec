package wal

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type rec struct {
	seg     uint64
	payload string
}

func replayAll(t testing.TB, l *Log, after uint64) []rec {
	t.Helper()
	var got []rec
	if err := l.Replay(after, func(seg uint64, p []byte) error {
		got = append(got, rec{seg, string(p)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestAppendRotateReplay(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := l.Append([]byte(fmt.Sprintf("r%02d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			if err := w.Wait(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	sealed := l.Rotate()
	w, _ := l.Append([]byte("after"))
	if err := w.Wait(); err != nil {
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

	l, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := replayAll(t, l, 0)
	if len(got) != 51 || got[50] != (rec{sealed + 1, "after"}) {
		t.Fatalf("replayed %d records, last %+v", len(got), got[len(got)-1])
	}
	if after := replayAll(t, l, sealed); len(after) != 1 {
		t.Fatalf("replay after sealed segment: %v", after)
	}
	if err := l.RemoveThrough(sealed); err != nil {
		t.Fatal(err)
	}
	if got := replayAll(t, l, 0); len(got) != 1 {
		t.Fatalf("after RemoveThrough: %v", got)
	}
	if l.Segment() <= sealed+1 {
		t.Fatalf("reopened log appends to segment %d, not after existing ones", l.Segment())
	}
}

func TestTornTailIsTruncated(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"one", "two", "three"} {
		w, _ := l.Append([]byte(p))
		if err := w.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := l.path(1)
	full, _ := os.ReadFile(path)
	for cut := len(full) - 1; cut > len(full)-len("three")-headerSize; cut-- {
		if err := os.WriteFile(path, full[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		l, _ := Open(dir, nil)
		got := replayAll(t, l, 0)
		l.Close()
		if len(got) != 2 {
			t.Fatalf("cut at %d: replayed %v", cut, got)
		}
		if st, _ := os.Stat(path); st.Size() != int64(len(full)-len("three")-headerSize) {
			t.Fatalf("cut at %d: segment not truncated to its intact prefix (%d bytes)", cut, st.Size())
		}
	}
	// A flipped bit in the last record is a torn write too.
	bad := bytes.Clone(full)
	bad[len(bad)-1] ^= 1
	os.WriteFile(path, bad, 0o644)
	l, _ = Open(dir, nil)
	defer l.Close()
	if got := replayAll(t, l, 0); len(got) != 2 {
		t.Fatalf("corrupt tail: replayed %v", got)
	}
}

// FuzzReplay checks that replay of any segment content neither fails nor
// panics, and leaves a segment that replays to the same records again.
func FuzzReplay(f *testing.F) {
	f.Add([]byte{3, 0, 0, 0, 0x5d, 0x8a, 0x2e, 0x1c, 'a', 'b', 'c'})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, seg []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d%s", 1, suffix)), seg, 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		first := replayAll(t, l, 0)
		second := replayAll(t, l, 0)
		if fmt.Sprint(first) != fmt.Sprint(second) {
			t.Fatalf("replays differ: %v vs %v", first, second)
		}
	})
}
