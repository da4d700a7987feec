package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/sstable/colblk"
	"github.com/cockroachdb/pebble/v2/vfs"

	"cairn/storage/internal/keys"
)

// readerOptions read the sstables of either store outside Pebble.
var readerOptions = func() sstable.ReaderOptions {
	schema := colblk.DefaultKeySchema(keys.Comparer, 16)
	filter := bloom.FilterPolicy(10)
	return sstable.ReaderOptions{
		Comparer:   keys.Comparer,
		KeySchemas: sstable.MakeKeySchemas(&schema),
		Filters:    map[string]sstable.FilterPolicy{filter.Name(): filter},
	}
}()

// openTable opens an sstable file for reading outside Pebble.
func openTable(path string) (*sstable.Reader, error) {
	f, err := vfs.Default.Open(path)
	if err != nil {
		return nil, err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r, err := sstable.NewReader(context.Background(), readable, readerOptions)
	if err != nil {
		readable.Close()
		return nil, fmt.Errorf("open sstable %s: %w", path, err)
	}
	return r, nil
}

// openStore opens one of the Pebble stores. Pebble loads statistics of
// every sstable in the background after it opens, and retries a table it
// cannot read them from at once and without end, which would take a CPU
// for as long as the store is open. So sstables whose footer, index or
// properties cannot be read are looked for first, and the store is opened
// without statistics if the store still uses one of them (Pebble deletes
// the sstables it no longer needs as it opens); statistics only steer
// compactions.
func (db *DB) openStore(name string, po *pebble.Options) (*pebble.DB, error) {
	dir := filepath.Join(db.dir, name)
	suspects := unreadableTables(dir)
	if len(suspects) > 0 {
		po.DisableTableStats = true
	}
	store, err := pebble.Open(dir, po)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("open %s store: %w", name, err)
		}
		// Pebble refuses a store whose MANIFEST names a file that is
		// missing or of another size, and names the file alone.
		return nil, fmt.Errorf("open %s store: %w; if its files are missing or damaged, run cairn check %s", name, err, db.dir)
	}
	if len(suspects) == 0 {
		return store, nil
	}
	levels, err := store.SSTables()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open %s store: %w", name, err), store.Close())
	}
	var damaged []string
	for _, l := range levels {
		for _, t := range l {
			if path := filepath.Join(dir, t.BackingSSTNum.String()+".sst"); suspects[path] != nil {
				damaged = append(damaged, path)
			}
		}
	}
	if len(damaged) == 0 {
		// The store no longer uses any of them, so its statistics can be
		// loaded; the tables need no second look.
		if err := store.Close(); err != nil {
			return nil, fmt.Errorf("open %s store: %w", name, err)
		}
		po.DisableTableStats = false
		if store, err = pebble.Open(dir, po); err != nil {
			return nil, fmt.Errorf("open %s store: %w", name, err)
		}
		return store, nil
	}
	slices.Sort(damaged)
	for _, path := range slices.Compact(damaged) {
		db.noteDamage(name, path, "", suspects[path])
	}
	return store, nil
}

// unreadableTables opens each sstable in dir and reads what Pebble reads to
// load its statistics: its footer, properties and range deletions, a few
// small reads a table. It returns the errors of those that fail, by path.
func unreadableTables(dir string) map[string]error {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	out := map[string]error{}
	for _, path := range paths {
		r, err := openTable(path)
		if err == nil {
			var it interface{ Close() }
			it, err = r.NewRawRangeDelIter(context.Background(), sstable.FragmentIterTransforms{}, sstable.ReadEnv{})
			if err == nil && it != nil {
				it.Close()
			}
			r.Close()
		}
		if err != nil {
			out[path] = err
		}
	}
	return out
}
