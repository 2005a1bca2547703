package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"time"
)

// Config configures a Proxy. The zero value of every field works; defaults are resolved by the unexported
// accessors below, never by mutating the caller's struct. Flags and environment variables are parsed in cmd, not
// here.
type Config struct {
	// Upstreams is the broker list (host:port). For every client connection they are tried in Strategy's order,
	// the ones that are not down first (health.go): the first that accepts the dial wins. Each failed dial is
	// counted against its upstream (Stats.DialFailuresByUpstream). If every upstream fails, or DialBudget runs
	// out, the client is closed at once with ReasonDialFailed.
	Upstreams []string
	// Strategy orders the upstreams for each client: FirstHealthy (the zero value, configured order) or RoundRobin.
	Strategy Strategy
	// DialBudget bounds all of one client's dials together. Default twice DialTimeout, so that one node that
	// blackholes costs a client one dial timeout and the next node still gets its turn.
	DialBudget time.Duration
	// AwaitAnswer makes the proxy read the client's 8-byte protocol header before it dials, send it to each
	// upstream in turn and keep the first that answers, so that an upstream that accepts and then closes (or never
	// answers) costs the client only the next upstream, within DialBudget. A client that does not send its header
	// within HandshakeTimeout is dialled through without the exchange. Off, the upstream is dialled as soon as the
	// client connects and such an upstream is only marked down when the connection ends without an answer.
	AwaitAnswer bool
	// DownAfter is how many consecutive failures mark an upstream down. Default 1.
	DownAfter int
	// Backoff is how long an upstream stays down after it went down, doubling with every further failure up to
	// MaxBackoff; an answer resets it. Defaults 1s and 30s.
	Backoff, MaxBackoff time.Duration
	// Check is the kind of check run against upstreams: at Serve's start, on a down upstream when its backoff
	// ends, and every CheckInterval. The zero value, CheckNone, runs none (passive health only).
	Check Check
	// CheckInterval, when positive, checks every upstream on this period, up or down (active health checking).
	// 0 checks only at start and down upstreams when their backoff ends (passive).
	CheckInterval time.Duration
	// UpstreamTLS, when set, makes the proxy speak TLS to the broker (amqps). cmd fills ServerName, RootCAs and
	// InsecureSkipVerify. nil means plain TCP.
	UpstreamTLS *tls.Config
	// ClientTLS, when set, terminates TLS from clients (amqps) with this configuration (certificate from
	// --tls-cert/--tls-key). nil means clients speak plain TCP.
	ClientTLS *tls.Config
	// DialTimeout bounds one dial to one upstream, TLS handshake included. Default 5s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the client-side TLS handshake, so a client that connects and never speaks does
	// not pin a goroutine. Default 10s. Unused without ClientTLS.
	HandshakeTimeout time.Duration
	// KeepAlive is the TCP keep-alive period on both sockets (idle time before the first probe and the interval
	// between probes). Default 30s; negative disables keep-alive. Keep-alive is what finds a peer that vanished
	// without a FIN (power loss, a firewall dropping state).
	KeepAlive time.Duration
	// IdleTimeout closes a connection (ReasonIdleTimeout) when no byte moved in EITHER direction for this long.
	// A single write that cannot complete within IdleTimeout (the peer stopped reading) also counts as idle,
	// because no byte moved. 0 means no idle timeout. AMQP heartbeats count as traffic, so an IdleTimeout above
	// the negotiated heartbeat interval only ever closes dead connections.
	IdleTimeout time.Duration
	// HalfCloseTimeout bounds how long the other direction may keep running after one side ended with a clean
	// EOF. AMQP peers end with connection.close / close-ok and then FIN, so after one FIN little is left to
	// say; an upstream that accepts and then never answers would otherwise pin the connection forever once the
	// client is gone. Default 30s; negative waits forever (then only IdleTimeout and keep-alive end it).
	HalfCloseTimeout time.Duration
	// MaxConns caps open client connections; past the cap a new client is closed at once and counted in
	// Stats.ConnsRefused. 0 means unlimited.
	MaxConns int
	// ShutdownGrace is how long open connections keep running after Serve's context ends (the listener is
	// closed at once). When it runs out, the remaining connections are closed with ReasonShutdown. 0 closes them
	// immediately.
	ShutdownGrace time.Duration
	// EventLoops is the number of epoll event loops that forward TCP connections on Linux, clients speaking TLS
	// included once their handshake is done (a connection with TLS to the upstream uses a goroutine per
	// direction). 0 means the default, GOMAXPROCS-1 loops (at least one); negative disables the loops, so every
	// connection gets goroutine pumps.
	EventLoops int
	// Tap, when set, is called once per connection after the upstream was dialled and returns the writers that
	// observe the connection's bytes. nil means no observation.
	Tap TapFunc
	// Logger receives per-connection logs (Debug on open, Debug/Info on close) and rate-limited warnings. nil
	// discards.
	Logger *slog.Logger
}

