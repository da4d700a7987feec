package freelist

// List keeps up to its capacity of values for reuse. Unlike a sync.Pool,
// which drops what it holds at each collection, it keeps them until taken:
// memory the runtime frees is given back to the kernel, and the next
// buffer of megabytes pays a page fault for each page it touches.
type List[T any] struct {
	free chan T
	keep func(T) bool
}

// New returns a list of at most n values; keep says whether a value given
// back is worth keeping (a buffer grown too large is not).
func New[T any](n int, keep func(T) bool) *List[T] {
	return &List[T]{free: make(chan T, n), keep: keep}
}

// Get takes a kept value, or reports that there is none.
func (l *List[T]) Get() (T, bool) {
	select {
	case v := <-l.free:
		return v, true
	default:
		var zero T
		return zero, false
	}
}

// Put gives v back for a later Get, unless the list is full or keep
// refuses it.
func (l *List[T]) Put(v T) {
	if l.keep != nil && !l.keep(v) {
		return
	}
	select {
	case l.free <- v:
	default:
	}
}

// Len is how many values are kept.
func (l *List[T]) Len() int { return len(l.free) }
