package correlate

import (
	"fmt"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// A sick cloud's first symptom: messages wait in their queues. A server that is down (or saturated) leaves its
// queue filling up; the records must still be one per message, with the true queue wait.

// backlogCloud is a nova-api (caller) and a nova-compute that consumes its topic queue and then goes away.
type backlogCloud struct {
	h       *harness
	api     *tconn
	apiRepl *tconn
	compute *tconn
	tag     string
}

func newBacklogCloud(t testing.TB, cfg Config) *backlogCloud {
	h := newHarness(t, cfg)
	b := &backlogCloud{h: h}
	b.api = h.conn("nova-api", 7, "10.0.0.9")
	b.apiRepl = h.conn("nova-api", 7, "10.0.0.9")
	b.tag = b.apiRepl.replyListener(replyQ)
	b.compute = h.conn("nova-compute", 99, "10.0.0.20")
	b.compute.rpcServer("compute", "cmp1")
	return b
}

func TestBacklogCastIsOneRecordWithItsQueueWait(t *testing.T) {
	b := newBacklogCloud(t, Config{})
	b.compute.cn.Close("nova-compute stopped", nil)
	b.h.flush()
	body := castBody("build_and_run_instance", "u-cast", reqID, nil)
	b.api.publish("nova", "compute.cmp1", false, osloProps, body)
	b.h.advance(20 * time.Second) // nova-compute is down for 20 s; the cast waits in compute.cmp1
	if rs := b.h.records(); len(rs) != 0 {
		t.Fatalf("the queued cast ended while it waited: %s", dump(rs))
	}
	compute := b.h.conn("nova-compute", 100, "10.0.0.20")
	tag := compute.consume("compute.cmp1")
	compute.deliver(tag, 1, "nova", "compute.cmp1", osloProps, body)
	b.h.step(time.Millisecond)
	compute.ack(1) // oslo's RPC server answers on receipt
	b.h.advance(time.Second)
	r := b.h.only()
	if r.Kind != KindCast || r.Deliveries != 1 || r.Caller == nil || r.Caller.Service != "nova-api" ||
		r.Callee == nil || r.Callee.PID != 100 || r.QueueUS != (20*time.Second).Microseconds() ||
		r.AckUS != time.Millisecond.Microseconds() {
		t.Errorf("backlogged cast: %s", dump([]*Record{r}))
	}
}

func TestBacklogCallIsOneRecordWithItsQueueWait(t *testing.T) {
	b := newBacklogCloud(t, Config{})
	b.compute.cn.Close("nova-compute stopped", nil)
	b.h.flush()
	body := callBody("get_console_output", "m-call", "u-call", reqID, nil)
	b.api.publish("nova", "compute.cmp1", false, callProps(60000), body)
	b.h.advance(20 * time.Second)
	compute := b.h.conn("nova-compute", 100, "10.0.0.20")
	tag := compute.consume("compute.cmp1")
	compute.deliver(tag, 1, "nova", "compute.cmp1", callProps(60000), body)
	b.h.step(5 * time.Millisecond)
	reply := replyBody("m-call", "u-r", "console", nil, true)
	compute.publish("", replyQ, false, osloProps, reply)
	b.h.step(time.Millisecond)
	b.apiRepl.deliver(b.tag, 1, "", replyQ, osloProps, reply)
	b.h.advance(time.Second)
	r := b.h.only()
	if r.Kind != KindCall || r.Status != StatusOK || r.QueueUS != (20*time.Second).Microseconds() ||
		r.Callee == nil || r.Callee.PID != 100 {
		t.Errorf("backlogged call: %s", dump([]*Record{r}))
	}
}

func TestBacklogNotificationIsOneRecord(t *testing.T) {
	b := newBacklogCloud(t, Config{})
	ceilo := b.h.conn("ceilometer-agent-notification", 300, "10.0.0.30")
	ceilo.c2s(wire.QueueDeclare(1, "notifications.info", false, false, false, nil),
		wire.QueueBind(1, "notifications.info", "nova", "notifications.info", nil))
	ceilo.consume("notifications.info")
	ceilo.cn.Close("ceilometer restarting", nil)
	b.h.flush()
	note := []byte(`{"oslo.version": "2.0", "oslo.message": "{\"message_id\": \"n-1\", \"publisher_id\": \"compute.cmp1\", \"event_type\": \"compute.instance.create.end\", \"priority\": \"INFO\", \"payload\": {}, \"timestamp\": \"2026-12-02 04:00:00.000000\"}"}`)
	b.api.publish("nova", "notifications.info", false, osloProps, note)
	b.h.advance(90 * time.Second)
	ceilo2 := b.h.conn("ceilometer-agent-notification", 301, "10.0.0.30")
	tag := ceilo2.consume("notifications.info")
	ceilo2.deliver(tag, 1, "nova", "notifications.info", osloProps, note)
	b.h.step(40 * time.Millisecond) // the listener's handler runs, then it answers
	ceilo2.ack(1)
	b.h.advance(time.Second)
	r := b.h.only()
	if r.Kind != KindNotification || r.Deliveries != 1 || r.QueueUS != (90*time.Second).Microseconds() ||
		r.Callee == nil || r.Callee.PID != 301 || r.AckUS != (40*time.Millisecond).Microseconds() {
		t.Errorf("backlogged notification: %s", dump([]*Record{r}))
	}
}

// While messages wait, the in-flight view shows them: the queue's wire depth and oldest age, the server's calls
// in hand, the caller's calls awaiting a reply; and nothing once they are delivered and answered.
func TestInFlightShowsTheBacklog(t *testing.T) {
	b := newBacklogCloud(t, Config{})
	b.compute.cn.Close("nova-compute stopped", nil)
	b.h.flush()
	b.api.publish("nova", "compute.cmp1", false, osloProps, castBody("build_and_run_instance", "u-cast", reqID, nil))
	call := callBody("get_console_output", "m-call", "u-call", reqID, nil)
	b.api.publish("nova", "compute.cmp1", false, callProps(60000), call)
	b.h.advance(20 * time.Second)
	b.h.flush()
	v := b.h.c.inFlightView(10)
	if len(v.Queues) != 1 || v.Queues[0].Queue != "compute.cmp1" || v.Queues[0].Depth != 2 ||
		v.Queues[0].OldestAgeMS != 20000 {
		t.Errorf("queues while nova-compute is down: %+v", v.Queues)
	}
	if len(v.Callers) != 1 || v.Callers[0].Service != "nova-api" || v.Callers[0].InFlight != 1 {
		t.Errorf("callers: %+v", v.Callers)
	}
	if len(v.Oldest) != 2 || v.Oldest[0].State != StateQueued || v.Oldest[0].AgeMS != 20000 {
		t.Errorf("oldest: %+v", v.Oldest)
	}

	compute := b.h.conn("nova-compute", 100, "10.0.0.20")
	tag := compute.consume("compute.cmp1")
	compute.deliver(tag, 1, "nova", "compute.cmp1", osloProps, castBody("build_and_run_instance", "u-cast", reqID, nil))
	compute.deliver(tag, 2, "nova", "compute.cmp1", callProps(60000), call)
	compute.ack(1)
	compute.ack(2)
	b.h.step(time.Second)
	b.h.flush()
	v = b.h.c.inFlightView(10)
	if len(v.Queues) != 0 || len(v.Servers) != 1 || v.Servers[0].PID != 100 || v.Servers[0].InFlight != 1 ||
		v.Servers[0].OldestAgeMS != 1000 {
		t.Errorf("after the restart: queues %+v servers %+v", v.Queues, v.Servers)
	}
	reply := replyBody("m-call", "u-r", "ok", nil, true)
	compute.publish("", replyQ, false, osloProps, reply)
	b.apiRepl.deliver(b.tag, 1, "", replyQ, osloProps, reply)
	b.h.advance(time.Second)
	if v := b.h.c.inFlightView(10); v.Pending != 0 || len(v.Servers)+len(v.Callers)+len(v.Queues) != 0 {
		t.Errorf("after the reply: %+v", v)
	}
}

// The in-flight view takes a queued message's queue from the message before it when they were published alike
// (inFlightView): messages for two queues of one exchange, interleaved, are still counted each in its own.
func TestInFlightCountsInterleavedQueues(t *testing.T) {
	b := newBacklogCloud(t, Config{})
	b.compute.cn.Close("nova-compute stopped", nil)
	b.h.flush()
	for i := range 6 {
		rk := []string{"compute", "compute.cmp1"}[i%2]
		b.api.publish("nova", rk, false, osloProps, castBody("build_and_run_instance", fmt.Sprintf("u-%d", i), reqID, nil))
		b.h.step(time.Second)
	}
	b.h.flush()
	v := b.h.c.inFlightView(0)
	depth := map[string]int{}
	for _, q := range v.Queues {
		depth[q.Queue] = q.Depth
	}
	if len(v.Queues) != 2 || depth["compute"] != 3 || depth["compute.cmp1"] != 3 {
		t.Errorf("queues: %+v", v.Queues)
	}
}

// Queue names are a vhost's own: a notifications.info that was consumed in one vhost (another cloud on the same
// broker, or another region in one capture) does not make a notification to the unconsumed notifications.info
// of another vhost wait for a consumer. It is one record at its settle time, as if alone.
func TestQueuesOfAnotherVhostDoNotHoldAMessage(t *testing.T) {
	h := newHarness(t, Config{})
	other := h.connIn("ceilometer-agent-notification", 300, "10.0.0.30", "/region-two")
	other.c2s(wire.QueueDeclare(1, "notifications.info", false, false, false, nil),
		wire.QueueBind(1, "notifications.info", "nova", "notifications.info", nil))
	other.consume("notifications.info")
	other.cn.Close("ceilometer restarting", nil) // a queue of /region-two that keeps messages, consumed before
	api := h.connIn("nova-api", 7, "10.0.0.9", "/region-one")
	api.c2s(wire.QueueDeclare(1, "notifications.info", false, false, false, nil),
		wire.QueueBind(1, "notifications.info", "nova", "notifications.info", nil))
	h.flush()
	note := []byte(`{"oslo.version": "2.0", "oslo.message": "{\"message_id\": \"n-2\", \"publisher_id\": \"compute.cmp1\", \"event_type\": \"compute.instance.create.end\", \"priority\": \"INFO\", \"payload\": {}, \"timestamp\": \"2026-12-02 04:00:00.000000\"}"}`)
	api.publish("nova", "notifications.info", false, osloProps, note)
	h.advance(DefaultSettle + time.Second)
	rs := h.records()
	if len(rs) != 1 || rs[0].Kind != KindNotification || rs[0].Deliveries != 0 {
		t.Fatalf("want the notification's record at its settle time: %s", dump(rs))
	}
}
