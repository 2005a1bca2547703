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
	rpcServerConcurrency = 16 // handlers per server at once, like oslo's executor pool
	rpcArgBytes          = 256
	// rpcMaxSamples bounds the latency samples kept per round (a 5 s round on loopback makes a few tens of
	// thousands).
	rpcMaxSamples = 1 << 20
)

// callTimeout is the expiration property of every call, in ms, as kombu writes it for oslo's default 60 s timeout.
const callTimeout = "60000"

// rpcSlice is how long one path is measured before the next one takes over (see interleave).
const rpcSlice = 250 * time.Millisecond

// rpcRig is the rpc workload on one path: oslo-style calls, measured as calls/s, p50 and p99 latency (publish to
// reply received, including the publisher confirm the caller waits for) and the proxy's CPU per call. Its servers
// and callers stay connected for the whole run; the gate lets calls start only during the path's slices.
type rpcRig struct {
	rigBase
	rec latencyRecorder
}

func newRPCRig(ctx context.Context, e *env, t *target) (*rpcRig, error) {
	r := &rpcRig{rigBase: newRigBase(ctx, e, t)}
	exchange := e.reg.exchange(e.prefix + "-rpc-" + t.path)
	topic := e.reg.queue(e.prefix + "-topic-" + t.path)
	for i := range rpcServers {
		s, err := newRPCServer(r.dial, i, exchange, topic)
		if err != nil {
			return r, err
		}
		r.wg.Go(func() { s.serve(ctx, &r.wg, r.report) })
	}
	for i := range e.profile.rpcClients {
		c, err := newRPCClient(r.dial, i, e.reg)
		if err != nil {
			return r, err
		}
		r.wg.Go(func() { c.listen() })
		for range e.profile.rpcCallersPerClient {
			r.wg.Go(func() {
				if err := c.callLoop(ctx, exchange, topic, r.gate, &r.rec); err != nil {
					r.report(err)
				}
			})
		}
	}
	return r, nil
}

// slice: a measured slice counts the calls that finish from its start until its calls in flight are back.
func (r *rpcRig) slice(ctx context.Context, d time.Duration, measure bool) error {
	var cpu0 time.Duration
	if measure {
		cpu0 = r.cpuMark()
		r.rec.start()
	}
	r.gate.set(true)
	err := r.endSlice(waitCtx(ctx, d))
	if measure {
		r.rec.pause()
		r.cpuAdd(cpu0)
	}
	return err
}

func (r *rpcRig) take() (metrics, error) {
	calls, samples, active := r.rec.take()
	cpu, cpuOK := r.takeCPU(calls)
	if calls == 0 {
		return nil, errors.New("no call completed in the measurement window")
	}
	m := metrics{"calls_per_s": float64(calls) / active.Seconds()}
	if cpuOK {
		m["cpu_us_per_call"] = cpu
	}
	slices.Sort(samples)
	m["p50_ms"] = percentile(samples, 0.50)
	m["p99_ms"] = percentile(samples, 0.99)
	return m, nil
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
