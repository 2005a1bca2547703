package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// proxyProc is one proxy process (haproxy or amqptrace) started for one path of one round.
type proxyProc struct {
	kind   string // "haproxy" or "amqptrace"
	addr   string // loopback host:port the clients dial
	cmd    *exec.Cmd
	output *tailBuffer
	done   chan struct{} // closed when the process has exited and waitErr is set
	// waitErr is written once by the waiter goroutine before done is closed.
	waitErr error
	// cleanup removes files that belong to this process (haproxy's config).
	cleanup func()
}

func (p *proxyProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process is gone, and why.
func (p *proxyProc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop asks the process to exit (SIGTERM) and kills it if it has not within the grace. It is idempotent.
func (p *proxyProc) stop(grace time.Duration) {
	if ok, _ := p.exited(); !ok {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		t.Stop()
	}
	if p.cleanup != nil {
		p.cleanup()
		p.cleanup = nil
	}
}

// startProxy starts cmd, which must listen on addr, and waits until an AMQP handshake through addr succeeds.
// A plain TCP probe would leave half-open handshakes in the broker's log; a full AMQP connection also proves that the
// whole path works before anything is measured.
func startProxy(ctx context.Context, kind, addr string, cmd *exec.Cmd, brokerURL string, certs *benchTLS, cleanup func()) (*proxyProc, error) {
	p := &proxyProc{kind: kind, addr: addr, cmd: cmd, output: &tailBuffer{max: 8 << 10}, done: make(chan struct{}), cleanup: cleanup}
	cmd.Stdout = p.output
	cmd.Stderr = p.output
	// Pdeathsig: if the bench itself is killed (kill -9, OOM), the proxy goes with it instead of holding the port
	// and the broker connections.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		if cleanup != nil {
			cleanup()
		}
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	url := urlVia(brokerURL, addr)
	var tlsConfig *tls.Config
	if certs != nil {
		url, tlsConfig = amqpsURL(url), certs.client
	}
	deadline := time.Now().Add(15 * time.Second)
	backoff := 20 * time.Millisecond
	for {
		c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second), Heartbeat: 60 * time.Second, TLSClientConfig: tlsConfig,
			Properties: amqp.Table{"connection_name": "amqptrace-bench:" + strconv.Itoa(os.Getpid()) + ":probe"}})
		if err == nil {
			_ = c.Close()
			return p, nil
		}
		if ok, werr := p.exited(); ok {
			p.stop(0)
			return nil, fmt.Errorf("%s exited before it accepted connections (%v); its output:\n%s", kind, werr, p.output.String())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop(2 * time.Second)
			return nil, fmt.Errorf("%s at %s did not complete an AMQP handshake within 15s: %v; its output:\n%s", kind, addr, err, p.output.String())
		}
		// There is no readiness notification from either proxy, so we poll, with backoff.
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		case <-p.done:
			t.Stop()
		}
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}

// haproxyConfig is a TCP-mode haproxy bound to loopback. maxconn is set high enough for the idle workload; the long
// client/server/tunnel timeouts keep idle AMQP connections open (AMQP heartbeats are 60 s apart).
const haproxyConfig = `global
    maxconn %[1]d

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h

listen amqp
    bind %[2]s%[4]s
    maxconn %[1]d
    server broker %[3]s
`

func startHAProxy(ctx context.Context, bin, upstream, brokerURL string, maxconn int, certs *benchTLS) (*proxyProc, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "amqptrace-bench-haproxy-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	ssl := ""
	if certs != nil {
		ssl = " ssl crt " + certs.bundleFile
	}
	if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyConfig, maxconn, addr, upstream, ssl), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	// -db: stay in the foreground, so that the pid we measure is the one doing the work.
	cmd := exec.Command(bin, "-f", cfg, "-db")
	return startProxy(ctx, "haproxy", addr, cmd, brokerURL, certs, func() { _ = os.RemoveAll(dir) })
}

func startAmqptrace(ctx context.Context, bin, upstream, brokerURL, otlpEndpoint string, certs *benchTLS) (*proxyProc, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"proxy", "--listen", addr, "--upstream", upstream, "--http", ""}
	if otlpEndpoint != "" {
		args = append(args, "--otlp-endpoint", otlpEndpoint)
	}
	if certs != nil {
		args = append(args, "--tls-cert", certs.certFile, "--tls-key", certs.keyFile)
	}
	cmd := exec.Command(bin, args...)
	// Keep the child's environment free of OTEL_* settings of the caller unless asked with --otlp-endpoint: the
	// bench compares proxies, not exporters.
	cmd.Env = withoutPrefix(os.Environ(), "OTEL_")
	return startProxy(ctx, "amqptrace", addr, cmd, brokerURL, certs, nil)
}

func withoutPrefix(env []string, prefix string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if len(kv) >= len(prefix) && kv[:len(prefix)] == prefix {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// freeLoopbackAddr picks a free port on 127.0.0.1. The port is free when we return; another process could take it
// before the proxy binds, and then startProxy fails with the proxy's own message.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ensureHAProxy returns the haproxy binary, installing the Debian package when it is missing.
func ensureHAProxy(ctx context.Context, log *slog.Logger) (string, error) {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p, nil
	}
	log.Info("haproxy not found; installing it: apt-get install -y haproxy")
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "haproxy")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out := &tailBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("haproxy is missing and apt-get install -y haproxy failed (%v): install it by hand\n%s", err, out.String())
	}
	return exec.LookPath("haproxy")
}

// raiseNoFile makes sure this process, and the proxies it starts, may open want files. The children inherit the
// limit we set: Go restores the original soft limit in children only while the program has not called Setrlimit.
func raiseNoFile(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < want {
		// Only root may raise the hard limit; try, then settle for what we have.
		up := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up); err == nil {
			return want, nil
		}
	}
	lim.Cur = min(max(lim.Cur, want), lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < want {
		return lim.Cur, fmt.Errorf("RLIMIT_NOFILE is %d, %d wanted (raise the hard limit or run as root)", lim.Cur, want)
	}
	return lim.Cur, nil
}

// tailBuffer keeps the last max bytes written to it: enough of a proxy's output to explain a failure, bounded no
// matter how much it logs.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

var _ io.Writer = (*tailBuffer)(nil)

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.max {
		p = p[len(p)-t.max:]
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// errProxyDied is returned by a workload when its proxy exited under it.
var errProxyDied = errors.New("proxy process exited during the workload")
