package proxy

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pipeListener hands out in-memory net.Pipe connections, so the proxy runs inside a synctest bubble where time
// is fake and the idle timer can be tested to the nanosecond without sleeping.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial() net.Conn {
	client, server := net.Pipe()
	l.conns <- server
	return client
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// runPiped starts a proxy whose clients and upstream are pipes; it returns the client side, the upstream side and
// the channel that receives the ConnEnd. The proxy stops when the bubble's test ends.
func runPiped(t *testing.T, cfg Config) (client, upstream net.Conn, ends <-chan ConnEnd, stop func()) {
	ln := newPipeListener()
	ups := make(chan net.Conn, 1)
	endc := make(chan ConnEnd, 1)
	cfg.Upstreams = []string{"pipe"}
	cfg.Tap = func(ConnInfo) Tap { return Tap{Done: func(e ConnEnd) { endc <- e }} }
	p := New(cfg)
	p.dialHook = func(context.Context, string) (net.Conn, error) {
		a, b := net.Pipe()
		ups <- b
		return a, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln) }()
	client = ln.dial()
	upstream = <-ups
	return client, upstream, endc, func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = client.Close()
		_ = upstream.Close()
	}
}

// Traffic in one direction only keeps the connection alive: idle means no byte in EITHER direction.
func TestIdleTimeoutCountsEitherDirection(t *testing.T) {
	const idle = 10 * time.Second
	for _, dir := range []string{"client→server", "server→client"} {
		t.Run(dir, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, upstream, ends, stop := runPiped(t, Config{IdleTimeout: idle})
				defer stop()
				src, dst := client, upstream
				if dir == "server→client" {
					src, dst = upstream, client
				}
				start := time.Now()
				for i := range 20 {
					time.Sleep(idle / 2)
					if _, err := src.Write([]byte{byte(i)}); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					if _, err := io.ReadFull(dst, make([]byte, 1)); err != nil {
						t.Fatalf("read %d: %v", i, err)
					}
				}
				synctest.Wait()
				select {
				case e := <-ends:
					t.Fatalf("closed after %v of one-way traffic: %s", time.Since(start), e.Reason)
				default:
				}
				lastByte := time.Now()
				time.Sleep(idle - time.Nanosecond)
				synctest.Wait()
				select {
				case e := <-ends:
					t.Fatalf("closed %v after the last byte, before IdleTimeout: %s", time.Since(lastByte), e.Reason)
				default:
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				select {
				case e := <-ends:
					if e.Reason != ReasonIdleTimeout {
						t.Fatalf("Reason = %q, want idle_timeout", e.Reason)
					}
				default:
					t.Fatalf("still open %v after the last byte", time.Since(lastByte))
				}
			})
		})
	}
}

// A write stuck on a peer that stopped reading moves no byte: it counts as idle, and the stuck pump is freed.
func TestIdleTimeoutFreesStuckWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, upstream, ends, stop := runPiped(t, Config{IdleTimeout: 10 * time.Second})
		defer stop()
		_ = client // never reads: the proxy's write to it blocks (net.Pipe has no buffer)
		go func() { _, _ = upstream.Write([]byte("heartbeat")) }()
		time.Sleep(11 * time.Second)
		synctest.Wait()
		select {
		case e := <-ends:
			if e.Reason != ReasonIdleTimeout || e.ServerToClientBytes != 0 {
				t.Fatalf("ConnEnd = %+v, want idle_timeout with nothing forwarded", e)
			}
		default:
			t.Fatal("connection with a stuck write still open after IdleTimeout")
		}
	})
}