const (
	defaultDialTimeout      = 5 * time.Second
	defaultHandshakeTimeout = 10 * time.Second
	defaultKeepAlive        = 30 * time.Second
	defaultHalfCloseTimeout = 30 * time.Second
)

func (c *Config) dialTimeout() time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return defaultDialTimeout
}

func (c *Config) dialBudget() time.Duration {
	if c.DialBudget > 0 {
		return c.DialBudget
	}
	return 2 * c.dialTimeout()
}

func (c *Config) downAfter() int { return max(c.DownAfter, 1) }

func (c *Config) backoff() time.Duration {
	if c.Backoff > 0 {
		return c.Backoff
	}
	return time.Second
}

func (c *Config) maxBackoff() time.Duration {
	if c.MaxBackoff > 0 {
		return max(c.MaxBackoff, c.backoff())
	}
	return max(30*time.Second, c.backoff())
}

func (c *Config) handshakeTimeout() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return defaultHandshakeTimeout
}

// eventLoops returns the number of event loops to start; 0 means none.
func (c *Config) eventLoops() int {
	switch {
	case c.EventLoops < 0:
		return 0
	case c.EventLoops > 0:
		return c.EventLoops
	}
	// One P is left to everything else: the tap's consumers (the correlator, the sinks) and the GC. On 2 cores
	// next to RabbitMQ, one loop instead of two cut proxy CPU per RPC from 1.65-1.76 to 1.38 times haproxy's
	// (make bench, 3 rounds each): a single loop gets both sides of an exchange in one epoll_wait (per 2 s, 3.6k
	// wake-ups of the loop instead of 9.0k) and wakes idle threads far less often (futex calls 0.8k instead of 2.4k).
	return max(1, runtime.GOMAXPROCS(0)-1)
}

// keepAlive returns the keep-alive period, or a negative value when keep-alive is disabled.
func (c *Config) keepAlive() time.Duration {
	if c.KeepAlive == 0 {
		return defaultKeepAlive
	}
	return c.KeepAlive
}

