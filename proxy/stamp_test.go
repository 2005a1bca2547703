package proxy_test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/proxy"
)

// stampRec is a tap writer with WriteStamped: it records each chunk with its read time, and fails the test if the
// pump falls back to Write.
type stampRec struct {
	t      *testing.T
	mu     sync.Mutex
	data   bytes.Buffer
	stamps []time.Time
}

func (s *stampRec) Write(p []byte) (int, error) {
	s.t.Error("pump called Write on a StampedWriter")
	return len(p), nil
}

func (s *stampRec) WriteStamped(p []byte, at time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.Write(p)
	s.stamps = append(s.stamps, at)
	return len(p), nil
}

// TestTapStampsReadTime checks that a StampedWriter tap gets every byte with the time it was read, taken before the
// bytes were forwarded: each client→broker stamp is no later than the moment the upstream received those bytes,
// and stamps never go backwards.
func TestTapStampsReadTime(t *testing.T) {
	received := make(chan time.Time, 16)
	up := startUpstream(t, func(c net.Conn) {
		defer func() { _ = c.Close() }()
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				received <- time.Now()
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	c2s, s2c := &stampRec{t: t}, &stampRec{t: t}
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: func(proxy.ConnInfo) proxy.Tap {
		return proxy.Tap{ClientToServer: c2s, ServerToClient: s2c, Done: func(e proxy.ConnEnd) { rec.ends <- e }}
	}})
	cl := dial(t, addr)
	var sent []byte
	var upAt []time.Time
	for i := range 5 {
		msg := []byte{byte('a' + i), byte('0' + i)}
		sent = append(sent, msg...)
		if _, err := cl.Write(msg); err != nil {
			t.Fatal(err)
		}
		echo := make([]byte, len(msg))
		if _, err := io.ReadFull(cl, echo); err != nil {
			t.Fatal(err)
		}
		upAt = append(upAt, <-received)
	}
	_ = cl.Close()
	// The echo of the last chunk reached the client, so its tap write (which follows the forward) may still be in
	// flight; the connection's end is reported only after the last tap write.
	rec.waitEnd(t)
	s2c.mu.Lock()
	if s2c.data.Len() != len(sent) {
		t.Errorf("broker→client tap saw %d bytes, want %d", s2c.data.Len(), len(sent))
	}
	s2c.mu.Unlock()
	c2s.mu.Lock()
	defer c2s.mu.Unlock()
	if !bytes.Equal(c2s.data.Bytes(), sent) {
		t.Fatalf("tap saw %q, client sent %q", c2s.data.Bytes(), sent)
	}
	if len(c2s.stamps) != len(upAt) {
		t.Fatalf("%d stamped chunks, want %d (one per round trip)", len(c2s.stamps), len(upAt))
	}
	for i, st := range c2s.stamps {
		if st.IsZero() || st.After(upAt[i]) {
			t.Errorf("chunk %d stamped %v, after the upstream received it at %v", i, st, upAt[i])
		}
		if i > 0 && st.Before(c2s.stamps[i-1]) {
			t.Errorf("stamps go backwards at chunk %d", i)
		}
	}
}
