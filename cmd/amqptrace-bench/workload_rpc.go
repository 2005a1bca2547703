package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	rpcServers           = 2  // RPC servers sharing the topic queue (round-robin), each with a listener and a sender
	rpcClients           = 2  // caller processes, each with a sender connection and a reply listener
	rpcCallersPerClient  = 4  // concurrent calls per caller process
	rpcServerConcurrency = 16 // handlers per server at once, like oslo's executor pool
	rpcArgBytes          = 256
	// rpcMaxSamples bounds the latency samples kept per round (a 5 s round on loopback makes a few tens of
	// thousands).
	rpcMaxSamples = 1 << 20
	rpcMaxErrors  = 64
)

// callTimeout is the expiration property of every call, in ms, as kombu writes it for oslo's default 60 s timeout.
const callTimeout = "60000"

// rpcSlice is how long one path is measured before the next one takes over (see runRPC).
const rpcSlice = 250 * time.Millisecond

// rpcDrainTimeout bounds the wait for a slice's calls in flight after the slice ended.
const rpcDrainTimeout = 10 * time.Second

// runRPC measures oslo-style RPC calls on every path at once, interleaved: calls/s, p50 and p99 latency (publish to
// reply received, including the publisher confirm the caller waits for) and the proxy's CPU per call.
//
// Why interleaved. On a small machine the broker, the proxies and this process share the CPUs, and how fast the
// whole machine runs wanders by 10-30% from one few-second window to the next. Measured one path after another,
// in separate windows, RPC latency was that noisy: a second haproxy in amqptrace's slot (--amqptrace haproxy) came
// out at 0.67 to 1.29 of the first round by round, and 0.94 to 1.08 as a median over five rounds, so a 5% latency
// target could not be read. So each path gets its own callers and servers, all connected before measuring, and the
// paths take turns in slices of rpcSlice, the order rotating every cycle: whatever the machine does during a round,
// every path sees a share of it. A path's calls in flight finish (and count) before the next path starts. Each
// round is rounds' share of slices; the usual medians and spread are taken over rounds.
func runRPC(ctx context.Context, e *env, targets []*target, rounds int, done func(round int, path string, m metrics)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rigs := make([]*rpcRig, 0, len(targets))
	defer func() {
		cancel()
		for _, r := range rigs {
			r.gate.shut()
			closeAll(r.conns)
		}
		for _, r := range rigs {
			r.wg.Wait()
		}
		_ = e.reg.cleanup()
	}()
	for _, t := range targets {
		r, err := newRPCRig(ctx, e, t)
		if r != nil {
			rigs = append(rigs, r)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", t.path, err)
		}
	}
	// Warm up every path (connections, queues, the broker's and the proxies' buffers) before measuring.
	for _, r := range rigs {
		if err := r.slice(ctx, e.warmup, false); err != nil {
			return err
		}
	}
	if e.onMeasure != nil {
		e.onMeasure()
	}
	perRound := max(int(e.duration/rpcSlice), 1)
	cycle := 0
	for round := 1; round <= rounds; round++ {
		for range perRound {
			for i := range rigs {
				if err := rigs[(cycle+i)%len(rigs)].slice(ctx, rpcSlice, true); err != nil {
					return err
				}
			}
			cycle++
		}
		for _, r := range rigs {
			m, err := r.take()
			if err != nil {
				return fmt.Errorf("%s: %w", r.t.path, err)
			}
			done(round, r.t.path, m)
		}
	}
	return nil
}

// rpcRig is the rpc workload on one path: its servers and callers, connected, whose calls the gate lets through
// only during the path's slices.
type rpcRig struct {
	t     *target
	gate  *gate
	rec   latencyRecorder
	cpu   time.Duration // the proxy's CPU time over this round's slices
	cpuOK bool
	conns []*amqp.Connection
	wg    sync.WaitGroup
	errc  chan error
}

