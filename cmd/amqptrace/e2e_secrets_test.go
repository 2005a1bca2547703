package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/tracing/jaegertest"
)

const python3 = "/usr/bin/python3"

// secretsManifest is what testdata/oslo_secrets.py prints.
type secretsManifest struct {
	Markers   map[string]string `json:"markers"`
	RequestID string            `json:"request_id"`
	Failures  []string          `json:"failures"`
}

// runSecretsScenario runs the real oslo.messaging scenario against url and returns its manifest.
func runSecretsScenario(t *testing.T, url, suffix string) secretsManifest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if i := strings.Index(url, "://"); i >= 0 {
		url = "rabbit" + url[i:] // oslo.messaging's driver for RabbitMQ; amqp:// would pick AMQP 1.0
	}
	cmd := exec.CommandContext(ctx, python3, "testdata/oslo_secrets.py", "--url", url, "--suffix", suffix,
		"--exchange", "amqptrace-secrets"+suffix)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var m secretsManifest
	if jerr := json.Unmarshal(stdout.Bytes(), &m); err != nil || jerr != nil || len(m.Failures) > 0 {
		t.Fatalf("oslo_secrets.py: run %v, manifest %v, failures %q\nstderr: %s", err, jerr, m.Failures,
			stderr.String())
	}
	return m
}

// byteRelay is a plain TCP relay that records both directions: the witness that every marker crossed the wire.
type byteRelay struct {
	ln   net.Listener
	mu   sync.Mutex
	buf  bytes.Buffer
	wg   sync.WaitGroup
	done chan struct{}
}

func startByteRelay(t *testing.T, target string) *byteRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &byteRelay{ln: ln, done: make(chan struct{})}
	r.wg.Add(1)
	go r.accept(target)
	t.Cleanup(func() { _ = ln.Close(); r.wg.Wait() })
	return r
}

func (r *byteRelay) accept(target string) {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		r.wg.Add(2)
		go r.copy(u, c)
		go r.copy(c, u)
	}
}

func (r *byteRelay) copy(dst, src net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.buf.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

func (r *byteRelay) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf.Bytes()...)
}

