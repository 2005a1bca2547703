package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// idleDialers is how many connections are opened at once: enough to open thousands in seconds, few enough not to
// make the broker's acceptor the thing we measure.
const idleDialers = 16

// runIdle opens e.idleConns connections through the proxy, each with channel 1 open (oslo.messaging always opens
// it), and divides the proxy's VmRSS growth by the number opened. The direct path has no proxy: n/a.
//
// Every connection's handshake and Channel.Open went through the proxy before its dial returned, so when the last
// one returns, the proxy holds all of them; nothing needs to settle before the second reading.
func runIdle(ctx context.Context, e *env, t *target) (metrics, error) {
	if t.proc == nil || e.idleConns <= 0 {
		return metrics{}, nil
	}
	pid := t.proc.pid()
	rss0, err := procRSS(pid)
	if err != nil {
		return nil, err
	}
	conns := make([]*amqp.Connection, e.idleConns)
	defer func() { closeAll(conns) }()
	var (
		next, opened atomic.Int64
		firstErr     error
		errOnce      sync.Once
		failed       atomic.Bool
		wg           sync.WaitGroup
	)
	for range idleDialers {
		wg.Go(func() {
			for ctx.Err() == nil && !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(conns) {
					return
				}
				c, err := dialAMQP(t.url, e.connName(fmt.Sprintf("idle-%d", i)), t.tls)
				if err == nil {
					if _, cerr := c.Channel(); cerr != nil {
						_ = c.Close()
						c, err = nil, cerr
					}
				}
				if err != nil {
					// Stop at the first failure: past the broker's (or the proxy's) limit every further dial would
					// fail too, each after a timeout.
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
				conns[i] = c
				opened.Add(1)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkProxy(t); err != nil {
		return nil, err
	}
	n := opened.Load()
	if n == 0 {
		return nil, fmt.Errorf("could not open any idle connection through %s: %w", t.path, firstErr)
	}
	rss1, err := procRSS(pid)
	if err != nil {
		return nil, err
	}
	m := metrics{
		"kib_per_conn": float64(rss1-rss0) / 1024 / float64(n),
		"conns_opened": float64(n),
	}
	if firstErr != nil {
		e.log.Warn("idle: stopped opening connections at the first failure; the figure is per connection opened",
			"path", t.path, "opened", n, "wanted", e.idleConns, "err", firstErr)
	}
	return m, nil
}
