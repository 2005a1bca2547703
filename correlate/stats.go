package correlate

import "sync/atomic"

// Stats is a snapshot of a Correlator's counters. Every message or record that is dropped, expired or left
// unmatched is counted in exactly one of them.
type Stats struct {
	MessagesIn uint64 // messages (and topology methods) taken in: handed to the correlator queue, or plain and counted as they were assembled
	QueueDrops uint64 // messages dropped because the correlator queue was full
	Records    []RecordCount
	RecordsOut uint64 // records handed to the sink
	Pending    int64  // gauge: RPCs waiting to become final
	Expired    uint64 // pending RPCs emitted at their deadline + grace (or settle) without a final reply
	Evicted    uint64 // pending RPCs emitted early because the table was at MaxPending or MaxPendingBytes
	// EvictedForBytes counts the evictions that MaxPendingBytes made (also in Evicted); PendingBytes is the
	// table's estimated size now.
	EvictedForBytes uint64
	PendingBytes    int64
	// MaxPending and MaxPendingBytes are the table's caps in force (defaults resolved), so a dashboard or alert can
	// say how close Pending and PendingBytes are to evicting.
	MaxPending, MaxPendingBytes int64
	LateReplies                 uint64 // final replies after the deadline, within the grace
	// RepliesAfterRecord counts follow-up records: replies to calls already emitted as timeouts.
	RepliesAfterRecord uint64
	// Broker events, by what the broker did: Connection.Blocked and Unblocked, a Connection.Close or Channel.Close
	// it sent, its Basic.Cancel of a consumer; and deliveries it flagged redelivered.
	Blocked, Unblocked, BrokerClosedConnections, BrokerClosedChannels, ConsumersCancelled, Redeliveries uint64
	// ForeignReplies counts replies with a pending call's _msg_id that were not routed to that call's caller.
	ForeignReplies uint64
	Heartbeats     uint64 // call-monitor heartbeat replies (ending=false)

	UnmatchedReplies    uint64 // replies whose call is not pending (never seen, or later than the grace)
	UnmatchedDeliveries uint64 // deliveries of messages without an id we can pair on
	Unroutable          uint64 // Basic.Return from the broker
	Confirms            uint64 // publisher confirms (Basic.Ack broker → client), counting each acked publish
	Nacks               uint64 // Basic.Nack broker → client, per publish

	// Reordering (Config.Reorder). None of these lose a message: they say how often the window was too short.
	Buffered        int64  // gauge: events waiting in the reorder window
	LateEvents      uint64 // events that reached the correlator after later-read events were processed
	ReorderOverflow uint64 // events processed before their window ended because the window was full (ReorderCap)
	Orphans         int64  // gauge: replies and deliveries waiting for their request (unmatched if it never comes)
	OrphansMerged   uint64 // orphans, and generic replies first taken for casts, joined to their request late
	Holds           uint64 // final records that waited one more window for a piece this proxy should see
	ServerWaits     uint64 // calls that provably waited for a worker of their server (Record.ServerWaitUS)

	ChannelResets   uint64 // a method or stray frame interrupted a content on a channel
	TruncatedBodies uint64 // bodies over BodyCap (head and tail kept)
	DecodeFailures  uint64 // method or content-header payloads frames could not decode
	ParseFailures   uint64 // bodies that were not JSON / not readable (after decompression)
	BodiesReused    uint64 // deliveries and returns whose body was a recent publish's, so its parse was reused
	// BodiesOffloaded counts bodies parsed on a body worker (compressed, or over 64 KiB) instead of on the
	// forwarding goroutine; BodiesShed those the workers' bounded queue refused, left unparsed (an observation
	// drop: the message's record lacks its ids); InflateCut compressed bodies whose inflation was stopped at its
	// time bound (read as truncated).
	BodiesOffloaded, BodiesShed, InflateCut uint64
	// ConsumersUntracked counts consumers a connection subscribed past maxConsumersPerConn (4096), not kept.
	ConsumersUntracked uint64
	// ConsumerAcks counts consumers' answers (Basic.Ack, Reject, Nack) taken onto a one-way record's delivery;
	// AcksUntracked the deliveries whose answer was not awaited because their connection already had
	// maxUnackedPerConn (4096) outstanding.
	ConsumerAcks, AcksUntracked uint64
	UnknownMessages             uint64 // JSON bodies that were neither oslo RPC, reply, notification nor generic RPC
	PlainMessages               uint64 // non-oslo publishes and deliveries without reply_to or correlation_id (no record unless Config.GenericCasts)
	Connections                 int64  // gauge: live connections

	// PreOpenFrames counts frames a connection sent before the broker accepted its login (Connection.Open-Ok),
	// other than the handshake's own: never decoded (see Conn's handshake).
	PreOpenFrames uint64
	// Panics counts panics recovered in the correlator, each costing one event, one record or one tick's work.
	Panics uint64
	// HandshakeUnseen counts connections taken as open without their handshake being seen (ConnInfo's
	// HandshakeUnseen, or a capture's gap in the handshake, see Conn.Resync).
	HandshakeUnseen uint64
	// Queued is a gauge: events handed over and not yet taken in by the correlator goroutine. A replay of a
	// capture file waits while it is high instead of letting the queue drop.
	Queued int64
}

