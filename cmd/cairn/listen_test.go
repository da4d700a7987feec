package main

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// guarded listens on loopback with l's limits, accepting, and holding, every
// connection it lets through until the test ends; it returns its address
// and the reasons of its refusals so far.
func guarded(t *testing.T, l *guardedListener) (string, func() []string) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reasons []string
	l.Listener, l.port, l.log = raw, "test", slog.New(slog.NewTextHandler(io.Discard, nil))
	l.refused = func(reason string) { mu.Lock(); reasons = append(reasons, reason); mu.Unlock() }
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		raw.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	return raw.Addr().String(), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), reasons...) }
}

// closedByPeer reports whether the server closed c without a word.
func closedByPeer(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConnectionCap checks that a port closes connections past its cap at
// once, and takes new ones when others close.
func TestConnectionCap(t *testing.T) {
	l := &guardedListener{maxConns: 2}
	addr, refusals := guarded(t, l)
	a, b := dial(t, addr), dial(t, addr)
	if closedByPeer(t, a) || closedByPeer(t, b) {
		t.Fatal("a connection within the cap was closed")
	}
	if !closedByPeer(t, dial(t, addr)) {
		t.Fatal("the connection past the cap was kept")
	}
	if r := refusals(); len(r) != 1 || r[0] != refusedMaxConns {
		t.Fatalf("refusals %v", r)
	}
	if n := l.open.Load(); n != 2 {
		t.Fatalf("%d connections counted open, want 2", n)
	}
}

// TestDescriptorHeadroom checks that a connection that takes a descriptor
// kept for the store is closed at once.
func TestDescriptorHeadroom(t *testing.T) {
	l := &guardedListener{fdLimit: 3} // every descriptor but stdin, stdout and stderr
	addr, refusals := guarded(t, l)
	if !closedByPeer(t, dial(t, addr)) {
		t.Fatal("a connection on the store's descriptors was kept")
	}
	if r := refusals(); len(r) != 1 || r[0] != refusedFDHeadroom {
		t.Fatalf("refusals %v", r)
	}
	if n := l.open.Load(); n != 0 {
		t.Fatalf("%d connections counted open, want 0", n)
	}
	if h := fdHeadroom(1024); h != 256 {
		t.Fatalf("headroom of 1024 descriptors: %d", h)
	}
	if h := fdHeadroom(1 << 20); h != 1<<17 {
		t.Fatalf("headroom of 1M descriptors: %d", h)
	}
	if h := fdHeadroom(300); h != 150 {
		t.Fatalf("headroom of 300 descriptors: %d", h)
	}
}

// TestShutdownCutsOffSlowExports starts an OTLP/HTTP export that never
// sends its body and shuts the server down: the export is cut off after
// the drain timeout, and shutdown, which lost nothing acknowledged, reports
// no error.
func TestShutdownCutsOffSlowExports(t *testing.T) {
	s := startTestServer(t, t.TempDir())
	conn, err := net.Dial("tcp", s.otlpHTTPAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/traces HTTP/1.1\r\nHost: cairn\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // for the handler to start reading the body
	if err := s.shutdown(); err != nil {
		t.Fatalf("shutdown with a slow export: %v", err)
	}
}
