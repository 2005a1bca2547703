package correlate

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// exchangeDeclare is Exchange.Declare with every flag the test needs (wire.ExchangeDeclare has only durable).
func exchangeDeclare(name, kind string, passive, durable, autoDelete bool) []byte {
	return wire.Method(1, 40, 10, wire.Short(0), wire.ShortStr(name), wire.ShortStr(kind),
		wire.Bits(passive, durable, autoDelete, false, false), wire.TableArg(nil))
}

func qos(prefetch uint16) []byte {
	return wire.Method(1, 60, 10, wire.Long(0), wire.Short(prefetch), wire.Bits(false))
}

func queueDelete(q string) []byte {
	return wire.Method(1, 50, 40, wire.Short(0), wire.ShortStr(q), wire.Bits(false, false, false))
}

func findQueue(v VhostTopology, name string) *QueueView {
	for i := range v.Queues {
		if v.Queues[i].Name == name {
			return &v.Queues[i]
		}
	}
	return nil
}

func findExchange(v VhostTopology, name string) *ExchangeView {
	for i := range v.Exchanges {
		if v.Exchanges[i].Name == name {
			return &v.Exchanges[i]
		}
	}
	return nil
}

// What the view learns from the wire: exchange and queue flags and arguments, bindings, who consumes what with
// which prefetch, reply queues counted per service; and what a delete and a closed connection take away.
func TestTopologyViewFromTheWire(t *testing.T) {
	h := newHarness(t, Config{})
	cond := h.conn("nova-conductor", 100, "10.0.0.10")
	fq := "conductor_fanout_0123456789abcdef0123456789abcdef"
	cond.c2s(
		exchangeDeclare("nova", "topic", false, true, false),
		wire.QueueDeclare(1, "conductor", true, false, false, wire.Table{"x-queue-type": "quorum"}),
		wire.QueueBind(1, "conductor", "nova", "conductor", nil),
		wire.QueueDeclare(1, "conductor.host1", false, false, false,
			wire.Table{"x-ha-policy": "all", "x-message-ttl": int32(60000), "x-dead-letter-exchange": "dlx"}),
		wire.QueueBind(1, "conductor.host1", "nova", "conductor.host1", nil),
		exchangeDeclare("conductor_fanout", "fanout", false, false, true),
		wire.QueueDeclare(1, fq, false, false, false, wire.Table{"x-expires": int32(1800000)}),
		wire.QueueBind(1, fq, "conductor_fanout", "conductor", nil),
		qos(10),
	)
	cond.consume("conductor")
	cond.consume("conductor.host1")
	cond.c2s(qos(0))
	cond.consume(fq)

	api := h.conn("nova-api", 200, "10.0.0.20")
	api.c2s(exchangeDeclare("nova", "", true, false, false)) // passive: checks, changes nothing
	api.replyListener(replyQ)
	api.replyListener("reply_00000000000000000000000000000002")
	h.flush()

	v := h.c.topologyView(maxTopologyList)
	if len(v.Vhosts) != 1 || v.Vhosts[0].Vhost != "/" {
		t.Fatalf("vhosts: %+v", v.Vhosts)
	}
	vt := v.Vhosts[0]
	if x := findExchange(vt, "nova"); x == nil || x.Type != "topic" || !x.Declared || !x.Durable || x.AutoDelete ||
		x.DeclaredBy != "nova-conductor" {
		t.Errorf("exchange nova: %+v", x)
	}
	if x := findExchange(vt, "conductor_fanout"); x == nil || x.Type != "fanout" || x.Durable || !x.AutoDelete {
		t.Errorf("exchange conductor_fanout: %+v", x)
	}
	q := findQueue(vt, "conductor")
	if q == nil || !q.Durable || q.QueueType != "quorum" || q.Consumers != 1 || len(q.ConsumedBy) != 1 ||
		q.ConsumedBy[0].Service != "nova-conductor" || q.ConsumedBy[0].PID != 100 || q.ConsumedBy[0].Prefetch != 10 {
		t.Errorf("queue conductor: %+v", q)
	}
	q = findQueue(vt, "conductor.host1")
	if q == nil || q.Durable || q.HAPolicy != "all" || q.MessageTTLMS != 60000 || q.DeadLetterExchange != "dlx" ||
		q.DeclaredBy != "nova-conductor" || len(q.ConsumedBy) != 1 || q.ConsumedBy[0].Prefetch != 10 {
		t.Errorf("queue conductor.host1: %+v", q)
	}
	// Basic.Qos applies to the consumers that subscribe after it.
	q = findQueue(vt, fq)
	if q == nil || q.ExpiresMS != 1800000 || q.AutoDelete || len(q.ConsumedBy) != 1 || q.ConsumedBy[0].Prefetch != 0 {
		t.Errorf("fanout queue: %+v", q)
	}
	if len(vt.Bindings) != 3 || vt.Bindings[0] != (BindingView{Exchange: "conductor_fanout", Key: "conductor", Queue: fq}) {
		t.Errorf("bindings: %+v", vt.Bindings)
	}
	// The two reply queues are counted for nova-api, not listed.
	if findQueue(vt, replyQ) != nil || len(vt.Queues) != 3 {
		t.Errorf("queues listed: %+v", vt.Queues)
	}
	if len(vt.Private) != 1 || vt.Private[0] != (PrivateObjects{Service: "nova-api", Queues: 2, Consumers: 2}) {
		t.Errorf("private: %+v", vt.Private)
	}

	// Deleting the fanout queue takes its binding, and the auto-delete exchange that had no other.
	cond.c2s(queueDelete(fq))
	h.flush()
	vt = h.c.topologyView(maxTopologyList).Vhosts[0]
	if findQueue(vt, fq) != nil || findExchange(vt, "conductor_fanout") != nil || len(vt.Bindings) != 2 {
		t.Errorf("after the delete: exchanges %+v bindings %+v", vt.Exchanges, vt.Bindings)
	}
	// The conductor stops: its queues stay (not auto-delete), with nobody consuming them.
	cond.cn.Close("nova-conductor stopped", nil)
	h.flush()
	vt = h.c.topologyView(maxTopologyList).Vhosts[0]
	if q := findQueue(vt, "conductor"); q == nil || q.Consumers != 0 || len(q.ConsumedBy) != 0 {
		t.Errorf("queue conductor after its consumer left: %+v", q)
	}
	api.cn.Close("client EOF", nil)
}

