package proxy_test

import (
	"fmt"
	"io"
	"net"
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
