package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at build time by the Makefile (-ldflags -X main.version=…);
// a plain `go build` leaves it empty and the build info fills in.
var version string

// cairnVersion is the version a build reports: the one it was given, the
// module version `go install` recorded, or the commit it was built from.
func cairnVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, modified := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "-dirty"
	}
	return "devel-" + rev
}

// writeVersion prints the version and what the binary was built from.
func writeVersion(w io.Writer) {
	fmt.Fprintf(w, "cairn %s\n", cairnVersion())
	fmt.Fprintf(w, "  go       %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision", "vcs.time", "vcs.modified":
			fmt.Fprintf(w, "  %-8s %s\n", s.Key[len("vcs."):], s.Value)
		}
	}
}

func versionCmd(args []string, stdout, _ io.Writer) error {
	if _, err := parseFlags(newFlagSet("version"), args, stdout); err != nil {
		return err
	}
	writeVersion(stdout)
	return nil
}
