package e2e

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// TestGenericRPC makes two generic AMQP RPCs with amqp091-go, caller and server both behind the pipeline: one
// with a classic exclusive reply queue, one with RabbitMQ's direct reply-to (amq.rabbitmq.reply-to). Each must give
// one complete call record keyed by the correlation id.
func TestGenericRPC(t *testing.T) {
	brokerAddr := brokertest.Require(t)
	h := startPipeline(t, brokerAddr, nil)
	url := brokertest.URLVia(h.addr)
	queue := "amqptrace-e2e-generic-" + randHex(4)

	server := dial(t, url, "e2e-generic-server")
	startServer(t, server, "", queue, func(d amqp.Delivery) (string, amqp.Publishing) {
		return d.ReplyTo, amqp.Publishing{ContentType: "application/json", CorrelationId: d.CorrelationId,
			Body: []byte(`{"sum": 3}`)}
	})

	caller := dial(t, url, "e2e-generic-caller")
	publish := func(ch *amqp.Channel, replyTo, id string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		must(t, ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{ContentType: "application/json",
			ReplyTo: replyTo, CorrelationId: id, Expiration: "10000", Body: []byte(`{"op": "add", "a": 1, "b": 2}`)}),
			"publish")
	}

	// Classic: an exclusive, server-named reply queue.
	ch := channel(t, caller)
	rq, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err, "queue.declare reply")
	replies, err := ch.Consume(rq.Name, "", true, true, false, false, nil)
	must(t, err, "basic.consume reply")
	classicID := "classic-" + randHex(8)
	publish(ch, rq.Name, classicID)
	waitReply(t, replies, classicID, byCorrelationID)

	// Direct reply-to: consume the pseudo-queue (no-ack, as RabbitMQ requires) on the channel that publishes.
	dch := channel(t, caller)
	dreplies, err := dch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	must(t, err, "basic.consume amq.rabbitmq.reply-to")
	directID := "direct-" + randHex(8)
	publish(dch, "amq.rabbitmq.reply-to", directID)
	waitReply(t, dreplies, directID, byCorrelationID)

	ids := map[string]bool{classicID: true, directID: true}
	ok := h.col.waitFor(20*time.Second, func(rs []correlate.Record) bool {
		n := 0
		for _, r := range rs {
			if ids[r.MsgID] {
				n++
			}
		}
		return n == len(ids)
	})
	if !ok {
		t.Errorf("records for %v did not arrive within 20s", ids)
	}
	// Clients leave before the pipeline stops, so the stop does not wait out the shutdown grace.
	_ = caller.Close()
	_ = server.Close()
	h.stop()
	seen := map[string]int{}
	for _, r := range h.col.snapshot() {
		if !ids[r.MsgID] {
			t.Errorf("extra record: %s %s msg_id=%q routing_key=%q", r.Kind, r.Status, r.MsgID, r.RoutingKey)
			continue
		}
		seen[r.MsgID]++
		checkGenericRecord(t, &r, queue)
	}
	for id := range ids {
		if seen[id] != 1 {
			t.Errorf("%s: %d records, want 1", id, seen[id])
		}
	}
	t.Logf("generic RPC: %d records for %d calls (classic reply queue and direct reply-to)", len(h.col.snapshot()),
		len(ids))
}

func checkGenericRecord(t *testing.T, r *correlate.Record, queue string) {
	t.Helper()
	if r.Kind != correlate.KindCall || r.Status != correlate.StatusOK || r.Protocol != "amqp" {
		t.Errorf("%s: kind/status/protocol %s/%s/%s, want call/ok/amqp", r.MsgID, r.Kind, r.Status, r.Protocol)
	}
	if r.RoutingKey != queue {
		t.Errorf("%s: routing key %q, want %q", r.MsgID, r.RoutingKey, queue)
	}
	if r.Caller == nil || r.Caller.Service != "e2e-generic-caller" {
		t.Errorf("%s: caller %+v, want e2e-generic-caller", r.MsgID, r.Caller)
	}
	if r.Callee == nil || r.Callee.Service != "e2e-generic-server" || r.Deliveries != 1 {
		t.Errorf("%s: callee %+v, %d deliveries; want e2e-generic-server, 1", r.MsgID, r.Callee, r.Deliveries)
	}
	if r.Published == nil || r.Delivered == nil || r.Replied == nil || r.ReplyDelivered == nil || !orderedTimes(r) {
		t.Errorf("%s: times published %v delivered %v replied %v reply_delivered %v: want all, in order", r.MsgID,
			r.Published, r.Delivered, r.Replied, r.ReplyDelivered)
	}
}
