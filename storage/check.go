package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	"github.com/cockroachdb/pebble/v2/sstable/colblk"
	"github.com/cockroachdb/pebble/v2/vfs"

	"cairn/index"
	"cairn/storage/internal/keys"
	"cairn/storage/internal/wal"
)

// Damage is a part of a stopped store that cannot be read.
type Damage struct {
	Store string // "index", "spans" or "wal"
	File  string
	// Whole is set when nothing in the file can be read: for an sstable,
	// its footer, index, filter or another block but its data is damaged.
	// Start and End are then its smallest and largest keys; otherwise the
	// damaged data block holds keys above Start (nil: from the table's
	// first) up to End.
	Whole      bool
	Start, End []byte
	// Offset is where the damage starts in a write-ahead-log segment, and
	// Lost the bytes from there that cannot be replayed.
	Offset, Lost int64
	Err          string
	// Held says, for people, what the damaged part held: partitions,
	// blocks, traces.
	Held string
	// Traces lists the traces whose span data was in a damaged part of
	// the spans store, as the trace index names them.
	Traces []TraceID

	lo, hi []byte // the keys the damage may cover, from lo up to hi
	// dropLo and dropHi bound what repair drops: the damaged block and
	// its neighbours, whose readable keys it writes back. An iterator that
	// leaves the last block in a table's bounds reads the next before it
	// looks at the bounds, so the block on either side of a damaged one
	// must not be the edge of what is left of the table.
	dropLo, dropHi []byte
	table          table // the sstable damaged
}

func (d Damage) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", d.File)
	switch {
	case d.Store == "wal":
		fmt.Fprintf(&b, "%d bytes from offset %d cannot be replayed", d.Lost, d.Offset)
	case d.Unopenable():
		b.WriteString("the store cannot be opened")
	case d.Whole:
		fmt.Fprintf(&b, "unreadable sstable, keys %s to %s", keys.Comparer.FormatKey(d.Start), keys.Comparer.FormatKey(d.End))
	default:
		fmt.Fprintf(&b, "unreadable data block, keys after %s up to %s", describeKey(d.Start, "the table's first"), describeKey(d.End, "the table's last"))
	}
	if d.Held != "" {
		fmt.Fprintf(&b, "\n  held: %s", d.Held)
	}
	fmt.Fprintf(&b, "\n  error: %s", d.Err)
	return b.String()
}

// Unopenable reports whether the damage keeps a Pebble store from opening
// at all, which repair cannot mend.
func (d Damage) Unopenable() bool {
	return d.Store != "wal" && d.Whole && d.Start == nil && d.End == nil
}

func describeKey(k []byte, none string) string {
	if k == nil {
		return none
	}
	return fmt.Sprint(keys.Comparer.FormatKey(k))
}

// CheckReport is what Check found.
type CheckReport struct {
	Tables, Segments int
	Damage           []Damage
}

// CheckOptions configure Check; the zero value is valid.
type CheckOptions struct {
	// Progress, if set, is called after each file is checked, with the
	// number checked and the total.
	Progress func(done, total int)
}

// Check verifies every file of the stopped store in dir: every block of
// every sstable in both Pebble stores against its checksum, the format
// version, and every record of the write-ahead log. It reports the damage
// it finds, naming what the damaged parts held; it fails only if it cannot
// check at all. It refuses a directory that a running cairn holds.
func Check(dir string, o *CheckOptions) (*CheckReport, error) {
	if o == nil {
		o = &CheckOptions{}
	}
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	c, err := openChecker(dir, true)
	if err != nil {
		return nil, err
	}
	defer c.close()
	return c.check(o.Progress)
}

// lockStore takes the lock of an existing store's directory, as Open does,
// so that no cairn opens it meanwhile.
func lockStore(dir string) (*os.File, error) {
	if _, err := os.Stat(filepath.Join(dir, "index")); err != nil {
		return nil, fmt.Errorf("%s holds no cairn store: %w", dir, err)
	}
	return lockDir(dir)
}

// checker checks a store whose directory it holds the lock of.
type checker struct {
	dir    string
	stores map[string]*pebble.DB // by name; absent if it would not open
	report CheckReport
}

var storeNames = []string{"index", "spans"}

