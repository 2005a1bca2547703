//go:build linux

package proxy

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/amqptrace/amqptrace/proxy/internal/epoll"
)

// Event loops (Linux). A goroutine per direction is the simplest correct proxy, but on a busy small machine the
// Go scheduler costs more than the forwarding itself: every message parks and wakes a goroutine, every read after
// a drained socket is an extra read(2) that returns EAGAIN, and idle Ps spin (futex, nanosleep) looking for work.
// Measured with `make bench` on 2 cores next to RabbitMQ, that was 1.7× haproxy's CPU per message.
//
// So plain TCP connections are forwarded the way haproxy forwards them: a few loops, each one goroutine around
// epoll_wait, level-triggered. A readable socket is read once into the loop's arena and the bytes are written to
// the other socket at once. Only when every ready socket of the epoll batch has been forwarded are the batch's
// bytes handed to the taps, in the order they were read (see runTaps): decoding one message must not hold up the
// forwarding of the next one, which was already waiting. A short read means the socket was drained, so we go
// back to epoll instead of asking again. When the destination cannot take everything
// (EAGAIN), the rest waits in a pooled buffer, the source is no longer read (TCP flow control pushes back on the
// sender, as with the pump) and the destination is watched for writability.
//
// The loop owns its sockets outright: handOff duplicates the descriptors and closes the net.Conns, which removes
// them from the Go poller, so no second epoll wakes for the same bytes. Anything another goroutine wants done to
// a connection (idle timeout, half-close timeout, shutdown) is posted to the loop as a command, so a descriptor is
// only ever closed by the goroutine that reads it and a number reused by the kernel cannot be hit by mistake.
//
// A client speaking TLS is forwarded by a loop too, once its handshake is done (tlsloop_linux.go); an upstream TLS
// session and connections over anything but *net.TCPConn keep the goroutine pumps. The system calls (the
// epoll set, its wake-up, raw reads and writes) are in proxy/internal/epoll; this file is forwarding policy.

// loopReadBuf is the read size of a loop: the pump's big buffer, so a remainder that must wait always fits in one
// pooled array.
const loopReadBuf = bigBufSize

// loopArena is how many bytes one epoll batch may read before its taps must run: a batch's bytes stay in the arena
// until they are tapped. Eight reads' worth covers a batch of RPC traffic many times over; a batch moving big
// messages runs its taps whenever the arena is full.
const loopArena = 8 * loopReadBuf

// loopMaxReads bounds the reads one readiness event gets when every read fills the buffer: enough to move a large
// message without a trip through epoll per 32 KiB, small enough that one busy connection cannot starve the others
// of the loop (level-triggered epoll reports it again).
const loopMaxReads = 4

type loop struct {
	p      *Proxy
	poll   *epoll.Poller // posting a command wakes it
	events [256]epoll.Event
	// arena holds what the current batch read, from arena[0] to arena[used], until the taps have seen it; taps
	// are the forwarded spans waiting for their tap, in read order.
	arena [loopArena]byte
	used  int
	taps  []pendingTap
	byFD  []*loopConn // indexed by descriptor; only the loop goroutine touches it
	done  chan struct{}
	// more says the current batch left a socket unread that is still readable (loopMaxReads), or changed a
	// descriptor's interest: the set must be polled again before the loop parks (see epoll.Poller.Serve).
	more bool

	mu      sync.Mutex
	cmds    []func()
	stopped bool
}

// pendingTap is bytes forwarded in the current batch, waiting for direction d's tap.
type pendingTap struct {
	lc     *loopConn
	d      direction
	b      []byte // in the loop's arena
	readAt time.Time
}

