package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	tputPairs    = 4    // publisher connections, each with its own queue and consumer connection
	tputBodySize = 1024 // bytes per message
	// tputConfirmWindow is how many publishes may wait for their confirm at once: publishing is pipelined, and the
	// publisher blocks on the oldest confirm when the window is full.
	tputConfirmWindow = 256
	// tputBacklog bounds published-but-not-consumed messages per pair, so a proxy that slows consumers cannot pile
	// up a queue in the broker (and a memory alarm) instead of showing a lower rate.
	tputBacklog  = 2048
	tputAckEvery = 64 // consumers ack with multiple=true every this many deliveries
)

// tputSlice is how long one path's throughput is measured before the next path takes over (see interleave), and
// tputSettle how long its publishers run before that, unmeasured: a slice starts with empty queues and idle
// consumers, and the measured window is meant to see the flow, not its start. Its end (the drain of what is in
// flight) is not measured either.
const (
	tputSlice  = 500 * time.Millisecond
	tputSettle = 100 * time.Millisecond
)

// tputRig is the throughput workload on one path: 1 KiB messages with publisher confirms and manual acks, measured
// as end-to-end msgs/s (counted at the consumers) and the proxy's CPU per message. A message is work in flight
// from its publish to its delivery, so a slice ends only when every message it published has been consumed.
type tputRig struct {
	rigBase
	consumed atomic.Int64
	n        int64         // messages consumed in the round's measured windows
	active   time.Duration // length of those windows
}

func newTputRig(ctx context.Context, e *env, t *target) (*tputRig, error) {
	r := &tputRig{rigBase: newRigBase(ctx, e, t)}
	body := bytes.Repeat([]byte{'x'}, tputBodySize)
	for i := range tputPairs {
		q := e.reg.queue(fmt.Sprintf("%s-tput-%s-%d", e.prefix, t.path, i))
		cc, err := r.dial(fmt.Sprintf("tput-consumer-%d", i))
		if err != nil {
			return r, err
		}
		deliveries, err := declareAndConsume(cc, q, e.profile.tputPrefetch)
		if err != nil {
			return r, err
		}
		pc, err := r.dial(fmt.Sprintf("tput-publisher-%d", i))
		if err != nil {
			return r, err
		}
		pch, err := confirmChannel(pc)
		if err != nil {
			return r, err
		}
		backlog := make(chan struct{}, tputBacklog)
		r.wg.Go(func() { consumeCounting(deliveries, backlog, &r.consumed, tputAckEvery, r.gate.leave) })
		r.wg.Go(func() {
			if err := publishWindowed(ctx, pch, q, body, backlog, tputConfirmWindow, r.gate); err != nil {
				r.report(err)
			}
		})
	}
	return r, nil
}

// slice: a measured slice counts the messages consumed from tputSettle after its start to its end.
func (r *tputRig) slice(ctx context.Context, d time.Duration, measure bool) error {
	r.gate.set(true)
	err := waitCtx(ctx, tputSettle)
	if err == nil {
		if !measure {
			return r.endSlice(waitCtx(ctx, d))
		}
		cpu0, c0, t0 := r.cpuMark(), r.consumed.Load(), time.Now()
		err = waitCtx(ctx, d)
		r.n += r.consumed.Load() - c0
		r.active += time.Since(t0)
		r.cpuAdd(cpu0)
	}
	return r.endSlice(err)
}

func (r *tputRig) take() (metrics, error) {
	n, active := r.n, r.active
	r.n, r.active = 0, 0
	cpu, cpuOK := r.takeCPU(n)
	if n == 0 {
		return nil, errors.New("no message was consumed in the measurement window")
	}
	m := metrics{"msgs_per_s": float64(n) / active.Seconds()}
	if cpuOK {
		m["cpu_us_per_msg"] = cpu
	}
	return m, nil
}

// declareAndConsume declares q (with the safety expiry) on a new channel of c and starts a manual-ack consumer.
func declareAndConsume(c *amqp.Connection, q string, prefetch int) (<-chan amqp.Delivery, error) {
	ch, err := c.Channel()
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	if _, err := ch.QueueDeclare(q, false, false, false, false, queueArgs()); err != nil {
		return nil, fmt.Errorf("declare queue %s: %w", q, err)
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	d, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", q, err)
	}
	return d, nil
}

// confirmChannel opens a channel in publisher-confirm mode, as oslo.messaging's senders use.
func confirmChannel(c *amqp.Connection) (*amqp.Channel, error) {
	ch, err := c.Channel()
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("confirm.select: %w", err)
	}
	return ch, nil
}

// consumeCounting counts deliveries until the channel closes (its connection is closed), acking every ackEvery with
// multiple=true, and gives one backlog token back per delivery. If onDelivery is not nil it is called per delivery.
func consumeCounting(deliveries <-chan amqp.Delivery, backlog chan struct{}, n *atomic.Int64, ackEvery int, onDelivery func()) {
	k := 0
	for d := range deliveries {
		k++
		if k%ackEvery == 0 {
			_ = d.Ack(true)
		}
		n.Add(1)
		select {
		case <-backlog:
		default:
		}
		if onDelivery != nil {
			onDelivery()
		}
	}
}

// publishWindowed publishes body to q on the default exchange until ctx ends, with at most window unconfirmed
// publishes and at most cap(backlog) unconsumed messages. With a gate, each publish waits for it to be open and
// counts as work in flight, which the consumer's leave ends; publishing stops when the gate is shut.
func publishWindowed(ctx context.Context, ch *amqp.Channel, q string, body []byte, backlog chan struct{}, window int, g *gate) error {
	inflight := make(chan *amqp.DeferredConfirmation, window)
	for {
		if g != nil && !g.enter() {
			return nil
		}
		dc, err := publishOne(ctx, ch, q, body, backlog, inflight)
		if err != nil || dc == nil {
			if g != nil {
				g.leave() // nothing was published: no delivery will count it back
			}
			return err
		}
		inflight <- dc
	}
}

// publishOne publishes body once there is room in the backlog and the confirm window. It returns nil, nil when ctx
// ended first.
func publishOne(ctx context.Context, ch *amqp.Channel, q string, body []byte, backlog chan struct{}, inflight chan *amqp.DeferredConfirmation) (*amqp.DeferredConfirmation, error) {
	select {
	case backlog <- struct{}{}:
	case <-ctx.Done():
		return nil, nil
	}
	if len(inflight) == cap(inflight) {
		if err := waitConfirm(ctx, <-inflight); err != nil {
			return nil, nilOnDone(ctx, err)
		}
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
		amqp.Publishing{ContentType: "application/octet-stream", Body: body})
	if err != nil {
		return nil, nilOnDone(ctx, fmt.Errorf("publish to %s: %w", q, err))
	}
	return dc, nil
}

// nilOnDone drops an error that ctx's end caused.
func nilOnDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func waitConfirm(ctx context.Context, dc *amqp.DeferredConfirmation) error {
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("broker nacked a publish (or its channel closed)")
	}
	return nil
}

func drain(errc <-chan error) []error {
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errs
}
