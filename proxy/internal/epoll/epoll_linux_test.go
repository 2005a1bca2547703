//go:build linux

package epoll

import (
	"syscall"
	"testing"
)

// pollerWithPair is a Poller watching the first of a socket pair for reading; the test's cleanup closes them.
func pollerWithPair(t *testing.T) (*Poller, [2]int) {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Close(fds[0]); _ = Close(fds[1]) })
	if err := p.Set(fds[0], 0, In); err != nil {
		t.Fatal(err)
	}
	return p, [2]int{fds[0], fds[1]}
}

// A descriptor's readiness and a wake-up both reach Serve's batch; interest removed is not reported again.
func TestPollerReportsReadinessAndWakeUps(t *testing.T) {
	p, fds := pollerWithPair(t)
	if n, e := Write(fds[1], []byte("amqp")); e != 0 || n != 4 {
		t.Fatalf("write: %d %v", n, e)
	}
	p.Wake()
	var events [8]Event
	readable, woken := false, false
	err := p.Serve(events[:], func(ready []Event) (bool, bool) {
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
		return readable && woken, false
	})
	if err != nil || !readable || !woken {
		t.Fatalf("Serve: %v; readable %v, woken %v", err, readable, woken)
	}
	if n, e := Read(fds[0], make([]byte, 8)); e != syscall.EAGAIN {
		t.Errorf("read of a drained socket: %d %v, want EAGAIN", n, e)
	}
}

// A batch that leaves a descriptor ready (more) is polled again at once: level-triggered, the set reports it
// again, though nothing new woke the poller. (Parked instead, this test would hang.)
func TestPollerPollsAgainAfterABatchThatLeftMore(t *testing.T) {
	p, fds := pollerWithPair(t)
	if n, e := Write(fds[1], []byte("amqp0091")); e != 0 || n != 8 {
		t.Fatalf("write: %d %v", n, e)
	}
	var events [8]Event
	var got []byte
	err := p.Serve(events[:], func(ready []Event) (bool, bool) {
		for _, ev := range ready {
			if int(ev.Fd) == fds[0] {
				buf := make([]byte, 2) // a quarter of what is there: the socket stays readable
				n, e := Read(fds[0], buf)
				if e != 0 {
					t.Fatalf("read: %v", e)
				}
				got = append(got, buf[:n]...)
			}
		}
		return len(got) == 8, len(got) < 8
	})
	if err != nil || string(got) != "amqp0091" {
		t.Fatalf("Serve: %v; read %q", err, got)
	}
}
