package ui

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/browsertest"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// wireCloud is the simulated cloud's declarations as oslo.messaging sends them, fed as AMQP bytes through real
// frames decoders into a running correlator: the topology the page shows is what the correlator learned from the
// wire, not a fixture of the view.
type wireCloud struct {
	t      *testing.T
	c      *correlate.Correlator
	cancel context.CancelFunc
	done   chan error
	ids    uint64
	conns  []*correlate.Conn
	// queues and exchanges are what the scenario declared, minus the reply queues (counted per service).
	queues, exchanges map[string]bool
}

type wireConn struct {
	w   *wireCloud
	cn  *correlate.Conn
	dec *frames.Conn
	tag int
}

func newWireCloud(t *testing.T) *wireCloud {
	w := &wireCloud{t: t, c: correlate.New(correlate.Config{Reorder: 20 * time.Millisecond}), done: make(chan error, 1),
		queues: map[string]bool{}, exchanges: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.done <- w.c.Run(ctx) }()
	return w
}

func (w *wireCloud) stop() {
	for _, cn := range w.conns {
		cn.Close("test over", nil)
	}
	w.cancel()
	if err := <-w.done; err != nil {
		w.t.Error(err)
	}
}

// conn opens a connection of one process of svc, logged in to vhost "/".
func (w *wireCloud) conn(svc string) *wireConn {
	w.ids++
	ep := cloudEP(svc)
	props := wire.Table{"product": "py-amqp", "product_version": "5.1.1",
		"connection_name": fmt.Sprintf("%s:%d:%08d-8888-4888-8888-888888888888", svc, ep.PID, w.ids)}
	cn := w.c.NewConn(correlate.ConnInfo{ID: w.ids, Client: fmt.Sprintf("%s:%d", ep.Host, 40000+w.ids), Upstream: "127.0.0.1:5672"})
	w.conns = append(w.conns, cn)
	c := &wireConn{w: w, cn: cn, dec: frames.NewConn(cn, frames.Options{})}
	c.c2s(wire.ProtocolHeader(), wire.StartOKAMQPlain(props, "guest", "guest"), wire.TuneOK(2047, 131072, 60),
		wire.Open("/"), wire.ChannelOpen(1))
	c.s2c(wire.Start(wire.Table{}), wire.Tune(2047, 131072, 60), wire.OpenOK(), wire.ChannelOpenOK(1))
	return c
}

func (c *wireConn) c2s(parts ...[]byte) {
	c.w.t.Helper()
	if _, err := c.dec.ClientDecoder().Write(wire.Concat(parts...)); err != nil {
		c.w.t.Fatal(err)
	}
}

func (c *wireConn) s2c(parts ...[]byte) {
	c.w.t.Helper()
	if _, err := c.dec.ServerDecoder().Write(wire.Concat(parts...)); err != nil {
		c.w.t.Fatal(err)
	}
}

func (c *wireConn) consume(q string) {
	c.tag++
	tag := fmt.Sprint(c.tag)
	c.c2s(wire.Consume(1, q, tag, false, false, nil))
	c.s2c(wire.ConsumeOK(1, tag))
}

// exchange declares an exchange (not passive, not internal).
func (c *wireConn) exchange(name, kind string, durable, autoDelete bool) {
	c.c2s(wire.Method(1, 40, 10, wire.Short(0), wire.ShortStr(name), wire.ShortStr(kind),
		wire.Bits(false, durable, autoDelete, false, false), wire.TableArg(nil)))
	c.w.exchanges[name] = true
}

func (c *wireConn) queue(name string, durable bool, args wire.Table) {
	c.c2s(wire.QueueDeclare(1, name, durable, false, false, args))
	if !strings.HasPrefix(name, "reply_") {
		c.w.queues[name] = true
	}
}

// rpcServer declares and consumes like oslo's RPC server listener: topic and topic.host1 on the project's
// control exchange, and the topic's auto-delete fanout exchange with this server's x-expires fanout queue. durable
// and args stand for amqp_durable_queues and the quorum or HA options.
func (c *wireConn) rpcServer(control, topic string, durable bool, args wire.Table, prefetch uint16) {
	fq := topic + "_fanout_" + fmt.Sprintf("%032x", c.w.ids)
	c.exchange(control, "topic", durable, false)
	c.queue(topic, durable, args)
	c.c2s(wire.QueueBind(1, topic, control, topic, nil))
	c.queue(topic+".host1", durable, args)
	c.c2s(wire.QueueBind(1, topic+".host1", control, topic+".host1", nil))
	c.exchange(topic+"_fanout", "fanout", false, true)
	c.queue(fq, false, wire.Table{"x-expires": int32(1800000)})
	c.c2s(wire.QueueBind(1, fq, topic+"_fanout", topic, nil))
	if prefetch > 0 {
		c.c2s(wire.Method(1, 60, 10, wire.Long(0), wire.Short(prefetch), wire.Bits(false)))
	}
	c.consume(topic)
	c.consume(topic + ".host1")
	c.consume(fq)
}

