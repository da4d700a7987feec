package freelist

import "testing"

func TestList(t *testing.T) {
	l := New(2, func(b []byte) bool { return cap(b) <= 8 })
	if _, ok := l.Get(); ok {
		t.Fatal("an empty list gave a value")
	}
	l.Put(make([]byte, 0, 16)) // too large to keep
	if _, ok := l.Get(); ok {
		t.Fatal("kept a value that keep refused")
	}
	for i := range 3 {
		l.Put(make([]byte, i, 8))
	}
	if l.Len() != 2 {
		t.Fatalf("Len %d after three Puts, want the list's 2", l.Len())
	}
	got := 0
	for {
		b, ok := l.Get()
		if !ok {
			break
		}
		if cap(b) != 8 {
			t.Fatalf("got a buffer of capacity %d, want 8", cap(b))
		}
		got++
	}
	if got != 2 {
		t.Fatalf("kept %d values, want the list's 2", got)
	}
}
