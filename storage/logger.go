package storage

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// pebbleLogger sends Pebble's chatty informational messages to debug level.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Log(context.Background(), slog.LevelDebug, fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf ends the process, as Pebble expects: it calls Fatalf when a write
// of its own log or MANIFEST fails or an invariant is broken, and goes on,
// if it returns, with its commit pipeline or version set in a state it does
// not recover from. Corruption never reaches it: Pebble reports that to
// the DataCorruption event listener (see DB.listener), which records it,
// and the read fails.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(1)
}
