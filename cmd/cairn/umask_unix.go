//go:build unix

package main

import "syscall"

// restrictFileModes makes every file and directory the process creates
// private to its user: Pebble creates the store's files 0666 less the
// umask, and spans are often sensitive.
func restrictFileModes() { syscall.Umask(0o077) }
