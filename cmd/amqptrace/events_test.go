package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/amqptrace/amqptrace/correlate"
)

// A crash mid-write leaves a line without its newline; opening the file cuts it back to the last whole line,
// however long the torn part (longer than one read chunk here), and leaves a whole file alone.
func TestEventsFileCutsATornTail(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"torn", "{\"id\":1}\n{\"id\":2}\n{\"id\":3,\"meth", "{\"id\":1}\n{\"id\":2}\n"},
		{"long torn", "{\"id\":1}\n" + strings.Repeat("x", 200<<10), "{\"id\":1}\n"},
		{"no newline at all", "{\"id\":1", ""},
		{"whole", "{\"id\":1}\n", "{\"id\":1}\n"},
		{"empty", "", ""},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		e, cut, err := openEventsFile(path, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, err := e.Write([]byte("{\"id\":9}\n")); err != nil {
			t.Fatal(err)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if want := tc.want + "{\"id\":9}\n"; string(got) != want {
			t.Errorf("%s: file is %.60q..., want %.60q...", tc.name, got, want)
		}
		if want := int64(len(tc.content) - len(tc.want)); cut != want {
			t.Errorf("%s: cut %d bytes, want %d", tc.name, cut, want)
		}
	}
}

// fullDisk is an events file on a disk that fills up: while full, a write puts out half of what it is given and
// fails with ENOSPC, as write(2) does when the last blocks run out.
type fullDisk struct {
	*os.File
	full bool
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if d.full {
		n, _ := d.File.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return d.File.Write(p)
}

// A write the disk cuts short is taken back (the file holds whole lines only, even while the disk is full), the
// sink counts what it cannot keep as dropped, and once space returns the kept lines and new ones are written.
func TestEventsFileFullDiskKeepsWholeLinesAndResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var disk *fullDisk
	e, _, err := openEventsFile(path, func(p string) (eventsFD, error) {
		f, err := openEventsFD(p)
		if err != nil {
			return nil, err
		}
		disk = &fullDisk{File: f.(*os.File)}
		return disk, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	j := correlate.NewJSONLines(e)
	id := uint64(0)
	record := func(n int) {
		for range n {
			id++
			j.Record(&correlate.Record{ID: id, Kind: correlate.KindCall, Method: "select_destinations"})
		}
	}
	record(5)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	disk.full = true
	record(5)
	if err := j.Flush(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Flush on a full disk: %v, want ENOSPC", err)
	}
	if b, _ := os.ReadFile(path); bytes.Count(b, []byte{'\n'}) != 5 || b[len(b)-1] != '\n' {
		t.Fatalf("while the disk is full the file holds %d lines and ends in %q, want the 5 whole lines only",
			bytes.Count(b, []byte{'\n'}), b[len(b)-1])
	}
	record(2000) // more than the sink's buffer: some are dropped
	dropped := j.Dropped()
	if dropped == 0 {
		t.Fatal("no record counted as dropped while the disk was full")
	}
	disk.full = false
	if err := j.Flush(); err != nil {
		t.Fatalf("Flush once space returned: %v", err)
	}
	record(3)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	recs := readEvents(t, path)
	if want := int(id - dropped); len(recs) != want {
		t.Fatalf("%d records in the file, want %d (%d made, %d dropped)", len(recs), want, id, dropped)
	}
	if recs[len(recs)-1].ID != id {
		t.Errorf("last record %d, want %d: writing did not resume", recs[len(recs)-1].ID, id)
	}
}

// Reopen after logrotate renamed the file: what was written before is in the renamed file, what comes after in a
// new file at the path.
func TestEventsFileReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "events.jsonl.1")
	e, _, err := openEventsFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Write([]byte("{\"id\":1}\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Reopen(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Write([]byte("{\"id\":2}\n")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{rotated: "{\"id\":1}\n", path: "{\"id\":2}\n"} {
		if got, err := os.ReadFile(p); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", filepath.Base(p), got, err, want)
		}
	}
}
