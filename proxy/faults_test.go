package proxy_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/proxy"
)

// deadAddr returns a loopback address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.Close()
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(hangGuard))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

func TestUpstreamFailover(t *testing.T) {
	dead := deadAddr(t)
	up := startUpstream(t, echo)
	rec := newRecorder()
	p, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{dead, up.addr()}, Tap: rec.tap})
	c := dial(t, addr)
	roundTrip(t, c, "via the second upstream")
	_ = c.Close()
	end := rec.waitEnd(t)
	if end.Info.Upstream != up.addr() {
		t.Errorf("Upstream = %q, want %q", end.Info.Upstream, up.addr())
	}
	st := p.Stats()
	if st.DialFailures != 1 || st.DialFailuresByUpstream[dead] != 1 || st.DialFailuresByUpstream[up.addr()] != 0 ||
		st.ConnsDialFailed != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestAllUpstreamsRefuse(t *testing.T) {
	d1, d2 := deadAddr(t), deadAddr(t)
	var tapped atomic.Int32
	p, addr, _ := runProxy(t, proxy.Config{
		Upstreams: []string{d1, d2},
		Tap:       func(proxy.ConnInfo) proxy.Tap { tapped.Add(1); return proxy.Tap{} },
	})
	c := dial(t, addr)
	expectClosed(t, c)
	// The client sees the close only after the dial loop ended, so the counters are already final here.
	st := p.Stats()
	if st.ConnsDialFailed != 1 || st.DialFailures != 2 || st.DialFailuresByUpstream[d1] != 1 ||
		st.DialFailuresByUpstream[d2] != 1 || tapped.Load() != 0 {
		t.Fatalf("Stats = %+v, TapFunc calls = %d", st, tapped.Load())
	}
}

func TestUpstreamDiesMidStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reset  bool
		reason proxy.CloseReason
	}{
		{"FIN", false, proxy.ReasonUpstreamClosed},
		{"RST", true, proxy.ReasonUpstreamError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clientGotIt := make(chan struct{})
			up := startUpstream(t, func(c net.Conn) {
				_, _ = c.Write([]byte("partial frame"))
				<-clientGotIt
				if tc.reset {
					_ = c.(*net.TCPConn).SetLinger(0) // close sends RST: the broker process died
				}
				_ = c.Close()
			})
			rec := newRecorder()
			_, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: rec.tap})
			c := dial(t, addr)
			_ = c.SetReadDeadline(time.Now().Add(hangGuard))
			got := make([]byte, len("partial frame"))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			close(clientGotIt)
			n, err := c.Read(make([]byte, 1))
			if n != 0 || err != io.EOF {
				t.Fatalf("after the upstream died: read %d bytes, err %v; want EOF", n, err)
			}
			_ = c.Close()
			end := rec.waitEnd(t)
			if end.Reason != tc.reason || (end.Err != nil) != tc.reset {
				t.Fatalf("Reason = %q, Err = %v; want %q", end.Reason, end.Err, tc.reason)
			}
		})
	}
}

// The client sends its request and half-closes; the upstream answers only after it read EOF. The whole answer
// must still reach the client.
func TestClientHalfClose(t *testing.T) {
	reply := payload(7, 1<<20)
	up := startUpstream(t, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		sum := sha256.Sum256(req)
		_, _ = c.Write(sum[:])
		_, _ = c.Write(reply)
		_ = c.Close()
	})
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: rec.tap})
	c := dial(t, addr)
	req := payload(8, 300_000)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := readAllGuarded(c)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(req)
	requireEqual(t, "reply after half-close", got, append(sum[:], reply...))
	end := rec.waitEnd(t)
	if end.Reason != proxy.ReasonClientClosed || end.Err != nil {
		t.Fatalf("Reason = %q, Err = %v; want client_closed", end.Reason, end.Err)
	}
	_, s2c := rec.bytes()
	requireEqual(t, "tap server→client", s2c, got)
}

// blackhole accepts, reads and discards, and never writes or closes until the test ends: a broker that hangs, or
// a firewall that accepted the connect.
func blackhole(t *testing.T) func(net.Conn) {
	return func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c)
		<-t.Context().Done()
	}
}

