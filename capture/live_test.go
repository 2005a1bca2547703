//go:build linux

package capture

import (
	"context"
	"errors"
	"go/build"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestImportRules: capture imports nothing of ours (design.md section 3).
func TestImportRules(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, "github.com/amqptrace/amqptrace/") {
			t.Errorf("capture imports %s", imp)
		}
	}
}

type lockedSink struct {
	mu      sync.Mutex
	streams map[string]*strings.Builder
}

func (l *lockedSink) tap(info ConnInfo) Tap {
	w := func(dir string) StampedWriter {
		return writerFunc(func(p []byte) {
			l.mu.Lock()
			defer l.mu.Unlock()
			b := l.streams[info.Client.String()+dir]
			if b == nil {
				b = &strings.Builder{}
				l.streams[info.Client.String()+dir] = b
			}
			b.Write(p)
		})
	}
	return Tap{ClientToServer: w(">"), ServerToClient: w("<")}
}

func (l *lockedSink) get(k string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.streams[k]; b != nil {
		return b.String()
	}
	return ""
}

type writerFunc func(p []byte)

func (f writerFunc) WriteStamped(p []byte, _ time.Time) (int, error) { f(p); return len(p), nil }

// TestLiveLoopback captures a TCP exchange on lo: each direction once (not twice: lo shows every packet leaving
// and arriving), byte for byte, with no kernel drop. It needs CAP_NET_RAW: skipped without, failed in CI.
func TestLiveLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	if got := DefaultInterface([]uint16{port}); got != "lo" {
		t.Errorf("DefaultInterface for a loopback listener: %q, want lo", got)
	}
	ls := &lockedSink{streams: map[string]*strings.Builder{}}
	c := New(Config{Ports: []uint16{port}, Tap: ls.tap})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Live(ctx, LiveConfig{Interface: "lo", Ports: []uint16{port}, Ready: func() { close(ready) }}, c)
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		if errors.Is(err, ErrNoCapability) && os.Getenv("CI") != "true" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		buf := make([]byte, 5)
		_, _ = io.ReadFull(s, buf)
		_, _ = s.Write([]byte("world"))
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = cc.Write([]byte("hello"))
	_, _ = io.ReadFull(cc, make([]byte, 5))
	key := cc.LocalAddr().String()
	cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for (ls.get(key+">") != "hello" || ls.get(key+"<") != "world") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling a condition the capture goroutine makes true
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if a, b := ls.get(key+">"), ls.get(key+"<"); a != "hello" || b != "world" {
		t.Fatalf("captured %q / %q, want hello / world", a, b)
	}
	st := c.Stats()
	if st.KernelDrops != 0 || st.KernelPackets == 0 || st.Retransmitted != 0 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("kernel: %d packets, %d drops; %d packets seen", st.KernelPackets, st.KernelDrops, st.Packets)
}