// An exclusive queue goes with the connection that declared it, as the broker deletes it, and takes its bindings.
func TestTopologyExclusiveQueueGoesWithItsConnection(t *testing.T) {
	h := newHarness(t, Config{})
	cn := h.conn("nova-api", 300, "10.0.0.30")
	other := h.conn("nova-api", 301, "10.0.0.31")
	cn.c2s(wire.QueueDeclare(1, "scratch", false, true, false, nil), wire.QueueBind(1, "scratch", "nova", "scratch", nil))
	other.c2s(wire.QueueDeclare(1, "kept", false, false, false, nil))
	h.flush()
	if vt := h.c.topologyView(maxTopologyList).Vhosts[0]; findQueue(vt, "scratch") == nil || !findQueue(vt, "scratch").Exclusive {
		t.Fatalf("exclusive queue not learned: %+v", vt.Queues)
	}
	cn.cn.Close("nova-api stopped", nil)
	h.flush()
	vt := h.c.topologyView(maxTopologyList).Vhosts[0]
	if findQueue(vt, "scratch") != nil || len(vt.Bindings) != 0 || findQueue(vt, "kept") == nil {
		t.Errorf("after its connection closed: queues %+v bindings %+v", vt.Queues, vt.Bindings)
	}
	other.cn.Close("test over", nil)
}

// A queue with x-expires that nobody here consumes goes once that long has passed since its last consumer left or
// its last declaration, as the broker deletes it; one still consumed stays.
func TestTopologyQueueExpires(t *testing.T) {
	h := newHarness(t, Config{})
	srv := h.conn("nova-compute", 7, "10.0.0.7")
	srv.c2s(wire.QueueDeclare(1, "compute_fanout_dead", false, false, false, wire.Table{"x-expires": int32(60000)}),
		wire.QueueBind(1, "compute_fanout_dead", "compute_fanout", "compute", nil))
	srv.consume("compute_fanout_dead")
	live := h.conn("nova-compute", 8, "10.0.0.8")
	live.replyListener("reply_00000000000000000000000000000live")
	h.flush()
	srv.cn.Close("nova-compute killed", nil)
	h.advance(30 * time.Second)
	if h.c.topoFor("/").queues["compute_fanout_dead"] == nil {
		t.Fatal("gone before its x-expires")
	}
	h.advance(2 * topoSweepEvery)
	tp := h.c.topoFor("/")
	if tp.queues["compute_fanout_dead"] != nil || tp.nbindings != 0 {
		t.Errorf("still there %v after its x-expires, %d bindings", tp.queues["compute_fanout_dead"] != nil, tp.nbindings)
	}
	if tp.queues["reply_00000000000000000000000000000live"] == nil {
		t.Error("a consumed x-expires queue was dropped")
	}
	live.cn.Close("test over", nil)
}

