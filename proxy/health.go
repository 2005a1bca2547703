package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream health, in the manner of haproxy's passive observation plus an optional active check.
//
// Each upstream is up, down or unknown (not tried yet). It goes down after Config.DownAfter consecutive failures
// (a failed dial, or a connection the upstream accepted and then ended before it answered a single byte: a broker
// still booting, a load balancer without a backend), for a backoff that doubles with every failure after that, from
// Config.Backoff up to Config.MaxBackoff. It comes back up when a client connection through it gets an answer, or
// when a check succeeds. Clients try the nodes that are not down first, in the strategy's order, and the down ones
// only when all of those failed, all within Config.DialBudget.
//
// A down node whose backoff ended is tried by clients again like the others. With a check configured
// (Config.Check), the proxy also checks every node once when Serve starts, and a down node when its backoff ends
// (a client may never come while every node is down, and readiness must notice the broker came back); with
// Config.CheckInterval set, every node is also checked on that period. A check is a TCP connect (CheckTCP) or, with CheckAMQP, a TCP connect plus the AMQP
// protocol header exchange: the node must answer with a frame, which a node that accepts and closes never does.
// A TCP check that succeeds brings a node up but keeps its backoff, so a node that accepts and then closes flaps
// with a backoff that still grows; only an answer (a client's or an AMQP check's) resets it.

// Strategy is the order in which the upstreams are tried for each client.
type Strategy int

const (
	// FirstHealthy tries the upstreams in their configured order: the first that is not down and answers wins.
	FirstHealthy Strategy = iota
	// RoundRobin starts each client at the next upstream in turn, so clients spread over the healthy nodes.
	RoundRobin
)

// ParseStrategy parses "first-healthy" or "round-robin".
func ParseStrategy(s string) (Strategy, error) {
	switch s {
	case "first-healthy", "":
		return FirstHealthy, nil
	case "round-robin":
		return RoundRobin, nil
	}
	return 0, fmt.Errorf("unknown upstream strategy %q: want first-healthy or round-robin", s)
}

// Check is the kind of health check the proxy runs against an upstream.
type Check int

const (
	// CheckNone runs no check: health is only what client connections show, and a down upstream is tried by
	// clients again once its backoff ends.
	CheckNone Check = iota
	// CheckTCP connects and closes (through TLS with Config.UpstreamTLS).
	CheckTCP
	// CheckAMQP connects, sends the AMQP 0-9-1 protocol header and waits for the first byte of the broker's answer
	// (Connection.Start), then closes.
	CheckAMQP
)

// ParseCheck parses "none", "tcp" or "amqp".
func ParseCheck(s string) (Check, error) {
	switch s {
	case "none", "":
		return CheckNone, nil
	case "tcp":
		return CheckTCP, nil
	case "amqp":
		return CheckAMQP, nil
	}
	return 0, fmt.Errorf("unknown upstream check %q: want none, tcp or amqp", s)
}

// UpstreamState is one upstream's health.
type UpstreamState string

const (
	StateUnknown UpstreamState = "unknown" // not tried yet
	StateUp      UpstreamState = "up"
	StateDown    UpstreamState = "down"
)

// UpstreamHealth is a snapshot of one upstream's health (Stats.Upstreams).
type UpstreamHealth struct {
	Addr                string        `json:"addr"`
	State               UpstreamState `json:"state"`
	ConsecutiveFailures int           `json:"consecutive_failures"`
	// RetryAt is when a down upstream is checked again (zero unless down).
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Backoff is how long the upstream stays down after its next failure.
	Backoff   time.Duration `json:"backoff_ns"`
	LastError string        `json:"last_error,omitempty"`
	LastErrAt time.Time     `json:"last_error_at,omitzero"`
	Downs     int64         `json:"downs_total"`  // times it went down
	Checks    int64         `json:"checks_total"` // checks run against it (start-up, retry and periodic)
}

// ErrNoAnswer is the failure recorded against an upstream that accepted a connection and ended it before sending
// a byte.
var ErrNoAnswer = errors.New("upstream accepted the connection and ended it before answering")

// amqpHeader is the AMQP 0-9-1 protocol header a client opens with.
var amqpHeader = []byte("AMQP\x00\x00\x09\x01")

// node is one upstream's health record. Fields under mu.
type node struct {
	addr string

	mu       sync.Mutex
	state    UpstreamState
	fails    int
	backoff  time.Duration
	retryAt  time.Time
	lastErr  string
	lastAt   time.Time
	downs    int64
	checks   int64
	checking bool // a check of this node is running
}

// health holds every upstream's node and wakes the checker when a node goes down.
type health struct {
	cfg   *Config
	nodes []*node
	rr    atomic.Uint64
	now   func() time.Time
	// changed is closed and replaced whenever a node changes state (Proxy.HealthChanged).
	mu      sync.Mutex
	changed chan struct{}
	wake    chan struct{} // buffered 1: a node went down, the checker recomputes its next retry
}

