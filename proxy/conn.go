package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pump buffers. An idle AMQP connection spends its life blocked in Read, so what a pump holds while blocked is
// what an idle connection costs. Each direction owns a small buffer for the first read after a quiet spell
// (heartbeats, acks and most oslo.messaging requests fit in it) and borrows a 32 KiB array from bigBufPool only
// while a read fills the small one (a burst: more is probably queued in the socket). The array goes back as soon
// as a read comes back short, which means the socket was drained and the next Read will likely block.
const (
	smallBufSize = 1 << 10
	bigBufSize   = 32 << 10
)

// bigBufPool holds *[bigBufSize]byte: a pointer to an array, so Put does not allocate a slice header.
var bigBufPool = sync.Pool{New: func() any { return new([bigBufSize]byte) }}

type direction int

const (
	clientToServer direction = iota
	serverToClient
)

// conn is one proxied connection. The goroutine running handleConn owns it; the two pumps share it.
//
// Fields under mu: cause, finished, closing, up (while dialling), halfTimer, idleTimer. Lock order: server.mu
// and conn.mu are never held together (drain collects the connections under server.mu, releases it, and only then
// calls forceClose). raw, client and up are nil again once an event loop owns the sockets (handOff).
type conn struct {
	s      *server
	p      *Proxy
	info   ConnInfo
	raw    net.Conn // the accepted socket: closing it unblocks everything on the client side, TLS or not
	client net.Conn // raw, or the *tls.Conn over it; set before the pumps start
	up     net.Conn // nil until dialled; under mu until the pumps start
	node   *node    // the upstream's health record, set with up
	// pre is what dialUpstream read before the pumps started: the client's protocol header ([clientToServer])
	// and the upstream's first answer ([serverToClient]), with their read times; sent says the header already
	// went to the upstream (in the answer exchange).
	pre   [2][]byte
	preAt [2]time.Time
	sent  bool
	// preBuf backs pre[serverToClient]: from answerPool, back to it once sendPreface is done with the answer.
	preBuf *[answerMax]byte

	tap    Tap
	tapOff atomic.Bool
	// loop is set (under mu) when an event loop forwards this connection instead of the pumps.
	loop *loopConn

	// lastActive is the monotonic time of the last byte moved, as a duration since info.Start, so the idle check
	// needs no lock and no timer reset per read.
	lastActive atomic.Int64
	ended      atomic.Int32 // directions that returned

	mu        sync.Mutex
	cause     closeCause
	finished  bool // handleConn collected both pumps; timers and forceClose do nothing any more
	closing   bool // closeBoth ran; a socket dialled after this is closed at once
	idleTimer *time.Timer
	halfTimer *time.Timer

	// Written by one pump each (or the loop) and read by handleConn after both returned (the errc receive, or
	// the loop's done, orders it).
	bytes [2]int64
}

func newConn(s *server, c net.Conn) *conn {
	return &conn{
		s:      s,
		p:      s.p,
		raw:    c,
		client: c,
		info: ConnInfo{
			ID:     s.p.nextID.Add(1),
			Client: c.RemoteAddr(),
			Start:  time.Now(),
		},
	}
}

