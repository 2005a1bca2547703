package correlate

import (
	"encoding/json"
	"time"
)

// Kind is what an oslo.messaging (or generic AMQP) publish was.
type Kind string

// The record kinds. See design.md section 6.
const (
	KindCall         Kind = "call"
	KindCast         Kind = "cast"
	KindFanout       Kind = "fanout"
	KindNotification Kind = "notification"
)

// Status is the outcome of an RPC as the caller saw it.
type Status string

// The record statuses. A final reply that arrives after the caller's deadline leaves the status StatusTimeout
// (the caller's view decides) and sets Record.LateReply.
const (
	StatusOK         Status = "ok"
	StatusError      Status = "error"
	StatusTimeout    Status = "timeout"
	StatusUnroutable Status = "unroutable"
)

// Endpoint names one side of an RPC: the process behind an AMQP connection.
// Service and PID come from the connection_name client property ("<program>:<pid>:<uuid>"); a connection without one
// falls back to the client product and peer address. Host is the TCP peer's address (no port).
type Endpoint struct {
	Service    string `json:"service"`
	PID        int    `json:"pid,omitempty"`
	Host       string `json:"host,omitempty"`
	Connection string `json:"connection,omitempty"` // connection_name, or "<peer ip:port>" without one
	User       string `json:"user,omitempty"`       // AMQP login user; never the password
	Vhost      string `json:"vhost,omitempty"`
	// Port is the client's TCP port and Broker the broker address (host:port) its connection went to; they name the
	// connection on the network (span attributes network.peer.port, server.address/port), not the process.
	Port   int    `json:"port,omitempty"`
	Broker string `json:"broker,omitempty"`
}

// RemoteError is the remote exception carried by an oslo.messaging reply's failure field.
type RemoteError struct {
	Class   string `json:"class"`
	Module  string `json:"module,omitempty"`
	Message string `json:"message,omitempty"`
}

