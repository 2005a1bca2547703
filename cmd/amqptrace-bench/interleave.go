package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Why some workloads run interleaved. On a small machine the broker, the proxies and this process share the CPUs,
// and how fast the whole machine runs wanders by 10-30% from one few-second window to the next. Measured one path
// after another, in separate windows, the paths could not be told apart at the precision the targets ask for: a
// second haproxy in amqptrace's slot (--amqptrace haproxy) came out at 0.67 to 1.29 of the first in RPC latency,
// round by round, and at 0.80 to 1.05 in end-to-end throughput (0.89 as the median of five rounds: a MISS against
// itself). So these workloads run after the rounds, on all paths at once: each path gets its own clients,
// all connected before measuring, and the paths take turns in short slices whose order rotates every cycle, so
// that whatever the machine does during a round, every path sees a share of it. A path's work in flight finishes
// before the next path starts. Each round is its share of slices; the usual medians and spread are taken over
// rounds.

// slicedWorkload is a workload that runs interleaved.
type slicedWorkload struct {
	name string
	// slice is how long one path is measured before the next one takes over.
	slice time.Duration
	// newRig connects the workload's clients on one path. It may return a rig together with an error: the rig
	// then holds what was connected before the failure, for the caller to close.
	newRig func(ctx context.Context, e *env, t *target) (rig, error)
}

var slicedWorkloads = []slicedWorkload{
	{"throughput", tputSlice, func(ctx context.Context, e *env, t *target) (rig, error) { return newTputRig(ctx, e, t) }},
	{"rpc", rpcSlice, func(ctx context.Context, e *env, t *target) (rig, error) { return newRPCRig(ctx, e, t) }},
}

// rig is a sliced workload on one path.
type rig interface {
	base() *rigBase
	// slice lets the path's clients work for d, then waits until their work in flight is done. With measure set,
	// the work, the time and the proxy's CPU count towards the current round.
	slice(ctx context.Context, d time.Duration, measure bool) error
	// take returns the round's metrics and starts the next round.
	take() (metrics, error)
}