// TestE2ESecretsOslo: the real oslo.messaging sends one call, one failing call and one notification carrying every
// kind of secret, each a distinct marker. Through a plain relay first, every marker is on the wire. Then, through
// amqptrace in each payload mode, no marker is in any output: the events file, /api/calls, /api/calls/{id},
// /api/request/{id}, the websocket stream, /metrics, stderr at --log-level debug, and the spans in a real Jaeger.
// Each marker is looked for by name, so a failure names the leak.
func TestE2ESecretsOslo(t *testing.T) {
	skipShort(t)
	brokerAddr := brokertest.Require(t)
	if out, err := exec.Command(python3, "-c", "import oslo_messaging, oslo_context").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("%s cannot import oslo.messaging: %v\n%s", python3, err, out)
		if brokertest.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	jg := jaegertest.Start(t)
	v := testVhost(t)
	suffix := "_" + randHex(3)

	// 1. The witness: through a plain relay, every marker crosses the wire.
	relay := startByteRelay(t, brokerAddr)
	m := runSecretsScenario(t, v.url(relay.ln.Addr().String()), suffix)
	wire := relay.bytes()
	names := make([]string, 0, len(m.Markers))
	for name, marker := range m.Markers {
		names = append(names, name)
		if !bytes.Contains(wire, []byte(marker)) {
			t.Errorf("%s (%s) never crossed the wire: its absence below would prove nothing", name, marker)
		}
	}
	sort.Strings(names)
	t.Logf("%d markers, all on the wire (%d bytes through the relay)", len(names), len(wire))

	client := &http.Client{Timeout: 10 * time.Second}
	for _, mode := range []string{"none", "redacted", "full"} {
		t.Run(mode, func(t *testing.T) {
			events := filepath.Join(t.TempDir(), "events.jsonl")
			p := startBin(t, "proxy", "--listen", "127.0.0.1:0", "--upstream", brokerAddr, "--http", "127.0.0.1:0",
				"--events", events, "--payload", mode, "--log-level", "debug", "--otlp-endpoint", jg.OTLPAddr,
				"--sample-ratio", "1")
			proxyAddr, httpAddr := p.listening(true)
			waitReady(t, p, client, httpAddr, 30*time.Second)

			// The websocket stream, from before the traffic to the end of the process.
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+httpAddr+"/api/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			var wsBuf bytes.Buffer
			wsDone := make(chan struct{})
			go func() {
				defer close(wsDone)
				for {
					_, msg, err := ws.ReadMessage()
					if err != nil {
						return
					}
					wsBuf.Write(msg)
					wsBuf.WriteByte('\n')
				}
			}()

			mm := runSecretsScenario(t, v.url(proxyAddr), suffix)
			// Two calls and a notification; the notification settles (no listener) after a few seconds.
			outputs := map[string][]byte{}
			var calls []correlate.Record
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, body, err := httpGet(context.Background(), client, "http://"+httpAddr+"/api/calls?limit=1000")
				var resp struct {
					Calls []correlate.Record `json:"calls"`
				}
				if err == nil && json.Unmarshal(body, &resp) == nil && len(resp.Calls) >= 3 {
					outputs["/api/calls"], calls = body, resp.Calls
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/api/calls has %d records 30s after the scenario, want 3: %s", len(resp.Calls), body)
				}
				select {
				case <-p.done:
					t.Fatalf("amqptrace exited: %v", p.err)
				case <-time.After(50 * time.Millisecond):
				}
			}
			sawError := false
			for _, r := range calls {
				_, body, err := httpGet(context.Background(), client, "http://"+httpAddr+"/api/calls/"+strconv.FormatUint(r.ID, 10))
				if err != nil {
					t.Fatal(err)
				}
				outputs["/api/calls/"+strconv.FormatUint(r.ID, 10)] = body
				if r.Status == correlate.StatusError && r.Error != nil {
					sawError = true
				}
				if mode != "none" && r.Kind == correlate.KindCall && r.Method == "set_admin_password" && len(r.Args) == 0 {
					t.Errorf("%s: the call's args were not kept: the check proves less than it should", mode)
				}
			}
			if !sawError {
				t.Errorf("no error record: the exception's message was not checked")
			}
			_, body, err := httpGet(context.Background(), client, "http://"+httpAddr+"/api/request/"+mm.RequestID)
			if err != nil || !bytes.Contains(body, []byte(mm.RequestID)) {
				t.Errorf("/api/request/%s: %v %.200s", mm.RequestID, err, body)
			}
			outputs["/api/request/{id}"] = body
			code, metricsBody, err := httpGet(context.Background(), client, "http://"+httpAddr+"/metrics")
			if err != nil || code != 200 {
				t.Fatalf("/metrics: %d %v", code, err)
			}
			outputs["/metrics"] = metricsBody
			var redactions []string
			for _, line := range strings.Split(string(metricsBody), "\n") {
				if strings.HasPrefix(line, "amqptrace_redactions_total{") && !strings.HasSuffix(line, " 0") {
					redactions = append(redactions, line)
				}
			}
			if len(redactions) == 0 {
				t.Errorf("no redaction counted on /metrics")
			}
			t.Logf("%s: %v", mode, redactions)

			p.signal(syscall.SIGTERM)
			if code := p.wait(60 * time.Second); code != 0 {
				t.Errorf("exit code %d", code)
			}
			<-wsDone
			_ = ws.Close()
			outputs["websocket stream"] = wsBuf.Bytes()
			outputs["stderr (debug)"] = []byte(p.stderr.String())
			ev := readEvents(t, events)
			evb, _ := json.Marshal(ev)
			outputs["events file"] = evb
			if len(ev) < 3 {
				t.Errorf("%d records in the events file, want 3", len(ev))
			}

			// Spans in Jaeger: every trace of every service (shutdown flushed the exporter).
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var spans int
			var jaegerJSON []byte
			for {
				spans, jaegerJSON = 0, nil
				svcs, err := jg.Services(ctx)
				if err != nil {
					t.Fatalf("jaeger services: %v", err)
				}
				for _, svc := range svcs {
					trs, err := jg.Traces(ctx, svc, 1000, time.Hour)
					if err != nil {
						t.Fatalf("jaeger traces %s: %v", svc, err)
					}
					for _, tr := range trs {
						spans += len(tr.Spans)
					}
					b, _ := json.Marshal(trs)
					jaegerJSON = append(jaegerJSON, b...)
				}
				if bytes.Contains(jaegerJSON, []byte(mm.RequestID)) || ctx.Err() != nil {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
			if !bytes.Contains(jaegerJSON, []byte(mm.RequestID)) {
				t.Errorf("Jaeger has no span of request %s: the span check proves nothing", mm.RequestID)
			}
			outputs["Jaeger spans"] = jaegerJSON

			for _, name := range names {
				marker := mm.Markers[name]
				for where, out := range outputs {
					if bytes.Contains(out, []byte(marker)) {
						i := bytes.Index(out, []byte(marker))
						t.Errorf("%s: %s (%s) leaked into %s: …%s…", mode, name, marker, where,
							out[max(0, i-120):min(len(out), i+40)])
					}
				}
			}
			sizes := make([]string, 0, len(outputs))
			for where, out := range outputs {
				if len(out) == 0 {
					t.Errorf("%s: %s is empty: the check proves nothing", mode, where)
				}
				sizes = append(sizes, fmt.Sprintf("%s=%dB", where, len(out)))
			}
			sort.Strings(sizes)
			t.Logf("%s: %d markers absent from %d outputs (%d spans in Jaeger): %s", mode, len(names), len(outputs),
				spans, strings.Join(sizes, " "))
		})
	}
}
