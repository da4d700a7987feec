package respwriter

import "net/http"

// Watched is an http.ResponseWriter that notes whether the response has
// started.
type Watched struct {
	http.ResponseWriter
	Started bool
}

func (w *Watched) Write(b []byte) (int, error) {
	w.Started = true
	return w.ResponseWriter.Write(b)
}

func (w *Watched) WriteHeader(code int) {
	w.Started = true
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's own writer
// (deadlines, flushes).
func (w *Watched) Unwrap() http.ResponseWriter { return w.ResponseWriter }
