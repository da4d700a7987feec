package ui

import (
	"io/fs"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

func TestHandler(t *testing.T) {
	for _, c := range []struct {
		method, path string
		code         int
		contentType  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/assets/app.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/assets/style.css", 200, "text/css; charset=utf-8"},
		{"GET", "/assets/missing.js", 404, ""},
		{"GET", "/elsewhere", 404, ""},
		{"POST", "/", 405, ""},
	} {
		w := get(t, c.method, c.path)
		if w.Code != c.code || c.contentType != "" && w.Header().Get("Content-Type") != c.contentType {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, w.Code, w.Header().Get("Content-Type"), c.code, c.contentType)
		}
		if w.Code == 200 && w.Header().Get("Cache-Control") != "no-cache" {
			t.Errorf("%s %s: Cache-Control %q", c.method, c.path, w.Header().Get("Cache-Control"))
		}
	}
	if !strings.Contains(get(t, "GET", "/").Body.String(), `<script type="module" src="/assets/app.js">`) {
		t.Error("the page does not load app.js")
	}
}

// TestImportsExist checks that every module a script imports is embedded,
// so that a misnamed file fails here, not only in a browser.
func TestImportsExist(t *testing.T) {
	imports := regexp.MustCompile(`from '\./([^']+)'`)
	scripts, err := fs.Glob(static, "static/*.js")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, name := range scripts {
		src, _ := fs.ReadFile(static, name)
		for _, m := range imports.FindAllStringSubmatch(string(src), -1) {
			if w := get(t, "GET", "/assets/"+m[1]); w.Code != 200 {
				t.Errorf("%s imports %s: %d", name, m[1], w.Code)
			}
		}
	}
}

func TestIsAsset(t *testing.T) {
	for path, want := range map[string]bool{"/": true, "/assets/app.js": true, "/api/v1/services": false, "/metrics": false, "/assets": false} {
		if IsAsset(path) != want {
			t.Errorf("IsAsset(%q) = %v", path, !want)
		}
	}
}