func project(svc string) string { return strings.SplitN(svc, "-", 2)[0] }

// declareCloud runs the cloud's declarations: every RPC server of cloudFlows, a reply queue per caller, the
// notification listeners; conductor's queues are quorum (oslo's rabbit_quorum_queue, durable) with a prefetch of
// 10, heat's are mirrored (rabbit_ha_queues); manila-share then stops, and manila-scheduler keeps casting to it.
func (w *wireCloud) declareCloud() (stopped string, caster *wireConn) {
	served := map[string][]string{}
	callers := map[string]bool{}
	for _, f := range cloudFlows() {
		switch f.kind {
		case correlate.KindCall, correlate.KindCast:
			if !slices.Contains(served[f.to], f.topic) {
				served[f.to] = append(served[f.to], f.topic)
			}
			if f.kind == correlate.KindCall {
				callers[f.from] = true
			}
		}
	}
	for _, svc := range sortedSet(served) {
		c := w.conn(svc)
		for _, topic := range served[svc] {
			switch project(svc) {
			case "nova":
				c.rpcServer("nova", topic, true, wire.Table{"x-queue-type": "quorum"}, 10)
			case "heat":
				c.rpcServer("heat", topic, false, wire.Table{"x-ha-policy": "all"}, 0)
			default:
				c.rpcServer(project(svc), topic, false, nil, 0)
			}
		}
		if svc == "manila-share" {
			c.cn.Close("manila-share stopped", nil)
		}
	}
	for _, svc := range sortedSet(callers) {
		c := w.conn(svc)
		for i := range 2 { // an API with two workers: two reply queues
			q := fmt.Sprintf("reply_%032x", w.ids*10+uint64(i))
			c.queue(q, false, wire.Table{"x-expires": int32(1800000)})
			c.consume(q)
		}
	}
	for _, svc := range []string{"ceilometer-agent-notification", "barbican-keystone-listener", "designate-sink"} {
		c := w.conn(svc)
		c.exchange("openstack", "topic", false, false)
		c.queue("notifications.info", false, nil)
		c.c2s(wire.QueueBind(1, "notifications.info", "openstack", "notifications.info", nil))
		c.consume("notifications.info")
	}
	caster = w.conn("manila-scheduler")
	return "manila-share.host1", caster
}