// handleConn serves one client from accept to close, then calls end with what Done must be told, if anything.
// With the pumps it runs one pump itself and the other in a goroutine (both named after their direction in stack
// dumps) and calls end itself. A connection an event loop takes over needs no goroutine of its own while it lives
// (its stack was most of what an idle connection cost): handleConn returns, and end runs on a goroutine the loop
// starts when the connection is over.
func handleConn(c *conn, end func(ConnEnd, bool)) {
	p := c.p
	setKeepAlive(c.raw, p.cfg.keepAlive())

	if err := c.handshakeClient(); err != nil {
		p.handshakeFails.Add(1)
		_ = c.raw.Close()
		c.logEnd(ReasonHandshakeFailed, err, false)
		end(ConnEnd{}, false)
		return
	}
	if err := c.dialUpstream(); err != nil {
		c.releasePreface()
		p.connsDialFailed.Add(1)
		_ = c.raw.Close()
		// A client turned away is worth a warning with every upstream's error; a storm of them, one line per
		// interval with the count of the others.
		p.noDialLog.do(func(suppressed int64) {
			p.log.Warn("client refused: no upstream could be dialled", "conn", c.info.ID,
				"client", addrString(c.info.Client), "err", err.Error(), "suppressed", suppressed)
		})
		end(ConnEnd{}, false)
		return
	}
	p.log.Debug("connection open", "conn", c.info.ID, "client", addrString(c.info.Client),
		"upstream", c.info.Upstream, "client_tls", c.info.ClientTLS, "upstream_tls", c.info.UpstreamTLS)
	c.tap = c.callTapFunc()
	c.sendPreface() // a failed write has closed both sockets and recorded why: the pumps end at once

	c.touch()
	if idle := p.cfg.IdleTimeout; idle > 0 {
		c.mu.Lock()
		c.idleTimer = time.AfterFunc(idle, c.checkIdle)
		c.mu.Unlock()
	}

	if c.handOffToLoop(func() { end(c.closeOut()) }) != nil {
		return
	}
	errc := make(chan error, 2)
	go pumpServerToClient(c, errc)
	pumpClientToServer(c, errc)
	<-errc
	<-errc
	end(c.closeOut())
}

// closeOut ends a connection whose directions are both done (or were cut): timers stopped, sockets closed, the
// end observed and logged. It returns what Done must be told, and whether Done is to be told.
func (c *conn) closeOut() (ConnEnd, bool) {
	c.mu.Lock()
	c.finished = true
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if c.halfTimer != nil {
		c.halfTimer.Stop()
	}
	reason, err := c.cause.reason, c.cause.err
	c.mu.Unlock()
	// Close both sockets for good. closeRaw skips TLS close_notify, which a clean end already sent through
	// CloseWrite and an error end has no use for.
	closeRaw(c.client)
	closeRaw(c.up)

	c.observeEnd(reason, err)
	c.logEnd(reason, err, true)
	return ConnEnd{
		Info:                c.info,
		End:                 time.Now(),
		Reason:              reason,
		Err:                 err,
		ClientToServerBytes: c.bytes[clientToServer],
		ServerToClientBytes: c.bytes[serverToClient],
		TapDisabled:         c.tapOff.Load(),
	}, c.tap.Done != nil
}

// handOffToLoop gives the connection to one of the server's event loops, spread by connection id, or returns nil
// when it stays with the pumps. done runs, on a goroutine of its own, once the loop has finished the connection.
func (c *conn) handOffToLoop(done func()) *loopConn {
	if len(c.s.loops) == 0 {
		return nil
	}
	return c.handOff(c.s.loops[c.info.ID%uint64(len(c.s.loops))], done)
}

// pumpClientToServer forwards client→broker bytes. It is a named function so goroutine dumps say which
// direction is stuck.
func pumpClientToServer(c *conn, errc chan<- error) { errc <- c.pump(clientToServer) }

// pumpServerToClient forwards broker→client bytes.
func pumpServerToClient(c *conn, errc chan<- error) { errc <- c.pump(serverToClient) }

