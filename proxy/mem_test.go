package proxy_test

import (
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/amqptrace/amqptrace/proxy"
)

// TestIdleMemory opens N idle connections through the proxy and reports what each costs the proxy in heap and
// goroutine stacks. The cost of the test's own sockets is measured first, with the same N connections made
// directly, and subtracted. Each connection first moves a 4 KiB burst, so the figure also shows that the pooled
// 32 KiB arrays went back when the pumps went idle. AMQPTRACE_IDLE_CONNS sets N (default 1000; every connection
// takes four file descriptors in this process).
func TestIdleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens many connections")
	}
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("AMQPTRACE_IDLE_CONNS")); err == nil && v > 0 {
		n = v
	}
	const burst = 4 << 10

	// The upstream reads each connection's burst in its accept loop and keeps the socket: no goroutine per
	// connection on the test side, so the baseline is sockets only.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, n)
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		buf := make([]byte, burst)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Error(err)
			}
			accepted <- c
		}
	}()
	var serverConns []net.Conn
	defer func() {
		_ = ln.Close()
		<-serverDone
		for _, c := range serverConns {
			_ = c.Close()
		}
	}()

	open := func(addr string) []net.Conn {
		cs := make([]net.Conn, 0, n)
		msg := make([]byte, burst)
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		for range n {
			serverConns = append(serverConns, <-accepted) // the burst went all the way through
		}
		return cs
	}
	closeAll := func(cs []net.Conn) {
		for _, c := range cs {
			_ = c.Close()
		}
		for _, c := range serverConns {
			_ = c.Close()
		}
		serverConns = serverConns[:0]
	}

	p, addr, stop := runProxy(t, proxy.Config{Upstreams: []string{ln.Addr().String()}, ShutdownGrace: 0})

	base := memNow()
	direct := open(ln.Addr().String())
	withDirect := memNow()
	closeAll(direct)
	direct = nil

	base2 := memNow()
	proxied := open(addr)
	withProxy := memNow()
	if st := p.Stats(); st.ConnsOpen != int64(n) {
		t.Fatalf("ConnsOpen = %d, want %d", st.ConnsOpen, n)
	}

	testSide := withDirect.sub(base)
	total := withProxy.sub(base2)
	perConn := func(v int64) float64 { return float64(v) / float64(n) / 1024 }
	proxyHeap := perConn(total.heap - testSide.heap)
	proxyStack := perConn(total.stack - testSide.stack)
	t.Logf("%d idle connections: proxy cost per connection %.1f KiB heap + %.1f KiB stack = %.1f KiB; %.2f goroutines "+
		"(test sockets alone: %.1f KiB heap per connection)", n, proxyHeap, proxyStack, proxyHeap+proxyStack,
		float64(total.goroutines-testSide.goroutines)/float64(n), perConn(testSide.heap))
	// A generous sanity bound for the pumps (two goroutines each); it catches a 32 KiB buffer held per direction.
	if proxyHeap+proxyStack > 64 {
		t.Errorf("idle connection costs %.1f KiB in the proxy, want well under 64 KiB", proxyHeap+proxyStack)
	}
	// On an event loop an idle connection holds no goroutine and no buffer: its loopConn and conn, a few KiB at
	// most (1.2 KiB when measured; a goroutine's stack alone was 8 KiB).
	if runtime.GOOS == "linux" && os.Getenv(pumpsEnv) != "goroutines" && proxyHeap+proxyStack > 4 {
		t.Errorf("idle connection on an event loop costs %.1f KiB in the proxy, want under 4 KiB", proxyHeap+proxyStack)
	}

	closeAll(proxied)
	stop() // Serve closes the half-closed connections (ShutdownGrace 0) and joins them
}

type memSample struct{ heap, stack, goroutines int64 }

func (a memSample) sub(b memSample) memSample {
	return memSample{a.heap - b.heap, a.stack - b.stack, a.goroutines - b.goroutines}
}

// memNow samples live heap spans and goroutine stacks after two collections, so sync.Pool's victim cache is
// empty too.
func memNow() memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{int64(ms.HeapInuse), int64(ms.StackInuse), int64(runtime.NumGoroutine())}
}
