package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy accepts client connections and forwards them to an upstream broker. Create it with New; it is safe for
// concurrent use, and Serve may run on several listeners at once (Stats and MaxConns are shared).
type Proxy struct {
	cfg Config
	log *slog.Logger

	nextID atomic.Uint64

	connsOpen       atomic.Int64
	connsTotal      atomic.Int64
	connsRefused    atomic.Int64
	connsDialFailed atomic.Int64
	handshakeFails  atomic.Int64
	dialFailures    atomic.Int64
	bytesC2S        atomic.Int64
	bytesS2C        atomic.Int64
	tapFailures     atomic.Int64
	// dialFailuresBy is built once in New and never changes shape, so it is read without a lock; only the
	// counters inside move.
	dialFailuresBy map[string]*atomic.Int64

	health   *health
	checking atomic.Bool // one Serve runs the health checks

	refusedLog rateLimit
	acceptLog  rateLimit
	noDialLog  rateLimit

	// dialHook replaces the network dial in tests that run the proxy over in-memory pipes (testing/synctest).
	dialHook func(ctx context.Context, addr string) (net.Conn, error)
}

// Stats is a snapshot of the proxy's counters. Each field is read atomically; the snapshot as a whole is not a
// single instant.
type Stats struct {
	ConnsOpen              int64            // client connections being served now (handshake and dial included)
	ConnsTotal             int64            // client connections admitted since New (refused ones excluded)
	ConnsRefused           int64            // client connections closed at once because MaxConns was reached
	ConnsDialFailed        int64            // client connections closed because no upstream could be dialled
	HandshakeFailures      int64            // client TLS handshakes that failed or timed out
	DialFailures           int64            // failed dials to any upstream (one client can cause several)
	DialFailuresByUpstream map[string]int64 // failed dials per configured upstream
	BytesClientToServer    int64            // bytes written to upstreams
	BytesServerToClient    int64            // bytes written to clients
	TapFailures            int64            // connections whose tap was turned off by a panic or an error
	Upstreams              []UpstreamHealth // every upstream's health, in configured order
}

// New returns a Proxy for cfg. The proxy keeps its own copy of cfg (the Upstreams slice included).
func New(cfg Config) *Proxy {
	cfg.Upstreams = append([]string(nil), cfg.Upstreams...)
	p := &Proxy{
		cfg:            cfg,
		log:            cfg.logger(),
		dialFailuresBy: make(map[string]*atomic.Int64, len(cfg.Upstreams)),
	}
	p.health = newHealth(&p.cfg)
	for _, u := range cfg.Upstreams {
		if p.dialFailuresBy[u] == nil {
			p.dialFailuresBy[u] = new(atomic.Int64)
		}
	}
	return p
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	s := Stats{
		ConnsOpen:              p.connsOpen.Load(),
		ConnsTotal:             p.connsTotal.Load(),
		ConnsRefused:           p.connsRefused.Load(),
		ConnsDialFailed:        p.connsDialFailed.Load(),
		HandshakeFailures:      p.handshakeFails.Load(),
		DialFailures:           p.dialFailures.Load(),
		DialFailuresByUpstream: make(map[string]int64, len(p.dialFailuresBy)),
		BytesClientToServer:    p.bytesC2S.Load(),
		BytesServerToClient:    p.bytesS2C.Load(),
		TapFailures:            p.tapFailures.Load(),
		Upstreams:              p.health.snapshot(),
	}
	for u, n := range p.dialFailuresBy {
		s.DialFailuresByUpstream[u] = n.Load()
	}
	return s
}

// Healthy reports whether some upstream is up, and if not, why (every upstream's state and last error). Without
// checks (CheckNone) an upstream not tried yet counts as up: nothing else would ever try it before a client does.
func (p *Proxy) Healthy() (bool, string) {
	var why []string
	for _, u := range p.health.snapshot() {
		if u.State == StateUp || u.State == StateUnknown && p.cfg.Check == CheckNone {
			return true, ""
		}
		w := u.Addr + " " + string(u.State)
		if u.State == StateUnknown {
			w += " (not tried yet)"
		}
		if u.LastError != "" {
			w += ": " + u.LastError
		}
		why = append(why, w)
	}
	if len(why) == 0 {
		return false, "no upstream configured"
	}
	return false, "no upstream is healthy: " + strings.Join(why, "; ")
}

// HealthChanged returns a channel that is closed at the next change of an upstream's state (up, down).
func (p *Proxy) HealthChanged() <-chan struct{} {
	p.health.mu.Lock()
	defer p.health.mu.Unlock()
	return p.health.changed
}

// server is the state of one Serve call: the connections it owns and the context that cuts them off.
type server struct {
	p *Proxy
	// hard is cancelled when the grace period ends; in-flight dials and handshakes watch it.
	hard       context.Context
	hardCancel context.CancelFunc
	wg         sync.WaitGroup

	// loops forward plain TCP connections (Linux); empty means every connection gets goroutine pumps.
	loops []*loop

	mu       sync.Mutex
	conns    map[*conn]struct{}
	stopping bool // set when the grace period ended: connections registered after this are closed at once
}

