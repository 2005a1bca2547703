package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// eventsFD is what eventsFile needs of an open file; *os.File has it, and tests inject one that fails.
type eventsFD interface {
	io.Writer
	io.ReaderAt
	io.Closer
	Stat() (os.FileInfo, error)
	Truncate(size int64) error
}

// eventsFile is the --events file. Its Write is all or nothing: a write the disk cuts short (ENOSPC after some
// bytes) is truncated back, so the JSONLines sink keeps the whole lines and tries them again later, and the file
// never holds a torn line while the process lives. Opening it cuts a torn tail a crash left (a line without its
// newline) back to the last whole line, before anything is appended after it. Reopen opens the path again, for
// logrotate's rename-then-SIGHUP.
type eventsFile struct {
	path string
	open func(path string) (eventsFD, error)

	mu   sync.Mutex
	f    eventsFD
	size int64 // the file's length as far as this process wrote it; where a failed write is cut back to
	// regular is false for a FIFO or a character device (--events /dev/stderr): nothing to repair or truncate.
	regular bool
}

func openEventsFD(path string) (eventsFD, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
}

// openEventsFile opens (creating) path for appending and repairs its tail; cut is how many bytes of a torn last
// line were removed.
func openEventsFile(path string, open func(string) (eventsFD, error)) (e *eventsFile, cut int64, err error) {
	if open == nil {
		open = openEventsFD
	}
	e = &eventsFile{path: path, open: open}
	if cut, err = e.openLocked(); err != nil {
		return nil, 0, err
	}
	return e, cut, nil
}

// openLocked opens e.path and makes it e's file, closing the one before; e.mu is held (or e is not shared yet).
// On an error the old file stays.
func (e *eventsFile) openLocked() (cut int64, err error) {
	f, err := e.open(e.path)
	if err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return 0, err
	}
	size, regular := st.Size(), st.Mode().IsRegular()
	if regular {
		keep, err := lastLineEnd(f, size)
		if err == nil && keep < size {
			err = f.Truncate(keep)
		}
		if err != nil {
			_ = f.Close()
			return 0, fmt.Errorf("repairing the torn last line: %w", err)
		}
		cut, size = size-keep, keep
	}
	if e.f != nil {
		_ = e.f.Close()
	}
	e.f, e.size, e.regular = f, size, regular
	return cut, nil
}

// lastLineEnd returns the length of the file up to and including its last newline (0 when it has none).
func lastLineEnd(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		start := max(0, end-int64(len(buf)))
		chunk := buf[:end-start]
		if _, err := r.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// Write writes p whole or not at all: a short write is truncated back and reported as 0 bytes written. When the
// truncate fails too, the bytes that went out are reported, so the caller goes on from there and completes the line.
func (e *eventsFile) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, err := e.f.Write(p)
	if err == nil {
		e.size += int64(n)
		return n, nil
	}
	if n > 0 && e.regular {
		if terr := e.f.Truncate(e.size); terr == nil {
			return 0, err
		}
	}
	e.size += int64(n)
	return n, err
}

// Reopen closes the file and opens the path again (created if logrotate moved it away). On an error the old file
// stays in use.
func (e *eventsFile) Reopen() (cut int64, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.openLocked()
}

// Close closes the file.
func (e *eventsFile) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.f.Close()
}
