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

// runRPC measures oslo-style RPC calls: calls/s, p50 and p99 latency (publish to reply received, including the
// publisher confirm the caller waits for), and the proxy's CPU per call.
func runRPC(ctx context.Context, e *env, t *target) (metrics, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		conns []*amqp.Connection
		wg    sync.WaitGroup
	)
	defer func() { cancel(); closeAll(conns); wg.Wait(); _ = e.reg.cleanup() }()
	errc := make(chan error, rpcMaxErrors)
	report := func(err error) {
		if ctx.Err() != nil {
			return
		}
		select {
		case errc <- err:
		default: // enough errors to explain the failure are already queued
		}
	}
	dial := func(role string) (*amqp.Connection, error) {
		c, err := dialAMQP(t.url, e.connName(role))
		if err != nil {
			return nil, fmt.Errorf("%s connection: %w", role, err)
		}
		conns = append(conns, c)
		return c, nil
	}

	exchange := e.reg.exchange(e.prefix + "-rpc")
	topic := e.reg.queue(e.prefix + "-topic")
	for i := range rpcServers {
		s, err := newRPCServer(dial, i, exchange, topic)
		if err != nil {
			return nil, err
		}
		wg.Go(func() { s.serve(ctx, &wg, report) })
	}
	rec := &latencyRecorder{}
	for i := range rpcClients {
		c, err := newRPCClient(dial, i, e.reg)
		if err != nil {
			return nil, err
		}
		wg.Go(func() { c.listen() })
		for range rpcCallersPerClient {
			wg.Go(func() {
				if err := c.callLoop(ctx, exchange, topic, rec); err != nil {
					report(err)
				}
			})
		}
	}

	cpu, err := e.startWindow(ctx, t)
	if err != nil {
		return nil, err
	}
	rec.start()
	if err := waitCtx(ctx, e.duration); err != nil {
		return nil, err
	}
	calls, samples, elapsed := rec.stop()
	m := metrics{"calls_per_s": float64(calls) / elapsed.Seconds()}
	if us, ok := cpu.perUnit(float64(calls)); ok {
		m["cpu_us_per_call"] = us
	}
	if len(samples) > 0 {
		slices.Sort(samples)
		m["p50_ms"] = percentile(samples, 0.50)
		m["p99_ms"] = percentile(samples, 0.99)
	}
	if err := stopWorkload(t, cancel, &conns, &wg, errc); err != nil {
		return nil, err
	}
	if calls == 0 {
		return nil, errors.New("no call completed in the measurement window")
	}
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

// latencyRecorder counts calls finished inside the measurement window and keeps their latencies (bounded).
type latencyRecorder struct {
	mu      sync.Mutex
	on      bool
	t0      time.Time
	calls   int64
	samples []time.Duration
}

func (r *latencyRecorder) start() {
	r.mu.Lock()
	r.on, r.t0 = true, time.Now()
	r.mu.Unlock()
}

func (r *latencyRecorder) stop() (int64, []time.Duration, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.calls, r.samples, time.Since(r.t0)
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

// callLoop makes calls one after another until ctx ends.
func (c *rpcClient) callLoop(ctx context.Context, exchange, topic string, rec *latencyRecorder) error {
	done := make(chan struct{}, 1)
	args := map[string]any{"host": "bench-host", "payload": strings.Repeat("a", rpcArgBytes)}
	for ctx.Err() == nil {
		msgID := randHex(16)
		body, err := osloCall("bench_echo", args, msgID, c.replyQ, requestID())
		if err != nil {
			return err
		}
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
			return nil
		}
	}
	return nil
}
