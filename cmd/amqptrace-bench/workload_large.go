package main

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	largeBodySize = 8 << 20 // 8 MiB: far above frame_max, so every message is ~64 body frames of 128 KiB
	// largeWindow and largeBacklog keep a few messages in flight (pipelined) without letting the broker hold more
	// than largeBacklog × 8 MiB.
	largeWindow  = 2
	largeBacklog = 4
	// largeMaxExtension bounds how long the window is stretched when no message completed in it.
	largeMaxExtension = 30 * time.Second
)

// runLarge measures MB/s (10^6 bytes) of 8 MiB messages from one publisher to one consumer, and the proxy's CPU per
// message.
func runLarge(ctx context.Context, e *env, t *target) (metrics, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		conns []*amqp.Connection
		wg    sync.WaitGroup
	)
	defer func() { cancel(); closeAll(conns); wg.Wait(); _ = e.reg.cleanup() }()

	q := e.reg.queue(e.prefix + "-large")
	cc, err := dialAMQP(t.url, e.connName("large-consumer"), t.tls)
	if err != nil {
		return nil, err
	}
	conns = append(conns, cc)
	deliveries, err := declareAndConsume(cc, q, largeBacklog)
	if err != nil {
		return nil, err
	}
	pc, err := dialAMQP(t.url, e.connName("large-publisher"), t.tls)
	if err != nil {
		return nil, err
	}
	conns = append(conns, pc)
	pch, err := confirmChannel(pc)
	if err != nil {
		return nil, err
	}
	body := bytes.Repeat([]byte{'L'}, largeBodySize)
	backlog := make(chan struct{}, largeBacklog)
	var consumed atomic.Int64
	errc := make(chan error, 1)
	tick := make(chan struct{}, 1)
	wg.Go(func() {
		consumeCounting(deliveries, backlog, &consumed, 1, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
	})
	wg.Go(func() {
		if err := publishWindowed(ctx, pch, q, body, backlog, largeWindow, nil); err != nil {
			errc <- err
		}
	})

	cpu, err := e.startWindow(ctx, t)
	if err != nil {
		return nil, err
	}
	c0, t0 := consumed.Load(), time.Now()
	if err := waitCtx(ctx, e.duration); err != nil {
		return nil, err
	}
	// An 8 MiB message takes tens of milliseconds; with a short --duration on a busy machine the window can end
	// before the first one completes. Then the window is stretched to the first completion, so the figure never comes
	// from an empty window.
	if consumed.Load() == c0 {
		ext, cancelExt := context.WithTimeout(ctx, largeMaxExtension)
		for consumed.Load() == c0 && ext.Err() == nil {
			select {
			case <-tick: // possibly a stale signal from before the window: the loop condition re-checks
			case <-ext.Done():
			}
		}
		cancelExt()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	n, elapsed := float64(consumed.Load()-c0), time.Since(t0)
	m := metrics{"mb_per_s": n * largeBodySize / 1e6 / elapsed.Seconds()}
	if us, ok := cpu.perUnit(n); ok {
		m["cpu_us_per_msg"] = us
	}
	if err := stopWorkload(t, cancel, &conns, &wg, errc); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("no 8 MiB message was consumed in the measurement window")
	}
	return m, nil
}
