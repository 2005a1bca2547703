package main

// End-to-end tests of the amqptrace command against the real RabbitMQ (e2e_*_test.go):
//
//   - e2e_demo_test.go: the demo's wiring (newApp + run + cloudsim) records exactly what the simulated cloud says
//     it sent, per kind, method and status (in-process, because `amqptrace demo` cannot be bounded yet);
//   - e2e_metrics_test.go: the real binary's /metrics parses and moves with AMQP and oslo traffic;
//   - e2e_sigterm_test.go: SIGTERM during traffic keeps open connections working for the grace, exits 0, and
//     flushes every record (pending calls included) to the events file and every span to a real Jaeger;
//   - e2e_browser_test.go: `amqptrace demo` as a subprocess shows the cloud's service graph in headless Chromium.
//
// These tests share the broker with other packages' tests: each runs in a vhost of its own (rabbitmqctl), or,
// where rabbitmqctl is missing, under unique names. They are skipped with -short.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// binDir holds the amqptrace binary built once for the subprocess tests; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	// Tests that run the command in this process would each set the whole test process's soft memory limit
	// (--memory-limit is the proxy process's budget); the real binary, which TestE2EMemory holds to it, sets it.
	setMemoryLimit = func(int64) int64 { return math.MaxInt64 }
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binDir != "" {
			_ = os.RemoveAll(binDir)
		}
		os.Exit(code)
	}))
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// amqptraceBin builds the binary under test once per `go test` run (only when a subprocess test needs it).
func amqptraceBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "amqptrace-e2e-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "amqptrace")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var (
	proxyLine = regexp.MustCompile(`msg="proxy listening" listen=(\S+)`)
	httpLine  = regexp.MustCompile(`msg="UI and API listening" url=http://(\S+)/`)
)

// listening waits for the binary's start-up log lines and returns the addresses it listens on, so tests pass
// --listen and --http 127.0.0.1:0 and never race other processes for a port picked in advance. (The lines are
// the default text log format's; httpAddr is "" when the test passed no --http.)
func (p *proc) listening(wantHTTP bool) (proxyAddr, httpAddr string) {
	p.t.Helper()
	line, ok := p.stderr.waitLine(60*time.Second, p.done, proxyLine.MatchString)
	if !ok {
		p.t.Fatalf("amqptrace logged no \"proxy listening\" line (exited: %v)", p.err)
	}
	proxyAddr = proxyLine.FindStringSubmatch(line)[1]
	if wantHTTP {
		// The UI line is logged before the proxy line: it is there already.
		line, ok := p.stderr.waitLine(time.Second, p.done, httpLine.MatchString)
		if !ok {
			p.t.Fatal(`amqptrace logged no "UI and API listening" line`)
		}
		httpAddr = httpLine.FindStringSubmatch(line)[1]
	}
	return proxyAddr, httpAddr
}

// vhost is where one test's clients log in: a vhost made for the test (so the demo's un-prefixed OpenStack names
// collide with nobody), or, without rabbitmqctl, the broker URL's vhost plus a unique name prefix.
type vhost struct {
	name   string // vhost name, "" for the default one
	prefix string // prefix for cloudsim names; empty in a dedicated vhost
}

// testVhost creates a vhost for this test with rabbitmqctl, grants the broker URL's user on it, and deletes it
// when the test ends (deleting a vhost deletes every queue and exchange in it).
func testVhost(t *testing.T) vhost {
	t.Helper()
	u, err := url.Parse(brokertest.URL())
	if err != nil {
		t.Fatalf("AMQP_URL: %v", err)
	}
	fallback := vhost{name: strings.TrimPrefix(u.Path, "/"), prefix: "e2e-" + randHex(4) + "-"}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fallback
	}
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		t.Logf("rabbitmqctl not found: using prefix %s (left in the broker)", fallback.prefix)
		return fallback
	}
	run := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, ctl, args...).CombinedOutput()
		if err != nil {
			t.Logf("rabbitmqctl %s: %v\n%s", args[0], err, out)
		}
		return err
	}
	v := vhost{name: "amqptrace-cmd-e2e-" + randHex(4)}
	if run("add_vhost", v.name) != nil {
		return fallback
	}
	t.Cleanup(func() { _ = run("delete_vhost", v.name) })
	if run("set_permissions", "-p", v.name, u.User.Username(), ".*", ".*", ".*") != nil {
		return fallback
	}
	return v
}

