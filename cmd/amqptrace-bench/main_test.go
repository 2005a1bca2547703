package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/testio"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func needHAProxy(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		if brokertest.InCI() {
			t.Fatal("haproxy is not installed (CI=true): apt-get install -y haproxy")
		}
		t.Skip("haproxy is not installed")
	}
}

// benchReport is the --json output as a test reads it.
type benchReport struct {
	Config runConfig `json:"config"`
	Rows   []row     `json:"results"`
	Notes  []string  `json:"notes"`
}

func (r benchReport) median(t *testing.T, workload, metric, path string) *float64 {
	t.Helper()
	for _, x := range r.Rows {
		if x.Workload == workload && x.Metric == metric {
			return x.Median[path]
		}
	}
	t.Fatalf("no row %s/%s in the report", workload, metric)
	return nil
}

// runDevBench runs the whole command once with haproxy in the amqptrace slot (amqptrace's own build is not this
// package's to test), one 300 ms round, and the given flags; it returns the name prefix and the --json report.
func runDevBench(t *testing.T, args ...string) (string, benchReport) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs workloads against the broker")
	}
	brokertest.Require(t)
	needHAProxy(t)
	t.Setenv("AMQP_URL", brokertest.URL())
	prefix := "amqptrace-bench-test-" + randHex(4)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"--amqptrace", devHAProxy, "--rounds", "1", "--duration", "300ms",
		"--json", "--name-prefix", prefix}, args...), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr.String())
	}
	var rep benchReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, stdout.String())
	}
	return prefix, rep
}

// TestRunAllPaths runs the whole command once, with haproxy in the amqptrace slot (amqptrace's own build is not this
// package's to test), and checks that every workload produced figures on every path, that the direct path has no
// proxy figures, and that nothing it declared is left on the broker.
func TestRunAllPaths(t *testing.T) {
	prefix, rep := runDevBench(t, "--idle-conns", "20")
	for _, p := range paths {
		for _, wm := range [][2]string{{"throughput", "msgs_per_s"}, {"rpc", "calls_per_s"}, {"rpc", "p50_ms"},
			{"rpc", "p99_ms"}, {"large", "mb_per_s"}} {
			if v := rep.median(t, wm[0], wm[1], p); v == nil || *v <= 0 {
				t.Errorf("%s %s on %s: got %v, want a positive figure", wm[0], wm[1], p, v)
			}
		}
	}
	for _, p := range []string{pathHAProxy, pathAmqptrace} {
		if v := rep.median(t, "idle", "conns_opened", p); v == nil || *v != 20 {
			t.Errorf("idle connections opened on %s: got %v, want 20", p, v)
		}
		if v := rep.median(t, "idle", "kib_per_conn", p); v == nil {
			t.Errorf("idle memory per connection on %s: n/a, want a figure", p)
		}
		// CPU comes from /proc in 10 ms clock ticks: in a 300 ms slice on a loaded machine haproxy can use less
		// than one tick, which is no figure (n/a) rather than zero. amqptrace, which also decodes, always has one.
		if v := rep.median(t, "rpc", "cpu_us_per_call", p); (v == nil && p == pathAmqptrace) || (v != nil && *v <= 0) {
			t.Errorf("proxy CPU per call on %s: got %v", p, v)
		}
	}
	for _, m := range []string{"kib_per_conn", "conns_opened"} {
		if v := rep.median(t, "idle", m, pathDirect); v != nil {
			t.Errorf("idle %s on the direct path: got %v, want n/a", m, *v)
		}
	}
	if v := rep.median(t, "throughput", "cpu_us_per_msg", pathDirect); v != nil {
		t.Errorf("proxy CPU on the direct path: got %v, want n/a", *v)
	}
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "DEV MODE") {
		t.Errorf("notes do not say that haproxy stood in for amqptrace: %q", rep.Notes)
	}
	assertCleanedUp(t, prefix)
}

// TestRunTLS runs the rpc and throughput workloads with --tls on the concurrent profile (haproxy in the amqptrace
// slot again): the clients speak amqps to the proxies, which terminate it with the certificates the run made.
func TestRunTLS(t *testing.T) {
	prefix, rep := runDevBench(t, "--workloads", "throughput,rpc", "--tls", "--profile", "concurrent")
	if !rep.Config.TLS || rep.Config.Profile != "concurrent" {
		t.Errorf("config %+v: want tls and the concurrent profile", rep.Config)
	}
	for _, p := range paths {
		for _, wm := range [][2]string{{"throughput", "msgs_per_s"}, {"rpc", "calls_per_s"}} {
			if v := rep.median(t, wm[0], wm[1], p); v == nil || *v <= 0 {
				t.Errorf("%s %s on %s: got %v, want a positive figure", wm[0], wm[1], p, v)
			}
		}
	}
	assertCleanedUp(t, prefix)
}

