// Package ui is cairn's web UI: a page and its ES modules, embedded in the
// binary and served from the HTTP port with no build step. The scripts read
// everything from the HTTP query API (package query) on the same port; they
// hold no data themselves, so they are served without a token, and ask the
// user for one when the API wants it.
package ui
