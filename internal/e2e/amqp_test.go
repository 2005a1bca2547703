package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// dial opens an amqp091-go connection whose connection_name follows oslo's "<program>:<pid>:<uuid>", so records
// name the service.
func dial(t testing.TB, url, service string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(url, amqp.Config{
		Properties: amqp.Table{"connection_name": fmt.Sprintf("%s:%d:%s", service, os.Getpid(), randHex(8))},
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
	})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", url, service, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func channel(t testing.TB, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return ch
}

func must(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// serveLoop answers every delivery with reply(d), published to the default exchange, then acks it. It returns
// when the delivery channel closes (the connection or channel closed).
func serveLoop(ch *amqp.Channel, msgs <-chan amqp.Delivery, reply func(amqp.Delivery) (string, amqp.Publishing)) {
	for d := range msgs {
		rk, pub := reply(d)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = ch.PublishWithContext(ctx, "", rk, false, false, pub)
		cancel()
		_ = d.Ack(false)
	}
}

// startServer declares queue (optionally bound to exchange with key queue) and serves it until the test ends.
func startServer(t testing.TB, conn *amqp.Connection, exchange, queue string,
	reply func(amqp.Delivery) (string, amqp.Publishing)) {
	t.Helper()
	ch := channel(t, conn)
	if exchange != "" {
		must(t, ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil), "exchange.declare")
	}
	_, err := ch.QueueDeclare(queue, false, true, false, false, nil)
	must(t, err, "queue.declare")
	if exchange != "" {
		must(t, ch.QueueBind(queue, queue, exchange, false, nil), "queue.bind")
	}
	msgs, err := ch.Consume(queue, "", false, false, false, false, nil)
	must(t, err, "basic.consume")
	var wg sync.WaitGroup
	wg.Go(func() { serveLoop(ch, msgs, reply) })
	t.Cleanup(func() {
		_ = ch.Close()
		wg.Wait()
	})
}

// waitReply waits for the delivery whose correlation id (or oslo _msg_id) is id.
func waitReply(t testing.TB, msgs <-chan amqp.Delivery, id string, match func(amqp.Delivery) string) amqp.Delivery {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case d, ok := <-msgs:
			if !ok {
				t.Fatalf("reply channel closed before the reply to %s", id)
			}
			if match(d) == id {
				return d
			}
		case <-timer.C:
			t.Fatalf("no reply to %s within 10s", id)
		}
	}
}

func byCorrelationID(d amqp.Delivery) string { return d.CorrelationId }

// oslo envelope helpers: the body is {"oslo.version": "2.0", "oslo.message": "<inner JSON>"}.

func osloEnvelope(inner map[string]any) []byte {
	in, err := json.Marshal(inner)
	if err != nil {
		panic(err)
	}
	out, err := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(in)})
	if err != nil {
		panic(err)
	}
	return out
}

func osloInner(body []byte) map[string]any {
	var env map[string]string
	var inner map[string]any
	if json.Unmarshal(body, &env) != nil || json.Unmarshal([]byte(env["oslo.message"]), &inner) != nil {
		return nil
	}
	return inner
}

func osloPublishing(body []byte, expiration string) amqp.Publishing {
	return amqp.Publishing{ContentType: "application/json", ContentEncoding: "utf-8", Headers: amqp.Table{},
		DeliveryMode: amqp.Persistent, Expiration: expiration, Body: body}
}

// osloReply is an RPC server's reply, published to the caller's reply queue.
func osloReply(d amqp.Delivery) (string, amqp.Publishing) {
	inner := osloInner(d.Body)
	replyQ, _ := inner["_reply_q"].(string)
	body := osloEnvelope(map[string]any{"result": "pong", "failure": nil, "ending": true,
		"_msg_id": inner["_msg_id"], "_unique_id": randHex(16)})
	return replyQ, osloPublishing(body, "")
}

func byOsloMsgID(d amqp.Delivery) string {
	id, _ := osloInner(d.Body)["_msg_id"].(string)
	return id
}

// osloCall makes one oslo-shaped call (as oslo.messaging puts it on the wire) and waits for its reply.
func osloCall(t testing.TB, conn *amqp.Connection, exchange, topic, method, requestID string) (msgID, uniqueID string) {
	t.Helper()
	ch := channel(t, conn)
	defer ch.Close()
	must(t, ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil), "exchange.declare")
	replyQ := "reply_" + randHex(16)
	_, err := ch.QueueDeclare(replyQ, false, true, false, false, amqp.Table{"x-expires": int32(60000)})
	must(t, err, "queue.declare reply")
	replies, err := ch.Consume(replyQ, "", false, false, false, false, nil)
	must(t, err, "basic.consume reply")
	must(t, ch.Confirm(false), "confirm.select")
	msgID, uniqueID = randHex(16), randHex(16)
	body := osloEnvelope(map[string]any{"method": method, "args": map[string]any{"n": 1}, "_msg_id": msgID,
		"_reply_q": replyQ, "_timeout": nil, "_unique_id": uniqueID, "_context_request_id": requestID,
		"_context_global_request_id": nil, "_context_auth_token": "gAAAAAB-secret-token"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	must(t, ch.PublishWithContext(ctx, exchange, topic, false, false, osloPublishing(body, "3000")), "publish")
	d := waitReply(t, replies, msgID, byOsloMsgID)
	_ = d.Ack(false)
	return msgID, uniqueID
}