// openChecker opens both Pebble stores, without collecting table
// statistics: Pebble retries a table it cannot read them from without end.
// A store that fails to open is reported as damage.
func openChecker(dir string, readOnly bool) (*checker, error) {
	c := &checker{dir: dir, stores: map[string]*pebble.DB{}}
	opts := (&Options{Logger: slog.New(slog.DiscardHandler)}).EnsureDefaults()
	cache := pebble.NewCache(opts.CacheBytes)
	defer cache.Unref()
	for _, name := range storeNames {
		l := &pebble.EventListener{
			DataCorruption:  func(pebble.DataCorruptionInfo) {},
			BackgroundError: func(error) {},
		}
		po := indexOptions(opts, cache, l)
		if name == "spans" {
			po = spansOptions(opts, cache, l)
		}
		po.DisableTableStats = true
		db, err := openNaming(filepath.Join(dir, name), po, readOnly)
		if err != nil {
			c.report.Damage = append(c.report.Damage, Damage{Store: name, File: filepath.Join(dir, name), Whole: true,
				Err: firstLine(err), Held: "the whole store: restore it from a backup"})
			continue
		}
		c.stores[name] = db
	}
	return c, nil
}

// openNaming opens the Pebble store in dir even if files its MANIFEST
// names are missing, which Pebble refuses: the check then reports each as
// an unreadable sstable, and repair drops it like one. A MANIFEST that names
// missing files and leaves out files that are there is itself damaged:
// Pebble reads a damaged record as the end of its log, so it describes an
// older store. Opened to write, that store would delete the files it leaves
// out, so it is not opened at all.
func openNaming(dir string, po *pebble.Options, readOnly bool) (*pebble.DB, error) {
	po.ReadOnly = true
	db, err := pebble.Open(dir, po)
	var missing map[string]bool
	if err != nil {
		if missing = missingTables(dir, err); len(missing) == 0 {
			return nil, err
		}
		// Shown to Pebble as empty files, of a size its MANIFEST does not
		// give, missing files let it open the store.
		po.FS = phantomFS{FS: po.FS, missing: missing}
		po.DisableConsistencyCheck = true
		if db, err = pebble.Open(dir, po); err != nil {
			return nil, err
		}
		levels, err := db.SSTables()
		if err != nil {
			return nil, errors.Join(err, db.Close())
		}
		named := map[string]bool{}
		for _, l := range levels {
			for _, t := range l {
				named[filepath.Join(dir, t.BackingSSTNum.String()+".sst")] = true
			}
		}
		present, err := filepath.Glob(filepath.Join(dir, "*.sst"))
		if err != nil {
			return nil, errors.Join(err, db.Close())
		}
		var unnamed []string
		for _, p := range present {
			if !named[p] {
				unnamed = append(unnamed, filepath.Base(p))
			}
		}
		if len(unnamed) > 0 {
			return nil, errors.Join(fmt.Errorf("the MANIFEST is damaged: it names %d sstables that are missing (%s) and not %d that are there (%s)",
				len(missing), listSome(slices.Sorted(maps.Keys(missing))), len(unnamed), listSome(unnamed)), db.Close())
		}
	}
	if readOnly {
		return db, nil
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	po.ReadOnly = false
	return pebble.Open(dir, po)
}

// missingTables returns the paths of the sstables that Pebble's err, from
// opening the store in dir, says are missing, and that are.
func missingTables(dir string, err error) map[string]bool {
	missing := map[string]bool{}
	for _, m := range missingTableRE.FindAllStringSubmatch(err.Error(), -1) {
		path := filepath.Join(dir, m[1]+".sst")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			missing[path] = true
		}
	}
	return missing
}

// missingTableRE matches Pebble's words for a table its MANIFEST names
// and its directory lacks (TestMissingTable holds it to them).
var missingTableRE = regexp.MustCompile(`file (\d+) \(type sstable\) unknown to the objstorage provider`)

// phantomFS shows Pebble missing files as empty ones: listed, of size 0,
// and removed without error. Reading them fails.
type phantomFS struct {
	vfs.FS
	missing map[string]bool
}

func (fs phantomFS) List(dir string) ([]string, error) {
	names, err := fs.FS.List(dir)
	for p := range fs.missing {
		if filepath.Dir(p) == filepath.Clean(dir) {
			names = append(names, filepath.Base(p))
		}
	}
	return names, err
}

func (fs phantomFS) Stat(name string) (vfs.FileInfo, error) {
	if fs.missing[name] {
		return phantomInfo(filepath.Base(name)), nil
	}
	return fs.FS.Stat(name)
}

func (fs phantomFS) Remove(name string) error {
	if fs.missing[name] {
		return nil
	}
	return fs.FS.Remove(name)
}

