// Package correlate turns the frames of every proxied AMQP connection into one Record per RPC: oslo.messaging
// calls, casts, fanout casts and notifications, and generic AMQP request/reply (reply_to + correlation_id,
// including RabbitMQ direct reply-to).
//
// # Pipeline
//
//	proxy (event loop or pump) ──frames──► Conn.HandleFrame ─► assembler (per connection, direction, channel)
//	                                                               │ event: owned copy of what is kept
//	                                                               ▼ bounded queue; full → drop + count
//	                                      Correlator.Run (one goroutine owns all pairing state) ──► Sink (a Fanout)
//
// The assembler runs on whatever forwards the connection's bytes: on Linux an epoll event loop, which taps a whole
// batch of ready connections after forwarding it, in the order it read them; a pair of goroutine pumps for TLS
// connections (and off Linux), each direction tapping right after its own write. It joins method + content header
// + body frames per channel (channels interleave; a method frame in the middle of a content resets that channel,
// counted), parses the body once the content is complete and hands the events of one write over in one
// non-blocking send. It never blocks; the two directions of a connection share only atomic pointers (identity,
// close info) once the connection is open (see "Before the login is accepted"). Methods nobody needs (consumer acks,
// Qos) are skipped by their ids before anything is decoded. Plain messages (no oslo envelope, no reply_to, no
// correlation_id), which make no record, are counted there and go no further, except what the correlator needs
// of them: a confirm channel's consecutive plain publishes of one write as one event (their confirms are counted),
// and a consumer's first plain delivery (it may name the consumer's queue). The assembler therefore numbers a
// confirm channel's publishes itself.
//
// The correlator's state is split by what it knows, each in its own file and testable without frames:
//   - topology.go: the broker's routing as the wire showed it: exchanges, queues with their flags and arguments,
//     bindings, consumers through this proxy, oslo topics; it says which deliveries a publish can still get. There
//     is one per vhost (names are a vhost's own), and a connection keeps its vhost's from its first event on.
//   - pending.go: the pending table (pendingTable), records not final yet, by _unique_id, by _msg_id and reply
//     queue, by correlation id, with an expiry heap and their estimated size; the Correlator evicts from it by count
//     (MaxPending) and by estimated memory (MaxPendingBytes), and ending.go is the one way out.
//   - handling.go: which messages each process is handling, per request, for parent links that are never a guess.
//   - finished.go: calls already emitted, for the replies that come after them (stragglers, follow-up records).
//   - broker.go: what the broker did to connections (blocked, closed, cancelled), put on the RPCs it hurt.
//   - reorder.go: the reorder window (reorderWindow), orphans (orphanage) and holds (below).
//   - inflight.go: the view of what is waiting now (InFlight).
//   - topoview.go: the view of the topology (Topology): every vhost's exchanges, queues with their flags and
//     arguments, bindings, and which processes consume each queue with what prefetch; reply queues and per-call
//     exchanges counted per service. The topology forgets what the broker deletes by itself (auto-delete,
//     exclusive, x-expires), so the view and the tables do not fill with dead processes' queues.
//
// # Order
//
// Taps reach the correlator out of causal order: a proxy forwards before it taps, so a server's reply publish can
// be tapped before the delivery it answers, or before the caller's publish, when those were read on connections
// served by another loop (or pump) that got to its tap later. Every event therefore carries two read times from
// frames.Frame.Time (stamped as the bytes were read; Config.Now when a frame has none): the method frame's, which
// becomes the wire timestamp (published, delivered, replied, ...), and the completing frame's (last body frame,
// header of an empty body, or the method itself), its order key: the broker acts on a message only once it has
// read all of it, so causality holds on order keys across connections. Three layers put events back in that order:
//
//   - the window: every event waits Config.Reorder (default 500ms) in a bounded min-heap by order key and is
//     processed oldest first; expiry never runs past the oldest event still waiting. An event later than the
//     window is processed at once (Stats.LateEvents); a full window processes its oldest early
//     (Stats.ReorderOverflow).
//   - orphans: a reply (or generic reply delivery) whose call is not known yet waits one more window; a generic
//     message with a correlation_id and no reply_to waits out its settle time in case its call shows up
//     (Stats.OrphansMerged counts both when they join).
//   - holds: a record about to end while a piece this proxy should see is missing (the caller's publish, the
//     server's delivery or reply) waits one more window (Stats.Holds).
//
// The window runs on the correlator's own time: Config.Now, or under Config.EventClock (a replay, whose reader runs
// ahead by up to the queue) the newest read time taken in.
//
// How often each fires, measured with the demo at 20 boots/s for 60 s on a 2-core machine (counters from /metrics):
// 0 late events, 0 orphans merged, 0 holds and 0 overflows in 15,974 records with the event loops (the default),
// and the same in 15,960 records with goroutine pumps (--event-loops -1). The window alone put every event in
// order there. Orphans and holds stay as the backstop for a lag longer than the window (a loaded machine, a burst
// of large bodies), where they turn a would-be unmatched reply or split record into a right one; their counters
// say when that happens.
//
// The Correlator goroutine owns every table. A record is emitted exactly once, when it is final:
//   - a call at its final reply (ending=true) routed to its caller: at the reply's delivery when the caller's
//     reply queue is consumed through this proxy; else at the broker's confirm of the reply publish (or at the
//     publish without confirms); or at deadline + Grace without one (status timeout, EverDelivered says whether a
//     server got it, Cause whether the broker closed a connection of its caller or callee meanwhile). The deadline
//     is the publish time plus the AMQP expiration (oslo's call timeout), else DefaultTimeout. A final reply after
//     the deadline but within the grace leaves status timeout with LateReply set; a reply after the grace becomes
//     a follow-up record that amends the call's (Record.Amends). A reply with the call's _msg_id routed elsewhere
//     is an event on the record (foreign_reply), never its result.
//   - a cast, fanout or notification when every delivery expected from the topology is in: from queues consumed
//     through this proxy now, and from queues that were and keep messages while nobody consumes them (a stopped
//     server's backlog). One that expects deliveries waits up to QueueHorizon (cut short by the queue's TTL or
//     the message's expiration); one that expects none settles after Settle (default 2s).
//   - an unroutable publish (Basic.Return, e.g. 312 NO_ROUTE) at the return. A returned reply is counted on its
//     call (ReplyReturns) and the call waits for oslo's re-publish (same _msg_id, new _unique_id).
//   - on shutdown (Run's ctx ends: the window is drained in order first) and on eviction from a full table, with
//     what is known and Incomplete set.
//
// Partial visibility is normal: a record starts at whichever of publish or delivery is seen first, so a caller
// behind the proxy talking to a server that is not (no Delivered), and a server behind the proxy serving a caller
// that is not (no Published), both give records.
//
// # Bodies
//
// oslo bodies are {"oslo.version": "2.0", "oslo.message": "<JSON text>"}; the inner message is parsed again and a
// reply's failure a third time (class and module lose a "_Remote" suffix). Bodies without the envelope (1.0
// notifications) are read as the inner message. gzip, zlib (kombu's "application/x-gzip") and bzip2 bodies are
// inflated within BodyCap (and at most 64×BodyCap of work). A body over BodyCap keeps its first and last BodyCap/2
// bytes: the method comes first and the ids (_msg_id, _reply_q, _unique_id, _context_*) come after the arguments,
// so a call with a huge argument still correlates; its Args are then dropped rather than guessed.
//
// # Secrets
//
// Records carry no credentials, in every payload policy. The AMQP password never reaches this package (frames
// keeps only the user name). Of the _context_* keys only request_id and global_request_id are read;
// _context_auth_token is never copied. Everything else goes through the one Redactor (redact.go, Config.Redactor):
//   - payloads (Args, Result: arguments, results, notification payloads, generic-RPC bodies with args or payload)
//     as they are parsed: the value of a key that names a secret becomes "***", the key judged by its words
//     (secretKey: admin_password, adminPass, new_pass, _context_auth_token, hmac_key, private_key, client_cert
//     go; key_name, keypair_id, token_expiry, public_key, secret_ref stay); every string passes the value rules
//     (URL userinfo passwords, key=value and key: value pairs with a secret key, Fernet, JWT and PKI tokens, PEM
//     private keys, the operator's patterns); a string that holds JSON (nova's connection_info) is read as JSON
//     and redacted within the budget. A payload is read once, in the body parser's pass that finds its end
//     (bodyParser.members): the fast copy (redactspan.go) writes only what changes and keeps the rest as it came,
//     white space included, and reads JSON held in a string in its escaped form (decoding it first only when its
//     own strings have escapes); what it does not take (nesting past maxRedactDepth, malformed input, a result
//     over the budget) the token copy reads again by the same rules, and FuzzRedactSpanMatchesTokens holds the
//     two to the same result;
//   - a reply's remote exception message, before it is cut to its bound (the traceback is not kept);
//   - every emitted Record's free text (exception class, module and message, the Return text, names, endpoint
//     strings), in Correlator.emit, in the same pass as the cleaning of its strings (Record.edit), before the
//     sink sees it.
//
// Config.Payload decides only how much of a payload is kept: none; redacted (default: strings over 256 bytes are
// cut); full (whole within MaxPayloadBytes). Both stay valid JSON. This package logs no body content at any level.
//
// # Records and sinks
//
// This is the one statement of what a sink may do with a record, in the OpenTelemetry consumer style:
//   - A Record is immutable once emitted: the correlator never touches it again, nor anything it points to, and
//     neither may a sink. It is already cleaned (CleanString) and redacted (Redactor) when any sink sees it.
//   - A sink may keep the pointer, and everything reachable from it, for as long as it likes (the UI keeps
//     records in its ring; the exporter keeps them until their batch is built). Sinks share one Record.
//   - A sink that must change something works on a Clone. None of ours does.
//   - Record must not block. The Fanout gives every sink one bounded queue and one goroutine (drop + count per
//     sink); that queue is the only one: a sink batches (tracing) or aggregates (ui, under its store lock) on its
//     Fanout goroutine and adds no queue of its own. A sink that panics loses that record (counted); one that
//     blocks forever loses its own later records (counted) and nothing else.
//
// # Ownership
//
// Frames and their payloads are borrowed for the duration of HandleFrame; the assembler copies what it keeps (a
// multi-frame body up to BodyCap, then only the parsed strings). Records are owned as "Records and sinks" says.
// Sinks are called on the correlator goroutine and must not block; NewFanout puts them behind bounded queues
// (drop + count) and NewJSONLines writes JSON Lines.
//
// # Non-goals
//
// This package does not decode frames (package frames does), export spans or serve the UI, and keeps no state
// another proxy would need. It does not follow oslo's newer queue-manager names or stream fanout queues beyond
// what the generic rules catch.
//
// Typical usage:
//
//	c := correlate.New(correlate.Config{Sink: fanout})
//	go c.Run(ctx)
//	conn := c.NewConn(correlate.ConnInfo{ID: id, Client: client.RemoteAddr().String()})
//	dec := frames.NewConn(conn, frames.Options{})   // conn is the frames.Handler for both directions
//	... pumps write to dec.ClientDecoder() and dec.ServerDecoder() ...
//	conn.Close("client EOF", nil)
package correlate
