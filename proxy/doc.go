// Package proxy is amqptrace's byte pump: it accepts client connections (plain TCP or amqps), dials a broker
// from an ordered upstream list (plain or TLS), and forwards every byte in both directions, untouched, until both
// sides are done. After each chunk is written to its destination, the same bytes are handed to an optional tap,
// which is how the AMQP decoder sees the traffic.
//
// Typical usage (cmd wires the tap to a frames.Decoder per direction):
//
//	p := proxy.New(proxy.Config{
//		Upstreams:   []string{"rabbit-1:5672", "rabbit-2:5672"},
//		IdleTimeout: 0,                 // AMQP heartbeats already keep live connections busy
//		Tap: func(ci proxy.ConnInfo) proxy.Tap {
//			return proxy.Tap{ClientToServer: decC2S, ServerToClient: decS2C, Done: onEnd}
//		},
//	})
//	ln, _ := net.Listen("tcp", "127.0.0.1:5673")
//	err := p.Serve(ctx, ln) // returns after ctx ends, the grace period, and every goroutine joined
//
// # What it guarantees
//
//   - Forward first, observe second. Whatever moves the bytes reads, writes all it read, and only then calls the
//     tap with those bytes. Nothing sits between the read and the write (no bufio, no pipe, no channel), so TCP
//     backpressure reaches the sender and small frames such as heartbeats leave at once (Go keeps TCP_NODELAY on).
//   - Two ways to move them. On Linux, TCP connections are served by a few epoll event loops (Config.EventLoops,
//     GOMAXPROCS-1 of them by default), as haproxy does: one goroutine per loop, level-triggered, no goroutine per
//     connection, no read that only returns EAGAIN. A destination that cannot take everything stops its source
//     from being read until it drains. A client speaking TLS joins a loop once its handshake is done: crypto/tls
//     reads and writes the loop's socket through a conn that never waits (the plaintext is what is tapped and
//     forwarded). TLS to the upstream, and every connection elsewhere, get one named pump per direction
//     (pumpClientToServer, pumpServerToClient). make test runs the loopback tests on both paths; the fake-clock
//     idle tests (in-memory pipes) run on the pumps only.
//   - Observation never stops forwarding. A tap writer that panics or returns an error is turned off for that
//     connection (ConnEnd.TapDisabled, Stats.TapFailures); the bytes keep flowing.
//   - Half-close is honoured. A clean EOF from one side becomes CloseWrite on the other (TLS: close_notify, then
//     FIN) and the other direction keeps running, so an AMQP close-ok that follows a FIN still arrives. Both
//     sockets are closed when both directions are done, or at once on an I/O error, an idle timeout, a half-close
//     timeout or shutdown.
//   - No connection can outlive its peers: an I/O error on one side closes both, TCP keep-alive finds vanished
//     peers, Config.IdleTimeout ends silent connections, and Config.HalfCloseTimeout ends a connection whose
//     remaining side never finishes (an upstream that accepts and never answers).
//   - Idle connections are cheap. On a loop an idle connection holds no buffer and no goroutine of its own beyond
//     the one waiting for its end (the loop reads into its own 32 KiB buffer and borrows a pooled array only for
//     bytes its destination could not take yet). A pump blocked in Read holds a 1 KiB buffer of its own; 32 KiB
//     arrays come from a sync.Pool only during bursts and go back as soon as a read comes back short.
//   - Serve joins every goroutine it started before it returns.
//
// # What it does not do
//
// It does not parse AMQP (beyond waiting for the broker's first answer to the 8-byte protocol header, with
// Config.AwaitAnswer), rewrite bytes, authenticate clients, balance load beyond first-healthy or round-robin
// order over the upstreams that are not down (health.go), retry a broken connection, or splice (the bytes must pass through user space to be
// tapped; see the pump benchmark for the cost). It imports nothing of amqptrace's.
//
// # Who owns which bytes
//
// The pump owns its buffers. A tap writer gets a slice that is valid only during the Write call and must copy
// what it keeps. The two tap writers of a connection may be called from two goroutines concurrently (pumps) or
// from one (a loop), never each from two at once; a tap writer runs on the forwarding path, so a slow one delays
// the connection (and, on a loop, the loop's other connections) by as much as it takes. Done is called
// exactly once, after both sockets are closed and after the last tap write.
// The proxy logs addresses, reasons and byte counts only; it never logs payload bytes, and a panicking tap's
// value is not logged (it could quote a password), only its type or runtime error.
package proxy
