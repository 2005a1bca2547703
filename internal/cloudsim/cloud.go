package cloudsim

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Config describes the simulated cloud. The zero value works except for URL.
type Config struct {
	// URL is the broker (or the amqptrace proxy in front of it), e.g. amqp://guest:guest@127.0.0.1:5673/.
	URL string
	// Rate is instance boots started per second; the agents' periodic reports scale with it. Default 1.
	Rate float64
	// Computes is the number of nova-compute hosts (compute1…). Default 3.
	Computes int
	// Agents is the number of neutron-openvswitch-agent hosts; the first ones run on the compute hosts. Default 3.
	Agents int
	// ErrorRate, SlowRate and TimeoutRate are the fractions of calls that raise a remote exception, are served
	// slowly (call-monitor heartbeats where the call sets _timeout), and time out (a late reply, or a call to
	// compute.host-gone, which has no server). Zero means the default (0.03, 0.05, 0.01); negative means none.
	ErrorRate, SlowRate, TimeoutRate float64
	// ControlExchange, when set, is the control exchange of every service. By default each project uses the one
	// its real deployments use: "nova" (nova sets it), "neutron" (neutron sets it) and "openstack" (the
	// oslo.messaging default, which cinder keeps).
	ControlExchange string
	// Prefix is prepended to every exchange and topic name so that tests sharing a broker do not consume each
	// other's messages. Empty in the demo: names are then exactly OpenStack's.
	Prefix string
	// MaxBoots, when positive, makes Run return by itself once that many boots have finished and every reply
	// they caused (late ones included) has been sent. Zero: run until the context ends.
	MaxBoots int
	// Seed seeds the choices (hosts, fates, pids). Ids are random regardless (see uuid4).
	Seed   int64
	Logger *slog.Logger
}

func (c Config) rate() float64        { return positive(c.Rate, 1) }
func (c Config) computes() int        { return max(intOr(c.Computes, 3), 1) }
func (c Config) agents() int          { return max(intOr(c.Agents, 3), 0) }
func (c Config) errorRate() float64   { return rateOr(c.ErrorRate, 0.03) }
func (c Config) slowRate() float64    { return rateOr(c.SlowRate, 0.05) }
func (c Config) timeoutRate() float64 { return rateOr(c.TimeoutRate, 0.01) }

func positive(v, def float64) float64 {
	if v > 0 {
		return v
	}
	return def
}

func intOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func rateOr(v, def float64) float64 {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return min(v, 1)
}

func (c Config) exchange(project string) string {
	if c.ControlExchange != "" {
		return c.Prefix + c.ControlExchange
	}
	return c.Prefix + project
}

// Key identifies a group of messages the cloud sent.
type Key struct {
	Kind   string // call, cast, fanout, notification
	Method string // the RPC method, or the notification's event_type
	Status string // ok, error, timeout; "aborted" when the cloud shut down (or lost the broker) first
}

// Counts is what the cloud itself sent, for comparison with what amqptrace recorded.
type Counts struct {
	// Sent counts published requests and notifications by the status the cloud meant them to have (what
	// amqptrace should record from the caller's side).
	Sent map[Key]int
	// Observed counts the same messages by the status their caller saw.
	Observed map[Key]int
	// Mismatched counts calls whose observed status differs from the intended one (e.g. an "ok" call that
	// timed out on an overloaded machine). When it is zero, Sent and Observed agree.
	Mismatched int
	// Replies and Heartbeats count final and call-monitor replies published by servers.
	Replies, Heartbeats int
	// MonitoredSlow counts calls with a call-monitor _timeout that the server made last at least one heartbeat
	// interval: exactly these calls get heartbeat replies.
	MonitoredSlow int
	// LateReplies counts final replies that reached a caller after it had given up.
	LateReplies int
	// Returned counts messages the broker returned (mandatory replies to a missing reply queue).
	Returned int
	// Bad counts deliveries the simulated services could not parse (not theirs).
	Bad int
	// Boots counts finished boot flows; BootsSkipped those not started because too many were in flight.
	Boots, BootsSkipped int
}

// Cloud is a running (or runnable) simulated cloud. Create it with New, run it once with Run.
type Cloud struct {
	cfg Config
	log *slog.Logger

	ready  chan struct{}
	runCtx context.Context // cancelled when Run tears down; every blocking step watches it

	pumps     sync.WaitGroup // consume loops and return drains; they end when their connection closes
	inflight  tracker        // RPC handlers running
	fates     sync.Map       // _msg_id → fate, set by the caller before publishing, taken by the server
	lateWait  tracker        // late replies published and not yet received by their caller's reply listener
	awaitLate sync.Map       // _msg_id → struct{}: the late replies lateWait counts
	svc       *services      // set by Run; read by tests after Run returns

	mu      sync.Mutex // guards everything below
	rng     *rand.Rand
	counts  Counts
	closers []func()
	boots   map[string]*boot // by request_id
	lateLog time.Time        // last "No calling threads waiting" log line
	toLog   time.Time        // last "call timed out" log line
	ran     bool
}