// halfCloseTimeout returns the half-close bound, or a negative value for "wait forever".
func (c *Config) halfCloseTimeout() time.Duration {
	if c.HalfCloseTimeout == 0 {
		return defaultHalfCloseTimeout
	}
	return c.HalfCloseTimeout
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// ConnInfo describes one proxied connection. It is handed to TapFunc and repeated in ConnEnd.
type ConnInfo struct {
	ID          uint64    // unique within the Proxy, starting at 1
	Client      net.Addr  // the client's remote address
	Upstream    string    // the upstream (from Config.Upstreams) that accepted the dial
	ClientTLS   bool      // the client spoke TLS to the proxy
	UpstreamTLS bool      // the proxy speaks TLS to the upstream
	Start       time.Time // when the client connection was accepted
}

// Tap observes one connection. The proxy writes each chunk to the destination socket first and only then hands
// the same bytes to the tap writer, so observation can never change, reorder or delay what is forwarded.
//
// The writers must obey the io.Writer contract: they must not keep p after returning (the proxy reuses the
// buffer), should not block (a blocking tap stalls that direction, like a slow peer would), and return
// len(p), nil. ClientToServer and ServerToClient may be called concurrently with each other (goroutine pumps) or
// from the same goroutine (an event loop); each is called from one goroutine at a time. If a writer panics or returns an error, the tap is turned
// off for the whole connection (ConnEnd.TapDisabled, Stats.TapFailures) and forwarding goes on.
type Tap struct {
	ClientToServer io.Writer     // receives client→broker bytes after they were written upstream; nil = none
	ServerToClient io.Writer     // receives broker→client bytes after they were written to the client; nil = none
	Done           func(ConnEnd) // called exactly once, after both sockets are closed and the last tap write; nil = none
}

// StampedWriter is an optional interface of a tap writer. When a tap writer has it, the pump calls WriteStamped
// instead of Write, with the time the bytes were read from the source, taken before they were forwarded. Stamping
// at read time keeps causality across connections: a broker delivery is read after the publish it carries was
// read, and a reply after the delivery it answers, although the taps of different connections run on different
// goroutines and may lag behind their writes. The contract is Write's: never block, never keep p.
type StampedWriter interface {
	WriteStamped(p []byte, readAt time.Time) (int, error)
}

// TapFunc returns the tap for one connection. It is called once per connection, after the upstream was dialled
// and before the first byte is forwarded. A panic in TapFunc leaves the connection untapped (counted).
type TapFunc func(ConnInfo) Tap

// ConnEnd reports how a tapped connection ended. Byte counts are bytes forwarded (written to the destination).
type ConnEnd struct {
	Info                ConnInfo
	End                 time.Time
	Reason              CloseReason
	Err                 error // the error behind Reason; nil for a clean close
	ClientToServerBytes int64
	ServerToClientBytes int64
	TapDisabled         bool // a tap writer panicked or returned an error; observation stopped, forwarding did not
}

// CloseReason says why a connection ended. It is the first cause, except that a cause the proxy imposes
// (idle_timeout, half_close_timeout, shutdown) replaces a clean EOF seen before it, because it says more about
// why the rest of the connection was cut.
type CloseReason string

const (
	// ReasonClientClosed: the client ended its side first with a clean EOF (FIN or TLS close_notify); the
	// upstream then finished too.
	ReasonClientClosed CloseReason = "client_closed"
	// ReasonUpstreamClosed: the upstream ended its side first with a clean EOF; the client then finished too.
	ReasonUpstreamClosed CloseReason = "upstream_closed"
	// ReasonClientError: reading from or writing to the client failed (reset, broken pipe, TLS error).
	ReasonClientError CloseReason = "client_error"
	// ReasonUpstreamError: reading from or writing to the upstream failed.
	ReasonUpstreamError CloseReason = "upstream_error"
	// ReasonIdleTimeout: no byte moved in either direction for Config.IdleTimeout.
	ReasonIdleTimeout CloseReason = "idle_timeout"
	// ReasonHalfCloseTimeout: one side ended cleanly and the other did not finish within
	// Config.HalfCloseTimeout (e.g. an upstream that accepts and never answers, after the client left).
	ReasonHalfCloseTimeout CloseReason = "half_close_timeout"
	// ReasonShutdown: Serve's context ended and Config.ShutdownGrace ran out.
	ReasonShutdown CloseReason = "shutdown"
	// ReasonDialFailed: no upstream accepted the dial; the client was closed at once. TapFunc is not called.
	ReasonDialFailed CloseReason = "dial_failed"
	// ReasonHandshakeFailed: the client's TLS handshake failed or timed out. TapFunc is not called.
	ReasonHandshakeFailed CloseReason = "handshake_failed"
	// ReasonRefused: Config.MaxConns was reached; the client was closed at once. TapFunc is not called.
	ReasonRefused CloseReason = "refused"
)

// Errors carried in ConnEnd.Err for causes the proxy imposes.
var (
	// ErrIdleTimeout is the ConnEnd.Err of ReasonIdleTimeout.
	ErrIdleTimeout = errors.New("proxy: idle timeout")
	// ErrHalfCloseTimeout is the ConnEnd.Err of ReasonHalfCloseTimeout.
	ErrHalfCloseTimeout = errors.New("proxy: half-close timeout")
	// ErrShutdown is the ConnEnd.Err of ReasonShutdown.
	ErrShutdown = errors.New("proxy: shut down")
	// ErrNoUpstream is returned (wrapped) when every upstream failed to dial, or none is configured.
	ErrNoUpstream = errors.New("proxy: no upstream reachable")
)