// TestRunInterrupted cancels a run part way (as Ctrl-C does) and checks the exit code, that a report is still
// printed and that the broker is left clean.
func TestRunInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs workloads against the broker")
	}
	brokertest.Require(t)
	needHAProxy(t)
	t.Setenv("AMQP_URL", brokertest.URL())
	prefix := "amqptrace-bench-test-" + randHex(4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testio.Buffer
	// Cancel as soon as the first workload has started: the run cannot be finished by then (3 rounds × 3 paths).
	stderr.OnWrite = func(s string) {
		if strings.Contains(s, "msg=running") {
			cancel()
		}
	}
	code := run(ctx, []string{"--amqptrace", devHAProxy, "--rounds", "3", "--duration", "2s", "--idle-conns", "10",
		"--workloads", "throughput,rpc", "--json", "--name-prefix", prefix}, &stdout, &stderr)
	if code != 130 {
		t.Fatalf("exit code %d, want 130; stderr:\n%s", code, stderr.String())
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		t.Fatalf("no JSON report after an interrupt: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "interrupted") {
		t.Errorf("notes do not say the run was interrupted: %q", rep.Notes)
	}
	assertCleanedUp(t, prefix)
	if out, err := exec.Command("pgrep", "-f", "amqptrace-bench-haproxy-").Output(); err == nil {
		t.Errorf("haproxy still running after the interrupt: %s", out)
	}
}

// assertCleanedUp checks that the queues and the exchange the run declares under prefix are gone.
func assertCleanedUp(t *testing.T, prefix string) {
	t.Helper()
	conn, err := amqp.Dial(brokertest.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{prefix + "-tput-0", prefix + "-tput-3", prefix + "-topic", prefix + "-large"} {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.QueueDeclarePassive(q, false, false, false, false, nil)
		var aerr *amqp.Error
		if !errors.As(err, &aerr) || aerr.Code != amqp.NotFound {
			t.Errorf("queue %s: passive declare returned %v, want 404 NOT_FOUND (left behind)", q, err)
			_ = ch.Close()
		}
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	err = ch.ExchangeDeclarePassive(prefix+"-rpc", "topic", false, false, false, false, nil)
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.NotFound {
		t.Errorf("exchange %s-rpc: passive declare returned %v, want 404 NOT_FOUND (left behind)", prefix, err)
	}
}

// TestProxyDeathIsReported kills one path's proxy as measuring starts, under each interleaved workload: the
// workload must end (no client left waiting at its gate, no drain waiting forever) and name the proxy as the
// cause, not the client errors its death caused.
func TestProxyDeathIsReported(t *testing.T) {
	if testing.Short() {
		t.Skip("runs workloads against the broker")
	}
	brokertest.Require(t)
	needHAProxy(t)
	bin, _ := exec.LookPath("haproxy")
	url := brokertest.URL()
	for _, w := range slicedWorkloads {
		t.Run(w.name, func(t *testing.T) {
			ctx := context.Background()
			p, err := startHAProxy(ctx, bin, brokertest.Addr(), url, 100, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop(5 * time.Second)
			e := &env{reg: newRegistry(url), prefix: "amqptrace-bench-test-" + randHex(4), duration: time.Second,
				warmup: 100 * time.Millisecond, log: testLogger(t), profile: profiles[0]}
			e.onMeasure = func() { _ = p.cmd.Process.Kill() }
			targets := []*target{{path: pathDirect, url: url}, {path: pathHAProxy, url: urlVia(url, p.addr), proc: p}}
			err = interleave(ctx, e, w, targets, 2, func(int, string, metrics) {})
			<-p.done
			if !errors.Is(err, errProxyDied) {
				t.Fatalf("%s through a killed proxy: error %v, want errProxyDied", w.name, err)
			}
			assertCleanedUp(t, e.prefix)
		})
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // substring of the error; "" means valid
	}{
		{[]string{"--amqptrace", "x"}, ""},
		{[]string{}, "--amqptrace is required"},
		{[]string{"--amqptrace", "x", "--workloads", "rpc,bogus"}, "unknown workload"},
		{[]string{"--amqptrace", "x", "--workloads", ","}, "none selected"},
		{[]string{"--amqptrace", "x", "--rounds", "0"}, "--rounds"},
		{[]string{"--amqptrace", "x", "--duration", "0s"}, "--duration"},
		{[]string{"--amqptrace", "x", "--idle-conns", "-1"}, "--idle-conns"},
		{[]string{"--amqptrace", "x", "extra"}, "unexpected arguments"},
		{[]string{"--amqptrace", "x", "--profile", "busy"}, `unknown profile "busy"`},
	} {
		o, err := parseOptions(tc.args, &bytes.Buffer{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want == "" && (o.rounds != 3 || o.duration != 5*time.Second || o.idleConns != 1000 || len(o.workloads) != 5):
			t.Errorf("%q: defaults %+v", tc.args, o)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestRefusesRemoteBroker(t *testing.T) {
	t.Setenv("AMQP_URL", "amqp://guest:s3cret@192.0.2.1:5672/")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--amqptrace", devHAProxy}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "not on loopback") {
		t.Fatalf("exit %d, stderr %q: want 1 and a loopback message", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "s3cret") {
		t.Fatal("the broker password reached the output")
	}
}

func TestWithoutPrefix(t *testing.T) {
	// withoutPrefix keeps amqptrace from inheriting OTEL_* settings of whoever runs the bench.
	got := withoutPrefix([]string{"A=1", "OTEL_EXPORTER_OTLP_ENDPOINT=x", "OTELX=2", "B=3"}, "OTEL_")
	if strings.Join(got, ",") != "A=1,OTELX=2,B=3" {
		t.Fatalf("got %q", got)
	}
}