// pump copies src to dst until EOF or an error: read, write all of it, and only then hand the same bytes to the
// tap. One read is in flight at a time and the next read waits for the write, so a slow destination slows the
// source through TCP flow control instead of piling up in memory. No bufio: a frame is written the moment it is
// read (Go leaves TCP_NODELAY on), so heartbeats and acks are not held back.
func (c *conn) pump(d direction) error {
	defer c.ended.Add(1)
	src, dst := c.client, c.up
	if d == serverToClient {
		src, dst = c.up, c.client
	}
	t := c.tapTarget(d)
	tc, drain := src.(*tls.Conn)
	skipDrain := 0
	// Allocated here rather than kept in conn, so a connection forwarded by an event loop does not pay for it.
	small := make([]byte, smallBufSize)
	var big *[bigBufSize]byte
	defer func() {
		if big != nil {
			bigBufPool.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = big[:]
		}
		n, rerr := src.Read(buf)
		if drain && n > 0 && rerr == nil && n < len(buf) {
			// A drain that found nothing (a request/response peer: one record, then silence) makes the next
			// few reads skip it: its two deadline changes and failed read are then paid once in drainSkip+1.
			if skipDrain > 0 {
				skipDrain--
			} else {
				before := n
				if n, rerr = drainTLS(tc, buf, n); n == before {
					skipDrain = drainSkip
				}
			}
		}
		if n > 0 {
			readAt := time.Now()
			c.touchAt(readAt)
			wn, werr := dst.Write(buf[:n])
			if wn > 0 {
				c.touch()
				c.forwarded(d, &t, buf[:wn], readAt)
			}
			if werr == nil && wn < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				c.fail(d.writeReason(), fmt.Errorf("write to %s: %w", d.dstName(), werr))
				return werr
			}
			// Grow when a read fills the small buffer; shrink only when a read would have fitted in it. Shrinking
			// at the first short read made a stream of ~1 KiB messages flip between the two buffers and take two
			// reads where one does; an idle connection still gives the big buffer back with its next small read
			// (a heartbeat, an ack), so idle connections stay cheap.
			switch {
			case big == nil && n == len(small):
				big = bigBufPool.Get().(*[bigBufSize]byte)
			case big != nil && n <= len(small):
				bigBufPool.Put(big)
				big = nil
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				c.halfClose(d)
				return nil
			}
			c.fail(d.readReason(), fmt.Errorf("read from %s: %w", d.srcName(), rerr))
			return rerr
		}
	}
}

// drainTLS reads on from a TLS source the records already received, after a read that returned n bytes into buf,
// without waiting for more: it returns the bytes in buf and the error that ended a read, if it was not the
// deadline. A TLS read returns one record's plaintext, and a pipelined publisher over amqps sends a record per
// message, so a pump forwarded every message with its own write and went back to the poller for the next one;
// haproxy and the plain path forward what arrived together in one write. A deadline in the past makes a read
// that would wait fail at once, before any system call, while one that a received record can answer succeeds;
// crypto/tls keeps a partly received record after a timeout, so the next blocking read goes on with it.
func drainTLS(tc *tls.Conn, buf []byte, n int) (int, error) {
	if err := tc.SetReadDeadline(aLongTimeAgo); err != nil {
		return n, nil // the socket is closing: the next read says so
	}
	var rerr error
	for n < len(buf) {
		m, err := tc.Read(buf[n:])
		n += m
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				rerr = err
			}
			break
		}
	}
	if err := tc.SetReadDeadline(time.Time{}); err != nil && rerr == nil {
		rerr = err
	}
	return n, rerr
}

// tlsReadBuf is the read buffer under a client's TLS: a whole record of the largest size and its header, so that
// what one system call brought is there for drainTLS (crypto/tls itself reads little more than the record it
// needs, so without it only a record or two were ever received already).
const tlsReadBuf = 16<<10 + 512

// bufferedConn is a net.Conn whose reads go through a buffer, under crypto/tls. Deadlines, writes and CloseWrite
// are the socket's own, until an event loop takes the connection over: then crypto/tls reads and writes through
// loop (tlsSide, tlsloop_linux.go), which never waits, and deadlines are the loop's business.
type bufferedConn struct {
	net.Conn
	r    *bufio.Reader
	loop io.ReadWriter
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.loop != nil {
		return b.loop.Read(p)
	}
	return b.r.Read(p)
}

func (b *bufferedConn) Write(p []byte) (int, error) {
	if b.loop != nil {
		return b.loop.Write(p)
	}
	return b.Conn.Write(p)
}

func (b *bufferedConn) SetDeadline(t time.Time) error {
	if b.loop != nil {
		return nil
	}
	return b.Conn.SetDeadline(t)
}