type phantomInfo string

func (i phantomInfo) Name() string         { return string(i) }
func (phantomInfo) Size() int64            { return 0 }
func (phantomInfo) Mode() os.FileMode      { return 0o600 }
func (phantomInfo) ModTime() time.Time     { return time.Time{} }
func (phantomInfo) IsDir() bool            { return false }
func (phantomInfo) Sys() any               { return nil }
func (phantomInfo) DeviceID() vfs.DeviceID { return vfs.DeviceID{} }

// listSome lists the first few of names.
func listSome(names []string) string {
	if len(names) > 3 {
		return strings.Join(names[:3], ", ") + ", …"
	}
	return strings.Join(names, ", ")
}

// close closes the stores; it is safe to call more than once.
func (c *checker) close() error {
	var errs []error
	for name, db := range c.stores {
		errs = append(errs, db.Close())
		delete(c.stores, name)
	}
	return errors.Join(errs...)
}

// table is an sstable of a store, as the store sees it: a virtual table is
// the part of its file within its bounds.
type table struct {
	store             string
	path              string
	virtual           bool
	smallest, largest []byte
}

func (c *checker) tables() ([]table, error) {
	var out []table
	for _, name := range storeNames {
		db := c.stores[name]
		if db == nil {
			continue
		}
		levels, err := db.SSTables()
		if err != nil {
			return nil, fmt.Errorf("list %s sstables: %w", name, err)
		}
		for _, l := range levels {
			for _, t := range l {
				out = append(out, table{
					store:    name,
					path:     filepath.Join(c.dir, name, t.BackingSSTNum.String()+".sst"),
					virtual:  t.Virtual,
					smallest: slices.Clone(t.Smallest.UserKey),
					largest:  slices.Clone(t.Largest.UserKey),
				})
			}
		}
	}
	return out, nil
}

func (c *checker) check(progress func(done, total int)) (*CheckReport, error) {
	tables, err := c.tables()
	if err != nil {
		return nil, err
	}
	segments, err := filepath.Glob(filepath.Join(c.dir, "wal", "*.wal"))
	if err != nil {
		return nil, err
	}
	total := len(tables) + len(segments)
	for i, t := range tables {
		for _, d := range checkTable(t) {
			d.Held = c.held(&d)
			c.report.Damage = append(c.report.Damage, d)
		}
		c.report.Tables++
		if progress != nil {
			progress(i+1, total)
		}
	}
	for i, path := range segments {
		if d, ok := checkSegment(path); !ok {
			c.report.Damage = append(c.report.Damage, d)
		}
		c.report.Segments++
		if progress != nil {
			progress(len(tables)+i+1, total)
		}
	}
	if idx := c.stores["index"]; idx != nil {
		v, closer, err := idx.Get(keys.Meta("format"))
		switch {
		case err == nil:
			if len(v) != 1 || v[0] < 3 || v[0] > FormatVersion {
				err = fmt.Errorf("format version %v; this cairn reads versions 3 to %d", v, FormatVersion)
			}
			closer.Close()
		case errors.Is(err, pebble.ErrNotFound):
			err = nil // written at the next open
		}
		if err != nil {
			c.report.Damage = append(c.report.Damage, Damage{Store: "index", File: filepath.Join(c.dir, "index"),
				Whole: true, Err: firstLine(err), Held: "the format version"})
		}
	}
	return &c.report, nil
}

