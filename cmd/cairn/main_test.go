package main

import (
	"bytes"
	"strings"
	"testing"
)

// cairn runs the command line as main does and returns what it printed and
// the status it would exit with.
func cairn(args ...string) (stdout, stderr string, exit int) {
	var out, errOut bytes.Buffer
	exit = exitStatus(run(args, &out, &errOut), &errOut)
	return out.String(), errOut.String(), exit
}

func TestHelp(t *testing.T) {
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {"help", c.name}} {
			out, errOut, exit := cairn(args...)
			if exit != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: "+c.synopsis()+"\n") {
				t.Errorf("cairn %s: exit %d, stderr %q, stdout:\n%s", strings.Join(args, " "), exit, errOut, out)
			}
			if c.name != "version" && !strings.Contains(out, "\nFlags:\n") {
				t.Errorf("cairn %s lists no flags:\n%s", strings.Join(args, " "), out)
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		if out, errOut, exit := cairn(args...); exit != 0 || errOut != "" || !strings.Contains(out, "cairn trace TRACE_ID_HEX [flags]") {
			t.Errorf("cairn %s: exit %d, stderr %q, stdout:\n%s", args, exit, errOut, out)
		}
	}
	out, errOut, exit := cairn()
	if exit != 2 || out != "" || !strings.Contains(errOut, "cairn search [flags]") || !strings.Contains(errOut, "Exit status:") {
		t.Errorf("cairn without arguments: exit %d, stdout %q, stderr:\n%s", exit, out, errOut)
	}
	if out, _, exit := cairn("version", "--help"); exit != 0 || strings.Contains(out, "go1") {
		t.Errorf("version --help printed the version:\n%s", out)
	}
	if out, _, exit := cairn("--version"); exit != 0 || !strings.HasPrefix(out, "cairn ") {
		t.Errorf("--version: exit %d\n%s", exit, out)
	}
}

// TestUsageErrors checks that a command called wrongly says what is wrong in
// one line, points to its help, and exits with status 2.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"search", "--limit", "x"}, `invalid value "x" for flag -limit: parse error` + "\nsee 'cairn search --help'"},
		{[]string{"serve", "--nope"}, "flag provided but not defined: -nope\nsee 'cairn serve --help'"},
		{[]string{"services", "extra"}, `services takes no arguments, got ["extra"]` + "\nsee 'cairn services --help'"},
		{[]string{"trace"}, "trace needs TRACE_ID_HEX\nsee 'cairn trace --help'"},
		{[]string{"operations", "a", "b"}, `operations takes only SERVICE, got ["a" "b"]` + "\nsee 'cairn operations --help'"},
		{[]string{"bench", "--spans", "many"}, `invalid value "many" for flag -spans: parse error` + "\nsee 'cairn bench --help'"},
		{[]string{"version", "now"}, `version takes no arguments, got ["now"]` + "\nsee 'cairn version --help'"},
		{[]string{"help", "nope"}, `unknown command "nope"` + "\nsee 'cairn --help'"},
		{[]string{"nope"}, `unknown command "nope"` + "\nsee 'cairn --help'"},
	} {
		out, errOut, exit := cairn(tc.args...)
		if want := "cairn: " + tc.want + "\n"; exit != 2 || out != "" || errOut != want {
			t.Errorf("cairn %s: exit %d, stdout %q, stderr\n%s\nwant\n%s", strings.Join(tc.args, " "), exit, out, errOut, want)
		}
	}
}
