package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readyz fetches /readyz.
func readyz(t *testing.T, client *http.Client, httpAddr string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, client, "http://"+httpAddr+"/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	return code, string(body)
}

// The binary with an unresolvable upstream and a dead one: it starts (warning about both), /readyz is 503 and says
// why for each, /healthz stays 200, a client is refused and the warning names every node's error, and /metrics
// and /api/stats show both down. When a broker comes up at the dead node's address, the retry check finds it and
// /readyz turns 200.
func TestE2EReadinessFollowsUpstreamHealth(t *testing.T) {
	skipShort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	const unresolvable = "nosuchhost.invalid:5672"
	p := startBin(t, "proxy", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--upstream", unresolvable+","+dead,
		"--upstream-backoff", "20ms", "--upstream-max-backoff", "100ms", "--dial-timeout", "2s")
	listen, httpAddr := p.listening(true)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	if _, ok := p.stderr.waitLine(10*time.Second, p.done, func(l string) bool {
		return strings.Contains(l, "level=WARN") && strings.Contains(l, "does not resolve") && strings.Contains(l, unresolvable)
	}); !ok {
		t.Error("no warning about the upstream name that does not resolve")
	}
	if _, ok := p.stderr.waitLine(10*time.Second, p.done, func(l string) bool {
		return strings.Contains(l, "level=WARN") && strings.Contains(l, "no upstream answers yet")
	}); !ok {
		t.Fatal("no warning that no upstream answers")
	}
	code, body := readyz(t, client, httpAddr)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, unresolvable) || !strings.Contains(body, dead) {
		t.Errorf("/readyz with no upstream: %d %q; want 503 naming both", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	hc, _, err := httpGet(ctx, client, "http://"+httpAddr+"/healthz")
	cancel()
	if err != nil || hc != http.StatusOK {
		t.Errorf("/healthz: %d %v, want 200 (liveness)", hc, err)
	}

	// A client: refused, and the warning carries each node's error.
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = c.Write([]byte("AMQP\x00\x00\x09\x01"))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("client through a proxy without upstream: read %d, %v; want it closed", n, err)
	}
	_ = c.Close()
	line, ok := p.stderr.waitLine(10*time.Second, p.done, func(l string) bool { return strings.Contains(l, "client refused") })
	if !ok {
		t.Fatal("no log line for the refused client")
	}
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, unresolvable+": ") || !strings.Contains(line, dead+": ") {
		t.Errorf("refused client line does not warn with both nodes' errors: %s", line)
	}
	m := scrapeMetrics(t, client, httpAddr)
	for _, u := range []string{unresolvable, dead} {
		if v := m.sum("amqptrace_upstream_up", map[string]string{"upstream": u}); v != 0 {
			t.Errorf("amqptrace_upstream_up{upstream=%q} = %v, want 0", u, v)
		}
		if v := m.sum("amqptrace_upstream_downs_total", map[string]string{"upstream": u}); v < 1 {
			t.Errorf("amqptrace_upstream_downs_total{upstream=%q} = %v, want at least 1", u, v)
		}
	}

	// A broker comes up at the dead address (one that answers the protocol header, enough for the proxy).
	ln, err = net.Listen("tcp", dead)
	if err != nil {
		t.Skipf("port of %s taken meanwhile: %v", dead, err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.ReadFull(c, make([]byte, 8)); err == nil {
					_, _ = c.Write([]byte("START"))
				}
			}()
		}
	}()
	waitReady(t, p, client, httpAddr, 30*time.Second)
	var stats struct {
		Upstreams []struct {
			Addr, State string
		} `json:"upstreams"`
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	sc, sb, err := httpGet(ctx, client, "http://"+httpAddr+"/api/stats")
	cancel()
	if err != nil || sc != http.StatusOK || json.Unmarshal(sb, &stats) != nil {
		t.Fatalf("/api/stats: %d %v %s", sc, err, sb)
	}
	states := map[string]string{}
	for _, u := range stats.Upstreams {
		states[u.Addr] = u.State
	}
	if states[dead] != "up" || states[unresolvable] != "down" {
		t.Errorf("/api/stats upstreams: %v; want %s up and %s down", states, dead, unresolvable)
	}
	if v := scrapeMetrics(t, client, httpAddr).sum("amqptrace_upstream_up", map[string]string{"upstream": dead}); v != 1 {
		t.Errorf("amqptrace_upstream_up{upstream=%q} = %v, want 1", dead, v)
	}
}
