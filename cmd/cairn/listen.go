package main

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// fdHeadroom is how many file descriptors below the process's limit are kept
// for the store: the write-ahead log, Pebble's tables and logs. A flood of
// connections would otherwise take them all, and the store's next file
// would fail with EMFILE.
func fdHeadroom(limit uint64) uint64 {
	return min(max(limit/8, 256), limit/2)
}

// openFileLimit is the process's limit of open file descriptors. The Go
// runtime raises the soft limit to the hard one at start; on a platform
// where it cannot be read, it is 0, and no headroom is kept.
func openFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// Reasons a connection is closed as soon as it is accepted, as metrics
// label them.
const (
	refusedMaxConns   = "max_conns"
	refusedFDHeadroom = "fd_headroom"
)

// guardedListener closes the connections it accepts beyond its cap, and
// those that take a descriptor the store's headroom keeps; clients see the
// connection reset, and retry.
type guardedListener struct {
	net.Listener
	port     string
	maxConns int64  // 0 for no cap
	fdLimit  uint64 // descriptors from this one up are the store's; 0 for none
	open     atomic.Int64
	refused  func(reason string)
	log      *slog.Logger
	warnMu   sync.Mutex
	warned   time.Time
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if reason := l.refuse(c); reason != "" {
			l.refused(reason)
			l.warn(reason)
			c.Close()
			continue
		}
		return &guardedConn{Conn: c, l: l}, nil
	}
}

// refuse says why c must be closed at once, or "".
func (l *guardedListener) refuse(c net.Conn) string {
	// Descriptors are allocated lowest first: one at or past fdLimit means
	// every one below it is taken, so no connection is kept on the
	// descriptors of the store's headroom.
	if l.fdLimit > 0 {
		if fd, ok := descriptor(c); ok && fd >= l.fdLimit {
			return refusedFDHeadroom
		}
	}
	if n := l.open.Add(1); l.maxConns > 0 && n > l.maxConns {
		l.open.Add(-1)
		return refusedMaxConns
	}
	return ""
}

// warn logs a refusal at most once a minute per port: a flood would
// otherwise flood the log too.
func (l *guardedListener) warn(reason string) {
	l.warnMu.Lock()
	defer l.warnMu.Unlock()
	if time.Since(l.warned) < time.Minute {
		return
	}
	l.warned = time.Now()
	switch reason {
	case refusedMaxConns:
		l.log.Warn("refusing connections: the port has as many open as it may", "port", l.port, "max_conns", l.maxConns)
	case refusedFDHeadroom:
		l.log.Warn("refusing connections: the process is close to its limit of open files, and keeps the rest for the store",
			"port", l.port, "limit", fmt.Sprint(l.fdLimit))
	}
}

// descriptor is c's file descriptor.
func descriptor(c net.Conn) (uint64, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var fd uintptr
	if raw.Control(func(d uintptr) { fd = d }) != nil {
		return 0, false
	}
	return uint64(fd), true
}

// guardedConn gives its place back to its listener when it closes.
type guardedConn struct {
	net.Conn
	l    *guardedListener
	once sync.Once
}

func (c *guardedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
