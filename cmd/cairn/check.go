package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"cairn/storage"
)

func checkCmd(args []string, stdout, stderr io.Writer) error {
	pos, err := parseFlags(newFlagSet("check"), args, stdout)
	if err != nil {
		return err
	}
	report, err := storage.Check(pos[0], &storage.CheckOptions{Progress: progress(stderr)})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checked %d sstables and %d write-ahead-log segments\n", report.Tables, report.Segments)
	if len(report.Damage) == 0 {
		fmt.Fprintln(stdout, "no damage found")
		return nil
	}
	for _, d := range report.Damage {
		fmt.Fprintln(stdout, d)
	}
	if slices.ContainsFunc(report.Damage, storage.Damage.Unopenable) {
		return fmt.Errorf("%d damaged part(s) found; a store that cannot be opened must be restored from a backup, which cairn repair cannot do", len(report.Damage))
	}
	return fmt.Errorf("%d damaged part(s) found; with cairn stopped, run cairn repair %s", len(report.Damage), pos[0])
}

func repairCmd(args []string, stdout, stderr io.Writer) error {
	pos, err := parseFlags(newFlagSet("repair"), args, stdout)
	if err != nil {
		return err
	}
	r, err := storage.Repair(pos[0], &storage.CheckOptions{Progress: progress(stderr)})
	if r != nil {
		for _, d := range r.Dropped {
			fmt.Fprintf(stdout, "dropped %s\n", d)
		}
		for _, s := range r.Rebuilt {
			fmt.Fprintf(stdout, "rebuilt %s\n", s)
		}
		for _, s := range r.Lost {
			fmt.Fprintf(stdout, "lost %s\n", s)
		}
	}
	if err != nil {
		return err
	}
	if len(r.Dropped) == 0 {
		fmt.Fprintln(stdout, "nothing to drop")
	}
	if len(r.After.Damage) > 0 {
		for _, d := range r.After.Damage {
			fmt.Fprintf(stdout, "left %s\n", d)
		}
		return fmt.Errorf("%d damaged part(s) left: a store that does not open (restore it from a backup), or write-ahead-log records, which cairn skips as it replays them", len(r.After.Damage))
	}
	fmt.Fprintln(stdout, "check passes")
	return nil
}

// progress reports, at most every two seconds, how many files a check has
// read.
func progress(w io.Writer) func(done, total int) {
	last := time.Now()
	return func(done, total int) {
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			fmt.Fprintf(w, "checked %d of %d files\n", done, total)
		}
	}
}
