package query

import (
	"math/bits"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"cairn/internal/freelist"
	"cairn/internal/otlpwire"
	"cairn/storage"
)

// embedded is the size of a length-delimited field with an n-byte payload. The
// fields of TracesData, ResourceSpans and ScopeSpans all have one-byte tags.
func embedded(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }

// optional is the size of a field that is present when v is non-nil.
func optional(v []byte) int {
	if v == nil {
		return 0
	}
	return embedded(len(v))
}

// nonEmpty is the size of a proto3 string field, absent when empty.
func nonEmpty(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return embedded(len(v))
}

// segment is a run of one group's spans that goes into one chunk, or one
// span of it cut to fit a chunk.
type segment struct {
	g          *storage.Group
	from, to   int
	spansBytes int    // the encoded spans fields of the run
	fitted     []byte // the span from, cut to fit
}

func (s segment) spans() [][]byte {
	if s.fitted != nil {
		return [][]byte{s.fitted}
	}
	return s.g.Spans[s.from:s.to]
}

// chunkBuffers holds the buffers chunks are encoded into, for reuse: they
// were a third of what a read allocated (3.2 of the server's 9.4 MB for a
// 10,000-span trace), and what reads allocate during ingest they pay for in
// the collector's mark assists.
var chunkBuffers mem.BufferPool = newChunkPool(2)

// chunkPool keeps the buffers of chunks larger than 4 KiB apart from gRPC's
// pool, in free lists by power-of-two size. gRPC's pool holds them in
// sync.Pools, which each collection empties, and rounds every size between
// 32 KiB and 1 MiB up to 1 MiB: a 200-span trace's 60 KB chunk took a fresh
// 1 MiB buffer, zeroed page by page, at nearly every read during ingest,
// and a page fault costs about 14 µs on a virtual machine.
type chunkPool struct {
	small   mem.BufferPool
	classes []*freelist.List[*[]byte] // classes[i] keeps buffers of capacity minKeptChunk << i
}

// newChunkPool returns a pool that keeps up to n buffers of each size.
func newChunkPool(n int) chunkPool {
	p := chunkPool{small: mem.DefaultBufferPool()}
	for size := minKeptChunk; size <= maxKeptChunk; size *= 2 {
		p.classes = append(p.classes, freelist.New[*[]byte](n, nil))
	}
	return p
}

// Chunks of up to smallChunk bytes take gRPC's buffers, whose tier of
// that size holds them exactly and goes back to gRPC; minKeptChunk is the
// smallest buffer kept apart, and maxKeptChunk the largest.
const (
	smallChunk   = 4 << 10
	minKeptChunk = 2 * smallChunk
	maxKeptChunk = 8 << 20
)

// class is the index of the size class of a buffer of capacity at least n.
func class(n int) int { return bits.Len(uint(n-1)) - bits.Len(minKeptChunk-1) }

func (p chunkPool) Get(n int) *[]byte {
	if n <= smallChunk {
		return p.small.Get(n)
	}
	i := class(n)
	if i >= len(p.classes) {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.classes[i].Get(); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, minKeptChunk<<i)
	return &b
}

func (p chunkPool) Put(b *[]byte) {
	c := cap(*b)
	if c <= smallChunk {
		p.small.Put(b)
		return
	}
	if i := class(c); i < len(p.classes) && minKeptChunk<<i == c {
		p.classes[i].Put(b)
	}
}

// chunker splits a trace into TracesData messages of at most limit bytes
// each. Spans keep their order; a chunk holds one or more runs of groups, and
// a group that does not fit is continued in the next chunk under a repeated
// resource and scope. A span too large for a chunk of its own has its
// attribute values cut (see fit), as have a resource or scope larger than a
// quarter of the limit; only one whose IDs and name alone would not fit is
// sent whole, over the limit.
type chunker struct {
	limit int
	emit  func([]byte) error
	// buffers gives each chunk its buffer: chunkBuffers, when emit sends
	// chunks with rawSender.
	buffers mem.BufferPool

	segs []segment
	// size is the encoded size of segs as a chunk, and run the
	// ResourceSpans size of their last run of one resource: both are kept
	// as spans are added, as recounting the chunk for each span made
	// chunking a 10,000-span trace quadratic in its groups.
	size, run int
}

// trace chunks a whole trace.
func (c *chunker) trace(t *storage.Trace) error {
	if err := c.add(t); err != nil {
		return err
	}
	return c.flush()
}

// add chunks a piece of a trace, shipping every chunk it fills; the rest
// waits for more pieces or flush.
func (c *chunker) add(t *storage.Trace) error {
	for gi := range t.Groups {
		g := c.fitGroup(&t.Groups[gi])
		room := c.room(g)
		for i, s := range g.Spans {
			var fitted []byte
			if len(s) > room {
				if fitted = fit(s, &spanShape, room); fitted != nil {
					s = fitted
				}
			}
			add := embedded(len(s))
			n, size, run := len(c.segs), c.size, c.run
			var last segment
			if n > 0 {
				last = c.segs[n-1]
			}
			c.push(g, i, add, fitted)
			if c.size <= c.limit || len(c.segs) == 1 && c.segs[0].to-c.segs[0].from == 1 {
				continue
			}
			// Undo, ship what fits, and start the next chunk with s.
			c.segs, c.size, c.run = c.segs[:n], size, run
			if n > 0 {
				c.segs[n-1] = last
			}
			if err := c.flush(); err != nil {
				return err
			}
			c.push(g, i, add, fitted)
		}
	}
	return nil
}