func TestBlackholedUpstream(t *testing.T) {
	t.Run("client leaves with FIN", func(t *testing.T) {
		up := startUpstream(t, blackhole(t))
		rec := newRecorder()
		p, addr, _ := runProxy(t, proxy.Config{
			Upstreams:        []string{up.addr()},
			HalfCloseTimeout: 50 * time.Millisecond,
			Tap:              rec.tap,
		})
		c := dial(t, addr)
		if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		end := rec.waitEnd(t)
		if end.Reason != proxy.ReasonHalfCloseTimeout || !errors.Is(end.Err, proxy.ErrHalfCloseTimeout) {
			t.Fatalf("Reason = %q, Err = %v; want half_close_timeout", end.Reason, end.Err)
		}
		if st := p.Stats(); st.ConnsOpen != 0 {
			t.Fatalf("ConnsOpen = %d after the connection ended", st.ConnsOpen)
		}
		// goleak in TestMain proves no pump goroutine is left behind.
	})
	t.Run("client resets", func(t *testing.T) {
		up := startUpstream(t, blackhole(t))
		rec := newRecorder()
		_, addr, _ := runProxy(t, proxy.Config{
			Upstreams:        []string{up.addr()},
			HalfCloseTimeout: -1, // wait forever after a FIN: only the error may end this connection
			Tap:              rec.tap,
		})
		c := dial(t, addr)
		if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
			t.Fatal(err)
		}
		// Make sure the proxy has the connection up before the reset, so the reset hits a pump.
		if _, err := c.Write([]byte{8, 0, 0, 0, 0, 0, 0, 0xce}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetLinger(0)
		_ = c.Close()
		end := rec.waitEnd(t)
		if end.Reason != proxy.ReasonClientError || end.Err == nil {
			t.Fatalf("Reason = %q, Err = %v; want client_error", end.Reason, end.Err)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	up := startUpstream(t, blackhole(t))
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{
		Upstreams:   []string{up.addr()},
		IdleTimeout: 50 * time.Millisecond,
		Tap:         rec.tap,
	})
	c := dial(t, addr)
	expectClosed(t, c)
	end := rec.waitEnd(t)
	if end.Reason != proxy.ReasonIdleTimeout || !errors.Is(end.Err, proxy.ErrIdleTimeout) {
		t.Fatalf("Reason = %q, Err = %v; want idle_timeout", end.Reason, end.Err)
	}
}

// TestIdleTimeoutEndsStuckWrite: an upstream that accepts and never reads fills every buffer on the way; the
// proxy's write can make no progress, no byte moves, and IdleTimeout must end the connection (on the loops the
// bytes wait in a pending buffer, on the pumps in a blocked Write).
func TestIdleTimeoutEndsStuckWrite(t *testing.T) {
	up := startUpstream(t, func(net.Conn) { <-t.Context().Done() })
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{
		Upstreams:   []string{up.addr()},
		IdleTimeout: 200 * time.Millisecond,
		Tap:         rec.tap,
	})
	big := make([]byte, 64<<20) // far more than the sockets on the way can buffer
	c := dial(t, addr)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(big)
		werr <- err
	}()
	end := rec.waitEnd(t)
	if end.Reason != proxy.ReasonIdleTimeout || !errors.Is(end.Err, proxy.ErrIdleTimeout) {
		t.Fatalf("Reason = %q, Err = %v; want idle_timeout", end.Reason, end.Err)
	}
	if end.ClientToServerBytes == 0 {
		t.Fatal("no byte was forwarded before the upstream stopped reading")
	}
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("the client's 64 MiB write completed, though the upstream never read")
		}
	case <-time.After(hangGuard):
		t.Fatal("the client's write is still blocked after the proxy closed the connection")
	}
}

func TestMaxConns(t *testing.T) {
	up := startUpstream(t, echo)
	p, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, MaxConns: 1})
	first := dial(t, addr)
	roundTrip(t, first, "one")
	second := dial(t, addr)
	expectClosed(t, second)
	roundTrip(t, first, "still served")
	st := p.Stats()
	if st.ConnsRefused != 1 || st.ConnsTotal != 1 || st.ConnsOpen != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

// serveAsync starts Serve; served.done is closed when Serve returned, with its error in served.err.
func serveAsync(t *testing.T, cfg proxy.Config) (
	p *proxy.Proxy, addr string, cancel context.CancelFunc, served *serveResult,
) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p = proxy.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	served = &serveResult{done: make(chan struct{})}
	go func() {
		served.err = p.Serve(ctx, ln)
		close(served.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-served.done
	})
	return p, ln.Addr().String(), cancel, served
}

type serveResult struct {
	done chan struct{}
	err  error
}

