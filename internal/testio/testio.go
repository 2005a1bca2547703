// Package testio holds what tests of several packages share for reading output that goroutines write.
package testio

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that concurrent writers (a logger, a sink, a command's stdout) and a reading test may
// share. OnWrite, if set before the first write, sees every write after it is buffered, outside the lock.
type Buffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	OnWrite func(string)
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	n, err := b.buf.Write(p)
	f := b.OnWrite
	b.mu.Unlock()
	if f != nil {
		f(string(p))
	}
	return n, err
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Bytes returns a copy of what was written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
