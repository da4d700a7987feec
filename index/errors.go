package index

import "errors"

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt index value")
