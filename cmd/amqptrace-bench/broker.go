package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// defaultBrokerURL is used when AMQP_URL is not set (the same default as internal/brokertest).
const defaultBrokerURL = "amqp://guest:guest@127.0.0.1:5672/"

// brokerAddr returns host:port of an amqp:// URL.
func brokerAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("broker URL: %w", redactURLError(err))
	}
	if u.Scheme != "amqp" {
		return "", fmt.Errorf("broker URL: scheme %q: the bench speaks plain amqp:// on loopback only", u.Scheme)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5672"), nil
	}
	return u.Host, nil
}

// redactURLError drops the URL (and with it the password) from a url.Parse error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// urlVia returns the broker URL with host:port replaced by addr (a proxy), keeping credentials and vhost.
func urlVia(raw, addr string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "amqp://guest:guest@" + addr + "/"
	}
	u.Host = addr
	return u.String()
}

// amqpsURL is url with the amqps scheme.
func amqpsURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Scheme = "amqps"
	return u.String()
}

// dialAMQP opens one client connection. name becomes the connection_name client property, shaped like
// oslo.messaging's "<program>:<pid>:<id>" so that amqptrace decodes it as it would a real service.
func dialAMQP(url, name string, tlsConfig *tls.Config) (*amqp.Connection, error) {
	return amqp.DialConfig(url, amqp.Config{
		TLSClientConfig: tlsConfig,
		Dial:            amqp.DefaultDial(10 * time.Second),
		Heartbeat:       60 * time.Second, // oslo.messaging's default heartbeat_timeout_threshold
		Locale:          "en_US",
		Properties:      amqp.Table{"connection_name": name},
	})
}

func randHex(nbytes int) string {
	b := make([]byte, nbytes)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// safetyExpiry is the x-expires of every queue the bench declares: if it is killed before it can clean up, the
// broker deletes the leftovers once they are unused for this long.
const safetyExpiry = 10 * time.Minute

func queueArgs() amqp.Table { return amqp.Table{"x-expires": int32(safetyExpiry / time.Millisecond)} }

// registry remembers every queue and exchange the bench declared so that they can be deleted, after each workload
// and again at exit (also after Ctrl-C).
type registry struct {
	brokerURL string
	mu        sync.Mutex
	queues    map[string]bool
	exchanges map[string]bool
}

func newRegistry(brokerURL string) *registry {
	return &registry{brokerURL: brokerURL, queues: map[string]bool{}, exchanges: map[string]bool{}}
}

// queue records a queue name before it is declared, so that a declaration interrupted half way is still cleaned up.
func (r *registry) queue(name string) string {
	r.mu.Lock()
	r.queues[name] = true
	r.mu.Unlock()
	return name
}

func (r *registry) exchange(name string) string {
	r.mu.Lock()
	r.exchanges[name] = true
	r.mu.Unlock()
	return name
}

// cleanup deletes everything registered, directly on the broker (not through a proxy that may be gone). It uses its
// own deadline because the run's context may already be cancelled.
func (r *registry) cleanup() error {
	r.mu.Lock()
	qs, xs := keys(r.queues), keys(r.exchanges)
	r.mu.Unlock()
	if len(qs)+len(xs) == 0 {
		return nil
	}
	conn, err := dialAMQP(r.brokerURL, fmt.Sprintf("amqptrace-bench:%d:cleanup", os.Getpid()), nil)
	if err != nil {
		return fmt.Errorf("cleanup: connect to the broker: %w", err)
	}
	defer conn.Close()
	var errs []error
	ch, err := conn.Channel()
	for _, q := range qs {
		if err != nil {
			break
		}
		// A 404 closes the channel; deleting a queue that does not exist is not an error in RabbitMQ 3.x, but be safe.
		if _, derr := ch.QueueDelete(q, false, false, false); derr != nil {
			errs = append(errs, fmt.Errorf("delete queue %s: %w", q, derr))
			ch, err = conn.Channel()
			continue
		}
		r.mu.Lock()
		delete(r.queues, q)
		r.mu.Unlock()
	}
	for _, x := range xs {
		if err != nil {
			break
		}
		if derr := ch.ExchangeDelete(x, false, false); derr != nil {
			errs = append(errs, fmt.Errorf("delete exchange %s: %w", x, derr))
			ch, err = conn.Channel()
			continue
		}
		r.mu.Lock()
		delete(r.exchanges, x)
		r.mu.Unlock()
	}
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

var socketsRE = regexp.MustCompile(`Sockets:\s*(\d+),\s*limit:\s*(\d+)`)

// brokerSockets asks a local RabbitMQ how many sockets it has open and may open (rabbitmqctl status). RabbitMQ
// derives the socket limit from its file limit (1024 files gives 832 sockets) and stops accepting connections at
// it, which a client sees as a hanging handshake, so we check before opening thousands.
func brokerSockets(ctx context.Context) (used, limit int, err error) {
	bin, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		return 0, 0, errors.New("rabbitmqctl not found")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "status").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("rabbitmqctl status: %w", err)
	}
	return parseSockets(out)
}

// parseSockets reads "Sockets: 3, limit: 832" from rabbitmqctl status output (escape codes around the heading do
// not matter: the line itself is plain).
func parseSockets(out []byte) (used, limit int, err error) {
	m := socketsRE.FindSubmatch(out)
	if m == nil {
		return 0, 0, errors.New("rabbitmqctl status: no \"Sockets: N, limit: M\" line")
	}
	used, _ = strconv.Atoi(string(m[1]))
	limit, _ = strconv.Atoi(string(m[2]))
	return used, limit, nil
}

// isLoopbackHost reports whether host:port names this machine: only then can rabbitmqctl speak for the broker.
func isLoopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// closeAll closes connections concurrently (a close is a round trip each) with a bounded number of workers.
func closeAll(conns []*amqp.Connection) {
	const workers = 32
	work := make(chan *amqp.Connection)
	var wg sync.WaitGroup
	for range min(workers, len(conns)) {
		wg.Go(func() {
			for c := range work {
				// A deadline, because a broker under a memory alarm may never answer Close; past it the socket is dropped.
				_ = c.CloseDeadline(time.Now().Add(5 * time.Second))
			}
		})
	}
	for _, c := range conns {
		if c != nil {
			work <- c
		}
	}
	close(work)
	wg.Wait()
}

// waitCtx sleeps for d unless ctx ends first. It is used only for measurement windows, never to wait for a
// condition.
func waitCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