// Record is one finished RPC, cast, fanout or notification: the unit every sink receives.
//
// Field names are part of the public interface (JSON Lines file, HTTP API, websocket, span attributes): add fields,
// never rename them. Timestamps are wire times seen by the proxy; a nil timestamp was not observed (partial
// visibility is normal: a caller behind the proxy talking to a server that is not still yields a record).
type Record struct {
	// ID is unique per record within one proxy process (monotonic); the UI and API use it as a key.
	ID     uint64 `json:"id"`
	Kind   Kind   `json:"kind"`
	Status Status `json:"status"`

	Method     string  `json:"method,omitempty"`
	Topic      string  `json:"topic,omitempty"`
	Server     *string `json:"server"`
	Exchange   string  `json:"exchange"`
	RoutingKey string  `json:"routing_key"`
	Namespace  *string `json:"namespace"`
	Version    *string `json:"version"`

	MsgID           string `json:"msg_id,omitempty"`    // oslo _msg_id, or AMQP correlation_id for generic RPC
	UniqueID        string `json:"unique_id,omitempty"` // oslo _unique_id of the request
	MessageID       string `json:"message_id,omitempty"`
	RequestID       string `json:"request_id,omitempty"`
	GlobalRequestID string `json:"global_request_id,omitempty"`
	// Parent is the record (by MsgID, else UniqueID) of the RPC whose handling made this one: the same request id,
	// published by the process that was then serving that RPC. Empty when not known.
	ParentID string `json:"parent_id,omitempty"`
	// ParentCandidates is set instead of ParentID when more than one message of the request was being handled by
	// the publishing process when it published this one: the wire cannot tell which handler made it.
	ParentCandidates []string `json:"parent_candidates,omitempty"`
	// Protocol is "oslo" for oslo.messaging envelopes, "amqp" for generic reply_to/correlation_id RPC.
	Protocol string `json:"protocol"`

	Caller *Endpoint `json:"caller"`
	// Callee is the server that consumed the request (the first delivery for a fanout); Callees lists every
	// delivery's consumer for fanouts and for round-robin topic queues.
	Callee  *Endpoint  `json:"callee"`
	Callees []Endpoint `json:"callees,omitempty"`
	Queue   string     `json:"queue,omitempty"` // queue the request was delivered from
	// Acks are the consumers' answers to a cast's, fanout's or notification's deliveries (Basic.Ack, Reject or
	// Nack from the consuming client), for each delivery whose consumer acknowledges (not no-ack) and whose
	// answer came within Config.AckWait. A delivery without one had no answer seen: its consumer was still on it,
	// or its connection ended first (the broker then requeues it).
	Acks []Ack `json:"acks,omitempty"`

	Published      *time.Time `json:"published"`
	Confirmed      *time.Time `json:"confirmed,omitempty"` // publisher confirm (Basic.Ack from the broker)
	Delivered      *time.Time `json:"delivered"`
	Replied        *time.Time `json:"replied"`
	ReplyDelivered *time.Time `json:"reply_delivered"`
	Deadline       *time.Time `json:"deadline,omitempty"` // published + expiration (the caller's timeout)
	TimeoutMS      int64      `json:"timeout_ms,omitempty"`

	DurationUS int64 `json:"duration_us"` // published → reply delivered (or the best span observed)
	QueueUS    int64 `json:"queue_us"`    // published → delivered
	ServerUS   int64 `json:"server_us"`   // delivered → replied
	// ServerWaitUS is the part of ServerUS the call waited for a worker of the server's executor pool: delivered
	// to taken, where taken is known only for a monitored call (its first heartbeat comes _timeout/2 after a
	// worker dispatched it; see saturation.go). Given only when the wire proves the wait: a worker of the same
	// process came free in between. Zero when not proven. Handling is ServerUS − ServerWaitUS.
	ServerWaitUS int64 `json:"server_wait_us,omitempty"`
	// AckUS is the first delivery's time to its consumer's answer (Acks), for casts, fanouts and notifications.
	// An oslo notification listener answers once its handler returned (up to its poll interval, at most 5 s,
	// later); an oslo RPC server answers on receipt, so for RPC casts it is near zero and says nothing of the
	// handler. Zero when no answer was seen.
	AckUS      int64 `json:"ack_us,omitempty"`
	Heartbeats int   `json:"heartbeats"`
	// HeartbeatTimes are the call-monitor heartbeat replies (ending=false) as published by the server.
	HeartbeatTimes []time.Time `json:"heartbeat_times,omitempty"`

	Error *RemoteError `json:"error"`
	// LateReply is true when the final reply arrived after the caller's deadline; Replied/ReplyDelivered then
	// hold the late reply's times while Status stays timeout.
	LateReply bool `json:"late_reply,omitempty"`
	// Amends is set on a follow-up record: the id of the call record it completes. A reply that came after its
	// call's record was emitted as a timeout (later than the deadline plus the grace) is not lost: the follow-up
	// carries it (Status is the reply's outcome, ok or error; Replied and ReplyDelivered are its times) and
	// LateByUS says how long after the caller's deadline it came. Counters and the graph count the call once,
	// in the record it amends.
	Amends   uint64 `json:"amends,omitempty"`
	LateByUS int64  `json:"late_by_us,omitempty"`
	// Cause says why a timeout happened when the wire showed it: the broker closed a connection of the caller
	// or of the callee while the call was in flight (its code and text).
	Cause string `json:"cause,omitempty"`
	// EverDelivered tells, for a timeout, whether the request reached any consumer.
	EverDelivered *bool `json:"ever_delivered,omitempty"`
	// ReturnCode and ReturnText come from Basic.Return for unroutable publishes (e.g. 312 NO_ROUTE).
	ReturnCode int    `json:"return_code,omitempty"`
	ReturnText string `json:"return_text,omitempty"`

	// Replies counts the final reply publishes seen for this call: more than one when a reply was returned by the
	// broker (mandatory, no reply queue) and oslo published it again; ReplyReturns counts those returns.
	Replies      int `json:"replies,omitempty"`
	ReplyReturns int `json:"reply_returns,omitempty"`
	// Nacked is set when the broker refused the publish (Basic.Nack).
	Nacked bool `json:"nacked,omitempty"`
	// Incomplete is set on a record emitted before it was final: at shutdown, or evicted from a full pending table.
	Incomplete bool `json:"incomplete,omitempty"`
	// Source says where the bytes came from when it was not the proxy: "capture" (amqptrace capture, packets
	// read off an interface) or "replay" (amqptrace replay, a pcap or pcapng file). Absent for the proxy.
	Source string `json:"source,omitempty"`

	RequestBytes int  `json:"request_bytes"`
	ReplyBytes   int  `json:"reply_bytes"`
	Deliveries   int  `json:"deliveries"`
	Truncated    bool `json:"truncated,omitempty"` // a body was over the capture cap

	// Notifications.
	EventType   string `json:"event_type,omitempty"`
	PublisherID string `json:"publisher_id,omitempty"`
	Priority    string `json:"priority,omitempty"`

	// Events are what happened to the RPC besides its own messages (EventForeignReply, ...), oldest first,
	// at most 16 (the last one counts the rest).
	Events []RecordEvent `json:"events,omitempty"`

	// Args and Result are present only when the payload policy keeps them, and then only after redaction.
	Args   json.RawMessage `json:"args,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// RecordEvent is one thing that happened to an RPC on the wire besides its own messages.
type RecordEvent struct {
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Detail string    `json:"detail,omitempty"`
	Count  int       `json:"count,omitempty"` // more than 1: this many of the type were folded into this one
}

// Record event types.
const (
	// EventForeignReply is a reply with the call's _msg_id that was not routed to its caller (another reply
	// queue or exchange), or was delivered from another queue: not the call's result.
	EventForeignReply = "foreign_reply"
)

// Sink receives finished records. The contract (doc.go, "Records and sinks") in short: a Record is immutable once
// emitted and already redacted; a sink may keep the pointer and anything it points to for as long as it likes,
// and must never modify any of it (Clone first if it must change something). Record must not block: sinks sit
// behind a Fanout, whose bounded queue per sink is the only queue between the correlator and the sink.
type Sink interface {
	Record(r *Record)
}

// Ack is a consumer's answer to one delivery of a one-way message.
type Ack struct {
	Callee    int        `json:"callee"` // the delivery's consumer: an index into Record.Callees
	Delivered time.Time  `json:"delivered"`
	At        time.Time  `json:"at"` // when the consumer's answer was read off the wire
	Outcome   AckOutcome `json:"outcome"`
}

// AnswerTo is the answer to the delivery to r.Callees[callee], nil if none was seen.
func (r *Record) AnswerTo(callee int) *Ack {
	for i := range r.Acks {
		if r.Acks[i].Callee == callee {
			return &r.Acks[i]
		}
	}
	return nil
}

// AckOutcome is what a consumer answered.
type AckOutcome string

const (
	// AckAccepted: Basic.Ack, its own or a multiple one that covers it: the message is done.
	AckAccepted AckOutcome = "ack"
	// AckRejected: Basic.Reject or Basic.Nack without requeue: the broker drops it or dead-letters it.
	AckRejected AckOutcome = "reject"
	// AckRequeued: Basic.Reject or Basic.Nack with requeue: back in its queue, to be delivered again (oslo's
	// notification listener does this when a handler returns REQUEUE).
	AckRequeued AckOutcome = "requeue"
)

// Clone returns a deep copy of r: nothing reachable from the copy is shared with r. A sink that must change a
// record (none of ours does) changes a Clone.
func (r *Record) Clone() *Record {
	c := *r
	c.Server = clonePtr(r.Server)
	c.Namespace = clonePtr(r.Namespace)
	c.Version = clonePtr(r.Version)
	c.Caller = clonePtr(r.Caller)
	c.Callee = clonePtr(r.Callee)
	c.Callees = append([]Endpoint(nil), r.Callees...)
	c.Acks = append([]Ack(nil), r.Acks...)
	c.Published = clonePtr(r.Published)
	c.Confirmed = clonePtr(r.Confirmed)
	c.Delivered = clonePtr(r.Delivered)
	c.Replied = clonePtr(r.Replied)
	c.ReplyDelivered = clonePtr(r.ReplyDelivered)
	c.Deadline = clonePtr(r.Deadline)
	c.HeartbeatTimes = append([]time.Time(nil), r.HeartbeatTimes...)
	c.Error = clonePtr(r.Error)
	c.EverDelivered = clonePtr(r.EverDelivered)
	c.Args = append(json.RawMessage(nil), r.Args...)
	c.Result = append(json.RawMessage(nil), r.Result...)
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(*Record)

// Record calls f(r).
func (f SinkFunc) Record(r *Record) { f(r) }