// checkTable reads every block of an sstable (of a virtual one, every
// data block within its bounds) and reports the damage: the keys of each
// data block that fails its checksum, or the whole table if it cannot be
// opened or another block (an index, the filter, the properties), which
// every read of it needs, fails. Checksums are verified here, not by
// Pebble's reader, which looks for the flipped bit of a failed block by
// trying each in turn: seconds of CPU a block.
func checkTable(t table) []Damage {
	whole := func(err error) []Damage {
		hi := append(slices.Clone(t.largest), 0)
		return []Damage{{Store: t.store, File: t.path, Whole: true, Start: t.smallest, End: t.largest,
			Err: firstLine(err), lo: t.smallest, hi: hi, dropLo: t.smallest, dropHi: hi, table: t}}
	}
	r, err := openTable(t.path)
	if err != nil {
		return whole(err)
	}
	defer r.Close()
	l, err := r.Layout()
	if err != nil {
		return whole(err)
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return whole(err)
	}
	others := append([]block.Handle{l.TopIndex, l.RangeDel, l.RangeKey, l.Properties, l.MetaIndex, l.BlobReferenceIndex}, l.Index...)
	for _, f := range l.Filter {
		others = append(others, f.Handle)
	}
	others = append(others, l.ValueBlock...)
	for _, h := range others {
		if err := checksum(data, h); err != nil {
			return whole(err)
		}
	}
	seps, err := separators(data, l)
	if err != nil {
		return whole(err)
	}
	var out []Damage
	for i, h := range l.Data {
		// Block i holds the keys above separator i-1, up to separator i.
		var prev []byte
		if i > 0 {
			prev = seps[i-1]
		}
		if t.virtual && (bytes.Compare(seps[i], t.smallest) < 0 || prev != nil && bytes.Compare(prev, t.largest) >= 0) {
			continue
		}
		err := checksum(data, h.Handle)
		if err == nil {
			continue
		}
		d := Damage{Store: t.store, File: t.path, Err: err.Error(), Start: prev, End: seps[i], table: t,
			lo: t.smallest, hi: append(slices.Clone(seps[i]), 0), dropLo: t.smallest, dropHi: append(slices.Clone(t.largest), 0)}
		if prev != nil {
			d.lo = prev
		}
		if i >= 2 {
			d.dropLo = seps[i-2]
		}
		if i+1 < len(seps)-1 {
			d.dropHi = append(slices.Clone(seps[i+1]), 0)
		}
		out = append(out, d)
	}
	return out
}

