package proxy_test

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/proxy"
)

var clientHeader = []byte("AMQP\x00\x00\x09\x01")

// acceptThenClose is an upstream that accepts, reads the client's header and closes without a byte: a broker
// still booting, or a load balancer with no backend.
func acceptThenClose(t *testing.T) *fakeUpstream {
	return startUpstream(t, func(c net.Conn) {
		_, _ = io.ReadFull(c, make([]byte, len(clientHeader)))
		_ = c.Close()
	})
}

// answering is a healthy upstream: it answers the protocol header with "START", then echoes. accepted counts
// its connections.
func answering(t *testing.T, accepted *atomic.Int64) *fakeUpstream {
	return startUpstream(t, func(c net.Conn) {
		if accepted != nil {
			accepted.Add(1)
		}
		if _, err := io.ReadFull(c, make([]byte, len(clientHeader))); err != nil {
			return
		}
		if _, err := c.Write([]byte("START")); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	})
}

// amqpClient connects through the proxy, sends the header, expects "START" and one echo, and closes.
func amqpClient(t *testing.T, addr string) error {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := c.Write(clientHeader); err != nil {
		return err
	}
	got := make([]byte, len("START")+len("ping"))
	if _, err := io.ReadFull(c, got[:5]); err != nil {
		return err
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, got[5:]); err != nil {
		return err
	}
	if string(got) != "STARTping" {
		t.Errorf("client got %q, want STARTping", got)
	}
	return nil
}

// waitHealth waits until cond holds for the proxy's upstream health, woken by each change of it.
func waitHealth(t *testing.T, p *proxy.Proxy, what string, cond func(map[string]proxy.UpstreamHealth) bool) map[string]proxy.UpstreamHealth {
	t.Helper()
	guard := time.After(hangGuard)
	for {
		changed := p.HealthChanged()
		m := map[string]proxy.UpstreamHealth{}
		for _, u := range p.Stats().Upstreams {
			m[u.Addr] = u
		}
		if cond(m) {
			return m
		}
		select {
		case <-changed:
		case <-guard:
			t.Fatalf("upstream health never reached %s: %+v", what, m)
		}
	}
}

// A refusing node, a blackholed one, one that accepts and closes, and a healthy one, in that order: every
// client reaches the healthy node, and only the first client pays for the bad ones, which are down for their
// backoff and so never dialled again meanwhile.
func TestUpstreamHealthEveryClientReachesTheHealthyNode(t *testing.T) {
	refuse, hole, closer := deadAddr(t), blackholeAddr(t), acceptThenClose(t).addr()
	var reached atomic.Int64
	healthy := answering(t, &reached).addr()
	p, addr, _ := runProxy(t, proxy.Config{
		Upstreams:   []string{refuse, hole, closer, healthy},
		AwaitAnswer: true,
		DialTimeout: 300 * time.Millisecond, // what the blackhole costs the first client
		DialBudget:  hangGuard,              // room for every node whatever the machine's load
		Backoff:     time.Hour,              // no retry within the test
	})
	const clients = 6
	for i := range clients {
		start := time.Now()
		if err := amqpClient(t, addr); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Logf("client %d through in %v", i, time.Since(start))
	}
	if reached.Load() != clients {
		t.Errorf("the healthy node got %d of %d clients", reached.Load(), clients)
	}
	st := p.Stats()
	for _, a := range []string{refuse, hole} {
		if n := st.DialFailuresByUpstream[a]; n != 1 {
			t.Errorf("%s: %d failed dials, want 1 (down after the first)", a, n)
		}
	}
	m := waitHealth(t, p, "three down, one up", func(m map[string]proxy.UpstreamHealth) bool { return m[healthy].State == proxy.StateUp })
	for _, a := range []string{refuse, hole, closer} {
		if u := m[a]; u.State != proxy.StateDown || u.Downs != 1 || u.LastError == "" || u.RetryAt.IsZero() {
			t.Errorf("%s: %+v, want down once with its error", a, u)
		}
	}
	if ok, why := p.Healthy(); !ok {
		t.Errorf("Healthy() = false (%s) with %s up", why, healthy)
	}
}

// Without the answer exchange a node that accepts and closes costs its client the connection, and is then down:
// the next client goes to the healthy node.
func TestUpstreamHealthAcceptThenClosePassive(t *testing.T) {
	closer := acceptThenClose(t).addr()
	healthy := answering(t, nil).addr()
	p, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{closer, healthy}, Backoff: time.Hour})
	if err := amqpClient(t, addr); err == nil {
		t.Fatal("the first client got an answer from a node that closes")
	}
	waitHealth(t, p, closer+" down", func(m map[string]proxy.UpstreamHealth) bool { return m[closer].State == proxy.StateDown })
	if err := amqpClient(t, addr); err != nil {
		t.Fatalf("second client: %v", err)
	}
}