func newRPCRig(ctx context.Context, e *env, t *target) (*rpcRig, error) {
	r := &rpcRig{t: t, gate: newGate(), errc: make(chan error, rpcMaxErrors), cpuOK: t.proc != nil}
	report := func(err error) {
		if ctx.Err() != nil {
			return
		}
		select {
		case r.errc <- err:
		default: // enough errors to explain the failure are already queued
		}
	}
	dial := func(role string) (*amqp.Connection, error) {
		c, err := dialAMQP(t.url, e.connName(t.path+"-"+role))
		if err != nil {
			return nil, fmt.Errorf("%s connection: %w", role, err)
		}
		r.conns = append(r.conns, c)
		return c, nil
	}
	exchange := e.reg.exchange(e.prefix + "-rpc-" + t.path)
	topic := e.reg.queue(e.prefix + "-topic-" + t.path)
	for i := range rpcServers {
		s, err := newRPCServer(dial, i, exchange, topic)
		if err != nil {
			return r, err
		}
		r.wg.Go(func() { s.serve(ctx, &r.wg, report) })
	}
	for i := range rpcClients {
		c, err := newRPCClient(dial, i, e.reg)
		if err != nil {
			return r, err
		}
		r.wg.Go(func() { c.listen() })
		for range rpcCallersPerClient {
			r.wg.Go(func() {
				if err := c.callLoop(ctx, exchange, topic, r.gate, &r.rec); err != nil {
					report(err)
				}
			})
		}
	}
	return r, nil
}

// slice lets the path's callers call for d, then waits until their calls in flight are back. With measure set,
// the calls, their latencies, the time and the proxy's CPU count towards the current round.
func (r *rpcRig) slice(ctx context.Context, d time.Duration, measure bool) error {
	var cpu0 time.Duration
	if measure {
		if r.cpuOK {
			var err error
			if cpu0, err = procCPU(r.t.proc.pid()); err != nil {
				r.cpuOK = false // no CPU figure for the rest of the run
			}
		}
		r.rec.start()
	}
	r.gate.set(true)
	werr := waitCtx(ctx, d)
	r.gate.set(false)
	drained := r.gate.drain(rpcDrainTimeout)
	if measure {
		r.rec.pause()
		if r.cpuOK {
			if cpu1, err := procCPU(r.t.proc.pid()); err != nil || cpu1 < cpu0 {
				r.cpuOK = false
			} else {
				r.cpu += cpu1 - cpu0
			}
		}
	}
	switch {
	case werr != nil:
		return werr
	case !drained:
		return r.failed(fmt.Errorf("calls still in flight %s after their slice ended", rpcDrainTimeout))
	}
	// A caller or server that failed stops the measurement: its path would be measured with fewer callers.
	select {
	case err := <-r.errc:
		return r.failed(err)
	default:
	}
	return nil
}

// failed explains a failure of the path: the proxy's death when it died, else err and what else was reported.
func (r *rpcRig) failed(err error) error {
	errs := []error{err}
	for {
		select {
		case e := <-r.errc:
			errs = append(errs, e)
			continue
		default:
		}
		break
	}
	return workloadErr(r.t, errs)
}

// take returns the round's metrics and starts the next round.
func (r *rpcRig) take() (metrics, error) {
	calls, samples, active := r.rec.take()
	cpu, cpuOK := r.cpu, r.cpuOK
	r.cpu = 0
	if calls == 0 {
		return nil, errors.New("no call completed in the measurement window")
	}
	m := metrics{"calls_per_s": float64(calls) / active.Seconds()}
	// Zero CPU means the process watched is not the one forwarding (see cpuMeter.perUnit).
	if cpuOK && cpu > 0 {
		m["cpu_us_per_call"] = float64(cpu) / float64(time.Microsecond) / float64(calls)
	}
	slices.Sort(samples)
	m["p50_ms"] = percentile(samples, 0.50)
	m["p99_ms"] = percentile(samples, 0.99)
	return m, nil
}

// gate lets a path's calls start only during its slices, and counts the calls in flight so that the next path
// starts only once they are back.
type gate struct {
	mu       sync.Mutex
	cond     sync.Cond
	open     bool
	shutdown bool
	expired  bool // a drain's deadline passed
	inflight int
}

func newGate() *gate {
	g := &gate{}
	g.cond.L = &g.mu
	return g
}

// enter waits until the gate is open and counts a call in flight; false once the gate is shut for good.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for !g.open && !g.shutdown {
		g.cond.Wait()
	}
	if g.shutdown {
		return false
	}
	g.inflight++
	return true
}