// interleave runs w on every target at once, the paths taking turns in slices of w.slice (see the comment at the
// top of this file), and calls done with each path's metrics at the end of each round.
func interleave(ctx context.Context, e *env, w slicedWorkload, targets []*target, rounds int, done func(round int, path string, m metrics)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rigs := make([]rig, 0, len(targets))
	defer func() {
		cancel()
		for _, r := range rigs {
			r.base().shut()
		}
		for _, r := range rigs {
			r.base().wg.Wait()
		}
		_ = e.reg.cleanup()
	}()
	for _, t := range targets {
		r, err := w.newRig(ctx, e, t)
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
	perRound := max(int(e.duration/w.slice), 1)
	cycle := 0
	for round := 1; round <= rounds; round++ {
		for range perRound {
			for i := range rigs {
				if err := rigs[(cycle+i)%len(rigs)].slice(ctx, w.slice, true); err != nil {
					return err
				}
			}
			cycle++
		}
		for _, r := range rigs {
			m, err := r.take()
			if err != nil {
				return fmt.Errorf("%s: %w", r.base().t.path, err)
			}
			done(round, r.base().t.path, m)
		}
	}
	return nil
}

// sliceDrainTimeout bounds the wait for a slice's work in flight after the slice ended.
const sliceDrainTimeout = 10 * time.Second

// maxRigErrors bounds the errors a rig keeps to explain a failure.
const maxRigErrors = 64

// rigBase is what every rig has: its path, its gate, its connections and goroutines, the errors they reported and
// the proxy's CPU time over the current round's measured windows.
type rigBase struct {
	t     *target
	gate  *gate
	cpu   time.Duration
	cpuOK bool // false on the direct path, and for the rest of the run once /proc could not be read
	conns []*amqp.Connection
	wg    sync.WaitGroup
	errc  chan error
	ctx   context.Context
	e     *env
}

func newRigBase(ctx context.Context, e *env, t *target) rigBase {
	return rigBase{t: t, gate: newGate(), errc: make(chan error, maxRigErrors), cpuOK: t.proc != nil, ctx: ctx, e: e}
}

func (b *rigBase) base() *rigBase { return b }

// report keeps a client's error for the end of the slice; errors after the workload ended are its own doing.
func (b *rigBase) report(err error) {
	if b.ctx.Err() != nil {
		return
	}
	select {
	case b.errc <- err:
	default: // enough errors to explain the failure are already queued
	}
}

// dial connects a client of the path, named after the path and its role, and keeps the connection for shut.
func (b *rigBase) dial(role string) (*amqp.Connection, error) {
	c, err := dialAMQP(b.t.url, b.e.connName(b.t.path+"-"+role), b.t.tls)
	if err != nil {
		return nil, fmt.Errorf("%s connection: %w", role, err)
	}
	b.conns = append(b.conns, c)
	return c, nil
}

// cpuMark reads the proxy's CPU time at the start of a measured window.
func (b *rigBase) cpuMark() time.Duration {
	if !b.cpuOK {
		return 0
	}
	c, err := procCPU(b.t.proc.pid())
	if err != nil {
		b.cpuOK = false // no CPU figure for the rest of the run
	}
	return c
}

// cpuAdd adds the proxy's CPU time since mark to the round.
func (b *rigBase) cpuAdd(mark time.Duration) {
	if !b.cpuOK {
		return
	}
	if c, err := procCPU(b.t.proc.pid()); err != nil || c < mark {
		b.cpuOK = false
	} else {
		b.cpu += c - mark
	}
}

// takeCPU returns the round's CPU time per unit in microseconds and starts the next round. Zero CPU is no figure:
// the process watched is not the one forwarding (see cpuMeter.perUnit).
func (b *rigBase) takeCPU(units int64) (float64, bool) {
	cpu := b.cpu
	b.cpu = 0
	if !b.cpuOK || cpu <= 0 || units <= 0 {
		return 0, false
	}
	return float64(cpu) / float64(time.Microsecond) / float64(units), true
}

// endSlice closes the gate, waits for the work in flight and says whether the slice went wrong: the wait for the
// slice ended early (werr), its work did not drain, or a client reported an error. A failed client stops the
// measurement: its path would be measured with fewer clients.
func (b *rigBase) endSlice(werr error) error {
	b.gate.set(false)
	drained := b.gate.drain(sliceDrainTimeout)
	switch {
	case werr != nil:
		return werr
	case !drained:
		return b.failed(fmt.Errorf("work still in flight %s after its slice ended", sliceDrainTimeout))
	}
	select {
	case err := <-b.errc:
		return b.failed(err)
	default:
	}
	return nil
}

// failed explains a failure of the path: the proxy's death when it died, else err and what else was reported.
func (b *rigBase) failed(err error) error {
	errs := []error{err}
	for {
		select {
		case e := <-b.errc:
			errs = append(errs, e)
			continue
		default:
		}
		break
	}
	return workloadErr(b.t, errs)
}

// shut lets every client waiting at the gate go and closes the connections, which ends the consumers.
func (b *rigBase) shut() {
	b.gate.shut()
	closeAll(b.conns)
}

// gate lets a path's clients start work (a call, a publish) only during its slices, and counts the work in flight
// (until the reply, or the delivery, is back) so that the next path starts only once it is done.
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

// enter waits until the gate is open and counts work in flight; false once the gate is shut for good.
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

// leave counts work back.
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

// drain waits until no work is in flight, for at most timeout, and reports whether that happened.
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

// shut opens nothing again: waiting clients return.
func (g *gate) shut() {
	g.mu.Lock()
	g.shutdown = true
	g.cond.Broadcast()
	g.mu.Unlock()
}
