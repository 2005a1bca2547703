package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/recorded"
)

// relay is a recording TCP forwarder used as an independent witness: placed in front of the pipeline it records
// exactly what the client sent and received; placed behind it (as its upstream) it records exactly what the broker
// received and sent. It is deliberately naive (two io.Copy calls per connection, half-close on EOF) so that it
// shares no code with package proxy.
type relay struct {
	t      testing.TB
	ln     net.Listener
	target string

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []*relayConn
	open  int
	cond  *sync.Cond
}

// relayConn is one recorded connection: c2s is what the accepting side sent, s2c what the target sent back.
type relayConn struct {
	c2s, s2c bytes.Buffer
	c, u     net.Conn
	done     bool
	// reads is every read in both directions with its time, for a capture file of the connection
	// (recorded.Timed).
	readsMu sync.Mutex
	reads   []recorded.Read
}

// record keeps one read of direction dir (0: client → target).
func (rc *relayConn) record(dir int, b []byte) {
	rc.readsMu.Lock()
	rc.reads = append(rc.reads, recorded.Read{Dir: dir, At: time.Now(), Data: bytes.Clone(b)})
	rc.readsMu.Unlock()
}

func startRelay(t testing.TB, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay listen: %v", err)
	}
	r := &relay{t: t, ln: ln, target: target}
	r.cond = sync.NewCond(&r.mu)
	r.wg.Add(1)
	go r.acceptLoop()
	t.Cleanup(r.close)
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			r.t.Errorf("relay dial %s: %v", r.target, err)
			_ = c.Close()
			continue
		}
		rc := &relayConn{c: c, u: u}
		r.mu.Lock()
		r.conns = append(r.conns, rc)
		r.open++
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c, u, rc)
	}
}

func (r *relay) serve(c, u net.Conn, rc *relayConn) {
	defer r.wg.Done()
	done := make(chan struct{}, 2)
	go relayCopy(u, c, &rc.c2s, func(b []byte) { rc.record(0, b) }, done)
	go relayCopy(c, u, &rc.s2c, func(b []byte) { rc.record(1, b) }, done)
	<-done
	<-done
	_ = c.Close()
	_ = u.Close()
	r.mu.Lock()
	r.open--
	rc.done = true
	r.cond.Broadcast()
	r.mu.Unlock()
}

// relayCopy copies src to dst and records the bytes that were written to dst. On EOF it half-closes dst, on an
// error it closes both, so the other direction ends too.
func relayCopy(dst, src net.Conn, rec *bytes.Buffer, read func([]byte), done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			read(buf[:n]) // stamped before the write: the time the bytes reached the relay
			w, werr := dst.Write(buf[:n])
			rec.Write(buf[:w])
			if werr != nil {
				_ = src.Close()
				_ = dst.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
					return
				}
			}
			_ = src.Close()
			_ = dst.Close()
			return
		}
	}
}

// waitIdle waits until every accepted connection has finished (both directions), bounded by timeout.
func (r *relay) waitIdle(timeout time.Duration) bool {
	timer := time.AfterFunc(timeout, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.open > 0 {
		if !time.Now().Before(deadline) {
			return false
		}
		r.cond.Wait()
	}
	return true
}

// recorded returns the finished connections' records. Call it after waitIdle.
func (r *relay) recorded() []*relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*relayConn(nil), r.conns...)
}

func (r *relay) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	for _, rc := range r.conns {
		if !rc.done {
			// Still open at the end of a test (a failed one): cut it so its goroutines end.
			_ = rc.c.Close()
			_ = rc.u.Close()
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// streamKey identifies a connection by the digests of its two directions, so two relays' recordings can be
// compared as multisets without knowing which port maps to which.
type streamKey struct {
	c2s, s2c [sha256.Size]byte
}

func (rc *relayConn) key() streamKey {
	return streamKey{c2s: sha256.Sum256(rc.c2s.Bytes()), s2c: sha256.Sum256(rc.s2c.Bytes())}
}
