//go:build linux

package epoll

import (
	"syscall"
	"testing"
)

// A descriptor's readiness and a wake-up both reach Serve's batch; interest removed is not reported again.
func TestPollerReportsReadinessAndWakeUps(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fds[0])
	defer Close(fds[1])
	if err := p.Set(fds[0], 0, In); err != nil {
		t.Fatal(err)
	}
	if n, e := Write(fds[1], []byte("amqp")); e != 0 || n != 4 {
		t.Fatalf("write: %d %v", n, e)
	}
	p.Wake()
	var events [8]Event
	readable, woken := false, false
	err = p.Serve(events[:], func(ready []Event) bool {
		for _, ev := range ready {
			switch {
			case p.IsWake(int(ev.Fd)):
				woken = true
				p.ClearWake()
			case int(ev.Fd) == fds[0] && ev.Events&In != 0:
				readable = true
				buf := make([]byte, 8)
				if n, e := Read(fds[0], buf); e != 0 || string(buf[:n]) != "amqp" {
					t.Errorf("read %q %v", buf[:n], e)
				}
				if err := p.Set(fds[0], In, 0); err != nil {
					t.Error(err)
				}
			}
		}
		return readable && woken
	})
	if err != nil || !readable || !woken {
		t.Fatalf("Serve: %v; readable %v, woken %v", err, readable, woken)
	}
	if n, e := Read(fds[0], make([]byte, 8)); e != syscall.EAGAIN {
		t.Errorf("read of a drained socket: %d %v, want EAGAIN", n, e)
	}
}
