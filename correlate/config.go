package correlate

import (
	"log/slog"
	"time"
)

// Defaults for the zero Config.
const (
	DefaultGrace           = 5 * time.Second
	DefaultTimeout         = 60 * time.Second // oslo.messaging's rpc_response_timeout
	DefaultSettle          = 2 * time.Second
	DefaultQueueHorizon    = 10 * time.Minute
	DefaultAckWait         = 30 * time.Second
	DefaultMaxPending      = 100000
	DefaultMaxPendingBytes = 64 << 20
	DefaultQueueSize       = 65536
	DefaultBodyCap         = 1 << 20
	DefaultMaxPayloadBytes = 4 << 10
	DefaultReorder         = 500 * time.Millisecond
	DefaultReorderCap      = 1 << 17
)

// Config configures a Correlator. The zero value works; zero fields take the defaults above.
type Config struct {
	// Grace is how long after a call's deadline a late reply still lands in the call's record (status stays
	// timeout, LateReply is set). Later replies are counted as unmatched. Default 5s.
	Grace time.Duration
	// DefaultTimeout is the deadline of a call or generic RPC published without an expiration property.
	// Default 60s, oslo.messaging's rpc_response_timeout.
	DefaultTimeout time.Duration
	// Settle is how long a cast, fanout or notification that no consumer behind this proxy is expected to receive
	// waits for deliveries before its record is emitted (one that is expected waits up to QueueHorizon, or until
	// every expected delivery is in). Default 2s: such a message is delivered, if at all, to a consumer this proxy
	// does not see, and its record should not linger.
	Settle time.Duration
	// AckWait is how long a cast, fanout or notification whose deliveries are all in waits for their consumers'
	// acknowledgements (Basic.Ack, Reject or Nack), from its last delivery, before its record is emitted without
	// the missing ones. An oslo notification listener acknowledges after its handler returned, so the wait is the
	// handler's run; an oslo RPC server acknowledges on receipt. Default 30s.
	AckWait time.Duration
	// QueueHorizon is how long a cast, fanout or notification waits in its queue for a delivery this proxy is
	// expected to see (its queue has, or had, a consumer behind this proxy, and keeps messages while it has
	// none) before its record is emitted without it. A backlog of minutes is what a sick cloud looks like: the
	// record then carries the whole queue wait. The message's AMQP expiration and the queue's x-message-ttl cut it
	// short, since the broker drops the message then. Default 10m.
	QueueHorizon time.Duration
	// MaxPending caps the pending table; past it the oldest pending RPC is emitted as it is (counted as evicted).
	// Default 100000.
	MaxPending int
	// MaxPendingBytes caps the pending table's estimated memory (about 1.9 KB per oslo call with small arguments:
	// 1.6 KB plus its kept arguments and ids, within a few percent of the heap it holds, see pendingBase); past it
	// the oldest are emitted as they are (counted as evicted). Default 64 MiB, about 35,000 such calls: the heap
	// the table holds is what the garbage collector lets grow to twice its size, and the default keeps a whole
	// process within 256 MiB.
	MaxPendingBytes int
	// QueueSize bounds, in events, the queue from the per-connection assemblers to the correlator goroutine (each
	// assembler hands over the events of one write as one batch). A full queue drops the batch and counts its
	// events (Stats.QueueDrops). Default 65536.
	QueueSize int
	// GenericCasts makes a record of every non-oslo publish, also one-way messages without reply_to or
	// correlation_id. Off by default: amqptrace traces RPCs, and a record per plain message (with its settle
	// time and pending entry) costs more than forwarding the message does; plain messages are counted
	// (Stats.PlainMessages) either way. Generic RPC (reply_to, correlation_id) is always traced.
	GenericCasts bool
	// BodyCap is how many bytes of one body are kept for parsing. A larger body keeps its first and last
	// BodyCap/2 bytes (oslo writes the ids after the arguments) and sets Record.Truncated. Default 1 MiB.
	BodyCap int
	// Payload decides whether Args and Result reach records. Default PayloadRedacted.
	Payload PayloadPolicy
	// Redactor removes secrets from payloads as they are parsed and from every record before it is emitted, in
	// every payload policy. Nil applies the built-in rules without counting; amqptrace proxy passes one built
	// from --redact-keys and --redact-patterns, whose Counts feed amqptrace_redactions_total.
	Redactor *Redactor
	// MaxPayloadBytes bounds Args and Result after redaction. Default 4 KiB.
	MaxPayloadBytes int
	// Reorder is how long an event waits in the correlator before it is processed, so that events from different
	// connections are processed in the order their bytes were read (frames.Frame.Time), not the order the pumps
	// got round to tapping them. Each connection direction has its own pump goroutine, and a pump forwards a
	// chunk before it decodes it, so a server's reply (read on its sending connection) can reach the correlator
	// before the delivery it answers (read on its listening connection) was tapped. The window must exceed that
	// lag between a read and its tap under load: scheduling on a busy 2-core machine and decoding a burst of large
	// bodies take milliseconds to a few hundred; 500ms leaves room and delays records by no more than that.
	// Events later than the window are still processed (counted in Stats.LateEvents), and replies or deliveries
	// whose request is not known yet wait as orphans for another Reorder before they count as unmatched.
	// Default 500ms.
	Reorder time.Duration
	// ReorderCap bounds the events waiting in the reorder window (Reorder's worth of traffic). When it is full the
	// oldest waiting event is processed before its window ends (counted in Stats.ReorderOverflow): order degrades,
	// nothing is lost. Default 131072 (a 500ms window at over 250,000 messages per second).
	ReorderCap int
	// Sink receives finished records from the correlator goroutine. It must not block: wrap slow sinks in a
	// Fanout. Nil discards records.
	Sink Sink
	// Logger receives per-connection lines. Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests may set it; under testing/synctest time.Now is already fake.
	// A replay of a capture file sets it to the time of the last packet read, so deadlines and windows pass in
	// the file's time, not the reader's.
	Now func() time.Time
	// EventClock makes the correlator's own time (the reorder window's releases, expiries, the in-flight view)
	// the newest read time it has taken in, instead of Now. A replay sets it: its reader runs ahead of the
	// correlator by up to the queue, and releasing by the reader's time would process each batch as it comes,
	// with no window at all, so bytes a capture held behind a hole would be processed after what followed them.
	// Now still stamps what the reading side does (a connection's start and end).
	EventClock bool
	// InlineBodies parses every body on the goroutine that feeds the Conn, as a body worker would not (see
	// bodywork.go). A replay sets it with EventClock: its reader runs far ahead of wall time, so a body parsed on
	// a worker would come back after the packets' clock had released its window. Tests that drive the correlator
	// by hand set it too.
	InlineBodies bool
	// Source is copied into every Record's Source: "capture" (live packet capture) or "replay" (a capture
	// file). The proxy leaves it empty, and its records carry no source field.
	Source string
}

