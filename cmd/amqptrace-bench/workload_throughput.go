package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
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
	tputBacklog   = 2048
	tputPrefetch  = 512
	tputAckEvery  = 64 // consumers ack with multiple=true every this many deliveries
	tputMaxErrors = 2 * tputPairs
)

// runThroughput measures end-to-end msgs/s of 1 KiB messages with confirms and acks, and the proxy's CPU per message.
func runThroughput(ctx context.Context, e *env, t *target) (metrics, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var conns []*amqp.Connection
	var wg sync.WaitGroup
	// On every return: stop publishers, close connections (which ends the consumers), join, delete the queues.
	defer func() { cancel(); closeAll(conns); wg.Wait(); _ = e.reg.cleanup() }()

	body := bytes.Repeat([]byte{'x'}, tputBodySize)
	var consumed atomic.Int64
	errc := make(chan error, tputMaxErrors)
	for i := range tputPairs {
		q := e.reg.queue(fmt.Sprintf("%s-tput-%d", e.prefix, i))
		cc, err := dialAMQP(t.url, e.connName(fmt.Sprintf("tput-consumer-%d", i)))
		if err != nil {
			return nil, fmt.Errorf("consumer connection: %w", err)
		}
		conns = append(conns, cc)
		deliveries, err := declareAndConsume(cc, q, tputPrefetch)
		if err != nil {
			return nil, err
		}
		pc, err := dialAMQP(t.url, e.connName(fmt.Sprintf("tput-publisher-%d", i)))
		if err != nil {
			return nil, fmt.Errorf("publisher connection: %w", err)
		}
		conns = append(conns, pc)
		pch, err := confirmChannel(pc)
		if err != nil {
			return nil, err
		}
		backlog := make(chan struct{}, tputBacklog)
		wg.Go(func() { consumeCounting(deliveries, backlog, &consumed, tputAckEvery, nil) })
		wg.Go(func() {
			if err := publishWindowed(ctx, pch, q, body, backlog, tputConfirmWindow); err != nil && ctx.Err() == nil {
				errc <- err
			}
		})
	}

	cpu, err := e.startWindow(ctx, t)
	if err != nil {
		return nil, err
	}
	c0, t0 := consumed.Load(), time.Now()
	if err := waitCtx(ctx, e.duration); err != nil {
		return nil, err
	}
	n, elapsed := float64(consumed.Load()-c0), time.Since(t0)
	m := metrics{"msgs_per_s": n / elapsed.Seconds()}
	if us, ok := cpu.perUnit(n); ok {
		m["cpu_us_per_msg"] = us
	}
	if err := stopWorkload(t, cancel, &conns, &wg, errc); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("no message was consumed in the measurement window")
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
// multiple=true, and gives one backlog token back per delivery. If tick is not nil it gets a non-blocking signal per
// delivery.
func consumeCounting(deliveries <-chan amqp.Delivery, backlog chan struct{}, n *atomic.Int64, ackEvery int, tick chan<- struct{}) {
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
		if tick != nil {
			select {
			case tick <- struct{}{}:
			default:
			}
		}
	}
}

// publishWindowed publishes body to q on the default exchange until ctx ends, with at most window unconfirmed
// publishes and at most cap(backlog) unconsumed messages.
func publishWindowed(ctx context.Context, ch *amqp.Channel, q string, body []byte, backlog chan struct{}, window int) error {
	inflight := make(chan *amqp.DeferredConfirmation, window)
	for {
		select {
		case backlog <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		if len(inflight) == cap(inflight) {
			if err := waitConfirm(ctx, <-inflight); err != nil {
				return err
			}
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
			amqp.Publishing{ContentType: "application/octet-stream", Body: body})
		if err != nil {
			return fmt.Errorf("publish to %s: %w", q, err)
		}
		inflight <- dc
	}
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
