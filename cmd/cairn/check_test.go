package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"cairn/internal/otlpwire"
	"cairn/storage"
)

// TestCheckAndRepair damages a stopped store: check reports it and exits 1,
// repair drops it, and check then passes. A store in use is refused.
func TestCheckAndRepair(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := proto.Marshal(sampleTrace())
	if err != nil {
		t.Fatal(err)
	}
	var b otlpwire.Batch
	if err := otlpwire.Parse(req, &b, 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(context.Background(), req, &b); err != nil {
		t.Fatal(err)
	}
	if _, _, exit := cairn("check", dir); exit != 1 {
		t.Fatalf("check of a store in use: exit %d, want 1", exit)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if out, errOut, exit := cairn("check", dir); exit != 0 || !strings.Contains(out, "no damage found") {
		t.Fatalf("check of an intact store: exit %d\n%s%s", exit, out, errOut)
	}

	// The sample trace's span data is the one sstable of the spans store;
	// its one data block starts the file.
	tables, err := filepath.Glob(filepath.Join(dir, "spans", "*.sst"))
	if err != nil || len(tables) != 1 {
		t.Fatalf("spans sstables %v, %v", tables, err)
	}
	data, err := os.ReadFile(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	data[20] ^= 1
	if err := os.WriteFile(tables[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, exit := cairn("check", dir)
	if exit != 1 || !strings.Contains(out, tables[0]) || !strings.Contains(out, "4bf92f3577b34da6a3ce929d0e0e4736") ||
		!strings.Contains(errOut, "cairn repair") {
		t.Fatalf("check of a damaged store: exit %d\n%s%s", exit, out, errOut)
	}
	if out, errOut, exit := cairn("repair", dir); exit != 0 || !strings.Contains(out, "dropped") || !strings.Contains(out, "check passes") {
		t.Fatalf("repair: exit %d\n%s%s", exit, out, errOut)
	}
	if out, errOut, exit := cairn("check", dir); exit != 0 {
		t.Fatalf("check after repair: exit %d\n%s%s", exit, out, errOut)
	}
}
