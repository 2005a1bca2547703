package tracing

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"

	"github.com/amqptrace/amqptrace/correlate"
	"go.opentelemetry.io/otel/trace"
)

// Domain-separation prefixes: a trace id and a span id hashed from the same string must not be related, and a
// future id scheme can change the prefix instead of colliding with this one.
const (
	traceIDDomain = "amqptrace/v1/trace\x00"
	spanIDDomain  = "amqptrace/v1/span\x00"
)

// Span roles, hashed into span ids. Handling spans (a call's SERVER span, a cast's CONSUMER span) share one role,
// "handle", because a child record knows only its parent's key (Record.ParentID), not whether the parent was a
// call or a cast.
const (
	roleClient   = "client"
	roleLate     = "late_reply"
	roleProducer = "producer"
	roleHandle   = "handle"
)

// traceKey is the string every RPC of one OpenStack request shares: the global request id when the request
// crossed services, else the request id, else the message's own ids (a record without a context is its own trace).
func traceKey(r *correlate.Record) string {
	for _, k := range []string{r.GlobalRequestID, r.RequestID, r.MsgID, r.UniqueID, r.MessageID} {
		if k != "" {
			return k
		}
	}
	// No id at all (should not happen for oslo traffic): the record id keeps the trace unique within this proxy.
	return "record:" + strconv.FormatUint(r.ID, 10)
}

// rpcKey names one RPC the way correlate's Record.ParentID does: by msg id, else unique id.
func rpcKey(r *correlate.Record) string {
	switch {
	case r.MsgID != "":
		return r.MsgID
	case r.UniqueID != "":
		return r.UniqueID
	case r.MessageID != "":
		return r.MessageID
	}
	return "record:" + strconv.FormatUint(r.ID, 10)
}

// traceIDFor hashes key into a 16-byte trace id. An all-zero id is invalid in OTLP; SHA-256 will not produce
// one in practice, but the guard costs nothing.
func traceIDFor(key string) trace.TraceID {
	sum := sha256.Sum256([]byte(traceIDDomain + key))
	var id trace.TraceID
	copy(id[:], sum[:16])
	if !id.IsValid() {
		id[15] = 1
	}
	return id
}

// spanIDFor hashes the RPC key and the role parts into an 8-byte span id. Parts are joined with NUL, which
// never occurs in oslo ids, service names or host addresses, so ("a","bc") and ("ab","c") differ.
func spanIDFor(key string, parts ...string) trace.SpanID {
	h := sha256.New()
	h.Write([]byte(spanIDDomain))
	h.Write([]byte(key))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var id trace.SpanID
	copy(id[:], sum[:8])
	if !id.IsValid() {
		id[7] = 1
	}
	return id
}

// handleSpanID is the id of the span in which process ep handled the RPC key: a call's SERVER span or a cast's
// CONSUMER span. A record published by ep while handling key derives its parent from this same function.
func handleSpanID(key string, ep *correlate.Endpoint) trace.SpanID {
	if ep == nil {
		return spanIDFor(key, roleHandle)
	}
	return spanIDFor(key, roleHandle, ep.Service, ep.Host, strconv.Itoa(ep.PID))
}

// sampled reports whether a trace is kept at ratio, from the trace id alone: the lower 63 bits of its last 8
// bytes against ratio·2^63, the same rule as the SDK's TraceIDRatioBased, so any proxy (or SDK) agrees.
func sampled(id trace.TraceID, ratio float64) bool {
	if ratio >= 1 {
		return true
	}
	if ratio <= 0 {
		return false
	}
	bound := uint64(ratio * (1 << 63))
	return binary.BigEndian.Uint64(id[8:16])>>1 < bound
}
