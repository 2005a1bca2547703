package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amqptrace/amqptrace/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hangGuard bounds how long a test waits for something that must happen; it is a guard against a hung test,
// never an assertion about speed.
const hangGuard = 20 * time.Second

// pumpsEnv, set to "goroutines", runs every test on the goroutine pumps instead of the event loops (Linux), so both
// forwarding paths pass the same tests; `make test` runs the package both ways.
const pumpsEnv = "PROXY_TEST_PUMPS"

// runProxy serves cfg on a loopback listener until the test ends and checks that Serve returned nil and joined.
func runProxy(t testing.TB, cfg proxy.Config) (*proxy.Proxy, string, context.CancelFunc) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return runProxyOn(t, cfg, ln)
}

// runProxyOn is runProxy on a listener of the test's (one whose sockets have small buffers, say).
func runProxyOn(t testing.TB, cfg proxy.Config, ln net.Listener) (*proxy.Proxy, string, context.CancelFunc) {
	t.Helper()
	if os.Getenv(pumpsEnv) == "goroutines" && cfg.EventLoops == 0 {
		cfg.EventLoops = -1
	}
	p := proxy.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Serve returned %v, want nil", err)
				}
			case <-time.After(hangGuard):
				t.Errorf("Serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return p, ln.Addr().String(), stop
}

// fakeUpstream accepts connections and runs handle for each in its own goroutine; Cleanup closes the listener and
// waits for every handler.
type fakeUpstream struct {
	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	cs []net.Conn
}

func startUpstream(t testing.TB, handle func(net.Conn)) *fakeUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveUpstream(t, ln, handle)
}

func serveUpstream(t testing.TB, ln net.Listener, handle func(net.Conn)) *fakeUpstream {
	u := &fakeUpstream{ln: ln}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.cs = append(u.cs, c)
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		u.mu.Lock()
		for _, c := range u.cs {
			_ = c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *fakeUpstream) addr() string { return u.ln.Addr().String() }

// recorder is a tap that keeps a copy of every byte per direction and reports the end of each connection.
type recorder struct {
	mu   sync.Mutex
	c2s  bytes.Buffer
	s2c  bytes.Buffer
	ends chan proxy.ConnEnd
	// failC2S, when set, is what the client→server writer does instead of recording (panic or error).
	failC2S func(p []byte) (int, error)
}

func newRecorder() *recorder { return &recorder{ends: make(chan proxy.ConnEnd, 64)} }

type recWriter struct {
	r   *recorder
	buf *bytes.Buffer
	c2s bool
}

func (w recWriter) Write(p []byte) (int, error) {
	if w.c2s && w.r.failC2S != nil {
		return w.r.failC2S(p)
	}
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.buf.Write(p)
}

func (r *recorder) tap(proxy.ConnInfo) proxy.Tap {
	return proxy.Tap{
		ClientToServer: recWriter{r, &r.c2s, true},
		ServerToClient: recWriter{r, &r.s2c, false},
		Done:           func(e proxy.ConnEnd) { r.ends <- e },
	}
}

func (r *recorder) bytes() (c2s, s2c []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.c2s.Bytes()), bytes.Clone(r.s2c.Bytes())
}

func (r *recorder) waitEnd(t testing.TB) proxy.ConnEnd {
	t.Helper()
	select {
	case e := <-r.ends:
		return e
	case <-time.After(hangGuard):
		t.Fatal("no ConnEnd reported")
		return proxy.ConnEnd{}
	}
}

// readAllGuarded reads c to EOF under the hang guard and returns what it read and the error that ended it (nil
// for EOF).
func readAllGuarded(c net.Conn) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(hangGuard))
	b, err := io.ReadAll(c)
	return b, err
}

// expectClosed reads from c and expects it to end (EOF or reset) without more data.
func expectClosed(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(hangGuard))
	var b [1]byte
	n, err := c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", hangGuard)
	}
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, err %v; want the connection closed", n, err)
	}
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}
