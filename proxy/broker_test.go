package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/proxy"
)

// relay sits between the proxy and the broker and records what it forwards, so the test can compare the proxy's
// tap with an independent recording of the bytes on the upstream wire.
type relay struct {
	*fakeUpstream
	mu       sync.Mutex
	c2s, s2c bytes.Buffer
	done     chan struct{} // closed when the (single) relayed connection fully ended
}

type recordingWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w recordingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func startRelay(t *testing.T, broker string) *relay {
	r := &relay{done: make(chan struct{})}
	r.fakeUpstream = startUpstream(t, func(c net.Conn) {
		defer close(r.done)
		defer c.Close()
		b, err := net.Dial("tcp", broker)
		if err != nil {
			t.Error(err)
			return
		}
		defer b.Close()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.MultiWriter(b, recordingWriter{&r.mu, &r.c2s}), c)
			_ = b.(*net.TCPConn).CloseWrite()
		}()
		_, _ = io.Copy(io.MultiWriter(c, recordingWriter{&r.mu, &r.s2c}), b)
		_ = c.(*net.TCPConn).CloseWrite()
		wg.Wait()
	})
	return r
}

// TestRealBroker drives amqp091-go through the proxy to RabbitMQ: queues, publisher confirms, an 8 MiB message
// and many channels at once. The tap must have seen exactly the bytes the relay saw on the upstream wire.
func TestRealBroker(t *testing.T) {
	broker := brokertest.Require(t)
	rl := startRelay(t, broker)
	rec := newRecorder()
	p, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{rl.addr()}, Tap: rec.tap})

	conn, err := amqp.Dial(brokertest.URLVia(addr))
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("amqptrace.proxy.%d", time.Now().UnixNano())
	big := payload(9, 8<<20)

	const channels, perChannel = 12, 25
	var wg sync.WaitGroup
	errs := make(chan error, channels)
	for i := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pubSub(conn, fmt.Sprintf("%s.%d", prefix, i), perChannel, i == 0, big); err != nil {
				errs <- fmt.Errorf("channel %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}

	end := rec.waitEnd(t)
	select {
	case <-rl.done:
	case <-time.After(hangGuard):
		t.Fatal("relay did not finish")
	}
	if end.Reason != proxy.ReasonClientClosed || end.Err != nil {
		t.Errorf("Reason = %q, Err = %v; want client_closed", end.Reason, end.Err)
	}
	tapC2S, tapS2C := rec.bytes()
	rl.mu.Lock()
	relayC2S, relayS2C := bytes.Clone(rl.c2s.Bytes()), bytes.Clone(rl.s2c.Bytes())
	rl.mu.Unlock()
	requireEqual(t, "tap client→server vs upstream wire", tapC2S, relayC2S)
	requireEqual(t, "tap server→client vs upstream wire", tapS2C, relayS2C)
	if !bytes.HasPrefix(tapC2S, []byte("AMQP\x00\x00\x09\x01")) || len(tapC2S) < len(big) || len(tapS2C) < len(big) {
		t.Errorf("tap saw %d/%d bytes; want the protocol header and at least the 8 MiB body each way",
			len(tapC2S), len(tapS2C))
	}
	st := p.Stats()
	if st.BytesClientToServer != int64(len(tapC2S)) || st.BytesServerToClient != int64(len(tapS2C)) {
		t.Errorf("Stats bytes %d/%d, tap %d/%d", st.BytesClientToServer, st.BytesServerToClient, len(tapC2S), len(tapS2C))
	}
	t.Logf("forwarded %d bytes client→broker, %d broker→client, over %d channels", len(tapC2S), len(tapS2C), channels)
}

// pubSub declares an auto-delete queue on its own channel, publishes n messages with publisher confirms (the
// first one big when withBig), consumes them and checks every body.
func pubSub(conn *amqp.Connection, queue string, n int, withBig bool, big []byte) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n))
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	bodies := make([][]byte, n)
	for i := range n {
		bodies[i] = []byte(fmt.Sprintf("%s message %d", queue, i))
		if i == 0 && withBig {
			bodies[i] = big
		}
		if err := ch.PublishWithContext(ctx, "", queue, true, false, amqp.Publishing{Body: bodies[i]}); err != nil {
			return err
		}
	}
	for i := range n {
		select {
		case c := <-confirms:
			if !c.Ack || c.DeliveryTag != uint64(i+1) {
				return fmt.Errorf("confirm %+v, want ack of tag %d", c, i+1)
			}
		case <-ctx.Done():
			return fmt.Errorf("confirm %d: %w", i, ctx.Err())
		}
	}
	for i := range n {
		select {
		case d := <-deliveries:
			if !bytes.Equal(d.Body, bodies[i]) {
				return fmt.Errorf("delivery %d: %d bytes, want %d", i, len(d.Body), len(bodies[i]))
			}
		case <-ctx.Done():
			return fmt.Errorf("delivery %d: %w", i, ctx.Err())
		}
	}
	return nil
}

// TestRealBrokerClientTLS: amqps from the client, terminated by the proxy, plain AMQP to RabbitMQ.
func TestRealBrokerClientTLS(t *testing.T) {
	broker := brokertest.Require(t)
	pki := newTestPKI(t)
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{
		Upstreams: []string{broker},
		ClientTLS: pki.serverConfig(),
		Tap:       rec.tap,
	})
	url := strings.Replace(brokertest.URLVia(addr), "amqp://", "amqps://", 1)
	conn, err := amqp.DialTLS(url, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	queue := fmt.Sprintf("amqptrace.proxy.tls.%d", time.Now().UnixNano())
	if err := pubSub(conn, queue, 10, false, nil); err != nil {
		t.Error(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	end := rec.waitEnd(t)
	if !end.Info.ClientTLS || end.Info.UpstreamTLS {
		t.Errorf("Info = %+v, want client TLS and plain upstream", end.Info)
	}
	c2s, _ := rec.bytes()
	// The tap sees decrypted AMQP, not TLS records.
	if !bytes.HasPrefix(c2s, []byte("AMQP\x00\x00\x09\x01")) {
		t.Errorf("tap client→server starts with %q, want the AMQP 0-9-1 header", c2s[:min(len(c2s), 8)])
	}
}
