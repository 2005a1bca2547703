package proxy_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/amqptrace/amqptrace/proxy"
)

// BenchmarkPump measures client→broker throughput on loopback for small and large writes: through the proxy with
// a tap that discards, through the proxy without a tap, and straight to the sink as the baseline (where io.Copy
// on the sink side is the same in all three).
func BenchmarkPump(b *testing.B) {
	for _, size := range []int{1 << 10, 128 << 10} {
		for _, mode := range []string{"direct", "proxy", "proxy+tap"} {
			b.Run(mode+"/"+sizeName(size), func(b *testing.B) { benchPump(b, mode, size) })
		}
	}
}

func sizeName(n int) string { return fmt.Sprintf("%dKiB", n>>10) }

func benchPump(b *testing.B, mode string, size int) {
	sinkDone := make(chan int64, 1)
	up := startUpstream(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		_ = c.Close()
		sinkDone <- n
	})
	addr := up.addr()
	if mode != "direct" {
		cfg := proxy.Config{Upstreams: []string{up.addr()}}
		if mode == "proxy+tap" {
			cfg.Tap = func(proxy.ConnInfo) proxy.Tap {
				return proxy.Tap{ClientToServer: io.Discard, ServerToClient: io.Discard}
			}
		}
		_, addr, _ = runProxy(b, cfg)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if got := <-sinkDone; got != int64(b.N)*int64(size) {
		b.Fatalf("sink got %d bytes, want %d", got, int64(b.N)*int64(size))
	}
	b.StopTimer()
}

// BenchmarkPingPong measures the per-message cost that RPC traffic pays: parallel clients each send 1 KiB and wait
// for the 1 KiB answer of an echo upstream, so every message is its own read and write in the proxy, with no
// batching. "loops" is the default forwarding on Linux, "pumps" the goroutine pair per connection. Besides ns/op it
// reports cpu-ns/op, the process's user+system CPU per round trip (clients and echo included: they cost the same in
// every mode, so differences are the proxy's).
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []string{"direct", "loops", "pumps"} {
		b.Run(mode, func(b *testing.B) { benchPingPong(b, mode) })
	}
}

func benchPingPong(b *testing.B, mode string) {
	const size, clients = 1 << 10, 8
	up := startUpstream(b, func(c net.Conn) { _, _ = io.Copy(c, c) })
	addr := up.addr()
	if mode != "direct" {
		cfg := proxy.Config{Upstreams: []string{up.addr()}, EventLoops: -1}
		if mode == "loops" {
			cfg.EventLoops = 0
		}
		cfg.Tap = func(proxy.ConnInfo) proxy.Tap {
			return proxy.Tap{ClientToServer: io.Discard, ServerToClient: io.Discard}
		}
		_, addr, _ = runProxy(b, cfg)
	}
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	var next atomic.Int64
	next.Store(int64(b.N))
	cpu0 := processCPU()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, c := range conns {
		wg.Go(func() {
			msg, got := make([]byte, size), make([]byte, size)
			for next.Add(-1) >= 0 {
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the user+system CPU this process used so far, in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