// RecordCount counts records emitted by kind and status.
type RecordCount struct {
	Kind   Kind
	Status Status
	Count  uint64
}

var allKinds = [...]Kind{KindCall, KindCast, KindFanout, KindNotification}
var allStatuses = [...]Status{StatusOK, StatusError, StatusTimeout, StatusUnroutable}

func kindIndex(k Kind) int {
	for i, v := range allKinds {
		if v == k {
			return i
		}
	}
	return 0
}

func statusIndex(s Status) int {
	for i, v := range allStatuses {
		if v == s {
			return i
		}
	}
	return 0
}

// counters are the live atomics behind Stats. The assemblers (pump goroutines) and the correlator goroutine both
// write them, so every field is atomic.
type counters struct {
	messagesIn, queueDrops, recordsOut      atomic.Uint64
	records                                 [len(allKinds)][len(allStatuses)]atomic.Uint64
	pending                                 atomic.Int64
	expired, evicted, lateReplies           atomic.Uint64
	repliesAfterRecord, foreignReplies      atomic.Uint64
	evictedBytes, holds, serverWaits        atomic.Uint64
	pendingBytes                            atomic.Int64
	broker                                  [brokerCancelledConsumer + 1]atomic.Uint64
	redeliveries                            atomic.Uint64
	heartbeats                              atomic.Uint64
	unmatchedReplies, unmatchedDeliveries   atomic.Uint64
	unroutable, confirms, nacks             atomic.Uint64
	channelResets, truncated                atomic.Uint64
	decodeFailures, parseFailures, unknown  atomic.Uint64
	bodiesReused                            atomic.Uint64
	bodiesOffloaded, bodiesShed, inflateCut atomic.Uint64
	consumersUntracked                      atomic.Uint64
	consumerAcks, acksUntracked             atomic.Uint64
	plain                                   atomic.Uint64
	connections                             atomic.Int64
	buffered, orphans                       atomic.Int64
	late, reorderOverflow, orphansMerged    atomic.Uint64
	preOpen, handshakeUnseen                atomic.Uint64
}

// Stats returns a snapshot of the counters. It is safe to call from any goroutine.
func (c *Correlator) Stats() Stats {
	k := &c.ctr
	s := Stats{
		MessagesIn: k.messagesIn.Load(), QueueDrops: k.queueDrops.Load(), RecordsOut: k.recordsOut.Load(),
		Pending: k.pending.Load(), Expired: k.expired.Load(), Evicted: k.evicted.Load(),
		LateReplies: k.lateReplies.Load(), Heartbeats: k.heartbeats.Load(), RepliesAfterRecord: k.repliesAfterRecord.Load(),
		ForeignReplies:  k.foreignReplies.Load(),
		EvictedForBytes: k.evictedBytes.Load(), Holds: k.holds.Load(), ServerWaits: k.serverWaits.Load(), PendingBytes: k.pendingBytes.Load(),
		MaxPending: int64(c.cfg.maxPending()), MaxPendingBytes: int64(c.cfg.maxPendingBytes()),
		Blocked: k.broker[brokerBlocked].Load(), Unblocked: k.broker[brokerUnblocked].Load(),
		BrokerClosedConnections: k.broker[brokerClosedConnection].Load(),
		BrokerClosedChannels:    k.broker[brokerClosedChannel].Load(),
		ConsumersCancelled:      k.broker[brokerCancelledConsumer].Load(), Redeliveries: k.redeliveries.Load(),
		UnmatchedReplies: k.unmatchedReplies.Load(), UnmatchedDeliveries: k.unmatchedDeliveries.Load(),
		Unroutable: k.unroutable.Load(), Confirms: k.confirms.Load(), Nacks: k.nacks.Load(),
		ChannelResets: k.channelResets.Load(), TruncatedBodies: k.truncated.Load(),
		DecodeFailures: k.decodeFailures.Load(), ParseFailures: k.parseFailures.Load(),
		BodiesReused: k.bodiesReused.Load(), BodiesOffloaded: k.bodiesOffloaded.Load(),
		BodiesShed: k.bodiesShed.Load(), InflateCut: k.inflateCut.Load(),
		ConsumersUntracked: k.consumersUntracked.Load(),
		ConsumerAcks:       k.consumerAcks.Load(),
		AcksUntracked:      k.acksUntracked.Load(),
		UnknownMessages:    k.unknown.Load(), PlainMessages: k.plain.Load(), Connections: k.connections.Load(),
		Buffered: k.buffered.Load(), LateEvents: k.late.Load(), ReorderOverflow: k.reorderOverflow.Load(),
		Orphans: k.orphans.Load(), OrphansMerged: k.orphansMerged.Load(),
		PreOpenFrames: k.preOpen.Load(), Panics: c.panics.Count(),
		HandshakeUnseen: k.handshakeUnseen.Load(), Queued: c.queued.Load(),
	}
	for i, kind := range allKinds {
		for j, st := range allStatuses {
			s.Records = append(s.Records, RecordCount{Kind: kind, Status: st, Count: k.records[i][j].Load()})
		}
	}
	return s
}

// RecordsOf returns the count of emitted records of one kind and status.
func (s Stats) RecordsOf(k Kind, st Status) uint64 {
	for _, r := range s.Records {
		if r.Kind == k && r.Status == st {
			return r.Count
		}
	}
	return 0
}