func (c *Config) grace() time.Duration          { return orDefault(c.Grace, DefaultGrace) }
func (c *Config) defaultTimeout() time.Duration { return orDefault(c.DefaultTimeout, DefaultTimeout) }
func (c *Config) settle() time.Duration         { return orDefault(c.Settle, DefaultSettle) }
func (c *Config) ackWait() time.Duration        { return orDefault(c.AckWait, DefaultAckWait) }
func (c *Config) queueHorizon() time.Duration   { return orDefault(c.QueueHorizon, DefaultQueueHorizon) }
func (c *Config) maxPending() int               { return orDefault(c.MaxPending, DefaultMaxPending) }
func (c *Config) maxPendingBytes() int          { return orDefault(c.MaxPendingBytes, DefaultMaxPendingBytes) }
func (c *Config) queueSize() int                { return orDefault(c.QueueSize, DefaultQueueSize) }
func (c *Config) reorder() time.Duration        { return orDefault(c.Reorder, DefaultReorder) }
func (c *Config) reorderCap() int               { return orDefault(c.ReorderCap, DefaultReorderCap) }
func (c *Config) bodyCap() int                  { return max(orDefault(c.BodyCap, DefaultBodyCap), 64) }
func (c *Config) maxPayloadBytes() int {
	return max(orDefault(c.MaxPayloadBytes, DefaultMaxPayloadBytes), 64)
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

func (c *Config) now() func() time.Time {
	if c.Now == nil {
		return time.Now
	}
	return c.Now
}

func orDefault[T time.Duration | int](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}
