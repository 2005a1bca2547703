package correlate

import (
	"fmt"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// ackCloud is a nova-compute publishing notifications and a ceilometer listener consuming notifications.info.
type ackCloud struct {
	h       *harness
	compute *tconn
	ceilo   *tconn
	tag     string
}

func newAckCloud(t *testing.T, cfg Config, noAck bool) *ackCloud {
	h := newHarness(t, cfg)
	a := &ackCloud{h: h}
	a.compute = h.conn("nova-compute", 100, "10.0.1.1")
	a.ceilo = h.conn("ceilometer-agent-notification", 300, "10.0.0.30")
	a.ceilo.c2s(wire.QueueDeclare(1, "notifications.info", false, false, false, nil),
		wire.QueueBind(1, "notifications.info", "nova", "notifications.info", nil))
	a.tag = "ctag-1"
	a.ceilo.c2s(wire.Consume(1, "notifications.info", a.tag, noAck, false, nil))
	a.ceilo.s2c(wire.ConsumeOK(1, a.tag))
	return a
}

func noteBody(id string) []byte {
	return []byte(pyJSON([]kv{{"message_id", id}, {"publisher_id", "compute.host1"},
		{"event_type", "compute.instance.update"}, {"priority", "INFO"}, {"payload", map[string]any{}},
		{"timestamp", "2026-12-03 04:00:00.000000"}, {"_unique_id", "u-" + id}}...))
}

// notify publishes notification id and delivers it to the listener as delivery dtag.
func (a *ackCloud) notify(id string, dtag uint64) {
	body := noteBody(id)
	a.compute.publish("nova", "notifications.info", false, osloProps, body)
	a.h.step(time.Millisecond)
	a.ceilo.deliver(a.tag, dtag, "nova", "notifications.info", osloProps, body)
}

// A notification listener answers after its handler returned: the record waits for the answer and carries the
// time from delivery to it.
func TestNotificationWaitsForItsAck(t *testing.T) {
	a := newAckCloud(t, Config{}, false)
	a.notify("n1", 1)
	a.h.advance(3 * time.Second) // the handler runs for 3 s: no record while it does
	if rs := a.h.records(); len(rs) != 0 {
		t.Fatalf("record before the listener answered: %s", dump(rs))
	}
	a.ceilo.ack(1)
	r := a.h.only()
	if r.AckUS != (3*time.Second).Microseconds() || len(r.Acks) != 1 || r.Acks[0].Outcome != AckAccepted ||
		r.Acks[0].Callee != 0 || !r.Acks[0].Delivered.Equal(*r.Delivered) {
		t.Errorf("got %s", dump([]*Record{r}))
	}
	if n := a.h.c.Stats().ConsumerAcks; n != 1 {
		t.Errorf("ConsumerAcks = %d, want 1", n)
	}
}

// A listener that never answers (it hangs, or is killed) does not hold the record past AckWait after its
// delivery; the record says no answer was seen.
func TestNotificationWithoutAckEndsAtAckWait(t *testing.T) {
	a := newAckCloud(t, Config{AckWait: 10 * time.Second}, false)
	a.notify("n1", 1)
	a.h.advance(9 * time.Second)
	if rs := a.h.records(); len(rs) != 0 {
		t.Fatalf("record before AckWait: %s", dump(rs))
	}
	a.h.advance(2 * time.Second)
	r := a.h.only()
	if r.Status != StatusOK || len(r.Acks) != 0 || r.AckUS != 0 || r.Deliveries != 1 {
		t.Errorf("got %s", dump([]*Record{r}))
	}
	a.ceilo.ack(1) // too late: nobody's any more
	a.h.flush()
	if n := a.h.c.Stats().ConsumerAcks; n != 0 {
		t.Errorf("ConsumerAcks = %d after a late answer, want 0", n)
	}
}

// A no-ack consumer never answers: its deliveries are not waited for.
func TestNoAckConsumerIsNotWaitedFor(t *testing.T) {
	a := newAckCloud(t, Config{}, true)
	a.notify("n1", 1)
	r := a.h.only()
	if len(r.Acks) != 0 || r.AckUS != 0 {
		t.Errorf("got %s", dump([]*Record{r}))
	}
}

// One multiple ack answers every delivery up to its tag; a Reject or Nack says what became of the message.
func TestAnswersMultipleRejectRequeue(t *testing.T) {
	a := newAckCloud(t, Config{}, false)
	for i := range 5 {
		a.notify(fmt.Sprint("n", i+1), uint64(i+1))
	}
	a.h.step(time.Second)
	a.ceilo.c2s(wire.Ack(1, 3, true)) // n1..n3
	a.h.step(time.Second)
	a.ceilo.c2s(wire.Reject(1, 5, true)) // n5 requeued, n4 still in hand
	a.h.step(time.Second)
	a.ceilo.c2s(wire.Nack(1, 4, false, false)) // n4 dropped
	rs := a.h.records()
	if len(rs) != 5 {
		t.Fatalf("got %d records, want 5: %s", len(rs), dump(rs))
	}
	want := map[string]AckOutcome{"n1": AckAccepted, "n2": AckAccepted, "n3": AckAccepted, "n4": AckRejected,
		"n5": AckRequeued}
	for _, r := range rs {
		if len(r.Acks) != 1 || r.Acks[0].Outcome != want[r.MessageID] {
			t.Errorf("%s: acks %+v, want %s", r.MessageID, r.Acks, want[r.MessageID])
		}
	}
}

// A channel that closes with deliveries unanswered gives them back to the broker: their records no longer wait.
func TestClosedChannelEndsTheWaitForAnswers(t *testing.T) {
	a := newAckCloud(t, Config{}, false)
	a.notify("n1", 1)
	a.h.advance(time.Second)
	if rs := a.h.records(); len(rs) != 0 {
		t.Fatalf("record before the close: %s", dump(rs))
	}
	a.ceilo.cn.Close("ceilometer killed", nil)
	a.h.advance(time.Second) // the reorder window passes; nowhere near AckWait
	r := a.h.only()
	if len(r.Acks) != 0 {
		t.Errorf("got %s", dump([]*Record{r}))
	}
}

// Calls are not waited for: oslo's RPC server answers on receipt, and the reply ends the call.
func TestCallDeliveriesAreNotTracked(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-api", 7, "10.0.0.9")
	apiRepl := h.conn("nova-api", 7, "10.0.0.9")
	rtag := apiRepl.replyListener(replyQ)
	compute := h.conn("nova-compute", 99, "10.0.0.20")
	compute.rpcServer("compute", "cmp1")
	body := callBody("get_console_output", "m-call", "u-call", reqID, nil)
	api.publish("nova", "compute.cmp1", false, callProps(60000), body)
	compute.deliver("2", 1, "nova", "compute.cmp1", callProps(60000), body)
	reply := replyBody("m-call", "u-r", "console", nil, true)
	compute.publish("", replyQ, false, osloProps, reply)
	apiRepl.deliver(rtag, 1, "", replyQ, osloProps, reply)
	r := h.only()
	if r.Status != StatusOK || len(r.Acks) != 0 {
		t.Errorf("got %s", dump([]*Record{r}))
	}
	h.flush()
	// The caller's ack of its reply is not even an event: its channel consumes only a reply queue.
	before := h.c.queued.Load()
	apiRepl.ack(1)
	if n := h.c.queued.Load() - before; n != 0 {
		t.Errorf("a reply queue consumer's ack queued %d events, want 0", n)
	}
	// The server's is (its queues may deliver casts), and finds nothing to answer.
	compute.ack(1)
	if n := h.c.queued.Load() - before; n != 1 {
		t.Errorf("an RPC server's ack queued %d events, want 1", n)
	}
	h.flush()
	if n := h.c.Stats().ConsumerAcks; n != 0 {
		t.Errorf("ConsumerAcks = %d, want 0", n)
	}
}

// A consumer holding a huge backlog unanswered (unlimited prefetch) makes the correlator keep at most
// maxUnackedPerConn deliveries waiting; the rest are counted and not waited for.
func TestUnansweredDeliveriesAreBounded(t *testing.T) {
	a := newAckCloud(t, Config{}, false)
	n := maxUnackedPerConn + 10
	for i := range n {
		a.notify(fmt.Sprint("n", i), uint64(i+1))
	}
	a.h.flush()
	if got := a.h.c.Stats().AcksUntracked; got != 10 {
		t.Errorf("AcksUntracked = %d, want 10", got)
	}
	if rs := a.h.records(); len(rs) != 10 {
		t.Errorf("%d records ended at once, want the 10 untracked", len(rs))
	}
	a.ceilo.c2s(wire.Ack(1, 0, true)) // every outstanding one
	if rs := a.h.records(); len(rs) != n {
		t.Fatalf("%d records after the answer, want %d", len(rs), n)
	}
	if got := a.h.c.Stats().ConsumerAcks; got != uint64(maxUnackedPerConn) {
		t.Errorf("ConsumerAcks = %d, want %d", got, maxUnackedPerConn)
	}
}

// The last answer resumes the end the record deferred for it. A cast whose publish this proxy did not see, to a
// queue whose binding it did not see, waits out its settle time; if its answer is still due then, the record
// waits for it and is emitted when it comes, not held a further reorder window as if it had just become final.
func TestLastAnswerResumesTheDeferredEnd(t *testing.T) {
	h := newHarness(t, Config{Settle: 2 * time.Second})
	compute := h.conn("nova-compute", 99, "10.0.0.20")
	compute.c2s(wire.Consume(1, "compute.cmp1", "ctag", false, false, nil))
	compute.s2c(wire.ConsumeOK(1, "ctag"))
	body := castBody("build_and_run_instance", "u-unseen", reqID, nil)
	compute.deliver("ctag", 1, "nova", "compute.cmp1", osloProps, body)
	h.advance(3 * time.Second) // past the settle time: the record now waits only for its answer
	if rs := h.records(); len(rs) != 0 {
		t.Fatalf("record before its answer: %s", dump(rs))
	}
	compute.ack(1)
	r := h.only()
	if len(r.Acks) != 1 || r.Published != nil {
		t.Errorf("got %s", dump([]*Record{r}))
	}
}