// cast publishes an oslo cast to the control exchange with routing key rk.
func (c *wireConn) cast(exchange, rk, method string, n int) {
	body := fmt.Sprintf(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"%s\", \"args\": {}, \"_unique_id\": \"%032x\"}"}`, method, n)
	p := wire.Properties{ContentType: "application/json", ContentEncoding: "utf-8", Headers: wire.Table{}, DeliveryMode: 2}
	c.c2s(wire.Publish(1, exchange, rk, false), wire.Header(1, uint64(len(body)), p), wire.Body(1, []byte(body), 131072))
}

func sortedSet[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// The topology view lists every exchange and queue the cloud declared on the wire with its flags, counts reply
// queues per service instead of listing them, names who consumes what with its prefetch, and shows the queue of
// a stopped server growing and ageing; at 1366x768 and 1920x1080, with screenshots.
func TestBrowserTopology(t *testing.T) {
	ctx := browsertest.Start(t)
	w := newWireCloud(t)
	defer w.stop()
	stopped, caster := w.declareCloud()
	ui := startUIWith(t, "", func(c *Config) { c.Topology = w.c.Topology; c.InFlight = w.c.InFlight }, nil)
	defer ui.stop()
	t.Setenv("AMQPTRACE_ARTIFACTS", artifactsDir(t))
	casts := 0
	castMore := func(n int) {
		for range n {
			casts++
			caster.cast("manila", stopped, "create_share_instance", casts)
		}
	}
	castMore(3)

	for _, size := range [][2]int64{{1366, 768}, {1920, 1080}} {
		tag := fmt.Sprintf("%dx%d", size[0], size[1])
		step(t, ctx, "topology "+tag, chromedp.EmulateViewport(size[0], size[1]), chromedp.Navigate("about:blank"),
			chromedp.Navigate(ui.ts.URL+"/#/topology"),
			waitJS(fmt.Sprintf(`document.querySelectorAll("#topobody tr[data-queue]").length === %d`, len(w.queues))))
		if got := eval[bool](t, ctx, `getComputedStyle(document.getElementById("topopane")).display !== "none" &&
		  getComputedStyle(document.getElementById("graphpane")).display === "none"`); !got {
			t.Error("#/topology does not show the topology pane alone")
		}
		queues := eval[[]string](t, ctx, `[...document.querySelectorAll("#topobody tr[data-queue]")].map(r => r.dataset.queue)`)
		if queues[0] != stopped {
			t.Errorf("the first queue listed is %q, want the one holding messages (%s)", queues[0], stopped)
		}
		slices.Sort(queues)
		if want := sortedSet(w.queues); !slices.Equal(queues, want) {
			t.Errorf("queues listed:\n%v\nwant the scenario's:\n%v", queues, want)
		}
		exchanges := eval[[]string](t, ctx, `[...document.querySelectorAll("#topobody tr[data-exchange]")].map(r => r.dataset.exchange)`)
		if want := sortedSet(w.exchanges); !slices.Equal(exchanges, want) {
			t.Errorf("exchanges listed:\n%v\nwant the scenario's:\n%v", exchanges, want)
		}
		row := func(kind, name string) []string {
			t.Helper()
			return eval[[]string](t, ctx, fmt.Sprintf(`[...(document.querySelector('#topobody tr[data-%s=%q]') || {cells: []}).cells].map(c => c.textContent)`, kind, name))
		}
		// queue, type, flags, consumers, depth, oldest, consumed by, message TTL, expires, arguments, declared by
		cond := row("queue", "conductor")
		if len(cond) != 11 || cond[1] != "quorum" || cond[2] != "durable" || cond[3] != "1" || cond[10] != "nova-conductor" ||
			!strings.Contains(cond[6], "nova-conductor@"+cloudEP("nova-conductor").Host) || !strings.Contains(cond[6], "(10)") {
			t.Errorf("queue conductor: %q", cond)
		}
		if heat := row("queue", "engine"); len(heat) != 11 || heat[1] != "default" || heat[2] != "transient" ||
			heat[9] != "ha-policy all" || !strings.Contains(heat[6], "(unlimited)") {
			t.Errorf("queue engine: %q", heat)
		}
		fq := eval[string](t, ctx, `document.querySelector('#topobody tr[data-queue^="conductor_fanout_"]').dataset.queue`)
		if r := row("queue", fq); len(r) != 11 || r[2] != "transient" || r[8] != "30 min" {
			t.Errorf("fanout queue: %q, want transient and expiring after 30 min", r)
		}
		if x := row("exchange", "nova"); len(x) != 5 || x[1] != "topic" || x[2] != "durable" {
			t.Errorf("exchange nova: %q", x)
		}
		if x := row("exchange", "conductor_fanout"); len(x) != 5 || x[1] != "fanout" || x[2] != "transientauto-delete" || x[4] != "1" {
			t.Errorf("exchange conductor_fanout: %q", x)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#topobody tr[data-queue^="reply_"]').length`); n != 0 {
			t.Errorf("%d reply queues listed one by one", n)
		}
		if p := row("service", "nova-api"); len(p) != 5 || p[1] != "2" || p[3] != "2" {
			t.Errorf("nova-api's reply queues: %q", p)
		}
		// The stopped server's queue: no consumer, and a depth that grows, older with every look.
		m := row("queue", stopped)
		if len(m) != 11 || m[3] != "0" || m[4] != fmt.Sprint(casts) {
			t.Errorf("queue %s: %q, want 0 consumers and depth %d", stopped, m, casts)
		}
		castMore(2)
		step(t, ctx, "depth grows "+tag, waitJS(fmt.Sprintf(`document.querySelector('#topobody tr[data-queue=%q] td.depth').textContent === "%d"`, stopped, casts)))
		browsertest.Screenshot(t, ctx, "topology-"+tag)
		if d := eval[string](t, ctx, fmt.Sprintf(`document.querySelector('#topobody tr[data-queue=%q] td.depth').className`, stopped)); !strings.Contains(d, "stuck") {
			t.Errorf("the growing queue with no consumer is not marked: class %q", d)
		}
		// The filter narrows the lists and is kept in the URL.
		step(t, ctx, "filter "+tag, chromedp.SendKeys(chromedp.CSS("#topofilter"), "manila"),
			waitJS(`[...document.querySelectorAll("#topobody tr[data-queue]")].every(r => r.dataset.queue.includes("manila"))`),
			waitJS(`location.hash === "#/topology?q=manila"`))
		browsertest.Screenshot(t, ctx, "topology-filtered-"+tag)
	}
}
