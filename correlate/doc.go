// Package correlate turns the frames of every proxied AMQP connection into one Record per RPC: oslo.messaging
// calls, casts, fanout casts and notifications, and generic AMQP request/reply (reply_to + correlation_id,
// including RabbitMQ direct reply-to).
//
// # Pipeline
//
//	pump goroutine (per direction) ──frames──► Conn.HandleFrame ─► assembler (per connection, direction, channel)
//	                                                                   │ event: owned copy of what is kept
//	                                                                   ▼ bounded queue; full → drop + count
//	                                            Correlator.Run (one goroutine: all pairing state) ──► Sink
//
// The assembler runs inside the proxy's pump goroutines. It joins method + content header + body frames per
// channel (channels interleave; a method frame in the middle of a content resets that channel, counted), parses the
// body once the content is complete and sends the event with a non-blocking send. It never blocks and never takes
// a lock on the hot path; the two directions of a connection share only atomic pointers (identity, close info).
// Methods nobody needs (consumer acks, heartbeats, Qos) are skipped by their ids before anything is decoded.
//
// # Before the login is accepted
//
// A connection decodes nothing past its handshake until the broker has answered Connection.Open with Open-Ok: only
// Start-Ok (identity and user name), Open (vhost), Open-Ok and Close are read. What a client sends before that is
// counted (Stats.PreOpenFrames) and never reaches an assembler, a body parser, an inflater or a sink, so a client
// RabbitMQ refuses costs the proxy a few counters, whatever it sends. Frames a client pipelines after Open (it may
// write as soon as it reads Open-Ok, which the proxy forwards before it taps it) are copied, held up to 64 KiB,
// and replayed in order at Open-Ok; a Close or the end of the connection discards them undecoded.
//
// # Hostile bytes
//
// Every string of an emitted Record is valid UTF-8 and bounded (CleanString, the one rule for text that leaves
// amqptrace: invalid bytes become U+FFFD, one each, as encoding/json does), and so is the connection identity that
// goes into log lines. Every goroutine that handles wire-derived data defers a PanicGuard around the unit it can
// afford to lose: the Correlator one event (or one tick), a Fanout sink one record (also counted in Dropped); the
// panic is counted and its first occurrence logged by type and place, never by value.
//
// # Order
//
// The proxy forwards a chunk before it taps it, and every connection direction has its own pump goroutine, so
// events reach the correlator out of causal order: a server's reply publish can come before the delivery it
// answers, or before the caller's publish. Every event therefore carries two read times from frames.Frame.Time
// (stamped by the proxy as it reads; Config.Now when a frame has none): the method frame's, which becomes the
// wire timestamp (published, delivered, replied, ...), and the completing frame's (last body frame, header of an
// empty body, or the method itself), which is its order key: the broker acts on a message only once it has read
// all of it, so causality holds on order keys across connections. The correlator keeps every event, topology
// ones and connection ends included, in a bounded min-heap by order key for Config.Reorder (default 500ms) and
// processes it then, oldest first; expiry never runs past the oldest event still waiting. Events later than the
// window are processed at once and counted (Stats.LateEvents); replies and generic reply deliveries whose request
// is not known yet wait one more window as orphans, a generic message with a correlation_id and no reply_to waits
// out its settle time in case its call shows up, and a record about to end while a piece this proxy should see is
// missing (the caller's publish, the server's delivery or reply) waits one more window too. Records are therefore
// emitted a window after their last event; a full window processes its oldest event early (counted), and nothing
// is dropped for order's sake. See reorder.go.
//
// The Correlator goroutine owns every table: pending RPCs by _unique_id and _msg_id, consumers per (connection,
// channel, tag), confirm sequence numbers per channel, learned topics, bindings, and "who is handling what" for
// parent links. A record is emitted exactly once, when it is final:
//   - a call at its final reply (ending=true): at the reply's delivery when the caller's reply queue is consumed
//     through this proxy; else at the broker's confirm of the reply publish (or at the publish without confirms);
//     or at deadline + Grace without one (status timeout, EverDelivered says whether a server got it). The
//     deadline is the publish time plus the AMQP expiration (oslo's call timeout), else DefaultTimeout. A final
//     reply after the deadline but within the grace leaves status timeout with LateReply set; a reply after the
//     grace finds no pending call and is counted in Stats.UnmatchedReplies (after waiting a window as an orphan).
//   - a cast, fanout or notification when every delivery expected from the bindings and consumers seen through
//     this proxy is in, else after Settle (default 2s) from the first sighting.
//   - an unroutable publish (Basic.Return, e.g. 312 NO_ROUTE) at the return. A returned reply is counted on its
//     call (ReplyReturns) and the call waits for oslo's re-publish (same _msg_id, new _unique_id).
//   - on shutdown (Run's ctx ends: the window is drained in order first) and on eviction from a full table
//     (MaxPending), with what is known and Incomplete set.
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
//     private keys, the operator's patterns); a string that holds JSON (nova's connection_info) is parsed,
//     redacted and re-encoded within the budget;
//   - a reply's remote exception message, before it is cut to its bound (the traceback is not kept);
//   - every emitted Record's free text (exception class, module and message, the Return text, names, endpoint
//     strings), in Correlator.emit next to Record.clean, before the sink sees it.
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
