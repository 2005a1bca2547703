package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/browsertest"
)

// The live data path in Chromium, with the real oslo.messaging against RabbitMQ through the amqptrace binary: the
// topology view lists the queues and exchanges nova-compute declared, with their flags and its consumers; a burst
// of concurrent calls to a server with a pool of one marks it saturated on the graph; and once it is killed, its
// queue has no consumer and the topology view shows its depth growing with each caller and its oldest message
// ageing. Nothing here is canned: every figure comes from the running correlator.
func TestE2ETopologySaturationBacklogInBrowser(t *testing.T) {
	skipShort(t)
	rig := startOsloRig(t, "e2e_topo", brokertest.Require(t))
	ctx := browsertest.Start(t)
	sfx := rig.suffix
	page := "http://" + rig.httpAddr + "/"
	shot := func(name string) { t.Helper(); browsertest.Screenshot(t, ctx, name) }
	cell := func(queue, td string) string {
		return fmt.Sprintf(`document.querySelector('#topobody tr[data-queue=%q] td.%s')`, queue, td)
	}
	row := func(kind, name string) []string {
		t.Helper()
		return evalPage[[]string](t, ctx, fmt.Sprintf(
			`[...(document.querySelector('#topobody tr[data-%s=%q]') || {cells: []}).cells].map(c => c.textContent)`, kind, name))
	}

	srv := rig.oslo(t, "server", "--pool", "1")
	srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	topic, server, notes := "compute"+sfx, "compute"+sfx+".host1", "notifications"+sfx+".info"
	browse(t, ctx, 30*time.Second, "topology", chromedp.EmulateViewport(1366, 768), chromedp.Navigate(page+"#/topology"),
		pollJS(fmt.Sprintf(`[%q, %q, %q].every(q => document.querySelector('#topobody tr[data-queue="' + q + '"]'))`,
			topic, server, notes), 20*time.Second))
	// queue, type, flags, consumers, depth, oldest, consumed by, message TTL, expires, arguments, declared by
	if r := row("queue", server); len(r) != 11 || r[2] != "transient" || r[3] != "1" || !strings.HasPrefix(r[6], "nova-compute@") ||
		!strings.HasSuffix(r[6], "(unlimited)") || r[10] != "nova-compute" {
		t.Errorf("queue %s: %q", server, r)
	}
	fanout := evalPage[string](t, ctx,
		`(document.querySelector('#topobody tr[data-queue^="compute`+sfx+`_fanout_"]') || {dataset: {}}).dataset.queue || ""`)
	if r := row("queue", fanout); len(r) != 11 || r[8] != "30 min" || r[3] != "1" {
		t.Errorf("fanout queue %q: %q, want x-expires 30 min and one consumer", fanout, r)
	}
	if x := row("exchange", "e2e_topo"+sfx); len(x) != 5 || x[1] != "topic" || x[2] != "transient" {
		t.Errorf("control exchange: %q", x)
	}
	if x := row("exchange", topic+"_fanout"); len(x) != 5 || x[1] != "fanout" || x[2] != "transientauto-delete" {
		t.Errorf("fanout exchange: %q", x)
	}
	shot("e2e-topology-1366x768")

	// Eight monitored calls at once to a pool of one: the server is saturated while they wait.
	burst := rig.oslo(t, "burst", "--calls", "8", "--seconds", "1.5")
	browse(t, ctx, 60*time.Second, "saturated", chromedp.Navigate(page+"#/graph"),
		pollJS(`(() => { const g = document.querySelector('#graph g[data-node="nova-compute"]'); return g && g.classList.contains("saturated"); })()`,
			50*time.Second))
	shot("e2e-graph-saturated-1366x768")
	burst.waitLine(90*time.Second, func(l string) bool { return strings.HasPrefix(l, "{") })
	rig.waitSettled(t)

	// nova-compute dies; each caller's cast and call wait in its queues, which nobody consumes now.
	srv.kill()
	browse(t, ctx, 30*time.Second, "topology again", chromedp.Navigate(page+"#/topology?q="+topic),
		pollJS(`(`+cell(server, "cons")+` || {}).textContent === "0"`, 20*time.Second))
	var ages []string
	for n := 1; n <= 2; n++ {
		api := rig.oslo(t, "client")
		api.waitLine(60*time.Second, func(l string) bool { return l == "SENT" })
		browse(t, ctx, 30*time.Second, fmt.Sprintf("depth %d", n),
			pollJS(fmt.Sprintf(`(%s || {dataset: {}}).dataset.n === "%d"`, cell(server, "depth"), n), 20*time.Second))
		ages = append(ages, evalPage[string](t, ctx, cell(server, "age")+`.dataset.ms`))
	}
	browse(t, ctx, 30*time.Second, "ageing", pollJS(fmt.Sprintf(`Number(%s.dataset.ms) > %s`, cell(server, "age"), ages[1]), 20*time.Second))
	if !strings.Contains(row("queue", server)[4], "2") {
		t.Errorf("queue %s: %q, want a depth of 2", server, row("queue", server))
	}
	if !evalPage[bool](t, ctx, cell(server, "depth")+`.classList.contains("stuck")`) {
		t.Error("the queue holding messages with no consumer is not marked")
	}
	shot("e2e-topology-backlog-1366x768")
	t.Logf("oldest message of %s: %s ms after the first caller, %s ms after the second", server, ages[0], ages[1])

	// A new nova-compute drains the backlog; the callers get their replies and exit.
	srv2 := rig.oslo(t, "server")
	srv2.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	rig.waitSettled(t)
	srv2.kill()
	rig.stop(t)
}

// evalPage evaluates a JavaScript expression in the page, within a bound.
func evalPage[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}
