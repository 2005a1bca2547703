package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/testio"
	"github.com/amqptrace/amqptrace/tracing"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

// TestCollectorScaleOut runs the scale-out recipe of deploy/collector with its own configuration files: two
// proxies (one per RabbitMQ node, as kolla deploys them), each exporting to its own loadbalancing collector, which
// route by trace id to two tail-sampling collectors in front of one Jaeger. Callers are behind proxy A and the
// server behind proxy B, so each call's CLIENT span comes from A and its SERVER span from B, seconds later (B sees
// one side only and emits at the deadline plus the grace, after the sampler decided). Every error must be kept,
// whole; ok calls must be sampled at the configured share; every kept trace must be whole, and each trace must
// have been decided exactly once over both samplers (spans of one trace split between samplers would make two
// decisions and half traces).
func TestCollectorScaleOut(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	bin := otelcolBin(t)
	j := jaegertest.Start(t)

	const percent = 20
	var samplers [2]*otelcol
	for i := range samplers {
		samplers[i] = startOtelcol(t, bin, "sampler.yaml", map[string]string{"JAEGER_OTLP": j.OTLPAddr,
			"SAMPLE_PERCENT": strconv.Itoa(percent), "DECISION_WAIT": "2s"})
	}
	lb := func() *otelcol {
		return startOtelcol(t, bin, "loadbalancer.yaml", map[string]string{"SAMPLER_1": samplers[0].otlp,
			"SAMPLER_2": samplers[1].otlp})
	}
	lbA, lbB := lb(), lb()

	xa := startExporter(t, tracing.Config{Endpoint: lbA.otlp, Insecure: true, BatchTimeout: 50 * time.Millisecond})
	xb := startExporter(t, tracing.Config{Endpoint: lbB.otlp, Insecure: true, BatchTimeout: 50 * time.Millisecond})
	ha, hb := startPipeline(t, brokerAddr, exportTo(xa)), startPipeline(t, brokerAddr, exportTo(xb))

	id := randHex(4)
	callerSvc, serverSvc := "e2e-scale-caller-"+id, "e2e-scale-server-"+id
	exchange, topic := "amqptrace-e2e-scale-"+id, "scale_"+id
	server := dial(t, brokertest.URLVia(hb.addr), serverSvc)
	caller := dial(t, brokertest.URLVia(ha.addr), callerSvc)
	startServer(t, server, exchange, topic, failEveryFourth)

	const calls = 120
	failing := callsWithFailures(t, caller, exchange, topic, calls)
	for name, h := range map[string]*harness{"A": ha, "B": hb} {
		eventually(t, 60*time.Second, "proxy "+name+"'s records", func() (bool, string) {
			n := len(h.col.snapshot())
			return n >= calls, fmt.Sprintf("%d of %d records", n, calls)
		})
	}
	_ = caller.Close()
	_ = server.Close()
	ha.stop()
	hb.stop()
	for name, x := range map[string]*traceExport{"A": xa, "B": xb} {
		if err := x.shutdown(20 * time.Second); err != nil {
			t.Fatalf("exporter %s: %v", name, err)
		}
	}

	// Every trace decided, once: the samplers' own count of decisions.
	var kept, dropped int
	eventually(t, 60*time.Second, "a sampling decision for every call", func() (bool, string) {
		kept, dropped = 0, 0
		for _, s := range samplers {
			k, d := s.decisions(t)
			kept, dropped = kept+k, dropped+d
		}
		return kept+dropped >= calls, fmt.Sprintf("%d kept, %d dropped", kept, dropped)
	})
	if kept+dropped != calls {
		t.Errorf("samplers decided %d traces (%d kept), want exactly %d: a trace's spans went to both samplers",
			kept+dropped, kept, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	type found struct{ client, server int }
	byMsg := map[string]*found{}
	eventually(t, 30*time.Second, "the kept traces in Jaeger, whole", func() (bool, string) {
		trs, err := j.Traces(ctx, callerSvc, 1000, time.Hour)
		if err != nil {
			return false, err.Error()
		}
		byMsg = map[string]*found{}
		whole := 0
		for _, tr := range trs {
			for i := range tr.Spans {
				s := &tr.Spans[i]
				f := byMsg[s.Tag("openstack.msg_id")]
				if f == nil {
					f = &found{}
					byMsg[s.Tag("openstack.msg_id")] = f
				}
				switch spanKind(s) {
				case "client":
					f.client++
				case "server":
					f.server++
				}
			}
		}
		for _, f := range byMsg {
			if f.client == 1 && f.server == 1 {
				whole++
			}
		}
		return whole >= kept, fmt.Sprintf("%d whole of %d kept (%d traces)", whole, kept, len(trs))
	})
	okKept := 0
	for msgID, f := range byMsg {
		if f.client != 1 || f.server != 1 {
			t.Errorf("trace of %s has %d CLIENT and %d SERVER spans, want one of each (joined across proxies)",
				msgID, f.client, f.server)
		}
		if !failing[msgID] {
			okKept++
		}
	}
	for msgID := range failing {
		if byMsg[msgID] == nil {
			t.Errorf("failed call %s was not kept: the errors policy must keep every error", msgID)
		}
	}
	// 90 ok calls at 20%: 18 expected, standard deviation 3.8; these bounds are over 3.8 deviations out.
	okCalls := calls - len(failing)
	t.Logf("kept %d of %d ok calls (%d%% configured), all %d errors; %d decisions", okKept, okCalls, percent,
		len(failing), kept+dropped)
	if okKept < 3 || okKept > 33 {
		t.Errorf("kept %d of %d ok calls, want about %d%% (3..33)", okKept, okCalls, percent)
	}
	srvTraces, err := j.Traces(ctx, serverSvc, 1000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(srvTraces) != len(byMsg) {
		t.Errorf("%d traces have the server's spans, %d the caller's: want the same traces", len(srvTraces), len(byMsg))
	}
}

// failEveryFourth replies to a call whose args say fail with an oslo remote exception, else with a result.
func failEveryFourth(d amqp.Delivery) (string, amqp.Publishing) {
	inner := osloInner(d.Body)
	replyQ, _ := inner["_reply_q"].(string)
	reply := map[string]any{"result": "pong", "failure": nil, "ending": true, "_msg_id": inner["_msg_id"],
		"_unique_id": randHex(16)}
	if args, _ := inner["args"].(map[string]any); args["fail"] == true {
		failure, _ := json.Marshal(map[string]any{"class": "NoValidHost", "module": "nova.exception",
			"message": "No valid host was found.", "tb": []string{}, "args": []any{}, "kwargs": map[string]any{}})
		reply["result"], reply["failure"] = nil, string(failure)
	}
	return replyQ, osloPublishing(osloEnvelope(reply), "")
}

// callsWithFailures makes n oslo-shaped calls, each with its own request id (so its own trace) and a 2 s timeout,
// every fourth asking the server to fail, and waits for every reply. It returns the failing calls' msg ids.
func callsWithFailures(t testing.TB, conn *amqp.Connection, exchange, topic string, n int) map[string]bool {
	t.Helper()
	ids := pipelinedCalls(t, conn, exchange, topic, n, "2000", func(i int, msg map[string]any) {
		msg["method"], msg["args"], msg["_context_request_id"] = "select_destinations", map[string]any{"fail": i%4 == 0}, "req-"+randHex(16)
	})
	failing := map[string]bool{}
	for i, id := range ids {
		if i%4 == 0 {
			failing[id] = true
		}
	}
	return failing
}

// otelcolBin is the collector scripts/otelcol.sh builds (OTELCOL_BIN). Without it the test skips, unless CI=true.
func otelcolBin(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("OTELCOL_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("OTELCOL_BIN is not set (build it with scripts/otelcol.sh)")
		}
		t.Skip("OTELCOL_BIN not set; build the collector with scripts/otelcol.sh and export OTELCOL_BIN")
	}
	return bin
}

// otelcol is one running collector process.
type otelcol struct {
	otlp    string // its OTLP gRPC receiver
	metrics string // its own Prometheus telemetry (host:port)
	client  *http.Client
}

// startOtelcol runs the collector with deploy/collector/<config> and env, on free loopback ports, its own
// telemetry on another, until the test ends.
func startOtelcol(t testing.TB, bin, config string, env map[string]string) *otelcol {
	t.Helper()
	ports := freeLoopbackPorts(t, 2)
	c := &otelcol{otlp: ports[0], metrics: ports[1], client: &http.Client{Timeout: 5 * time.Second}}
	_, file, _, _ := runtime.Caller(0)
	cfg := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "collector", config)
	host, port, _ := net.SplitHostPort(c.metrics)
	overrides := filepath.Join(t.TempDir(), "telemetry.yaml")
	// The collector's own metrics, where the test reads its sampling decisions; logs at warn.
	tel := `service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: ` + host + `
                port: ` + port + "\n"
	if err := os.WriteFile(overrides, []byte(tel), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", "file:"+cfg, "--config", "file:"+overrides)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "OTLP_LISTEN=" + c.otlp}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &testio.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		c.client.CloseIdleConnections()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
		if t.Failed() {
			t.Logf("--- otelcol %s output ---\n%s", config, logs.String())
		}
	})
	eventually(t, 30*time.Second, "otelcol "+config+" listening", func() (bool, string) {
		select {
		case err := <-waited:
			waited <- err
			t.Fatalf("otelcol %s exited: %v\n%s", config, err, logs.String())
		default:
		}
		conn, err := net.DialTimeout("tcp", c.otlp, time.Second)
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	})
	return c
}

// decisions reads the collector's count of traces it sampled and did not
// (otelcol_processor_tail_sampling_global_count_traces_sampled, by sampled=true|false).
func (c *otelcol) decisions(t testing.TB) (kept, dropped int) {
	t.Helper()
	resp, err := c.client.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		return 0, 0 // not up yet: no decisions to count
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "otelcol_processor_tail_sampling_global_count_traces_sampled") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		if strings.Contains(line, `sampled="true"`) {
			kept += int(v)
		} else {
			dropped += int(v)
		}
	}
	return kept, dropped
}

// freeLoopbackPorts returns n distinct free loopback addresses (released for the process that will bind them).
func freeLoopbackPorts(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}