// leave counts a call back.
func (g *gate) leave() {
	g.mu.Lock()
	g.inflight--
	if g.inflight == 0 {
		g.cond.Broadcast()
	}
	g.mu.Unlock()
}

func (g *gate) set(open bool) {
	g.mu.Lock()
	g.open = open
	g.cond.Broadcast()
	g.mu.Unlock()
}

// drain waits until no call is in flight, for at most timeout, and reports whether that happened.
func (g *gate) drain(timeout time.Duration) bool {
	t := time.AfterFunc(timeout, func() {
		g.mu.Lock()
		g.expired = true
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer t.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expired = false
	for g.inflight > 0 && !g.expired && !g.shutdown {
		g.cond.Wait()
	}
	return g.inflight == 0
}

// shut opens nothing again: waiting callers return.
func (g *gate) shut() {
	g.mu.Lock()
	g.shutdown = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// percentile returns the q-quantile of sorted samples in milliseconds (nearest rank).
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / float64(time.Millisecond)
}

// latencyRecorder counts the calls that finish while it is on and keeps their latencies (bounded), over the
// slices of one round.
type latencyRecorder struct {
	mu      sync.Mutex
	on      bool
	t0      time.Time
	active  time.Duration
	calls   int64
	samples []time.Duration
}

func (r *latencyRecorder) start() {
	r.mu.Lock()
	r.on, r.t0 = true, time.Now()
	r.mu.Unlock()
}

func (r *latencyRecorder) pause() {
	r.mu.Lock()
	if r.on {
		r.active += time.Since(r.t0)
		r.on = false
	}
	r.mu.Unlock()
}

// take returns the round's calls, latencies and time on, and resets them.
func (r *latencyRecorder) take() (int64, []time.Duration, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls, samples, active := r.calls, r.samples, r.active
	r.calls, r.samples, r.active = 0, nil, 0
	return calls, samples, active
}

func (r *latencyRecorder) add(d time.Duration) {
	r.mu.Lock()
	if r.on {
		r.calls++
		if len(r.samples) < rpcMaxSamples {
			r.samples = append(r.samples, d)
		}
	}
	r.mu.Unlock()
}

// rpcServer is one oslo RPC server: a listener connection consuming the topic queue and a sender connection for
// replies (oslo uses separate connections for reading and writing).
type rpcServer struct {
	deliveries <-chan amqp.Delivery
	sender     *amqp.Channel
}

func newRPCServer(dial func(string) (*amqp.Connection, error), i int, exchange, topic string) (*rpcServer, error) {
	lc, err := dial(fmt.Sprintf("rpc-server-%d-listener", i))
	if err != nil {
		return nil, err
	}
	ch, err := lc.Channel()
	if err != nil {
		return nil, err
	}
	// The declarations oslo's listener makes: the control exchange (topic), the topic queue and its binding.
	if err := ch.ExchangeDeclare(exchange, "topic", false, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("declare exchange %s: %w", exchange, err)
	}
	if _, err := ch.QueueDeclare(topic, false, false, false, false, queueArgs()); err != nil {
		return nil, fmt.Errorf("declare queue %s: %w", topic, err)
	}
	if err := ch.QueueBind(topic, topic, exchange, false, nil); err != nil {
		return nil, fmt.Errorf("bind %s: %w", topic, err)
	}
	d, err := ch.Consume(topic, "", false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", topic, err)
	}
	sc, err := dial(fmt.Sprintf("rpc-server-%d-sender", i))
	if err != nil {
		return nil, err
	}
	sender, err := confirmChannel(sc)
	if err != nil {
		return nil, err
	}
	return &rpcServer{deliveries: d, sender: sender}, nil
}

// serve handles requests until the listener connection closes. Handlers run concurrently (bounded) and are joined
// through wg.
func (s *rpcServer) serve(ctx context.Context, wg *sync.WaitGroup, report func(error)) {
	sem := make(chan struct{}, rpcServerConcurrency)
	for d := range s.deliveries {
		// oslo's RPC servers ack on receipt, before dispatching.
		_ = d.Ack(false)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue // drain until the connection closes
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.handle(ctx, d.Body); err != nil {
				report(err)
			}
		})
	}
}

