package main

import (
	"bytes"
	"context"
	"net/http"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/cloudsim"
)

// scrape is one parsed /metrics page.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics fetches http://addr/metrics and parses it with Prometheus's own text parser: a page that does not
// parse fails the test, which is the point (every family must be valid exposition format).
func scrapeMetrics(t *testing.T, client *http.Client, addr string) scrape {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, client, "http://"+addr+"/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// sum adds the values of every sample of family name whose labels include want (counters, gauges, untyped).
func (s scrape) sum(name string, want map[string]string) float64 {
	mf := s[name]
	if mf == nil {
		return 0
	}
	total := 0.0
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Untyped != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total
}

// histCount is the number of observations of histogram family name whose labels include want.
func (s scrape) histCount(name string, want map[string]string) uint64 {
	mf := s[name]
	if mf == nil {
		return 0
	}
	var n uint64
next:
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
				continue next
			}
		}
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// recordsBy returns amqptrace_records_total by (kind, method, status).
func (s scrape) recordsBy() map[cloudsim.Key]float64 {
	out := map[cloudsim.Key]float64{}
	for _, m := range s["amqptrace_records_total"].GetMetric() {
		var k cloudsim.Key
		for _, lp := range m.GetLabel() {
			switch lp.GetName() {
			case "kind":
				k.Kind = lp.GetValue()
			case "method":
				k.Method = lp.GetValue()
			case "status":
				k.Status = lp.GetValue()
			}
		}
		out[k] += m.GetCounter().GetValue()
	}
	return out
}