// loopConn is a connection owned by a loop. Everything in it belongs to the loop goroutine; when it is finished,
// done runs on a new goroutine (the connection's close-out: handleConn's goroutine ended at the hand-off).
type loopConn struct {
	c  *conn
	l  *loop
	fd [2]int // fd[clientToServer] is the client socket, fd[serverToClient] the upstream socket: fd[d] is d's source

	w        [2]tapTarget
	interest [2]uint32            // current epoll interest of fd[i]
	pend     [2][]byte            // direction d's bytes read but not yet written (its destination was full)
	pendBuf  [2]*[bigBufSize]byte // backing array of pend[d], from bigBufPool
	pendAt   [2]time.Time         // read time of pend[d], for the tap
	eof      [2]bool              // direction d saw a clean EOF and half-closed its destination
	tls      *tlsSide             // the client's TLS session, when it speaks TLS: fd[clientToServer] carries records
	finished bool
	done     func()
}

const (
	// evIn is the read interest: readable, and told apart when the peer's FIN is among what is readable (a short
	// read can leave it unread, and nothing will wake the loop for it again).
	evIn  = epoll.In | epoll.RdHup
	evOut = epoll.Out
	evErr = epoll.Err
)

// startLoops starts n event loops. On error it stops the ones already started and returns the error; the caller
// then forwards every connection with goroutine pumps.
func startLoops(p *Proxy, n int) ([]*loop, error) {
	loops := make([]*loop, 0, n)
	for range n {
		l, err := newLoop(p)
		if err != nil {
			stopLoops(loops)
			return nil, err
		}
		loops = append(loops, l)
		go runEventLoop(l)
	}
	return loops, nil
}

func newLoop(p *Proxy) (*loop, error) {
	poll, err := epoll.New()
	if err != nil {
		return nil, err
	}
	return &loop{p: p, poll: poll, done: make(chan struct{})}, nil
}

// stopLoops stops the loops and waits for their goroutines. Every connection must have finished: Serve calls it
// after drain.
func stopLoops(loops []*loop) {
	for _, l := range loops {
		l.post(nil) // nil is the stop command
	}
	for _, l := range loops {
		<-l.done
	}
}

// post queues cmd for the loop goroutine and wakes it.
func (l *loop) post(cmd func()) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	if cmd == nil {
		l.stopped = true
	}
	l.cmds = append(l.cmds, cmd)
	l.mu.Unlock()
	l.poll.Wake()
}

// runEventLoop is the loop goroutine; named so a goroutine dump shows it. It never blocks in epoll_wait: it parks
// in the Go poller while nothing is ready (epoll.Poller.Serve says why).
func runEventLoop(l *loop) {
	defer close(l.done)
	defer l.poll.Close()
	if err := l.poll.Serve(l.events[:], l.dispatch); err != nil {
		// Only a bug (a bad descriptor) gets here. Connections still on this loop would hang, so say it loudly.
		l.p.log.Error("event loop stopped", "err", err)
	}
}

// dispatch serves a batch of ready events and reports whether the loop was told to stop, and whether the set must
// be polled again before the loop parks (more).
func (l *loop) dispatch(ready []epoll.Event) (stop, more bool) {
	woken := false
	l.more = false
	for i := range ready {
		ev := &ready[i]
		fd := int(ev.Fd)
		if l.poll.IsWake(fd) {
			woken = true
			continue
		}
		// A connection finished earlier in this batch leaves nil here. Commands (which register new descriptors,
		// possibly reusing a number just closed) run only after the batch, so a stale event is never taken for a
		// new connection's.
		if fd < len(l.byFD) {
			if lc := l.byFD[fd]; lc != nil {
				lc.handle(fd, ev.Events)
			}
		}
	}
	l.runTaps()
	if !woken {
		return false, l.more
	}
	l.poll.ClearWake()
	stop = l.runCommands()
	l.runTaps()       // a command can read too (a TLS session's held records)
	return stop, true // a command may have registered a descriptor that is ready already
}

// tapLater queues b, forwarded for direction d of lc and still in the arena, for its tap.
func (l *loop) tapLater(lc *loopConn, d direction, b []byte, readAt time.Time) {
	l.taps = append(l.taps, pendingTap{lc: lc, d: d, b: b, readAt: readAt})
}

