//go:build linux

package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/amqptrace/amqptrace/proxy/internal/epoll"
)

// Client TLS on an event loop. amqps clients (kolla's rabbitmq_enable_tls) used to keep the goroutine pumps, and
// a pump per direction per connection is where the cost went: with every message a goroutine parked and woke, and
// make bench measured 1.35-1.45× haproxy's CPU per message terminating the same TLS. So once the handshake is done
// (on the connection's goroutine, under its deadline, as before) the session moves to a loop like a plain socket.
//
// crypto/tls has no non-blocking mode, but it needs none: it reads and writes the net.Conn under it, and that
// conn (bufferedConn) switches to tlsSide at the hand-off. tlsSide's Read is a read(2) on the loop's descriptor
// that reports "would block" as a temporary net.Error, which crypto/tls passes back without breaking the session
// (it is how a read deadline ends a Read: a partly received record stays buffered for the next one). Its Write
// never fails: crypto/tls makes every write error permanent, so the records collect in out and the loop sends them,
// like any other bytes, when the client's socket takes them.
//
// The upstream side stays plain: an upstream TLS session (UpstreamTLS) keeps the pumps. The broker next to the
// proxy is where TLS usually ends, so it was not worth a second adapter.

// tlsSide is the client's TLS session as the loop drives it; only the loop goroutine touches it.
type tlsSide struct {
	tc *tls.Conn
	bc *bufferedConn
	fd int
	// held is what the handshake's buffered reader had already taken from the socket at the hand-off: it is read
	// before the socket, and dropped (16 KiB) once empty.
	held *bufio.Reader
	// drained says the last read(2) came back short (or with EAGAIN): the socket has nothing until epoll reports
	// it readable again, so a read now would only cost a system call.
	drained bool
	// out is ciphertext crypto/tls wrote that the client's socket has not taken yet, in outBuf (from bigBufPool)
	// while it fits.
	out    []byte
	outBuf *[bigBufSize]byte
}

// tlsOutMax bounds the records waiting for a client that does not read. What the upstream sends adds at most one
// read's worth (the upstream is not read while records wait), but crypto/tls also writes on its own while the
// client's session is read: a TLS 1.3 client may ask for a key update in every handshake message, and each
// request is answered. Past the bound the client is not read until its socket has taken the backlog, as a pump's
// blocked write would hold its TLS session.
const tlsOutMax = 64 << 10

// errWouldBlock is what tlsSide's Read returns when the socket has nothing to read now.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "proxy: nothing to read on the socket now" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true } // crypto/tls keeps the session open only for a temporary error

func (s *tlsSide) Read(p []byte) (int, error) {
	if s.held != nil {
		if s.held.Buffered() > 0 {
			return s.held.Read(p) // from its buffer only: the net.Conn under it is closed
		}
		s.held = nil
	}
	if s.drained {
		return 0, errWouldBlock
	}
	for {
		n, errno := epoll.Read(s.fd, p)
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			s.drained = true
			return 0, errWouldBlock
		default:
			// Wrapped so that crypto/tls sees no net.Error: some errnos say Temporary, and this one ends the session.
			return 0, fmt.Errorf("read: %w", errno)
		}
		if n == 0 {
			return 0, io.EOF
		}
		s.drained = n < len(p)
		return n, nil
	}
}

func (s *tlsSide) Write(p []byte) (int, error) {
	if s.out == nil {
		s.outBuf = bigBufPool.Get().(*[bigBufSize]byte)
		s.out = s.outBuf[:0]
	}
	s.out = append(s.out, p...)
	return len(p), nil
}

// release gives out's buffer back once everything in it went (or the connection ended).
func (s *tlsSide) release() {
	if s.outBuf != nil {
		bigBufPool.Put(s.outBuf)
	}
	s.out, s.outBuf = nil, nil
}

// newTLSSide prepares c's client TLS session for a loop; nil when the client conn is not the one handshakeClient
// made. start makes the switch.
func newTLSSide(c *conn) *tlsSide {
	tc, ok := c.client.(*tls.Conn)
	if !ok {
		return nil
	}
	bc, ok := tc.NetConn().(*bufferedConn)
	if !ok {
		return nil
	}
	return &tlsSide{tc: tc, bc: bc}
}