// New returns a cloud for cfg. It does not connect; Run does.
func New(cfg Config) *Cloud {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cloud{
		cfg:    cfg,
		log:    log.With("component", "cloudsim"),
		ready:  make(chan struct{}),
		rng:    rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6f736c6f)),
		counts: Counts{Sent: map[Key]int{}, Observed: map[Key]int{}},
		boots:  map[string]*boot{},
	}
}

// Ready is closed once every service's listeners are declared and consuming.
func (c *Cloud) Ready() <-chan struct{} { return c.ready }

// Counts returns a copy of what the cloud has sent so far.
func (c *Cloud) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	out.Sent = make(map[Key]int, len(c.counts.Sent))
	for k, v := range c.counts.Sent {
		out.Sent[k] = v
	}
	out.Observed = make(map[Key]int, len(c.counts.Observed))
	for k, v := range c.counts.Observed {
		out.Observed[k] = v
	}
	return out
}

func (c *Cloud) record(kind, method, intended, observed string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts.Sent[Key{kind, method, intended}]++
	c.counts.Observed[Key{kind, method, observed}]++
	if intended != observed {
		c.counts.Mismatched++
	}
}

func (c *Cloud) countBad() {
	c.mu.Lock()
	c.counts.Bad++
	c.mu.Unlock()
}

// lateReply counts a final reply nobody waited for and logs it at most once a second, like oslo's
// "No calling threads waiting for msg_id" but without flooding.
func (c *Cloud) lateReply(p *process, msgID string) {
	c.mu.Lock()
	c.counts.LateReplies++
	logIt := c.rateOK(&c.lateLog)
	c.mu.Unlock()
	if logIt {
		p.log.Info("No calling threads waiting for msg_id", "msg_id", msgID)
	}
}

// rateOK reports whether a once-a-second log line last written at *last may be written now. c.mu must be held.
func (c *Cloud) rateOK(last *time.Time) bool {
	now := time.Now()
	if now.Sub(*last) < time.Second {
		return false
	}
	*last = now
	return true
}

// track registers a connection closer run at teardown.
func (c *Cloud) track(f func()) {
	c.mu.Lock()
	c.closers = append(c.closers, f)
	c.mu.Unlock()
}

func (c *Cloud) float() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.Float64()
}

func (c *Cloud) intn(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.IntN(n)
}

// Timings. Calls meant to time out use a short timeout so the demo shows them promptly; everything else uses
// oslo's default rpc_response_timeout of 60 s, far beyond any delay the cloud introduces.
const (
	callTimeout  = 60 * time.Second
	shortTimeout = 1500 * time.Millisecond // the capture's short-timeout call had expiration 1500
	slowDelay    = 2500 * time.Millisecond // > 2 heartbeat intervals at _timeout 2
	lateDelay    = 3500 * time.Millisecond // past shortTimeout: the reply is late
	monitorSecs  = 2                       // _timeout of select_destinations: a heartbeat every second while slow
)

// fate is what a call is meant to do, drawn by the caller and read by the server (in-process, so the wire stays
// exactly oslo's).
type fate struct {
	status  string        // intended status: ok, error, timeout
	delay   time.Duration // server-side delay before the handler runs
	err     *remoteError  // injected remote exception
	timeout time.Duration // caller's timeout
	gone    bool          // route to a server that does not exist
}

// drawFate picks a call's fate. errFor is the exception that method raises; canGo says the call targets one
// compute host and can go to compute.host-gone instead of being answered late.
func (c *Cloud) drawFate(errFor *remoteError, canGo bool) fate {
	r := c.float()
	er, tr, sr := c.cfg.errorRate(), c.cfg.timeoutRate(), c.cfg.slowRate()
	jitter := time.Duration(2+c.intn(10)) * time.Millisecond
	switch {
	case r < er && errFor != nil:
		return fate{status: "error", delay: jitter, err: errFor, timeout: callTimeout}
	case r >= er && r < er+tr:
		if canGo {
			return fate{status: "timeout", timeout: shortTimeout, gone: true}
		}
		return fate{status: "timeout", delay: lateDelay, timeout: shortTimeout}
	case r >= er+tr && r < er+tr+sr:
		return fate{status: "ok", delay: slowDelay, timeout: callTimeout}
	}
	return fate{status: "ok", delay: jitter, timeout: callTimeout}
}