// runTaps hands the batch's forwarded bytes to their taps, in the order they were read (each direction's decoder
// sees its stream in order), and empties the arena. It runs at the end of every batch, before a read that would
// not fit the arena, and before anything that must come after the taps: a tap of bytes that are not in the arena,
// and the end of a connection (after which its tap is closed by another goroutine).
func (l *loop) runTaps() {
	for i := range l.taps {
		t := &l.taps[i]
		t.lc.c.forwarded(t.d, &t.lc.w[t.d], t.b, t.readAt)
		*t = pendingTap{} // do not keep finished connections reachable
	}
	l.taps = l.taps[:0]
	l.used = 0
}

// readBuf returns where the next read goes: the free part of the arena, at least loopReadBuf bytes of it.
func (l *loop) readBuf() []byte {
	if len(l.arena)-l.used < loopReadBuf {
		l.runTaps()
	}
	return l.arena[l.used : l.used+loopReadBuf]
}

// runCommands runs the queued commands and reports whether the loop was told to stop.
func (l *loop) runCommands() (stop bool) {
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, cmd := range cmds {
		if cmd == nil {
			stop = true
			continue
		}
		cmd()
	}
	return stop
}

// handOff moves an established TCP connection onto a loop. It returns nil when the connection must keep the
// goroutine pumps: TLS to the upstream, a socket that is not TCP, or a close that raced with the hand-off. On
// success the net.Conns are closed (the loop holds duplicates of their descriptors) and done runs once the loop
// has finished the connection.
func (c *conn) handOff(l *loop, done func()) *loopConn {
	if c.info.UpstreamTLS {
		return nil
	}
	var side *tlsSide
	if c.info.ClientTLS {
		if side = newTLSSide(c); side == nil {
			return nil
		}
	}
	client, ok1 := c.raw.(syscall.Conn)
	up, ok2 := c.up.(syscall.Conn)
	if !ok1 || !ok2 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return nil // the pumps will fail at once and report the reason already recorded
	}
	cfd, err := epoll.Dup(client)
	if err != nil {
		return nil
	}
	ufd, err := epoll.Dup(up)
	if err != nil {
		_ = epoll.Close(cfd)
		return nil
	}
	lc := &loopConn{c: c, l: l, fd: [2]int{cfd, ufd}, done: done, tls: side}
	lc.w = [2]tapTarget{c.tapTarget(clientToServer), c.tapTarget(serverToClient)}
	if side != nil {
		side.start(cfd)
	}
	// The duplicates keep the sockets open; closing the net.Conns takes them out of the Go poller. Nothing uses
	// them after this (closeBoth goes through the loop, closeOut skips nil), so they are dropped: a closed
	// net.Conn still holds its netFD and both addresses, about 0.5 KiB a connection for as long as it lives. The
	// raw socket is closed, not a TLS session over it, which would send close_notify.
	_ = c.raw.Close()
	_ = c.up.Close()
	c.raw, c.client, c.up = nil, nil, nil
	c.loop = lc
	l.post(lc.register)
	return lc
}

// register runs on the loop: it indexes the descriptors and starts watching both for reading.
func (lc *loopConn) register() {
	l := lc.l
	for _, fd := range lc.fd {
		if fd >= len(l.byFD) {
			grown := make([]*loopConn, max(fd+1, 2*len(l.byFD), 64))
			copy(grown, l.byFD)
			l.byFD = grown
		}
		l.byFD[fd] = lc
	}
	for i, fd := range lc.fd {
		if err := l.poll.Set(fd, 0, evIn); err != nil {
			lc.fail(direction(i).readReason(), err)
			return
		}
		lc.interest[i] = evIn
	}
	if lc.tls != nil {
		lc.readTLS() // the handshake's reader may hold records already, which epoll will not report
	}
}

// abort is the command closeBoth posts: end the connection now, with the reason the caller recorded.
func (lc *loopConn) abort() { lc.finish() }

