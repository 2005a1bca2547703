package correlate

import (
	"bytes"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// plainMsg is a publish of a plain message (not oslo, no reply_to, no correlation_id) on channel 1.
func plainMsg(rk string) []byte {
	body := bytes.Repeat([]byte{'x'}, 64)
	return wire.Concat(wire.Publish(1, "", rk, false),
		wire.Header(1, uint64(len(body)), wire.Properties{ContentType: "application/octet-stream"}),
		wire.Body(1, body, frameMax))
}

// Plain publishes on a confirm channel reach the correlator as runs, one per run of consecutive ones in a write,
// and every confirm still counts the publishes it acknowledges: acks of one publish inside a run, at its end,
// multiple acks that end inside one, and nacks, around a cast whose record must get its own confirm.
func TestPlainPublishRunsCountTheirConfirms(t *testing.T) {
	h := newHarness(t, Config{})
	pub := h.conn("publisher", 7, "10.0.0.9")
	pub.c2s(wire.ConfirmSelect(1))
	h.flush()
	var w [][]byte
	for seq := 1; seq <= 10; seq++ {
		if seq == 3 {
			body := castBody("m", "u3", reqID, nil)
			w = append(w, wire.Publish(1, "nova", "conductor", false), wire.Header(1, uint64(len(body)), osloProps),
				wire.Body(1, body, frameMax))
			continue
		}
		w = append(w, plainMsg("q"))
	}
	pub.c2s(w...)
	// Plain 1-2, the cast, plain 4-10.
	if n := h.c.queued.Load(); n != 3 {
		t.Errorf("%d events queued for 10 publishes, want 3 (two runs and the cast)", n)
	}
	h.step(time.Millisecond)
	pub.s2c(wire.Ack(1, 1, false), wire.Ack(1, 5, false), wire.Ack(1, 5, false), // inside a run, then again
		wire.Ack(1, 3, true),                         // 2 and the cast
		wire.Nack(1, 7, true, false),                 // 4, then 6 and 7 of the run 6-10
		wire.Ack(1, 10, false), wire.Ack(1, 9, true)) // the end of 8-10, then 8-9
	h.advance(time.Minute)
	r := h.only()
	if r.UniqueID != "u3" || r.Confirmed == nil || r.Nacked {
		t.Errorf("the cast: %s", dump([]*Record{r}))
	}
	st := h.c.Stats()
	if st.Confirms != 7 || st.Nacks != 3 || st.PlainMessages != 9 || st.MessagesIn < 10 {
		t.Errorf("confirms %d nacks %d plain %d messages %d; want 7, 3, 9, at least 10", st.Confirms, st.Nacks,
			st.PlainMessages, st.MessagesIn)
	}
	if ch := pub.cn.st.chans[1]; len(ch.tracked) != 0 {
		t.Errorf("still tracked after every confirm: %+v", ch.tracked)
	}
}

// A plain publish without confirms is counted and goes no further; a mandatory one is tracked for its Return,
// which must not be taken for a later call's to the same exchange and routing key.
func TestPlainPublishWithoutConfirms(t *testing.T) {
	h := newHarness(t, Config{})
	pub := h.conn("publisher", 7, "10.0.0.9")
	h.flush()
	pub.c2s(plainMsg("q"), plainMsg("q"))
	if n := h.c.queued.Load(); n != 0 {
		t.Errorf("%d events queued for two plain publishes without confirms, want 0", n)
	}
	body := bytes.Repeat([]byte{'x'}, 64)
	pub.c2s(wire.Publish(1, "nova", "nowhere", true), wire.Header(1, uint64(len(body)), wire.Properties{}),
		wire.Body(1, body, frameMax))
	pub.publish("nova", "nowhere", true, callProps(60000), callBody("m", "m1", "u1", reqID, nil))
	h.step(time.Millisecond)
	pub.s2c(wire.Return(1, 312, "NO_ROUTE", "nova", "nowhere"), wire.Header(1, uint64(len(body)), wire.Properties{}),
		wire.Body(1, body, frameMax))
	h.flush()
	if rs := h.records(); len(rs) != 0 {
		t.Errorf("the plain message's Return ended the call: %s", dump(rs))
	}
	if st := h.c.Stats(); st.PlainMessages != 3 || st.Unroutable != 1 {
		t.Errorf("plain %d unroutable %d; want 3, 1", st.PlainMessages, st.Unroutable)
	}
}

// Plain deliveries of a consumer go to the correlator only until it has learned what they can teach: a consumer
// whose Basic.Consume it did not see is named by its first delivery through the default exchange.
func TestPlainDeliveriesTeachTheConsumerOnce(t *testing.T) {
	h := newHarness(t, Config{})
	sub := h.conn("consumer", 8, "10.0.0.8")
	h.flush()
	body := bytes.Repeat([]byte{'x'}, 64)
	props := wire.Properties{ContentType: "application/octet-stream"}
	var w [][]byte
	for tag := uint64(1); tag <= 5; tag++ {
		w = append(w, wire.Deliver(1, "ctag", tag, false, "amq.direct", "work"), wire.Header(1, uint64(len(body)), props),
			wire.Body(1, body, frameMax))
	}
	for tag := uint64(6); tag <= 10; tag++ {
		w = append(w, wire.Deliver(1, "ctag", tag, false, "", "work"), wire.Header(1, uint64(len(body)), props),
			wire.Body(1, body, frameMax))
	}
	sub.s2c(w...)
	if n := h.c.queued.Load(); n != 2 {
		t.Errorf("%d events queued for 10 plain deliveries of one consumer, want 2", n)
	}
	h.flush()
	if got := sub.cn.st.chans[1].consumers["ctag"].queue; got != "work" {
		t.Errorf("consumer ctag's queue %q, want work (from its delivery through the default exchange)", got)
	}
	// The broker cancels it (its queue was deleted): the next delivery of the tag is the correlator's again.
	sub.s2c(wire.Cancel(1, "ctag", true))
	sub.deliver("ctag", 11, "", "work", props, body)
	if n := h.c.queued.Load(); n != 2 {
		t.Errorf("%d events queued after the cancel, want 2 (it and the delivery)", n)
	}
	h.flush()
	if st := h.c.Stats(); st.PlainMessages != 11 || st.MessagesIn < 11 {
		t.Errorf("plain %d messages %d; want 11, at least 11", st.PlainMessages, st.MessagesIn)
	}
}