func (b *bufferedConn) SetReadDeadline(t time.Time) error {
	if b.loop != nil {
		return nil
	}
	return b.Conn.SetReadDeadline(t)
}

func (b *bufferedConn) SetWriteDeadline(t time.Time) error {
	if b.loop != nil {
		return nil
	}
	return b.Conn.SetWriteDeadline(t)
}

// CloseWrite half-closes the socket (closeWrite reaches it through tls.Conn.NetConn).
func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("proxy: connection cannot half-close")
}

// drainSkip is how many reads skip drainTLS after one that found nothing more.
const drainSkip = 7

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

func (d direction) srcName() string {
	if d == clientToServer {
		return "client"
	}
	return "upstream"
}

func (d direction) dstName() string {
	if d == clientToServer {
		return "upstream"
	}
	return "client"
}

func (d direction) readReason() CloseReason {
	if d == clientToServer {
		return ReasonClientError
	}
	return ReasonUpstreamError
}

func (d direction) writeReason() CloseReason {
	if d == clientToServer {
		return ReasonUpstreamError
	}
	return ReasonClientError
}

func (d direction) eofReason() CloseReason {
	if d == clientToServer {
		return ReasonClientClosed
	}
	return ReasonUpstreamClosed
}

func (c *conn) touch() {
	c.touchAt(time.Now())
}

// touchAt records activity at t (the pump passes the read time it already took).
func (c *conn) touchAt(t time.Time) {
	c.lastActive.Store(int64(t.Sub(c.info.Start)))
}

// halfClose passes a clean EOF on: the destination gets a FIN (and, over TLS, close_notify first) while the other
// direction keeps running, because AMQP peers still exchange close-ok after one side stops sending. If the
// destination cannot half-close, the connection ends now rather than leaving a direction that can never finish.
func (c *conn) halfClose(d direction) {
	dst := c.up
	if d == serverToClient {
		dst = c.client
	}
	c.noteEOF(d)
	if err := closeWrite(dst); err != nil {
		c.closeBoth()
		return
	}
	if c.ended.Load() > 0 {
		return // the other direction is already done: handleConn closes both now
	}
	c.armHalfCloseTimer()
}

// armHalfCloseTimer bounds how long the other direction may run once one side ended cleanly.
func (c *conn) armHalfCloseTimer() {
	if hc := c.p.cfg.halfCloseTimeout(); hc > 0 {
		c.mu.Lock()
		if !c.finished && c.halfTimer == nil {
			c.halfTimer = time.AfterFunc(hc, func() { c.forceClose(ReasonHalfCloseTimeout, ErrHalfCloseTimeout) })
		}
		c.mu.Unlock()
	}
}

// fail records an I/O error (unless a cause is already known) and closes both sockets, which unblocks the other
// pump: with one side broken nothing more can be forwarded, and a pump parked in Read would otherwise wait for a
// peer that may never speak again.
func (c *conn) fail(r CloseReason, err error) {
	c.noteFailure(r, err)
	c.closeBoth()
}

// closeCause is why a connection ended: the one record of it both forwarding engines (the pumps and the event
// loop) keep, under conn.mu. The first cause wins, except that a cause the proxy imposes (idle, half-close
// timeout, shutdown) replaces a clean EOF, which says only that one side stopped sending.
type closeCause struct {
	reason CloseReason
	err    error
}

// eof records a clean end of direction d, unless a cause is known.
func (cc *closeCause) eof(d direction) {
	if cc.reason == "" {
		cc.reason = d.eofReason()
	}
}

// failure records an I/O error, unless a cause is known.
func (cc *closeCause) failure(r CloseReason, err error) {
	if cc.reason == "" {
		cc.reason, cc.err = r, err
	}
}