// handle serves one readiness event on fd.
func (lc *loopConn) handle(fd int, events uint32) {
	i := 0
	if fd == lc.fd[1] {
		i = 1
	}
	src := direction(i)       // the direction that reads fd
	dstOf := direction(1 - i) // the direction that writes to fd
	// Every event is for someone: a descriptor is in the epoll set only while a direction reads it or waits to
	// write to it (updateInterest), so a hang-up cannot be reported, level-triggered, to nobody, forever.
	if events&(evOut|evErr) != 0 && lc.waiting(dstOf) {
		lc.flush(dstOf)
		if lc.finished {
			return
		}
	}
	if events&(epoll.RdHup|evErr) != 0 {
		lc.l.more = true // still reported after this batch's reads: poll again before parking
	}
	if events&(evIn|evErr) != 0 && lc.reading(src) {
		lc.readable(src)
	}
}

// reading reports whether direction d's source is being read: not ended, and not waiting for its destination
// (nor, for a TLS client, held by the records waiting for it: tlsOutMax).
func (lc *loopConn) reading(d direction) bool {
	return !lc.eof[d] && !lc.waiting(d) && (d == serverToClient || lc.tls == nil || len(lc.tls.out) <= tlsOutMax)
}

// waiting reports whether direction d has bytes its destination has not taken yet: read and queued (pend), or,
// towards a TLS client, sealed into records.
func (lc *loopConn) waiting(d direction) bool {
	return lc.pend[d] != nil || lc.sealed(d) && lc.tls.out != nil
}

// sealed says whether direction d writes to a TLS client: its bytes go through crypto/tls (sealTo) and what waits
// is ciphertext in tlsSide.out, not pend.
func (lc *loopConn) sealed(d direction) bool { return d == serverToClient && lc.tls != nil }

func (lc *loopConn) readable(d direction) {
	if d == clientToServer && lc.tls != nil {
		lc.tls.drained = false // epoll says there is something
		lc.readTLS()
		return
	}
	l, c := lc.l, lc.c
	src := lc.fd[d]
	for range loopMaxReads {
		buf := l.readBuf()
		n, err := epoll.Read(src, buf)
		if err != 0 {
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return
			}
			lc.fail(d.readReason(), fmt.Errorf("read from %s: %w", d.srcName(), err))
			return
		}
		if n == 0 {
			lc.sawEOF(d)
			return
		}
		readAt := time.Now()
		c.touchAt(readAt)
		l.used += n // the bytes stay in the arena until their tap has run
		if !lc.forward(d, buf[:n], readAt) || n < len(buf) {
			// Waiting for the destination, failed, or a short read: the socket is drained, and level-triggered
			// epoll says when more arrives.
			return
		}
	}
	l.more = true // loopMaxReads full reads: the rest waits for the next poll, which must come before parking
}

// forward writes b (in the arena) to direction d's destination and queues what was written for the tap. It reports
// whether all of b went; otherwise the rest is queued (and reading paused) or the connection failed.
func (lc *loopConn) forward(d direction, b []byte, readAt time.Time) bool {
	if lc.sealed(d) {
		return lc.sealTo(b, readAt)
	}
	wn, err := lc.write(d, b)
	if wn > 0 {
		lc.l.tapLater(lc, d, b[:wn], readAt)
	}
	if err != nil {
		lc.fail(d.writeReason(), fmt.Errorf("write to %s: %w", d.dstName(), err))
		return false
	}
	if wn == len(b) {
		return true
	}
	pb := bigBufPool.Get().(*[bigBufSize]byte)
	lc.pendBuf[d] = pb
	lc.pend[d] = pb[:copy(pb[:], b[wn:])]
	lc.pendAt[d] = readAt
	lc.updateInterest()
	return false
}