// url returns the broker URL (credentials from AMQP_URL) for this vhost at addr (the broker, or a proxy).
func (v vhost) url(addr string) string {
	u, _ := url.Parse(brokertest.URL())
	u.Host = addr
	u.Path = "/" + v.name
	u.RawPath = ""
	return u.String()
}

// tail keeps the last max bytes written to it (a subprocess's output, for failure messages), and lets a test wait
// for a line matching a condition.
type tail struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int
	changed chan struct{} // closed and replaced on every write
}

func newTail(max int) *tail { return &tail{max: max, changed: make(chan struct{})} }

func (b *tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *tail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLine waits until a line satisfying match has been written (and is still in the tail), the process exits
// (done closed), or timeout passes. It returns the line.
func (b *tail) waitLine(timeout time.Duration, done <-chan struct{}, match func(string) bool) (string, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		b.mu.Lock()
		text, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		for _, line := range strings.Split(text, "\n") {
			if match(line) {
				return line, true
			}
		}
		select {
		case <-changed:
		case <-done:
			return "", false
		case <-timer.C:
			return "", false
		}
	}
}

// proc is one amqptrace subprocess.
type proc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr *tail
	started        time.Time
	done           chan struct{} // closed when the process has exited
	err            error         // cmd.Wait's result, valid once done is closed
}

// startBin starts the built binary with args. Its environment is this process's minus every AMQPTRACE_* and
// OTEL_* variable, so a developer's shell cannot change what the test runs. The process is killed (if still
// running) and waited for when the test ends.
func startBin(t *testing.T, args ...string) *proc {
	t.Helper()
	return startBinVia(t, nil, args...)
}

// startBinVia is startBin with the binary run by a wrapper command (wrapper[0], its arguments, then the binary and
// args), such as prlimit.
func startBinVia(t *testing.T, wrapper []string, args ...string) *proc {
	t.Helper()
	bin := amqptraceBin(t)
	p := &proc{t: t, stdout: newTail(256 << 10), stderr: newTail(256 << 10), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	if len(wrapper) > 0 {
		p.cmd = exec.Command(wrapper[0], append(append(wrapper[1:len(wrapper):len(wrapper)], bin), args...)...)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMQPTRACE_") && !strings.HasPrefix(kv, "OTEL_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- amqptrace stderr (tail) ---\n%s", p.stderr.String())
		}
	})
	return p
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit, at most timeout (then it is killed and the test fails), and returns its
// exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("amqptrace did not exit within %v; killed it", timeout)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.err)
	return -1
}

// httpGet fetches url with a bounded client and returns the status and at most 16 MiB of the body.
func httpGet(ctx context.Context, client *http.Client, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, body, err
}

// waitReady polls http://addr/readyz until it answers 200, the process exits, or timeout passes. Polling is the
// only way to learn that the binary listens: it prints no address when it is ready.
func waitReady(t *testing.T, p *proc, client *http.Client, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		code, _, err := httpGet(ctx, client, "http://"+addr+"/readyz")
		cancel()
		if err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("amqptrace not ready at %s within %v (last: %d %v)", addr, timeout, code, err)
		}
		select {
		case <-p.done:
			t.Fatalf("amqptrace exited before it was ready: %v", p.err)
		case <-tick.C:
		}
	}
}

// readEvents reads a JSON Lines events file into records. Every line must be one whole record.
func readEvents(t *testing.T, path string) []correlate.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	defer f.Close()
	var recs []correlate.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 8<<20) // a record with a kept payload can exceed bufio's 64 KiB default
	for n := 1; sc.Scan(); n++ {
		var r correlate.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("events line %d is not a record: %v: %.200s", n, err, sc.Bytes())
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("events: %v", err)
	}
	return recs
}

// recordMethod is the name a record is counted under: the RPC method, or a notification's event type.
func recordMethod(r *correlate.Record) string {
	if r.Kind == correlate.KindNotification && r.EventType != "" {
		return r.EventType
	}
	return r.Method
}

// startProxyHTTP starts `amqptrace proxy` on ephemeral ports in front of broker, with extra flags, and waits until
// it is ready. It returns the process, its AMQP and HTTP addresses, and an HTTP client closed at the test's end.
func startProxyHTTP(t *testing.T, broker string, extra ...string) (p *proc, listen, httpAddr string, client *http.Client) {
	t.Helper()
	args := append([]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", broker, "--http", "127.0.0.1:0",
		"--shutdown-grace", "5s"}, extra...)
	p = startBin(t, args...)
	listen, httpAddr = p.listening(true)
	client = &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	waitReady(t, p, client, httpAddr, 30*time.Second)
	return p, listen, httpAddr, client
}