// imposed records a cause the proxy imposes: it replaces nothing but a clean EOF.
func (cc *closeCause) imposed(r CloseReason, err error) {
	if cc.reason == "" || cc.reason == ReasonClientClosed || cc.reason == ReasonUpstreamClosed {
		cc.reason, cc.err = r, err
	}
}

// noteEOF and noteFailure record a cause for either engine.
func (c *conn) noteEOF(d direction) {
	c.mu.Lock()
	c.cause.eof(d)
	c.mu.Unlock()
}

func (c *conn) noteFailure(r CloseReason, err error) {
	c.mu.Lock()
	c.cause.failure(r, err)
	c.mu.Unlock()
}

// forceClose ends the connection for a cause the proxy imposes (idle, half-close timeout, shutdown). Such a cause
// replaces a clean EOF recorded earlier, but not an error.
func (c *conn) forceClose(r CloseReason, err error) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	c.cause.imposed(r, err)
	c.mu.Unlock()
	c.closeBoth()
}

// checkIdle runs when the idle timer fires. Activity only stores a timestamp, so the timer is re-armed here for
// the remaining time instead of being reset on every read.
func (c *conn) checkIdle() {
	idle := c.p.cfg.IdleTimeout
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	quiet := time.Since(c.info.Start) - time.Duration(c.lastActive.Load())
	if quiet < idle {
		c.idleTimer.Reset(idle - quiet)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.forceClose(ReasonIdleTimeout, ErrIdleTimeout)
}

// closeBoth closes both sockets without TLS close_notify: it is the forced path, and close_notify could block on
// a peer that stopped reading (tls.Conn.Close writes it under a 5s deadline).
//
// For a connection on an event loop the sockets belong to the loop: it is asked to close them, because closing a
// descriptor under a goroutine that may still read it could hit a connection that reuses the number.
func (c *conn) closeBoth() {
	c.mu.Lock()
	c.closing = true
	raw, up, lc := c.raw, c.up, c.loop
	c.mu.Unlock()
	if lc != nil {
		lc.l.post(lc.abort)
		return
	}
	_ = raw.Close()
	if up != nil {
		closeRaw(up)
	}
}

// tapTarget is one direction's tap writer, with its StampedWriter resolved once per connection rather than per
// write.
type tapTarget struct {
	w       io.Writer
	sw      StampedWriter
	stamped bool
}

func (c *conn) tapTarget(d direction) tapTarget {
	w := c.tap.ClientToServer
	if d == serverToClient {
		w = c.tap.ServerToClient
	}
	if w == nil {
		return tapTarget{}
	}
	sw, ok := w.(StampedWriter)
	return tapTarget{w: w, sw: sw, stamped: ok}
}

// forwarded is what both forwarding paths do with bytes just written in direction d: count them, then hand them to
// the tap (unless it is off).
func (c *conn) forwarded(d direction, t *tapTarget, b []byte, readAt time.Time) {
	if d == serverToClient && c.bytes[d] == 0 && len(b) > 0 && c.node != nil {
		c.p.health.answered(c.node) // the upstream's first byte: it answers
	}
	c.bytes[d] += int64(len(b))
	if d == clientToServer {
		c.p.bytesC2S.Add(int64(len(b)))
	} else {
		c.p.bytesS2C.Add(int64(len(b)))
	}
	if t.w != nil && !c.tapOff.Load() {
		c.tapWrite(t, b, readAt)
	}
}

// tapWrite hands written bytes to the tap. A panic or an error turns the tap off for the whole connection: the
// decoder behind it has lost sync and would only produce garbage, while forwarding is unaffected.
func (c *conn) tapWrite(t *tapTarget, b []byte, readAt time.Time) {
	defer func() {
		if r := recover(); r != nil {
			c.disableTap(panicError(r))
		}
	}()
	var n int
	var err error
	if t.stamped {
		n, err = t.sw.WriteStamped(b, readAt)
	} else {
		n, err = t.w.Write(b)
	}
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		c.disableTap(err)
	}
}