// start switches crypto/tls onto the loop's descriptor. handOff calls it on the connection's goroutine, which ran
// the handshake and the preface and is done with the session; the loop first touches it in register, after the
// command queue's mutex, so nothing races.
func (s *tlsSide) start(fd int) {
	s.fd = fd
	s.held, s.bc.r = s.bc.r, nil
	s.bc.loop = s
}

// readTLS is readable for a client speaking TLS: the records that arrived are opened into the arena, as many
// together as fill a read buffer, so that a pipelined publisher's records go on in one write, as the pumps' drain
// did. Bytes crypto/tls already holds are not what epoll reports, so a connection that still has some after
// loopMaxReads buffers comes back through a command rather than waiting for the socket.
func (lc *loopConn) readTLS() {
	l, s := lc.l, lc.tls
	for range loopMaxReads {
		queued := s.out != nil // records already waiting for the client's socket, which its writability sends
		buf := l.readBuf()
		n := 0
		var err error
		for n < len(buf) && err == nil && len(s.out) <= tlsOutMax {
			var m int
			m, err = s.tc.Read(buf[n:])
			n += m
		}
		sent := true
		if n > 0 {
			readAt := time.Now()
			lc.c.touchAt(readAt)
			l.used += n
			sent = lc.forward(clientToServer, buf[:n], readAt)
		}
		if !queued && s.out != nil && !lc.finished {
			lc.sendSealed() // crypto/tls answered something itself: an alert, a key update
		}
		if lc.finished || !sent {
			return // failed, or the upstream is full: flush resumes here, and an error read now is read again then
		}
		switch {
		case err == nil:
			if !lc.reading(clientToServer) {
				return // the client's records back up (tlsOutMax): sendSealed resumes here
			}
			continue // the buffer is full: more may be held
		case errors.Is(err, errWouldBlock):
			return
		case errors.Is(err, io.EOF):
			lc.sawEOF(clientToServer)
			return
		default:
			lc.fail(ReasonClientError, fmt.Errorf("read from client: %w", err))
			return
		}
	}
	l.post(lc.resumeTLS)
}

// resumeTLS reads on what crypto/tls holds, once the connection may read its client again.
func (lc *loopConn) resumeTLS() {
	if !lc.finished && lc.reading(clientToServer) {
		lc.readTLS()
	}
}

// sealTo writes b, read from the upstream, to the client's TLS session, and sends the records. It reports whether
// they all went; otherwise the rest waits for the client's socket, and the upstream is not read meanwhile.
func (lc *loopConn) sealTo(b []byte, readAt time.Time) bool {
	if _, err := lc.tls.tc.Write(b); err != nil {
		lc.fail(ReasonClientError, fmt.Errorf("write to client: %w", err))
		return false
	}
	lc.l.tapLater(lc, serverToClient, b, readAt) // the plaintext is the stream the tap decodes
	return lc.sendSealed()
}

// sendSealed writes out to the client's socket, and reports whether all of it went.
func (lc *loopConn) sendSealed() bool {
	s := lc.tls
	over := len(s.out) > tlsOutMax
	wn, err := lc.write(serverToClient, s.out)
	if err != nil {
		lc.fail(ReasonClientError, fmt.Errorf("write to client: %w", err))
		return false
	}
	if wn > 0 {
		lc.c.touch()
	}
	done := wn == len(s.out)
	if done {
		s.release()
	} else {
		s.out = s.out[wn:]
	}
	lc.updateInterest()
	if done && over {
		lc.l.post(lc.resumeTLS) // posted: readTLS may be what called
	}
	return done
}

// closeNotify is sawEOF's first step when the upstream ended: close_notify to the client, as closeWrite sends it
// for the pumps. Nothing else is in out then (the upstream is read only while out is empty); should the client's
// socket not take the alert at once, the FIN goes without it.
func (lc *loopConn) closeNotify() {
	s := lc.tls
	if err := s.tc.CloseWrite(); err == nil && len(s.out) > 0 {
		_, _ = lc.write(serverToClient, s.out)
	}
	s.release()
}
