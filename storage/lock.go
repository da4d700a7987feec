package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrLocked is returned, wrapped with the directory and the holder's pid, by
// an Open of a data directory that another open DB holds.
var ErrLocked = errors.New("in use by another cairn")

// lockFileName is the file in a data directory whose lock an open DB holds.
const lockFileName = "LOCK"

// lockedError names the process that holds dir's lock, as far as the pid it
// wrote says: a holder that has only just taken the lock may not have
// written it yet.
func lockedError(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, lockFileName))
	if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil {
		return fmt.Errorf("data directory %s is %w (pid %d)", dir, ErrLocked, pid)
	}
	return fmt.Errorf("data directory %s is %w", dir, ErrLocked)
}

// writePID records this process as the lock's holder.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}