func (c *conn) disableTap(err error) {
	if c.tapOff.CompareAndSwap(false, true) {
		c.p.tapFailures.Add(1)
		c.p.log.Warn("tap disabled; forwarding continues", "conn", c.info.ID, "err", err)
	}
}

// panicError describes a recovered panic without its value, unless it is a runtime error: a tap panics while
// holding message bytes, and a panic(string) could quote a password or an auth token into the log.
func panicError(r any) error {
	if re, ok := r.(runtime.Error); ok {
		return fmt.Errorf("tap panicked: %w", re)
	}
	return fmt.Errorf("tap panicked with a %T", r)
}

func (c *conn) callTapFunc() (t Tap) {
	if c.p.cfg.Tap == nil {
		return Tap{}
	}
	defer func() {
		if r := recover(); r != nil {
			c.disableTap(panicError(r))
			t = Tap{}
		}
	}()
	return c.p.cfg.Tap(c.info)
}

func (c *conn) callDone(end ConnEnd) {
	defer func() {
		if r := recover(); r != nil {
			c.p.log.Warn("tap Done panicked", "conn", c.info.ID, "err", panicError(r))
		}
	}()
	c.tap.Done(end)
}

// handshakeClient terminates client TLS under a deadline, so a client that connects and never speaks costs at
// most HandshakeTimeout.
func (c *conn) handshakeClient() error {
	cfg := c.p.cfg.ClientTLS
	if cfg == nil {
		return nil
	}
	tc := tls.Server(&bufferedConn{Conn: c.raw, r: bufio.NewReaderSize(c.raw, tlsReadBuf)}, cfg)
	c.client = tc
	c.info.ClientTLS = true
	// The deadline bounds a silent client; the hard context (cancelled when the shutdown grace ends) aborts a
	// handshake in progress. The socket is closed by handleConn, after the failure is counted.
	_ = c.raw.SetDeadline(time.Now().Add(c.p.cfg.handshakeTimeout()))
	if err := tc.HandshakeContext(c.s.hard); err != nil {
		return fmt.Errorf("client TLS handshake: %w", err)
	}
	return tc.NetConn().SetDeadline(time.Time{})
}

// dialUpstream tries the upstreams in the health order (not down first, in Strategy's order; health.go) and keeps
// the first that answers, within DialBudget. Every failure is counted against its upstream and recorded in its
// health; the error names every upstream tried and its error.
func (c *conn) dialUpstream() error {
	p := c.p
	ctx, cancel := context.WithTimeout(c.s.hard, p.cfg.dialBudget())
	defer cancel()
	// The client speaks first (the 8-byte protocol header); with it in hand, each node can be asked for its answer
	// before the client is committed to it, so a node that accepts and then closes (or never answers) costs the
	// client nothing but the next node. A client that does not send its header in time is dialled through
	// without the exchange.
	// (Config.AwaitAnswer; without it the upstream is dialled at once and the client's bytes follow.)
	var hdr []byte
	exchange := false
	if p.cfg.AwaitAnswer {
		hdr = make([]byte, len(amqpHeader))
		_ = c.client.SetReadDeadline(time.Now().Add(p.cfg.handshakeTimeout()))
		hn, herr := io.ReadFull(c.client, hdr)
		_ = c.client.SetReadDeadline(time.Time{})
		hdr = hdr[:hn]
		c.pre[clientToServer], c.preAt[clientToServer] = hdr, time.Now()
		exchange = herr == nil
	}
	var errs []nodeErr
	for _, n := range p.health.order() {
		if ctx.Err() != nil {
			if c.s.hard.Err() == nil {
				errs = append(errs, nodeErr{n.addr, fmt.Errorf("not tried: the dial budget (%v) ran out", p.cfg.dialBudget())})
			}
			continue
		}
		deadline, _ := ctx.Deadline()
		shortened := time.Until(deadline) < p.cfg.dialTimeout() // the budget, not the dial timeout, bounds this dial
		up, err := p.dial(ctx, n.addr)
		if err != nil {
			if c.s.hard.Err() != nil {
				errs = append(errs, nodeErr{n.addr, err})
				break // cut off by shutdown, not the upstream's fault: not counted
			}
			var ne net.Error
			if shortened && (ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()) {
				// The budget ended this dial before the node's own dial timeout: no verdict on the node.
				errs = append(errs, nodeErr{n.addr, fmt.Errorf("cut short by the dial budget (%v): %w", p.cfg.dialBudget(), err)})
				continue
			}
			errs = append(errs, nodeErr{n.addr, err})
			p.dialFailures.Add(1)
			p.dialFailuresBy[n.addr].Add(1)
			p.health.failed(n, err)
			continue
		}
		if exchange {
			if c.preBuf == nil {
				c.preBuf = answerPool.Get().(*[answerMax]byte)
			}
			ans, err := answer(ctx, up, hdr, c.preBuf[:])
			if err != nil {
				closeRaw(up)
				errs = append(errs, nodeErr{n.addr, err})
				if c.s.hard.Err() != nil {
					break
				}
				p.health.failed(n, err)
				continue
			}
			c.pre[serverToClient], c.preAt[serverToClient], c.sent = ans, time.Now(), true
		}
		c.mu.Lock()
		c.up = up
		closing := c.closing
		c.mu.Unlock()
		if closing {
			// closeBoth ran while we dialled (shutdown): the pumps will fail at once and report its reason.
			closeRaw(up)
		}
		c.node = n
		c.info.Upstream = n.addr
		c.info.UpstreamTLS = p.cfg.UpstreamTLS != nil
		return nil
	}
	if len(errs) == 0 {
		return ErrNoUpstream
	}
	return fmt.Errorf("%w: %s", ErrNoUpstream, dialErrors(errs))
}