func newHealth(cfg *Config) *health {
	h := &health{cfg: cfg, now: time.Now, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
	for _, a := range cfg.Upstreams {
		h.nodes = append(h.nodes, &node{addr: a, state: StateUnknown, backoff: cfg.backoff()})
	}
	return h
}

func (h *health) notify(wakeChecker bool) {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	if wakeChecker {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// failed records a failure against n (a dial, a connection without an answer, or a check).
func (h *health) failed(n *node, err error) {
	n.mu.Lock()
	n.fails++
	n.lastErr, n.lastAt = err.Error(), h.now()
	wentDown := false
	if n.fails >= h.cfg.downAfter() {
		if n.state != StateDown {
			n.downs++
			wentDown = true
		}
		n.state = StateDown
		n.retryAt = n.lastAt.Add(n.backoff)
		n.backoff = min(2*n.backoff, h.cfg.maxBackoff())
	}
	n.mu.Unlock()
	if wentDown {
		h.notify(true)
	}
}

// answered records that n answered (a client's connection got a byte, or an AMQP check): up, backoff reset.
func (h *health) answered(n *node) { h.up(n, true) }

// reachable records that n took a TCP connection (a TCP check): up, but the backoff is kept, so a node that
// accepts and then closes keeps a growing backoff.
func (h *health) reachable(n *node) { h.up(n, false) }

func (h *health) up(n *node, reset bool) {
	n.mu.Lock()
	changed := n.state != StateUp
	n.state, n.fails, n.retryAt = StateUp, 0, time.Time{}
	if reset {
		n.backoff = h.cfg.backoff()
	}
	n.mu.Unlock()
	if changed {
		h.notify(false)
	}
}

// skipped reports whether clients try n last: it is down and its backoff has not ended.
func (n *node) skipped(now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state == StateDown && now.Before(n.retryAt)
}

// order returns the nodes in the order a client tries them: the ones that are not skipped (down, within their
// backoff) first, in configured order or, for RoundRobin, rotated by one more for each client, so that clients
// spread evenly over those; then the skipped ones, as a last resort.
func (h *health) order() []*node {
	now := h.now()
	out := make([]*node, 0, len(h.nodes))
	var skipped []*node
	for _, n := range h.nodes {
		if n.skipped(now) {
			skipped = append(skipped, n)
		} else {
			out = append(out, n)
		}
	}
	if k := len(out); h.cfg.Strategy == RoundRobin && k > 1 {
		start := int((h.rr.Add(1) - 1) % uint64(k))
		out = append(append(make([]*node, 0, len(h.nodes)), out[start:]...), out[:start]...)
	}
	return append(out, skipped...)
}

// snapshot returns every node's health, in configured order.
func (h *health) snapshot() []UpstreamHealth {
	out := make([]UpstreamHealth, len(h.nodes))
	for i, n := range h.nodes {
		n.mu.Lock()
		out[i] = UpstreamHealth{Addr: n.addr, State: n.state, ConsecutiveFailures: n.fails, RetryAt: n.retryAt,
			Backoff: n.backoff, LastError: n.lastErr, LastErrAt: n.lastAt, Downs: n.downs, Checks: n.checks}
		n.mu.Unlock()
	}
	return out
}

// runChecks checks every node once at once (start-up), then checks down nodes when their backoff ends and, with
// CheckInterval, every node on that period, until ctx ends. Checks of different nodes run concurrently; a node is
// never checked twice at once.
func (p *Proxy) runChecks(ctx context.Context) {
	h := p.health
	var wg sync.WaitGroup
	defer wg.Wait()
	check := func(n *node) {
		n.mu.Lock()
		if n.checking {
			n.mu.Unlock()
			return
		}
		n.checking = true
		n.mu.Unlock()
		wg.Go(func() {
			p.check(ctx, n)
			n.mu.Lock()
			n.checking = false
			n.mu.Unlock()
			h.notify(true) // the checker recomputes its next wake-up
		})
	}
	// The start-up round, all nodes at once; nothing else checks meanwhile. Its verdict is logged, since a proxy
	// whose upstreams all fail at start is most often misconfigured (it still serves, and goes on checking).
	var first sync.WaitGroup
	for _, n := range h.nodes {
		first.Go(func() { p.check(ctx, n) })
	}
	first.Wait()
	h.notify(false)
	if ok, why := p.Healthy(); !ok && ctx.Err() == nil {
		p.log.Warn("no upstream answers yet; clients will be refused until one does", "why", why)
	}
	interval := p.cfg.CheckInterval
	nextPeriodic := h.now().Add(interval)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := h.now()
		next := time.Time{}
		if interval > 0 {
			if !now.Before(nextPeriodic) {
				for _, n := range h.nodes {
					check(n)
				}
				nextPeriodic = now.Add(interval)
			}
			next = nextPeriodic
		}
		for _, n := range h.nodes {
			n.mu.Lock()
			down, at, busy := n.state == StateDown, n.retryAt, n.checking
			n.mu.Unlock()
			if !down || busy {
				continue
			}
			if !now.Before(at) {
				check(n)
				continue
			}
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-timer.C:
		}
	}
}

// check runs one check against n and records its result.
func (p *Proxy) check(ctx context.Context, n *node) {
	n.mu.Lock()
	n.checks++
	n.mu.Unlock()
	c, err := p.dial(ctx, n.addr)
	if err != nil {
		if ctx.Err() == nil {
			p.health.failed(n, err)
		}
		return
	}
	defer closeRaw(c)
	if p.cfg.Check != CheckAMQP {
		p.health.reachable(n)
		return
	}
	_ = c.SetDeadline(time.Now().Add(p.cfg.dialTimeout()))
	if _, err = c.Write(amqpHeader); err == nil {
		_, err = io.ReadFull(c, make([]byte, 1))
	}
	switch {
	case err == nil:
		p.health.answered(n)
	case ctx.Err() != nil:
	case errors.Is(err, io.EOF):
		p.health.failed(n, fmt.Errorf("AMQP check: %w", ErrNoAnswer))
	default:
		p.health.failed(n, fmt.Errorf("AMQP check: %w", err))
	}
}

// dialErrors formats every node's error of one client's dial attempt, for the warning: "a: err; b: err".
func dialErrors(errs []nodeErr) string {
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.addr)
		b.WriteString(": ")
		b.WriteString(e.err.Error())
	}
	return b.String()
}

type nodeErr struct {
	addr string
	err  error
}