// A client that never speaks, closed by its upstream (RabbitMQ's handshake timeout does that), is no failure of
// the upstream's; one that sent its header and got no answer is.
func TestUpstreamHealthSilentClientIsNoFailure(t *testing.T) {
	up := startUpstream(t, func(c net.Conn) { _ = c.Close() })
	rec := newRecorder()
	p, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: rec.tap, Backoff: time.Hour})
	c := dial(t, addr)
	if _, err := readAllGuarded(c); err != nil { // the upstream's end, passed on as a half-close
		t.Fatal(err)
	}
	_ = c.Close()
	if e := rec.waitEnd(t); e.Reason != proxy.ReasonUpstreamClosed {
		t.Fatalf("silent client: reason %s, want upstream_closed", e.Reason)
	}
	if u := p.Stats().Upstreams[0]; u.State == proxy.StateDown || u.ConsecutiveFailures != 0 {
		t.Errorf("after a silent client: %+v, want not down", u)
	}
}

// A down node is checked again when its backoff ends, with a backoff that doubles up to MaxBackoff; when it
// comes back a check brings it up, and the first answered client resets its backoff.
func TestUpstreamHealthRetriedAfterBackoff(t *testing.T) {
	flappy := deadAddr(t)
	healthy := answering(t, nil).addr()
	const backoff, maxBackoff = 20 * time.Millisecond, 80 * time.Millisecond
	p, addr, _ := runProxy(t, proxy.Config{
		Upstreams: []string{flappy, healthy},
		Check:     proxy.CheckTCP,
		Backoff:   backoff, MaxBackoff: maxBackoff,
	})
	m := waitHealth(t, p, "several failed checks", func(m map[string]proxy.UpstreamHealth) bool {
		return m[flappy].ConsecutiveFailures >= 4 && m[healthy].State == proxy.StateUp
	})
	if u := m[flappy]; u.State != proxy.StateDown || u.Downs != 1 || u.Backoff != maxBackoff || u.Checks < 4 {
		t.Fatalf("flappy: %+v, want down once, checked again and again, backoff grown to %v", u, maxBackoff)
	}
	if err := amqpClient(t, addr); err != nil {
		t.Fatalf("client while %s is down: %v", flappy, err)
	}

	// The node comes back on the same port.
	ln, err := net.Listen("tcp", flappy)
	if err != nil {
		t.Skipf("port of %s taken meanwhile: %v", flappy, err)
	}
	var reached atomic.Int64
	serveUpstream(t, ln, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, len(clientHeader))); err != nil {
			return // a TCP check
		}
		reached.Add(1)
		_, _ = c.Write([]byte("START"))
		_, _ = io.Copy(c, c)
	})
	m = waitHealth(t, p, flappy+" up", func(m map[string]proxy.UpstreamHealth) bool { return m[flappy].State == proxy.StateUp })
	if u := m[flappy]; u.Backoff != maxBackoff {
		t.Errorf("a TCP check reset the backoff to %v: only an answer should", u.Backoff)
	}
	if err := amqpClient(t, addr); err != nil {
		t.Fatal(err)
	}
	if reached.Load() != 1 {
		t.Fatalf("the recovered first node got %d clients, want 1 (first-healthy)", reached.Load())
	}
	m = waitHealth(t, p, "backoff reset", func(m map[string]proxy.UpstreamHealth) bool { return m[flappy].Backoff == backoff })
	if u := m[flappy]; u.Downs != 1 || u.ConsecutiveFailures != 0 {
		t.Errorf("flappy after an answer: %+v", u)
	}
}

// Round-robin spreads clients over the healthy nodes in turn and skips a down one.
func TestUpstreamHealthRoundRobin(t *testing.T) {
	var a, b atomic.Int64
	na, nb := answering(t, &a).addr(), answering(t, &b).addr()
	_, addr, _ := runProxy(t, proxy.Config{
		Upstreams: []string{na, deadAddr(t), nb},
		Strategy:  proxy.RoundRobin,
		Backoff:   time.Hour,
	})
	for i := range 6 {
		if err := amqpClient(t, addr); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if a.Load() != 3 || b.Load() != 3 {
		t.Errorf("clients per node: %d and %d, want 3 and 3", a.Load(), b.Load())
	}
}

// The AMQP check finds a node that accepts and closes without any client, and brings up a real RabbitMQ; Healthy
// says why it is not healthy while only the bad node is listed.
func TestUpstreamHealthAMQPCheck(t *testing.T) {
	broker := brokertest.Require(t)
	closer := acceptThenClose(t).addr()
	p, addr, _ := runProxy(t, proxy.Config{
		Upstreams:     []string{closer, broker},
		Check:         proxy.CheckAMQP,
		CheckInterval: time.Hour, // the start-up round is what this test needs
		AwaitAnswer:   true,
		Backoff:       time.Hour,
	})
	m := waitHealth(t, p, "checked", func(m map[string]proxy.UpstreamHealth) bool {
		return m[closer].State == proxy.StateDown && m[broker].State == proxy.StateUp
	})
	if u := m[closer]; u.Checks != 1 || u.LastError == "" {
		t.Errorf("%s: %+v", closer, u)
	}
	conn, err := amqp.Dial(brokertest.URLVia(addr))
	if err != nil {
		t.Fatalf("a real client through the proxy: %v", err)
	}
	_ = conn.Close()

	only, _, _ := runProxy(t, proxy.Config{Upstreams: []string{closer}, Check: proxy.CheckAMQP, Backoff: time.Hour})
	waitHealth(t, only, "down", func(m map[string]proxy.UpstreamHealth) bool { return m[closer].State == proxy.StateDown })
	if ok, why := only.Healthy(); ok || why == "" {
		t.Errorf("Healthy() = %v, %q with the only node down", ok, why)
	}
}
