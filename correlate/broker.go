package correlate

import (
	"strconv"
	"time"
)

// brokerEvent is something the broker did to a connection, a channel or a consumer that hurts the RPCs in flight
// on it: a sick broker (a memory or disk alarm, a node failing over, an operator forcing connections closed) shows
// as these, and an operator needs them on the records they affected, not only in a log line.
type brokerEvent uint8

const (
	brokerNone brokerEvent = iota
	brokerBlocked
	brokerUnblocked
	brokerClosedConnection
	brokerClosedChannel
	brokerCancelledConsumer
)

// Record event types for what the broker did (see RecordEvent).
const (
	EventConnectionBlocked   = "connection_blocked"   // Connection.Blocked (a memory or disk alarm): publishes wait
	EventConnectionUnblocked = "connection_unblocked" // Connection.Unblocked
	EventConnectionClosed    = "broker_closed_connection"
	EventChannelClosed       = "broker_closed_channel"
	EventConsumerCancelled   = "consumer_cancelled" // the broker's Basic.Cancel: the queue went, or its node
	EventRedelivered         = "redelivered"        // delivered again (a consumer died with it unacknowledged)
	EventNacked              = "nacked"             // the broker refused the publish (Basic.Nack)
)

func (b brokerEvent) eventType() string {
	switch b {
	case brokerBlocked:
		return EventConnectionBlocked
	case brokerUnblocked:
		return EventConnectionUnblocked
	case brokerClosedConnection:
		return EventConnectionClosed
	case brokerClosedChannel:
		return EventChannelClosed
	case brokerCancelledConsumer:
		return EventConsumerCancelled
	}
	return ""
}

// onBroker puts what the broker did to a connection on every pending RPC of the process behind it, as caller or as
// callee: a blocked connection cannot publish (a caller's request, a server's reply), a closed one loses what was
// in flight on it. The process is the unit because oslo spreads one process's traffic over several connections
// (a listener, a reply consumer, a pool of senders). A call still pending when the broker closed its caller's or
// callee's connection, and that then times out, carries that as its Cause.
func (c *Correlator) onBroker(ev *event) {
	c.ctr.broker[ev.broker].Add(1)
	detail := ev.replyText
	if ev.replyCode != 0 {
		detail = strconv.Itoa(int(ev.replyCode)) + " " + detail
	}
	switch ev.broker {
	case brokerClosedChannel:
		detail = "channel " + strconv.Itoa(int(ev.channel)) + ": " + detail
	case brokerCancelledConsumer:
		detail = "queue " + ev.conn.st.channel(ev.channel).consumers[ev.tag].queue
	}
	who := &ev.ident.ep
	detail = CleanString(detail+" ("+who.Service+" "+who.Connection+")", maxMessageLen)
	typ := ev.broker.eventType()
	for p := c.table.oldest; p != nil; p = p.next {
		if !sameProcess(p.rec.Caller, who) && !sameProcess(p.rec.Callee, who) {
			continue
		}
		p.event(ev.at, typ, detail)
		if ev.broker == brokerClosedConnection && p.brokerCause == "" {
			p.brokerCause = "the broker closed a connection of " + who.Service + ": " + detail
		}
	}
}

// sameProcess says whether two endpoints are one OS process (oslo names every connection of a process alike).
func sameProcess(a, b *Endpoint) bool {
	if a == nil || b == nil {
		return false
	}
	if a.PID == 0 || b.PID == 0 {
		return a.Connection == b.Connection && a.Host == b.Host
	}
	return a.Service == b.Service && a.PID == b.PID && a.Host == b.Host
}

// redelivered notes on a request that the broker delivered it again.
func (c *Correlator) redelivered(p *pending, at time.Time, queue string) {
	c.ctr.redeliveries.Add(1)
	p.event(at, EventRedelivered, "queue "+queue)
}