// fitGroup returns g, or a copy of it whose resource and scope are cut to a
// quarter of the limit each, and whose schema URLs are dropped past a
// sixteenth, where they are longer: at least a third is left for spans.
func (c *chunker) fitGroup(g *storage.Group) *storage.Group {
	quarter, url := c.limit/4, c.limit/16
	if len(g.Resource) <= quarter && len(g.Scope) <= quarter && len(g.ResourceSchemaURL) <= url && len(g.ScopeSchemaURL) <= url {
		return g
	}
	f := *g
	if r := fit(f.Resource, &resourceShape, quarter); r != nil {
		f.Resource = r
	}
	if s := fit(f.Scope, &scopeShape, quarter); s != nil {
		f.Scope = s
	}
	if len(f.ResourceSchemaURL) > url {
		f.ResourceSchemaURL = nil
	}
	if len(f.ScopeSchemaURL) > url {
		f.ScopeSchemaURL = nil
	}
	return &f
}

// push adds span i of g, add bytes as a field, to the chunk: to the last
// segment if it runs on in g, or as a new one.
func (c *chunker) push(g *storage.Group, i, add int, fitted []byte) {
	n := len(c.segs)
	if n > 0 && c.segs[n-1].g == g && c.segs[n-1].fitted == nil && fitted == nil {
		last := &c.segs[n-1]
		before := embedded(scopeSpansSize(*last))
		last.to++
		last.spansBytes += add
		c.growRun(embedded(scopeSpansSize(*last)) - before)
		return
	}
	c.segs = append(c.segs, segment{g: g, from: i, to: i + 1, spansBytes: add, fitted: fitted})
	if n > 0 && c.segs[n-1].g.ResourceID == g.ResourceID {
		c.growRun(embedded(scopeSpansSize(c.segs[n])))
		return
	}
	c.run = resourceSpansSize(c.segs[n:])
	c.size += embedded(c.run)
}

// growRun adds d bytes to the last ResourceSpans.
func (c *chunker) growRun(d int) {
	before := embedded(c.run)
	c.run += d
	c.size += embedded(c.run) - before
}

// room is the size of the largest span that fits in a chunk of its own
// under g's resource and scope. 16 bytes cover the span's tag and length and
// the growth of the enclosing lengths.
func (c *chunker) room(g *storage.Group) int {
	return c.limit - embedded(resourceSpansSize([]segment{{g: g}})) - 16
}

// resourceRuns calls fn for each run of consecutive segments that share a
// resource: they become one ResourceSpans.
func (c *chunker) resourceRuns(fn func(segs []segment)) {
	for i := 0; i < len(c.segs); {
		j := i + 1
		for j < len(c.segs) && c.segs[j].g.ResourceID == c.segs[i].g.ResourceID {
			j++
		}
		fn(c.segs[i:j])
		i = j
	}
}

func scopeSpansSize(s segment) int {
	return optional(s.g.Scope) + s.spansBytes + nonEmpty(s.g.ScopeSchemaURL)
}

func resourceSpansSize(segs []segment) int {
	n := optional(segs[0].g.Resource) + nonEmpty(segs[0].g.ResourceSchemaURL)
	for _, s := range segs {
		n += embedded(scopeSpansSize(s))
	}
	return n
}

func (c *chunker) flush() error {
	if len(c.segs) == 0 {
		return nil
	}
	// A buffer of its own each time, which emit owns: gRPC may still be
	// writing the previous chunk after SendMsg returns, and gives the buffer
	// back to chunkBuffers once it has (see rawSender).
	b := (*c.buffers.Get(c.size))[:0]
	c.resourceRuns(func(segs []segment) {
		g := segs[0].g
		b = protowire.AppendTag(b, otlpwire.TracesDataResourceSpans, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(resourceSpansSize(segs)))
		if g.Resource != nil {
			b = protowire.AppendTag(b, otlpwire.ResourceSpansResource, protowire.BytesType)
			b = protowire.AppendBytes(b, g.Resource)
		}
		for _, s := range segs {
			b = protowire.AppendTag(b, otlpwire.ResourceSpansScopeSpans, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(scopeSpansSize(s)))
			if s.g.Scope != nil {
				b = protowire.AppendTag(b, otlpwire.ScopeSpansScope, protowire.BytesType)
				b = protowire.AppendBytes(b, s.g.Scope)
			}
			for _, sp := range s.spans() {
				b = protowire.AppendTag(b, otlpwire.ScopeSpansSpans, protowire.BytesType)
				b = protowire.AppendBytes(b, sp)
			}
			if len(s.g.ScopeSchemaURL) > 0 {
				b = protowire.AppendTag(b, otlpwire.ScopeSpansSchemaURL, protowire.BytesType)
				b = protowire.AppendBytes(b, s.g.ScopeSchemaURL)
			}
		}
		if len(g.ResourceSchemaURL) > 0 {
			b = protowire.AppendTag(b, otlpwire.ResourceSpansSchemaURL, protowire.BytesType)
			b = protowire.AppendBytes(b, g.ResourceSchemaURL)
		}
	})
	c.segs, c.size, c.run = c.segs[:0], 0, 0
	return c.emit(b)
}
