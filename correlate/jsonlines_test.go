package correlate

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
)

// diskWriter is a file on a disk that can fill up: while full, a write puts out at most partial bytes (what
// still fitted) and fails with ENOSPC, as write(2) does.
type diskWriter struct {
	out     bytes.Buffer
	full    bool
	partial int
	writes  int
}

func (d *diskWriter) Write(p []byte) (int, error) {
	d.writes++
	if d.full {
		n := min(d.partial, len(p))
		d.out.Write(p[:n])
		d.partial -= n
		return n, syscall.ENOSPC
	}
	return d.out.Write(p)
}

// wholeLines checks that every line of b is one JSON record, and returns their IDs.
func wholeLines(t *testing.T, b []byte) []uint64 {
	t.Helper()
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Fatalf("output ends in a partial line: %q", b[max(0, len(b)-40):])
	}
	var ids []uint64
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line is not a record: %v: %.80s", err, line)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// Lines go to the writer whole, and only at Flush or when the buffer is full: never a line cut at a buffer
// boundary, which a crash would leave torn at the end of the file.
func TestJSONLinesWritesWholeLinesOnly(t *testing.T) {
	d := &diskWriter{}
	j := NewJSONLines(d)
	j.limit = 1000
	for i := 1; i <= 200; i++ {
		j.Record(&Record{ID: uint64(i), Method: strings.Repeat("m", i%50)})
		if d.out.Len() > 0 && d.out.Bytes()[d.out.Len()-1] != '\n' {
			t.Fatalf("after record %d the writer holds a partial line", i)
		}
	}
	if d.writes < 2 {
		t.Fatalf("%d writes: the buffer limit was never reached", d.writes)
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if ids := wholeLines(t, d.out.Bytes()); len(ids) != 200 || ids[0] != 1 || ids[199] != 200 {
		t.Fatalf("got %d records (%v...), want 1..200", len(ids), ids[:min(3, len(ids))])
	}
	if j.Dropped() != 0 {
		t.Errorf("dropped %d", j.Dropped())
	}
}

// A full disk: the buffered lines are kept and retried by Flush, the records that do not fit meanwhile are
// counted as dropped (also in the Fanout's count for the sink), and once space returns writing resumes and the
// line cut by the short write is completed, so the output is whole lines in order.
func TestJSONLinesFullDiskCountsDropsAndResumes(t *testing.T) {
	d := &diskWriter{}
	j := NewJSONLines(d)
	probe, _ := json.Marshal(&Record{ID: 100, Method: "select_destinations"})
	j.limit = 8 * (len(probe) + 1) // room for eight lines
	fan := NewFanout(1, j)
	next := uint64(1)
	record := func(n int) {
		for range n {
			j.Record(&Record{ID: next, Method: "select_destinations"})
			next++
		}
	}
	record(3)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	d.full, d.partial = true, 25 // the next write fits 25 bytes: a torn line
	record(3)
	if err := j.Flush(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Flush on a full disk: %v, want ENOSPC", err)
	}
	if !errors.Is(j.Err(), syscall.ENOSPC) {
		t.Errorf("Err() = %v", j.Err())
	}
	writes := d.writes
	record(40) // far more than the buffer holds
	if d.writes != writes {
		t.Errorf("Record retried the failing writer %d times; only Flush should", d.writes-writes)
	}
	dropped := j.Dropped()
	if dropped == 0 || dropped >= 40 {
		t.Fatalf("dropped %d of 40 records while the disk was full, want some kept for the retry and the rest counted", dropped)
	}
	if got := fan.Dropped()[0]; got != dropped {
		t.Errorf("Fanout counts %d drops for the sink, the sink %d", got, dropped)
	}
	if err := j.Flush(); err == nil {
		t.Fatal("Flush succeeded on a full disk")
	}

	d.full = false
	if err := j.Flush(); err != nil {
		t.Fatalf("Flush once space returned: %v", err)
	}
	if j.Err() != nil {
		t.Errorf("Err() = %v after a successful write", j.Err())
	}
	record(2)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	ids := wholeLines(t, d.out.Bytes())
	if want := int(next-1) - int(dropped); len(ids) != want {
		t.Fatalf("%d records written, want %d (%d made, %d dropped)", len(ids), want, next-1, dropped)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("records out of order: %v", ids)
		}
	}
	if ids[len(ids)-1] != next-1 {
		t.Errorf("last record %d, want %d: writing did not resume", ids[len(ids)-1], next-1)
	}
}

// Close on a disk that stays full counts every line it still held as dropped.
func TestJSONLinesCloseCountsWhatItCouldNotWrite(t *testing.T) {
	d := &diskWriter{full: true}
	j := NewJSONLines(d)
	for i := range 5 {
		j.Record(&Record{ID: uint64(i + 1)})
	}
	if err := j.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close: %v, want ENOSPC", err)
	}
	if j.Dropped() != 5 {
		t.Errorf("dropped %d, want 5", j.Dropped())
	}
}
