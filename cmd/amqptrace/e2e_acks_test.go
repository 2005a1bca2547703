package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// A notification listener that is slow (ceilometer behind on its pipeline) holds each notification until its
// handler returned: the record says how long, from the delivery to the listener's Basic.Ack. With an executor
// pool of one, notifications delivered together are handled one after the other, so the k-th waits for the
// handlers before it too. The real oslo.messaging, one OS process each: a listener whose handler takes 0.4 s
// and a notifier that sends three at once.
func TestE2ENotificationHeldUntilHandled(t *testing.T) {
	skipShort(t)
	const handler = 400 * time.Millisecond
	rig := startOsloRig(t, "e2e_acks", brokertest.Require(t))
	srv := rig.oslo(t, "server", "--pool", "1", "--notify-seconds", "0.4")
	srv.waitLine(60*time.Second, func(l string) bool { return l == "READY" })
	rig.oslo(t, "notify", "--calls", "3").waitLine(60*time.Second, func(l string) bool { return l == "SENT" })
	rig.waitSettled(t)

	var slow []correlate.Record
	for _, r := range rig.stop(t) {
		if r.Kind == correlate.KindNotification && strings.HasPrefix(r.EventType, "compute.instance.slow.") {
			slow = append(slow, r)
		}
	}
	if len(slow) != 3 {
		t.Fatalf("%d slow notifications' records, want 3: %+v", len(slow), slow)
	}
	slices.SortFunc(slow, func(a, b correlate.Record) int { return a.Delivered.Compare(*b.Delivered) })
	for k, r := range slow {
		// A lower bound only: the ack cannot leave before the handlers ahead of it and its own have returned;
		// how much later it leaves is the listener's poll loop (up to 5 s in oslo), not ours to bound.
		least := time.Duration(k+1) * handler
		if len(r.Acks) != 1 || r.Acks[0].Outcome != correlate.AckAccepted || r.AckUS < least.Microseconds() ||
			r.Callee == nil || r.Callee.Service != "nova-compute" {
			t.Errorf("%s: acks %+v, ack_us %d (want ≥ %d), callee %+v", r.EventType, r.Acks, r.AckUS,
				least.Microseconds(), r.Callee)
		}
		t.Logf("%s: queue_us %d ack_us %d", r.EventType, r.QueueUS, r.AckUS)
	}
}