// answer sends the client's protocol header to a freshly dialled upstream and reads the first bytes of its answer
// (Connection.Start, or the broker's own protocol header when it wants another version) into buf, within ctx.
func answer(ctx context.Context, up net.Conn, hdr, buf []byte) ([]byte, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = up.SetDeadline(dl)
	}
	// Shutdown cuts the wait short. Should the cut race a successful read, the deadline it set would break the
	// kept connection, so a cut that has started fails the exchange.
	stop := context.AfterFunc(ctx, func() { _ = up.SetDeadline(time.Unix(1, 0)) })
	_, err := up.Write(hdr)
	n := 0
	if err == nil {
		n, err = up.Read(buf)
	}
	if !stop() {
		return nil, fmt.Errorf("%w: %w", ErrNoAnswer, context.Cause(ctx))
	}
	if n == 0 {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, ErrNoAnswer
		}
		return nil, fmt.Errorf("%w: %w", ErrNoAnswer, err)
	}
	_ = up.SetDeadline(time.Time{})
	return buf[:n:n], nil
}

// answerMax bounds the first read of an upstream's answer. The client reads the rest through the pumps.
const answerMax = 4 << 10

// answerPool holds the arrays answers are read into. An answer lives only until sendPreface has forwarded it, so
// a handful of arrays serve every handshake; a fresh 4 KiB buffer per connection was most of the garbage a
// handshake left behind (Connection.Start is a few hundred bytes).
var answerPool = sync.Pool{New: func() any { return new([answerMax]byte) }}

// sendPreface forwards what dialUpstream read, before the pumps start: the client's header to the upstream (unless
// the answer exchange sent it) and the upstream's answer to the client, each then handed to its tap like any
// forwarded bytes. It returns false when a write failed (the connection is then failing).
func (c *conn) sendPreface() bool {
	defer c.releasePreface()
	if b := c.pre[clientToServer]; len(b) > 0 {
		if !c.sent {
			if _, err := c.up.Write(b); err != nil {
				c.fail(ReasonUpstreamError, fmt.Errorf("write to upstream: %w", err))
				return false
			}
		}
		t := c.tapTarget(clientToServer)
		c.forwarded(clientToServer, &t, b, c.preAt[clientToServer])
	}
	if b := c.pre[serverToClient]; len(b) > 0 {
		if _, err := c.client.Write(b); err != nil {
			c.fail(ReasonClientError, fmt.Errorf("write to client: %w", err))
			return false
		}
		t := c.tapTarget(serverToClient)
		c.forwarded(serverToClient, &t, b, c.preAt[serverToClient])
	}
	return true
}