// A legacy caller's per-call reply queue and exchange, named by the msg_id, are counted, not listed.
func TestTopologyViewPerCallExchanges(t *testing.T) {
	tp := newTopology()
	for i := range 3 {
		id := fmt.Sprintf("%032x", i+1)
		tp.declareExchange(id, "direct", &exchangeFlags{autoDelete: true}, "nova-api")
		tp.declareQueue(id, &queueFlags{autoDelete: true, exclusive: true}, nil, "nova-api")
		tp.bind(id, id, id)
	}
	tp.declareExchange("nova", "topic", &exchangeFlags{}, "nova-api")
	var budget = [3]int{10, 10, 10}
	v, omitted := tp.view(&budget)
	if omitted != 0 || len(v.Exchanges) != 1 || len(v.Queues) != 0 || len(v.Bindings) != 0 ||
		len(v.Private) != 1 || v.Private[0] != (PrivateObjects{Service: "nova-api", Queues: 3, Exchanges: 3, Bindings: 3}) {
		t.Errorf("view: %+v omitted %d", v, omitted)
	}
}

// Every list is bounded: past the limit entries are counted as omitted; past maxConsumerProcs processes on one
// queue, consumers are counted and not named.
func TestTopologyViewBounds(t *testing.T) {
	tp := newTopology()
	for i := range 10 {
		q := fmt.Sprintf("q%02d", i)
		tp.declareQueue(q, &queueFlags{}, nil, "svc")
		tp.bind(q, "ex", q)
	}
	for i := range maxConsumerProcs + 8 {
		tp.consumerAdded("q00", Endpoint{Service: "svc", PID: i + 1}, 1)
	}
	budget := [3]int{4, 4, 4}
	v, omitted := tp.view(&budget)
	if len(v.Queues) != 4 || len(v.Bindings) != 4 || omitted != 12 {
		t.Errorf("%d queues, %d bindings, %d omitted; want 4, 4 and 12", len(v.Queues), len(v.Bindings), omitted)
	}
	if q := v.Queues[0]; q.Consumers != maxConsumerProcs+8 || len(q.ConsumedBy) != maxConsumerProcs {
		t.Errorf("q00: %d consumers, %d named", q.Consumers, len(q.ConsumedBy))
	}
	// The budget is shared: a second vhost gets nothing more.
	if v, omitted := tp.view(&budget); len(v.Queues)+len(v.Bindings) != 0 || omitted != 20 {
		t.Errorf("second vhost: %d queues %d bindings %d omitted", len(v.Queues), len(v.Bindings), omitted)
	}
	// A full table stops learning exchanges.
	for i := range maxExchanges + 1 {
		tp.declareExchange(fmt.Sprint("x", i), "topic", &exchangeFlags{}, "svc")
	}
	if len(tp.exchanges) != maxExchanges {
		t.Errorf("%d exchanges kept, want %d", len(tp.exchanges), maxExchanges)
	}
}

// Topology asks the running correlator, and returns an empty view once it has stopped.
func TestTopologyFromRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 100 * time.Millisecond
		h := newLiveHarness(t, Config{Reorder: window})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.c.Run(ctx) }()
		cn := h.conn("nova-compute", 7, "10.0.0.30")
		cn.c2s(wire.QueueDeclare(1, "compute", false, false, false, nil))
		// The declaration waits out the reorder window (on synctest's clock) before the correlator learns it.
		time.Sleep(window + 20*time.Millisecond)
		synctest.Wait()
		if v := h.c.Topology(t.Context(), 0); len(v.Vhosts) != 1 || findQueue(v.Vhosts[0], "compute") == nil {
			t.Errorf("while running: %+v", v)
		}
		cn.cn.Close("stopped", nil)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if v := h.c.Topology(t.Context(), 0); len(v.Vhosts) != 0 {
			t.Errorf("after Run: %+v", v)
		}
	})
}
