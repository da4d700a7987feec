package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Handler serves the UI: its page at / and its scripts and styles under
// /assets/. Pages are addressed by the URL's fragment (#/search,
// #/trace/ID), so the server has one page to serve.
func Handler() http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	assets := http.StripPrefix("/assets/", http.FileServerFS(files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// Embedded files carry no modification time: without this a browser
		// could keep a previous version's scripts after an upgrade.
		w.Header().Set("Cache-Control", "no-cache")
		switch {
		case r.URL.Path == "/":
			http.ServeFileFS(w, r, files, "index.html")
		case IsAsset(r.URL.Path):
			assets.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// IsAsset reports whether a path is one of the UI's page or files, which
// need no token.
func IsAsset(path string) bool {
	return path == "/" || strings.HasPrefix(path, "/assets/")
}