// releasePreface drops what dialUpstream read and gives the answer's array back.
func (c *conn) releasePreface() {
	c.pre = [2][]byte{}
	if c.preBuf != nil {
		answerPool.Put(c.preBuf)
		c.preBuf = nil
	}
}

// observeEnd records in the upstream's health how a connection whose client spoke and never got a byte back
// ended: ended by the upstream (or by a timeout while the client waited), that is the upstream failing to answer.
func (c *conn) observeEnd(reason CloseReason, err error) {
	// A client that never spoke has nothing to be answered: a broker closing it (RabbitMQ's handshake timeout)
	// is no fault of the broker's.
	if c.node == nil || c.bytes[serverToClient] > 0 || c.bytes[clientToServer] == 0 {
		return
	}
	switch reason {
	case ReasonUpstreamClosed:
		c.p.health.failed(c.node, ErrNoAnswer)
	case ReasonUpstreamError, ReasonIdleTimeout, ReasonHalfCloseTimeout:
		c.p.health.failed(c.node, fmt.Errorf("%w: %s: %v", ErrNoAnswer, reason, err))
	}
}

func (p *Proxy) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.dialTimeout())
	defer cancel()
	if p.dialHook != nil {
		return p.dialHook(ctx, addr)
	}
	nd := &net.Dialer{KeepAliveConfig: keepAliveConfig(p.cfg.keepAlive())}
	if ka := p.cfg.keepAlive(); ka < 0 {
		nd.KeepAlive = -1
	}
	if p.cfg.UpstreamTLS == nil {
		return nd.DialContext(ctx, "tcp", addr)
	}
	td := &tls.Dialer{NetDialer: nd, Config: p.cfg.UpstreamTLS}
	return td.DialContext(ctx, "tcp", addr)
}

func keepAliveConfig(period time.Duration) net.KeepAliveConfig {
	if period < 0 {
		return net.KeepAliveConfig{Enable: false}
	}
	return net.KeepAliveConfig{Enable: true, Idle: period, Interval: period}
}

func setKeepAlive(c net.Conn, period time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	if period < 0 {
		_ = tc.SetKeepAlive(false)
		return
	}
	_ = tc.SetKeepAliveConfig(keepAliveConfig(period))
}

// closeWrite half-closes c. For TLS it sends close_notify and then a FIN on the socket below, because a peer
// that ignores close_notify still understands a FIN.
func closeWrite(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		c = tc.NetConn()
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return errors.New("proxy: connection cannot half-close")
	}
	return cw.CloseWrite()
}

// closeRaw closes c without TLS close_notify; a nil c (an event loop owns the sockets) is nothing to close.
func closeRaw(c net.Conn) {
	if c == nil {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	_ = c.Close()
}

func (c *conn) logEnd(reason CloseReason, err error, established bool) {
	lvl := slog.LevelInfo
	if reason == ReasonClientClosed || reason == ReasonUpstreamClosed {
		lvl = slog.LevelDebug
	}
	attrs := []slog.Attr{
		slog.Uint64("conn", c.info.ID),
		slog.String("client", addrString(c.info.Client)),
		slog.String("reason", string(reason)),
		slog.Duration("duration", time.Since(c.info.Start)),
	}
	if established {
		attrs = append(attrs,
			slog.String("upstream", c.info.Upstream),
			slog.Int64("bytes_c2s", c.bytes[clientToServer]),
			slog.Int64("bytes_s2c", c.bytes[serverToClient]))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	c.p.log.LogAttrs(context.Background(), lvl, "connection closed", attrs...)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
