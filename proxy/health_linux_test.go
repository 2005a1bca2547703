package proxy_test

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/proxy"
)

// blackholeAddr is a loopback listener whose accept queue is full and never drained: the kernel drops further
// SYNs, so a dial hangs until its timeout, like a node behind a firewall that drops packets.
func blackholeAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue: dials succeed until it is full, then one times out.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { _ = c.Close() })
		if i > 64 {
			t.Skip("the accept queue never filled: cannot make a blackhole here")
		}
	}
	return addr
}

// Two blackholed nodes before a healthy one, with a dial budget shorter than two dial timeouts: the first client
// runs out of budget before the healthy node and is refused, with a warning that names every node and its error
// (the second hole's and the healthy node's cut short or not tried by the budget, which is no verdict on those
// nodes); the first hole is now down, so the next client tries the second hole, then the healthy node.
func TestUpstreamHealthDialBudget(t *testing.T) {
	h1, h2 := blackholeAddr(t), blackholeAddr(t)
	healthy := answering(t, nil).addr()
	var logs syncBuffer
	p, addr, _ := runProxy(t, proxy.Config{
		Upstreams:   []string{h1, h2, healthy},
		AwaitAnswer: true,
		DialTimeout: 300 * time.Millisecond,
		DialBudget:  400 * time.Millisecond,
		Backoff:     time.Hour,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err := amqpClient(t, addr); err == nil {
		t.Fatal("the first client got through although the budget ran out before the healthy node")
	}
	if err := amqpClient(t, addr); err != nil {
		t.Fatalf("second client: %v\n%s", err, logs.String())
	}
	if st := p.Stats(); st.DialFailuresByUpstream[h1] != 1 || st.DialFailuresByUpstream[h2] != 1 || st.DialFailuresByUpstream[healthy] != 0 {
		t.Errorf("failed dials %v: want one for each hole (the second one's full timeout in the second client)", st.DialFailuresByUpstream)
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "client refused") {
			line = l
		}
	}
	for _, want := range []string{"level=WARN", h1 + ": dial", h2 + ": cut short by the dial budget", healthy + ": "} {
		if !strings.Contains(line, want) {
			t.Errorf("refused-client line lacks %q: %s", want, line)
		}
	}
}
