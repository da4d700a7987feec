package ingest

import (
	"net/http"
	"strings"
)

// corsPolicy answers browsers' cross-origin requests for the origins it
// allows. Browser SDKs post OTLP with a Content-Type that is not a simple
// one, so every export from a page on another origin is preceded by a
// preflight OPTIONS request.
type corsPolicy struct {
	any      bool
	exact    map[string]bool
	patterns [][2]string // prefix and suffix around a single *
}

func newCORSPolicy(origins []string) corsPolicy {
	p := corsPolicy{exact: map[string]bool{}}
	for _, o := range origins {
		switch before, after, wild := strings.Cut(o, "*"); {
		case o == "*":
			p.any = true
		case wild:
			p.patterns = append(p.patterns, [2]string{before, after})
		default:
			p.exact[o] = true
		}
	}
	return p
}

func (p corsPolicy) allows(origin string) bool {
	if p.any || p.exact[origin] {
		return true
	}
	for _, pat := range p.patterns {
		if len(origin) >= len(pat[0])+len(pat[1]) && strings.HasPrefix(origin, pat[0]) && strings.HasSuffix(origin, pat[1]) {
			return true
		}
	}
	return false
}

// corsMaxAge is how long, in seconds, a browser may cache a preflight's
// answer.
const corsMaxAge = "7200"

// handle adds CORS headers for an allowed origin, and answers a preflight
// request itself, returning true when it did.
func (p corsPolicy) handle(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if origin == "" {
		return false
	}
	w.Header().Add("Vary", "Origin")
	if !p.allows(origin) {
		if preflight {
			http.Error(w, "origin "+origin+" is not among the origins allowed to export to this cairn", http.StatusForbidden)
			return true
		}
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	if !preflight {
		// Browser SDKs honour Retry-After only if they may read it.
		w.Header().Set("Access-Control-Expose-Headers", "Retry-After")
		return false
	}
	w.Header().Set("Access-Control-Allow-Methods", http.MethodPost)
	if h := r.Header.Get("Access-Control-Request-Headers"); h != "" {
		w.Header().Set("Access-Control-Allow-Headers", h)
	}
	w.Header().Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}
