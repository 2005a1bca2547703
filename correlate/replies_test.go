package correlate

import (
	"testing"
	"time"
)

// A reply counts for a call only when it was routed to that call's caller.

func TestForgedReplyIsAnEventNotTheResult(t *testing.T) {
	c := newCloud(t, Config{})
	forger := c.h.conn("evil-agent", 666, "10.0.0.66")
	body := callBody("select_destinations", "msg1", "u1", reqID, nil)
	c.condSend.publish("nova", "scheduler", false, callProps(60000), body)
	c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(60000), body)
	c.h.step(time.Millisecond)
	// Another connection answers first, with the caller's _msg_id, to a queue that is not the caller's.
	forger.publish("", "reply_somewhere_else", false, osloProps, replyBody("msg1", "u-forged", "forged", nil, true))
	c.h.step(time.Millisecond)
	genuine := replyBody("msg1", "u2", "genuine", nil, true)
	c.schedSend.publish("", replyQ, false, osloProps, genuine)
	c.h.step(time.Millisecond)
	c.condReply.deliver(c.replyTag, 1, "", replyQ, osloProps, genuine)
	r := c.h.only()
	if r.Status != StatusOK || string(r.Result) != `"genuine"` || r.Replies != 1 {
		t.Fatalf("the call's result must be what its caller received: %s", dump([]*Record{r}))
	}
	if len(r.Events) != 1 || r.Events[0].Type != EventForeignReply {
		t.Errorf("the forged reply is not an event on the record: %+v", r.Events)
	}
	if got := c.h.c.Stats().ForeignReplies; got != 1 {
		t.Errorf("ForeignReplies = %d, want 1", got)
	}
}

func TestTwoCallersReusingOneMsgID(t *testing.T) {
	c := newCloud(t, Config{})
	other := c.h.conn("nova-conductor", 5555, "10.0.0.55")
	otherReply := c.h.conn("nova-conductor", 5555, "10.0.0.55")
	const otherQ = "reply_00000000000000000000000000005555"
	otherTag := otherReply.replyListener(otherQ)
	b1 := callBody("select_destinations", "same-id", "u1", reqID, nil)
	b2 := []byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"select_destinations\", \"args\": {}, \"_msg_id\": \"same-id\", \"_reply_q\": \"` + otherQ + `\", \"_unique_id\": \"u2\", \"_context_request_id\": \"req-other\"}"}`)
	c.condSend.publish("nova", "scheduler", false, callProps(60000), b1)
	other.publish("nova", "scheduler", false, callProps(60000), b2)
	c.schedListen.deliver("1", 1, "nova", "scheduler", callProps(60000), b1)
	c.schedListen.deliver("1", 2, "nova", "scheduler", callProps(60000), b2)
	c.h.step(time.Millisecond)
	r2 := replyBody("same-id", "r2", "for-the-other", nil, true)
	c.schedSend.publish("", otherQ, false, osloProps, r2)
	otherReply.deliver(otherTag, 1, "", otherQ, osloProps, r2)
	c.h.step(time.Millisecond)
	r1 := replyBody("same-id", "r1", "for-conductor-4242", nil, true)
	c.schedSend.publish("", replyQ, false, osloProps, r1)
	c.condReply.deliver(c.replyTag, 1, "", replyQ, osloProps, r1)
	rs := c.h.records()
	if len(rs) != 2 {
		t.Fatalf("want two calls: %s", dump(rs))
	}
	for _, r := range rs {
		want := `"for-conductor-4242"`
		if r.Caller.PID == 5555 {
			want = `"for-the-other"`
		}
		if r.Status != StatusOK || string(r.Result) != want || len(r.Events) != 0 {
			t.Errorf("caller %d: status %s result %s events %+v, want ok %s", r.Caller.PID, r.Status, r.Result, r.Events, want)
		}
	}
}