// flush writes what direction d has queued; once all of it went, reading its source resumes.
func (lc *loopConn) flush(d direction) {
	if lc.sealed(d) {
		lc.sendSealed()
		return
	}
	wn, err := lc.write(d, lc.pend[d])
	if wn > 0 {
		// Not in the arena: tapped now, after what the batch read before it.
		lc.l.runTaps()
		lc.c.forwarded(d, &lc.w[d], lc.pend[d][:wn], lc.pendAt[d])
	}
	if err != nil {
		lc.fail(d.writeReason(), fmt.Errorf("write to %s: %w", d.dstName(), err))
		return
	}
	lc.c.touch()
	if wn < len(lc.pend[d]) {
		lc.pend[d] = lc.pend[d][wn:]
		return
	}
	bigBufPool.Put(lc.pendBuf[d])
	lc.pend[d], lc.pendBuf[d] = nil, nil
	lc.updateInterest()
	if d == clientToServer && lc.tls != nil {
		lc.resumeTLS() // crypto/tls may hold records that arrived while the upstream was full
	}
}

// write writes as much of b as the destination takes now; the caller hands what went to the tap. EAGAIN is not an
// error: it returns the count so far.
func (lc *loopConn) write(d direction, b []byte) (int, error) {
	dst := lc.fd[1-d]
	total := 0
	for total < len(b) {
		n, err := epoll.Write(dst, b[total:])
		if err != 0 {
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN {
				break
			}
			return total, err
		}
		total += n
	}
	return total, nil
}

// sawEOF passes a clean EOF on, as conn.halfClose does for the pumps: the destination gets a FIN and the other
// direction keeps running.
func (lc *loopConn) sawEOF(d direction) {
	c := lc.c
	c.noteEOF(d)
	lc.eof[d] = true
	if lc.sealed(d) {
		lc.closeNotify()
	}
	if err := epoll.ShutdownWrite(lc.fd[1-d]); err != nil {
		lc.finish()
		return
	}
	if lc.eof[1-d] {
		lc.finish()
		return
	}
	lc.updateInterest()
	c.armHalfCloseTimer()
}

// fail records an I/O error (unless a cause is already known) and ends the connection.
func (lc *loopConn) fail(r CloseReason, err error) {
	lc.c.noteFailure(r, err)
	lc.finish()
}

// updateInterest brings both descriptors' epoll interest in line with the state: fd[i] is read while direction i
// reads, and watched for writability while the other direction has bytes queued for it. A descriptor nobody
// waits on leaves the set. Keeping it with no events would not do: hang-up and error are reported whatever the
// interest, and a client that sent its FIN while its direction waits for the broker, with the broker's side already
// shut, is in hang-up by then; level-triggered, that would wake the loop forever.
func (lc *loopConn) updateInterest() {
	for i, fd := range lc.fd {
		var want uint32
		if lc.reading(direction(i)) {
			want |= evIn
		}
		if lc.waiting(direction(1 - i)) {
			want |= evOut
		}
		have := lc.interest[i]
		if want == have {
			continue
		}
		// A descriptor whose interest changes may be ready now, and epoll_ctl wakes no poller for one that the set
		// already holds as ready (level-triggered, reported earlier in this batch): poll again before parking.
		lc.l.more = true
		if err := lc.l.poll.Set(fd, have, want); err != nil {
			lc.fail(direction(i).readReason(), err)
			return
		}
		lc.interest[i] = want
	}
}

// finish closes both sockets and releases handleConn. Closing without a prior FIN on an error path sends an RST
// where data was unread, as closing a net.Conn does.
func (lc *loopConn) finish() {
	if lc.finished {
		return
	}
	lc.finished = true
	l := lc.l
	l.runTaps() // the connection's last bytes reach its tap before handleConn closes the tap
	for i, fd := range lc.fd {
		if lc.interest[i] != 0 {
			_ = l.poll.Set(fd, lc.interest[i], 0)
		}
		if fd < len(l.byFD) && l.byFD[fd] == lc {
			l.byFD[fd] = nil
		}
		_ = epoll.Close(fd)
		if lc.pendBuf[i] != nil {
			bigBufPool.Put(lc.pendBuf[i])
			lc.pend[i], lc.pendBuf[i] = nil, nil
		}
	}
	if lc.tls != nil {
		lc.tls.release()
	}
	go lc.done()
}
