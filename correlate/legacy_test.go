package correlate

import (
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/wire"
)

// 2012-era nova rpc (Folsom): no oslo envelope, no _unique_id, no _reply_q; the caller declares a direct exchange
// and a queue named after the call's _msg_id and the server publishes its reply there, as {"result", "failure"}
// and then {"ending": true}, without the _msg_id in the body.

func folsomCall(t *testing.T, reply, ending string) *Record {
	t.Helper()
	h := newHarness(t, Config{})
	caller := h.conn("nova-api", 11, "10.0.0.11")
	callerReply := h.conn("nova-api", 11, "10.0.0.11")
	server := h.conn("nova-compute", 22, "10.0.0.22")
	serverSend := h.conn("nova-compute", 22, "10.0.0.22")
	server.c2s(wire.ExchangeDeclare(1, "nova", "topic", false, nil),
		wire.QueueDeclare(1, "compute.host1", false, false, false, nil),
		wire.QueueBind(1, "compute.host1", "nova", "compute.host1", nil))
	stag := server.consume("compute.host1")
	const msgID = "6f2d3c1b9e8a4f7d8c6b5a4e3d2c1b0a"
	callerReply.c2s(wire.ExchangeDeclare(1, msgID, "direct", false, nil),
		wire.QueueDeclare(1, msgID, false, true, true, nil), wire.QueueBind(1, msgID, msgID, msgID, nil))
	rtag := callerReply.consume(msgID)
	req := []byte(`{"method": "get_info", "args": {"instance": "i-1"}, "_msg_id": "` + msgID +
		`", "_context_request_id": "` + reqID + `"}`)
	props := wire.Properties{ContentType: "application/json"}
	caller.publish("nova", "compute.host1", false, props, req)
	h.step(time.Millisecond)
	server.deliver(stag, 1, "nova", "compute.host1", props, req)
	h.step(3 * time.Millisecond)
	for i, body := range []string{reply, ending} {
		serverSend.publish(msgID, msgID, false, props, []byte(body))
		h.step(time.Millisecond)
		callerReply.deliver(rtag, uint64(i+1), msgID, msgID, props, []byte(body))
	}
	h.advance(2 * time.Minute)
	return h.only()
}

func TestFolsomCallIsPairedByItsReplyExchange(t *testing.T) {
	r := folsomCall(t, `{"result": "host1 info", "failure": null}`, `{"result": null, "failure": null, "ending": true}`)
	if r.Kind != KindCall || r.Status != StatusOK || r.Method != "get_info" || string(r.Result) != `"host1 info"` ||
		r.Callee == nil || r.Callee.Service != "nova-compute" || r.ReplyDelivered == nil || r.RequestID != reqID {
		t.Fatalf("Folsom call: %s", dump([]*Record{r}))
	}
}

func TestFolsomFailureIsTheCallsError(t *testing.T) {
	failure := `{"result": null, "failure": "{\"class\": \"InstanceNotFound\", \"module\": \"nova.exception\", \"message\": \"Instance i-1 could not be found.\", \"tb\": []}"}`
	r := folsomCall(t, failure, `{"result": null, "failure": null, "ending": true}`)
	if r.Status != StatusError || r.Error == nil || r.Error.Class != "InstanceNotFound" || r.Error.Module != "nova.exception" {
		t.Fatalf("Folsom failure: %s", dump([]*Record{r}))
	}
}

func TestFolsomCastIsOneRecord(t *testing.T) {
	h := newHarness(t, Config{})
	caller := h.conn("nova-scheduler", 33, "10.0.0.33")
	server := h.conn("nova-compute", 22, "10.0.0.22")
	server.c2s(wire.ExchangeDeclare(1, "nova", "topic", false, nil),
		wire.QueueDeclare(1, "compute.host1", false, false, false, nil),
		wire.QueueBind(1, "compute.host1", "nova", "compute.host1", nil))
	tag := server.consume("compute.host1")
	cast := []byte(`{"method": "run_instance", "args": {"instance_id": 7}, "_context_request_id": "` + reqID + `"}`)
	props := wire.Properties{ContentType: "application/json"}
	caller.publish("nova", "compute.host1", false, props, cast)
	h.step(5 * time.Millisecond)
	server.deliver(tag, 1, "nova", "compute.host1", props, cast)
	h.advance(time.Minute)
	r := h.only()
	if r.Kind != KindCast || r.Caller == nil || r.Callee == nil || r.Deliveries != 1 || r.QueueUS != 5000 {
		t.Fatalf("Folsom cast: %s", dump([]*Record{r}))
	}
}