func (s *rpcServer) handle(ctx context.Context, body []byte) error {
	req, err := parseOslo(body)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if req.MsgID == "" || !strings.HasPrefix(req.ReplyQ, "reply_") {
		return errors.New("server: request without _msg_id or _reply_q")
	}
	reply, err := osloReply(map[string]any{"method": req.Method, "ok": true}, req.MsgID)
	if err != nil {
		return err
	}
	// Replies go to the default exchange, routing key = _reply_q, mandatory (oslo's direct_send).
	dc, err := s.sender.PublishWithDeferredConfirmWithContext(ctx, "", req.ReplyQ, true, false, osloPublishing(reply, ""))
	if err != nil {
		return fmt.Errorf("server: publish reply: %w", err)
	}
	return waitConfirm(ctx, dc)
}

// osloPublishing returns the properties oslo.messaging (kombu) sets on every message.
func osloPublishing(body []byte, expiration string) amqp.Publishing {
	return amqp.Publishing{
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		Headers:         amqp.Table{},
		DeliveryMode:    amqp.Persistent,
		Priority:        0,
		Expiration:      expiration,
		Body:            body,
	}
}

// rpcClient is one caller process: a sender connection (confirm mode, shared by its callers) and a reply listener
// consuming the process's reply_<hex> queue.
type rpcClient struct {
	sender  *amqp.Channel
	replies <-chan amqp.Delivery
	replyQ  string

	mu      sync.Mutex
	pending map[string]chan struct{} // _msg_id -> the waiting caller
}

func newRPCClient(dial func(string) (*amqp.Connection, error), i int, reg *registry) (*rpcClient, error) {
	rc, err := dial(fmt.Sprintf("rpc-client-%d-reply", i))
	if err != nil {
		return nil, err
	}
	replyQ := reg.queue("reply_" + randHex(16))
	replies, err := declareAndConsume(rc, replyQ, 0)
	if err != nil {
		return nil, err
	}
	sc, err := dial(fmt.Sprintf("rpc-client-%d-sender", i))
	if err != nil {
		return nil, err
	}
	sender, err := confirmChannel(sc)
	if err != nil {
		return nil, err
	}
	return &rpcClient{sender: sender, replies: replies, replyQ: replyQ, pending: map[string]chan struct{}{}}, nil
}

// listen routes replies to waiting callers until the reply connection closes.
func (c *rpcClient) listen() {
	for d := range c.replies {
		_ = d.Ack(false) // reply listeners ack on receipt
		m, err := parseOslo(d.Body)
		if err != nil || !m.Ending {
			continue
		}
		c.mu.Lock()
		done := c.pending[m.MsgID]
		delete(c.pending, m.MsgID)
		c.mu.Unlock()
		if done != nil {
			done <- struct{}{} // buffered, one per call
		}
	}
}

// callLoop makes calls one after another, each once the gate lets it, until ctx ends.
func (c *rpcClient) callLoop(ctx context.Context, exchange, topic string, g *gate, rec *latencyRecorder) error {
	done := make(chan struct{}, 1)
	args := map[string]any{"host": "bench-host", "payload": strings.Repeat("a", rpcArgBytes)}
	for ctx.Err() == nil {
		msgID := randHex(16)
		body, err := osloCall("bench_echo", args, msgID, c.replyQ, requestID())
		if err != nil {
			return err
		}
		if !g.enter() {
			return nil
		}
		err = c.call(ctx, exchange, topic, msgID, body, done, rec)
		g.leave()
		if err != nil {
			return err
		}
	}
	return nil
}

// call publishes one call and waits for its confirm and its reply.
func (c *rpcClient) call(ctx context.Context, exchange, topic, msgID string, body []byte, done chan struct{}, rec *latencyRecorder) error {
	c.mu.Lock()
	c.pending[msgID] = done
	c.mu.Unlock()
	start := time.Now()
	dc, err := c.sender.PublishWithDeferredConfirmWithContext(ctx, exchange, topic, false, false, osloPublishing(body, callTimeout))
	if err != nil {
		return fmt.Errorf("caller: publish: %w", err)
	}
	if err := waitConfirm(ctx, dc); err != nil {
		return fmt.Errorf("caller: confirm: %w", err)
	}
	select {
	case <-done:
		rec.add(time.Since(start))
	case <-ctx.Done():
	}
	return nil
}