func waitServed(t *testing.T, served *serveResult) {
	t.Helper()
	select {
	case <-served.done:
		if served.err != nil {
			t.Fatalf("Serve returned %v, want nil", served.err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Serve did not return")
	}
}

func TestShutdownGrace(t *testing.T) {
	t.Run("connection finishes within the grace", func(t *testing.T) {
		up := startUpstream(t, echo)
		rec := newRecorder()
		_, addr, cancel, served := serveAsync(t, proxy.Config{
			Upstreams:     []string{up.addr()},
			ShutdownGrace: time.Hour, // never reached: Serve must return as soon as the last connection ends
			Tap:           rec.tap,
		})
		c := dial(t, addr)
		roundTrip(t, c, "before")
		cancel()
		// The listener closes at once...
		for {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				break
			}
			_ = nc.Close() // accepted by the kernel before the close; the proxy refuses it or never sees it
		}
		// ...while the open connection keeps working.
		roundTrip(t, c, "during the grace period")
		_ = c.CloseWrite()
		if rest, err := readAllGuarded(c); err != nil || len(rest) != 0 {
			t.Fatalf("after half-close: %q, %v", rest, err)
		}
		waitServed(t, served)
		if end := rec.waitEnd(t); end.Reason != proxy.ReasonClientClosed {
			t.Fatalf("Reason = %q, want client_closed", end.Reason)
		}
	})
	t.Run("grace runs out", func(t *testing.T) {
		up := startUpstream(t, echo)
		rec := newRecorder()
		_, addr, cancel, served := serveAsync(t, proxy.Config{
			Upstreams:     []string{up.addr()},
			ShutdownGrace: 20 * time.Millisecond,
			Tap:           rec.tap,
		})
		c := dial(t, addr)
		roundTrip(t, c, "before")
		cancel()
		waitServed(t, served)
		expectClosed(t, c)
		end := rec.waitEnd(t)
		if end.Reason != proxy.ReasonShutdown || !errors.Is(end.Err, proxy.ErrShutdown) {
			t.Fatalf("Reason = %q, Err = %v; want shutdown", end.Reason, end.Err)
		}
	})
}

// flakyListener fails its first Accept calls with a temporary error, like EMFILE would.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

type tempErr struct{}

func (tempErr) Error() string   { return "accept: too many open files" }
func (tempErr) Timeout() bool   { return false }
func (tempErr) Temporary() bool { return true }

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, tempErr{}
	}
	return l.Listener.Accept()
}

func TestAcceptBacksOffAndRecovers(t *testing.T) {
	up := startUpstream(t, echo)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(3)
	p := proxy.New(proxy.Config{Upstreams: []string{up.addr()}})
	ctx, cancel := context.WithCancel(context.Background())
	served := &serveResult{done: make(chan struct{})}
	go func() {
		served.err = p.Serve(ctx, fl)
		close(served.done)
	}()
	c := dial(t, ln.Addr().String())
	roundTrip(t, c, "served after three failed accepts")
	_ = c.Close()
	cancel()
	waitServed(t, served)
	if fl.fails.Load() >= 0 {
		t.Fatalf("the failing accepts were not all consumed")
	}
}

func TestListenerClosedUnderneath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := proxy.New(proxy.Config{Upstreams: []string{deadAddr(t)}})
	served := make(chan error, 1)
	go func() { served <- p.Serve(context.Background(), ln) }()
	_ = ln.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v, want net.ErrClosed", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Serve did not return")
	}
}

// TestClientFinishesWhileUpstreamIsFull: the upstream ends its side at once and then reads nothing for a while;
// the client sends more than the upstream takes, half-closes, and only then does the upstream read. By then the
// proxy has the client's FIN queued behind data it cannot forward yet, with the client's other direction already
// shut: the client socket is in hang-up while its bytes wait. All of them must still arrive, in order.
func TestClientFinishesWhileUpstreamIsFull(t *testing.T) {
	req := payload(11, 6<<20)
	sent := make(chan struct{})
	got := make(chan []byte, 1)
	up := startUpstream(t, func(c net.Conn) {
		tc := c.(*net.TCPConn)
		_ = tc.SetReadBuffer(16 << 10) // small, so the proxy's writes back up at once
		_ = tc.CloseWrite()
		select {
		case <-sent:
		case <-t.Context().Done():
			return
		}
		b, _ := readAllGuarded(c)
		got <- b
	})
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: rec.tap})
	c := dial(t, addr)
	// The upstream's FIN reaches the client first: from then on the proxy's client socket is shut for writing.
	if b, err := readAllGuarded(c); err != nil || len(b) != 0 {
		t.Fatalf("client read %d bytes, err %v; want the upstream's EOF", len(b), err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(req)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
		close(sent)
	}()
	select {
	case err := <-werr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangGuard):
		t.Fatal("the client's write did not complete: socket buffers too small for this test")
	}
	select {
	case b := <-got:
		requireEqual(t, "upstream received", b, req)
	case <-time.After(hangGuard):
		t.Fatal("upstream read nothing")
	}
	end := rec.waitEnd(t)
	if end.Reason != proxy.ReasonUpstreamClosed || end.Err != nil {
		t.Fatalf("Reason = %q, Err = %v; want upstream_closed", end.Reason, end.Err)
	}
}
