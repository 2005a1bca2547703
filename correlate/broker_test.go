package correlate

import (
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// What the broker does to a connection lands on the RPCs in flight on that connection's process.

func hasEvent(r *Record, typ string) *RecordEvent {
	for i := range r.Events {
		if r.Events[i].Type == typ {
			return &r.Events[i]
		}
	}
	return nil
}

func TestBrokerBlockedAndClosedLandOnTheCallsInFlight(t *testing.T) {
	c := newCloud(t, Config{Grace: time.Second})
	bystander := c.h.conn("neutron-server", 77, "10.0.0.77")
	body := callBody("select_destinations", "msg1", "u1", reqID, nil)
	c.condSend.publish("nova", "scheduler", false, callProps(2000), body)
	c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(2000), body)
	bystander.publish("nova", "q-plugin", false, osloProps, castBody("report_state", "u-n", "req-n", nil))
	c.h.step(10 * time.Millisecond)
	// A memory alarm blocks the scheduler's publishing connection (its reply cannot go out), then the broker
	// forces the conductor's reply connection closed: the caller will never see the reply.
	c.schedSend.s2c(wire.Method(0, 10, 60, wire.ShortStr("low on memory")))
	c.h.step(10 * time.Millisecond)
	c.condReply.s2c(wire.Method(0, 10, 50, wire.Short(320), wire.ShortStr("CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"), wire.Short(0), wire.Short(0)))
	c.h.advance(time.Minute)

	var call, cast *Record
	for _, r := range c.h.records() {
		switch r.Kind {
		case KindCall:
			call = r
		case KindCast:
			cast = r
		}
	}
	if call == nil || call.Status != StatusTimeout {
		t.Fatalf("the call: %s", dump(c.h.records()))
	}
	if e := hasEvent(call, EventConnectionBlocked); e == nil || e.Detail == "" {
		t.Errorf("the blocked callee is not on the call: %+v", call.Events)
	}
	if e := hasEvent(call, EventConnectionClosed); e == nil {
		t.Errorf("the broker's close is not on the call: %+v", call.Events)
	}
	if call.Cause == "" {
		t.Errorf("the timeout does not say the broker closed the caller's connection: %s", dump([]*Record{call}))
	}
	if cast != nil && len(cast.Events) != 0 {
		t.Errorf("another process's cast got the events: %+v", cast.Events)
	}
	st := c.h.c.Stats()
	if st.Blocked != 1 || st.BrokerClosedConnections != 1 {
		t.Errorf("blocked %d, closed %d, want 1 and 1", st.Blocked, st.BrokerClosedConnections)
	}
}

func TestRedeliveryAndBrokerCancelAreEvents(t *testing.T) {
	c := newCloud(t, Config{})
	body := callBody("select_destinations", "msg1", "u1", reqID, nil)
	c.condSend.publish("nova", "scheduler", false, callProps(60000), body)
	c.schedListen.s2c(wire.Deliver(1, "1", 1, true, "nova", "scheduler"), wire.Header(1, uint64(len(body)), callProps(60000)),
		wire.Body(1, body, frameMax))
	c.schedListen.s2c(wire.Method(1, 60, 30, wire.ShortStr("1"), wire.Bits(false))) // the broker cancels the consumer
	reply := replyBody("msg1", "u2", 1, nil, true)
	c.schedSend.publish("", replyQ, false, osloProps, reply)
	c.condReply.deliver(c.replyTag, 1, "", replyQ, osloProps, reply)
	r := c.h.only()
	if hasEvent(r, EventRedelivered) == nil {
		t.Errorf("redelivery not on the record: %+v", r.Events)
	}
	if e := hasEvent(r, EventConsumerCancelled); e == nil || e.Detail == "" {
		t.Errorf("the broker's cancel not on the record: %+v", r.Events)
	}
	if st := c.h.c.Stats(); st.Redeliveries != 1 || st.ConsumersCancelled != 1 {
		t.Errorf("redeliveries %d, cancels %d", st.Redeliveries, st.ConsumersCancelled)
	}
}