// Serve accepts connections on ln until ctx ends, then stops accepting (ln is closed), lets open connections run
// for Config.ShutdownGrace, closes the rest (ReasonShutdown), and returns once every goroutine it started has
// returned. It returns nil after a shutdown caused by ctx, or the listener's error if the listener failed on its
// own (connections get the same grace period in that case). Serve closes ln in every case.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	s := &server{p: p, conns: make(map[*conn]struct{})}
	s.hard, s.hardCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer s.hardCancel()

	// Closing the listener is the only way to unblock Accept; AfterFunc ties that to ctx without a goroutine
	// of our own parked on ctx.Done.
	stopClose := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stopClose()

	// A dial hook means in-memory pipes (tests in a synctest bubble, where a goroutine blocked in epoll_wait
	// would keep the fake clock from moving): no socket to hand to a loop, so no loop.
	if n := p.cfg.eventLoops(); n > 0 && p.dialHook == nil {
		loops, err := startLoops(p, n)
		if err != nil {
			p.log.Warn("event loops unavailable; forwarding with goroutine pumps", "err", err)
		}
		s.loops = loops
	}

	// Health checks run while some Serve does (one of them runs them). A dial hook means in-memory pipes, where an
	// unasked-for dial would hand the test a connection it does not expect: no checks.
	var checks sync.WaitGroup
	if p.cfg.Check != CheckNone && p.dialHook == nil && p.checking.CompareAndSwap(false, true) {
		checkCtx, stopChecks := context.WithCancel(s.hard)
		defer stopChecks()
		checks.Go(func() {
			defer p.checking.Store(false)
			p.runChecks(checkCtx)
		})
		defer func() { stopChecks(); checks.Wait() }()
	}

	err := s.acceptLoop(ctx, ln)
	_ = ln.Close()
	s.drain()
	// drain returned once every connection was closed out, a loop's after the loop finished it.
	stopLoops(s.loops)
	return err
}

// acceptLoop runs until the listener fails for good. Transient errors (EMFILE, ECONNABORTED, …) back off
// exponentially from 5ms to 1s, like net/http, so a file-descriptor shortage does not spin a core.
func (s *server) acceptLoop(ctx context.Context, ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("proxy: listener closed: %w", err)
			}
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else {
				backoff = min(2*backoff, time.Second)
			}
			s.p.acceptLog.do(func(suppressed int64) {
				s.p.log.Warn("accept failed; backing off", "err", err, "backoff", backoff, "suppressed", suppressed)
			})
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		s.admit(c)
	}
}

// admit applies MaxConns and starts the connection's goroutine.
func (s *server) admit(c net.Conn) {
	p := s.p
	n := p.connsOpen.Add(1)
	if p.cfg.MaxConns > 0 && n > int64(p.cfg.MaxConns) {
		p.connsOpen.Add(-1)
		p.connsRefused.Add(1)
		_ = c.Close()
		p.refusedLog.do(func(suppressed int64) {
			p.log.Warn("connection refused: MaxConns reached", "client", c.RemoteAddr().String(),
				"max_conns", p.cfg.MaxConns, "suppressed", suppressed)
		})
		return
	}
	p.connsTotal.Add(1)
	cn := newConn(s, c)
	s.wg.Add(1)
	go func() {
		if !s.track(cn) {
			_ = c.Close()
			p.connsOpen.Add(-1)
			s.wg.Done()
			return
		}
		handleConn(cn, func(end ConnEnd, tapped bool) {
			defer s.wg.Done()
			// Release before Done, so a Done callback (or a test waiting on it) sees the connection gone from
			// ConnsOpen.
			s.untrack(cn)
			p.connsOpen.Add(-1)
			if tapped {
				cn.callDone(end)
			}
		})
	}()
}

// track registers cn so shutdown can close it; it returns false when the grace period already ended.
func (s *server) track(cn *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.conns[cn] = struct{}{}
	return true
}

func (s *server) untrack(cn *conn) {
	s.mu.Lock()
	delete(s.conns, cn)
	s.mu.Unlock()
}

// drain waits for the connections for the grace period, then closes what is left and waits for it to go.
func (s *server) drain() {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	if grace := s.p.cfg.ShutdownGrace; grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
	s.mu.Lock()
	s.stopping = true
	open := make([]*conn, 0, len(s.conns))
	for cn := range s.conns {
		open = append(open, cn)
	}
	s.mu.Unlock()
	s.hardCancel()
	for _, cn := range open {
		cn.forceClose(ReasonShutdown, ErrShutdown)
	}
	<-done
}

// rateLimit lets one log line through per interval and counts the ones it held back, so a storm of refused
// connections or failed dials costs a counter increment, not a log line each.
type rateLimit struct {
	last       atomic.Int64 // unix nanoseconds of the last line let through
	suppressed atomic.Int64
}

const rateLimitInterval = 10 * time.Second

func (r *rateLimit) do(logf func(suppressed int64)) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if last != 0 && now-last < int64(rateLimitInterval) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return
	}
	logf(r.suppressed.Swap(0))
}