// TestE2EMetrics runs the real binary, scrapes /metrics, sends plain AMQP traffic (publish with confirms,
// consume) and a simulated OpenStack boot through the proxy, and checks that the counters moved by at least what
// was sent, that every call the cloud made is one observation of the client-duration histogram, and that
// /healthz and /readyz answer.
func TestE2EMetrics(t *testing.T) {
	skipShort(t)
	broker := brokertest.Require(t)
	v := testVhost(t)
	p, listen, httpAddr, client := startProxyHTTP(t, broker)

	for _, path := range []string{"/healthz", "/readyz"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, body, err := httpGet(ctx, client, "http://"+httpAddr+path)
		cancel()
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s: %d %v %q", path, code, err, body)
		}
	}

	before := scrapeMetrics(t, client, httpAddr)
	for _, name := range []string{"amqptrace_connections_total", "amqptrace_bytes_total", "amqptrace_frames_total",
		"amqptrace_records_emitted_total", "amqptrace_dropped_total", "go_goroutines", "process_resident_memory_bytes"} {
		if before[name] == nil {
			t.Errorf("family %s missing before traffic", name)
		}
	}

	// Plain AMQP through the proxy: n messages of size bytes, confirmed, then consumed back.
	const n, size = 20, 1000
	conn, err := amqp.Dial(v.url(listen))
	if err != nil {
		t.Fatalf("dial the proxy: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("e2e-metrics-"+randHex(4), false, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("m"), size)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q.Name, false, false, amqp.Publishing{Body: body})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("confirm %d: %v %v", i, ok, err)
		}
	}
	dl, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case d := <-dl:
			if len(d.Body) != size {
				t.Fatalf("message %d: %d bytes", i, len(d.Body))
			}
		case <-ctx.Done():
			t.Fatalf("consumed %d of %d messages", i, n)
		}
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}

	// oslo.messaging traffic: one fault-free boot of the simulated cloud, through the proxy.
	cloud := cloudsim.New(cloudsim.Config{URL: v.url(listen), Rate: 4, MaxBoots: 1, Computes: 1, Agents: 1,
		Prefix: v.prefix, Seed: 3, ErrorRate: -1, SlowRate: -1, TimeoutRate: -1})
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer ccancel()
	if err := cloud.Run(cctx); err != nil || cctx.Err() != nil {
		t.Fatalf("cloud: %v (deadline: %v)", err, cctx.Err())
	}
	counts := cloud.Counts()
	cloudTotal, cloudCalls := 0, 0
	for k, c := range counts.Sent {
		cloudTotal += c
		if k.Kind == "call" {
			cloudCalls += c
		}
	}

	// Records leave the correlator asynchronously (casts and fanouts settle before they are final): scrape until
	// the record counter has moved by what the cloud sent, within a bound.
	var after scrape
	deadline := time.Now().Add(60 * time.Second)
	for {
		after = scrapeMetrics(t, client, httpAddr)
		moved := after.sum("amqptrace_records_total", nil) - before.sum("amqptrace_records_total", nil)
		if moved >= float64(cloudTotal) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records_total moved by %v within 60s, the cloud sent %d", moved, cloudTotal)
		}
		select {
		case <-p.done:
			t.Fatalf("amqptrace exited: %v", p.err)
		case <-time.After(100 * time.Millisecond): // scrape interval, not a wait for a result
		}
	}

	delta := func(name string, labels map[string]string) float64 {
		return after.sum(name, labels) - before.sum(name, labels)
	}
	if d := delta("amqptrace_connections_total", nil); d < 2 {
		t.Errorf("connections_total moved by %v, want at least 2 (the AMQP client and the cloud's processes)", d)
	}
	for _, dir := range []string{"client_to_broker", "broker_to_client"} {
		if d := delta("amqptrace_bytes_total", map[string]string{"direction": dir}); d < n*size {
			t.Errorf("bytes_total{%s} moved by %v, want at least %d", dir, d, n*size)
		}
		if d := delta("amqptrace_frames_total", map[string]string{"direction": dir, "type": "body"}); d < n {
			t.Errorf("frames_total{%s,body} moved by %v, want at least %d", dir, d, n)
		}
		if d := delta("amqptrace_frames_total", map[string]string{"direction": dir, "type": "method"}); d < n {
			t.Errorf("frames_total{%s,method} moved by %v, want at least %d", dir, d, n)
		}
	}
	// The cloud's messages, one record each, under their (kind, method, status); a notification's method label is
	// its event type, as the cloud counts it.
	got, was := after.recordsBy(), before.recordsBy()
	want := map[cloudsim.Key]int{}
	for k, c := range counts.Sent {
		want[k] += c
	}
	for k, c := range want {
		if g := got[k] - was[k]; int(g) != c {
			t.Errorf("records_total{kind=%s,method=%s,status=%s} moved by %v, the cloud sent %d", k.Kind, k.Method, k.Status, g, c)
		}
	}
	// Every call of a fault-free boot was answered: one client-duration observation each.
	hist := after.histCount("amqptrace_rpc_client_duration_seconds", nil) - before.histCount("amqptrace_rpc_client_duration_seconds", nil)
	if hist != uint64(cloudCalls) {
		t.Errorf("rpc_client_duration_seconds has %d new observations for %d calls", hist, cloudCalls)
	}
	if mf := after["amqptrace_rpc_client_duration_seconds"]; mf == nil || mf.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("amqptrace_rpc_client_duration_seconds is not a histogram: %v", mf.GetType())
	}
	if d := delta("amqptrace_dropped_total", nil); d != 0 {
		t.Errorf("dropped_total moved by %v under light load", d)
	}

	names := make([]string, 0, len(after))
	for name := range after {
		if strings.HasPrefix(name, "amqptrace_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	t.Logf("%d families (%d amqptrace_*); cloud sent %d messages (%d calls); deltas: connections %v, bytes c→b %v b→c %v, frames %v, records %v, client-duration observations %d",
		len(after), len(names), cloudTotal, cloudCalls, delta("amqptrace_connections_total", nil),
		delta("amqptrace_bytes_total", map[string]string{"direction": "client_to_broker"}),
		delta("amqptrace_bytes_total", map[string]string{"direction": "broker_to_client"}),
		delta("amqptrace_frames_total", nil), delta("amqptrace_records_total", nil), hist)

	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}