// checksum verifies a block of an sstable read whole into data: its
// trailer holds a compression byte and the masked CRC-32C of the block and
// that byte.
func checksum(data []byte, h block.Handle) error {
	if h.Length == 0 {
		return nil
	}
	end := h.Offset + h.Length + block.TrailerLen
	if end > uint64(len(data)) {
		return fmt.Errorf("block %d/%d: past the end of the file", h.Offset, h.Length)
	}
	b := data[h.Offset:end]
	c := crc32.Checksum(b[:h.Length+1], castagnoli)
	if masked := (c>>15 | c<<17) + 0xa282ead8; masked != binary.LittleEndian.Uint32(b[h.Length+1:]) {
		return fmt.Errorf("block %d/%d: checksum mismatch", h.Offset, h.Length)
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// separators returns, for each data block of a table, its index's
// separator: a key at or above the block's last and below the next block's
// first.
func separators(data []byte, l *sstable.Layout) ([][]byte, error) {
	if !l.Format.BlockColumnar() {
		return nil, fmt.Errorf("table format %s is not columnar", l.Format)
	}
	var out [][]byte
	for _, h := range l.Index {
		raw := data[h.Offset : h.Offset+h.Length]
		ci := block.CompressionIndicator(data[h.Offset+h.Length])
		plain := raw
		if ci != block.NoCompressionIndicator {
			n, err := block.DecompressedLen(ci, raw)
			if err != nil {
				return nil, err
			}
			plain = make([]byte, n)
			if err := block.DecompressInto(ci, raw, plain); err != nil {
				return nil, err
			}
		}
		var it colblk.IndexIter
		if err := it.Init(keys.Comparer, plain, sstable.NoTransforms); err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			out = append(out, slices.Clone(it.Separator()))
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
	}
	if len(out) != len(l.Data) {
		return nil, fmt.Errorf("index lists %d data blocks, layout %d", len(out), len(l.Data))
	}
	return out, nil
}

// checkSegment reads a write-ahead-log segment's records as replay would.
// A partial record at the end is a write that was never acknowledged, not
// damage; a stretch that replay would skip with intact records after it
// is.
func checkSegment(path string) (Damage, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Damage{Store: "wal", File: path, Err: err.Error()}, false
	}
	for _, l := range wal.Check(data) {
		if !l.Tail {
			return Damage{Store: "wal", File: path, Offset: l.Offset, Lost: l.Bytes,
				Err: l.Why + ", with intact records after it", Held: "acknowledged spans"}, false
		}
	}
	return Damage{}, true
}

// kindNames name the kinds of keys of the index store, for people.
var kindNames = map[byte]string{
	keys.KindMeta:         "metadata",
	keys.KindBlock:        "block records",
	keys.KindPartition:    "the partition list",
	keys.KindService:      "the service catalog",
	keys.KindOperation:    "the operation catalog",
	keys.KindResource:     "resources of the dictionary",
	keys.KindScope:        "scopes of the dictionary",
	keys.KindGroup:        "resource and scope groups",
	keys.KindResourceAttr: "the resource-attribute index",
	keys.KindResourceUse:  "resource uses",
	keys.KindTraceV6:      "the trace index (format 6)",
	keys.KindTrace:        "the trace index",
	keys.KindRows:         "the search index (rows)",
	keys.KindPostings:     "the search index (postings)",
	keys.KindAggregate:    "aggregates (span metrics)",
	keys.KindGraph:        "aggregates (service graph)",
	keys.KindData:         "span data",
	keys.KindRecompressed: "recompression progress",
}

// held describes what the keys of a damaged range were: kinds, partitions
// and blocks, and for span data the traces the trace index names.
func (c *checker) held(d *Damage) string {
	if d.lo == nil || d.hi == nil || d.Store == "wal" {
		return ""
	}
	// The damage holds only keys of the table, which separators may
	// overshoot.
	lo, hi := d.lo, d.hi
	if t := d.table; t.smallest != nil {
		if bytes.Compare(lo, t.smallest) < 0 {
			lo = t.smallest
		}
		if end := append(slices.Clone(t.largest), 0); bytes.Compare(hi, end) > 0 {
			hi = end
		}
	}
	var parts []string
	for kind := lo[0]; kind <= hi[0] && kind < 0xff; kind++ {
		name, ok := kindNames[kind]
		if !ok {
			continue
		}
		klo, khi := []byte{kind}, keys.KindEnd(kind)
		if kind == lo[0] {
			klo = lo
		}
		if kind == hi[0] {
			khi = hi
		}
		switch kind {
		case keys.KindData, keys.KindTraceV6, keys.KindTrace, keys.KindRows, keys.KindPostings, keys.KindAggregate, keys.KindGraph:
			p1, p2 := partitionIn(klo, 0), partitionIn(khi, ^uint32(0))
			name += " of partition " + partitionName(p1)
			if p2 != p1 {
				name += " to " + partitionName(p2)
			}
		}
		parts = append(parts, name)
		if kind == keys.KindData {
			d.Traces = c.tracesIn(lo, hi)
			if len(d.Traces) > 0 {
				parts = append(parts, fmt.Sprintf("%d trace(s): %s", len(d.Traces), traceList(d.Traces, 10)))
			}
		}
	}
	return strings.Join(parts, "; ")
}

// partitionIn is the partition of a key of a partitioned kind, or def if
// the key is too short to name one.
func partitionIn(k []byte, def uint32) uint32 {
	if len(k) < 5 {
		return def
	}
	return binary.BigEndian.Uint32(k[1:5])
}

// tracesIn lists the traces with span data keys in [lo, hi), from the
// rows records of their blocks, which hold whole trace IDs.
func (c *checker) tracesIn(lo, hi []byte) []TraceID {
	idx := c.stores["index"]
	if idx == nil {
		return nil
	}
	// Rows keys share the partition and block of the data keys of their
	// block; the bounds include the blocks of lo and hi, whose rows are
	// then checked one by one.
	rowsKey := func(data []byte) []byte {
		return append([]byte{keys.KindRows}, data[1:min(len(data), keys.DataLen-16)]...)
	}
	lower, upper := []byte{keys.KindRows}, keys.KindEnd(keys.KindRows)
	if keys.HasKind(lo, keys.KindData) {
		lower = rowsKey(lo)
	}
	if keys.HasKind(hi, keys.KindData) {
		upper = append(rowsKey(hi), 0)
	}
	it, err := idx.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil
	}
	defer it.Close()
	var out []TraceID
	for ok := it.First(); ok; ok = it.Next() {
		p, b, err := keys.ParseRows(it.Key())
		if err != nil {
			continue
		}
		rows, err := index.DecodeRows(it.Value())
		if err != nil {
			continue
		}
		for _, r := range rows {
			// The fragment's keys, its parts' included, run from first to
			// last.
			first := keys.Data(p, b, r.TraceID)
			last := keys.DataPart(p, b, r.TraceID, math.MaxUint32)
			if bytes.Compare(first, hi) < 0 && bytes.Compare(last, lo) >= 0 {
				out = append(out, r.TraceID)
			}
		}
	}
	slices.SortFunc(out, func(a, b TraceID) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(out)
}

func traceList(ids []TraceID, n int) string {
	var b strings.Builder
	for i, id := range ids {
		if i == n {
			fmt.Fprintf(&b, " and %d more", len(ids)-n)
			break
		}
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%x", id)
	}
	return b.String()
}