func (c *Cloud) takeFate(msgID string) fate {
	if msgID == "" {
		return fate{status: "ok", delay: time.Duration(1+c.intn(5)) * time.Millisecond}
	}
	if v, ok := c.fates.LoadAndDelete(msgID); ok {
		return v.(fate)
	}
	return fate{status: "ok"}
}

// target is where a message goes.
type target struct {
	exchange string
	topic    string
	server   string // "" → shared topic queue
}

func (t target) key() string {
	if t.server == "" {
		return t.topic
	}
	return t.topic + "." + t.server
}

// errAborted is returned by calls and casts that did not complete because the cloud is shutting down.
var errAborted = errors.New("cloudsim: aborted")

// call makes one RPC call from p and waits for its final reply or its deadline, as RPCClient.call does. It
// returns the result, or the remote exception, or errTimeout/errAborted.
func (p *process) call(rc *reqContext, t target, req rpcRequest, f fate) (json.RawMessage, *remoteError, error) {
	c := p.c
	ctx := c.runCtx
	observed := "aborted"
	defer func() { c.record("call", req.Method, f.status, observed) }()
	rl, err := p.replyQueue()
	if err != nil {
		return nil, nil, err
	}
	req.MsgID, req.ReplyQ = hexID(), rl.queue
	if f.gone {
		t.server = "host-gone"
	} else {
		c.fates.Store(req.MsgID, f)
	}
	w := make(chan replyMsg, 1)
	rl.mu.Lock()
	rl.waiters[req.MsgID] = w
	rl.mu.Unlock()
	forget := func() {
		rl.mu.Lock()
		delete(rl.waiters, req.MsgID)
		rl.mu.Unlock()
	}
	deadline := time.NewTimer(f.timeout)
	defer deadline.Stop()
	if err := p.publish(ctx, false, exchangeSpec{t.exchange, "topic", false}, t.key(), false, req.body(rc, hexID()), expiration(f.timeout)); err != nil {
		forget()
		c.fates.Delete(req.MsgID)
		return nil, nil, err
	}
	select {
	case r := <-w:
		if r.failure != nil {
			observed = "error"
			return nil, r.failure, nil
		}
		observed = "ok"
		return r.result, nil, nil
	case <-deadline.C:
		forget()
		observed = "timeout"
		c.mu.Lock()
		logIt := c.rateOK(&c.toLog)
		c.mu.Unlock()
		if logIt {
			p.log.Info("call timed out (MessagingTimeout)", "method", req.Method, "routing_key", t.key(),
				"msg_id", req.MsgID, "request_id", rc.RequestID)
		}
		return nil, nil, errTimeout
	case <-ctx.Done():
		forget()
		return nil, nil, errAborted
	}
}

var errTimeout = errors.New("cloudsim: MessagingTimeout")

// cast publishes a cast (or, with fanout, a fanout cast) from p.
func (p *process) cast(rc *reqContext, t target, req rpcRequest, fanout bool) error {
	kind, ex, key := "cast", exchangeSpec{t.exchange, "topic", false}, t.key()
	if fanout {
		kind, ex, key = "fanout", exchangeSpec{t.topic + "_fanout", "fanout", true}, ""
	}
	err := p.publish(p.c.runCtx, false, ex, key, false, req.body(rc, hexID()), "")
	status := "ok"
	if err != nil {
		status = "aborted"
	}
	p.c.record(kind, req.Method, "ok", status)
	return err
}

// notifyEvent sends a messagingv2 notification from p's notification transport.
func (p *process) notifyEvent(rc *reqContext, eventType, priority string, payload object) {
	c := p.c
	ex := exchangeSpec{c.cfg.exchange("nova"), "topic", false}
	key := c.cfg.Prefix + "notifications." + lower(priority)
	body := notificationBody(rc, p.program+":"+p.host, eventType, priority, payload, time.Now())
	status := "ok"
	if err := p.publish(c.runCtx, true, ex, key, false, body, ""); err != nil {
		status = "aborted"
	}
	c.record("notification", eventType, "ok", status)
}

func lower(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}

// tracker counts outstanding work and lets a caller wait, under a context, for it to reach zero. Unlike a
// sync.WaitGroup it allows add after a wait has returned, and waiting can be abandoned.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed while n == 0; replaced when n leaves 0
}

func (t *tracker) add(k int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.zero == nil || t.n == 0 {
		t.zero = make(chan struct{})
	}
	t.n += k
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.zero)
	}
}

// wait returns true once the count is zero, false if ctx ends first.
func (t *tracker) wait(ctx context.Context) bool {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return true
	}
	z := t.zero
	t.mu.Unlock()
	select {
	case <-z:
		return true
	case <-ctx.Done():
		return false
	}
}
