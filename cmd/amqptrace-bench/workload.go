package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// target is one path the workloads run over.
type target struct {
	path string      // pathDirect, pathHAProxy or pathAmqptrace
	url  string      // AMQP URL the clients dial (the broker or the proxy)
	proc *proxyProc  // nil on the direct path
	tls  *tls.Config // the clients' TLS config with --tls (the proxies' paths), else nil
}

const (
	pathDirect    = "direct"
	pathHAProxy   = "haproxy"
	pathAmqptrace = "amqptrace"
)

// paths is the fixed visiting order within a round.
var paths = []string{pathDirect, pathHAProxy, pathAmqptrace}

// env is what every workload may use; it is shared by all rounds.
type env struct {
	reg      *registry
	prefix   string // amqptrace-bench-<pid>-<random>: names of everything this run declares
	duration time.Duration
	warmup   time.Duration
	// idleConns is how many idle connections to open; it may have been lowered to what the broker can take.
	idleConns int
	profile   profile
	log       *slog.Logger
	// onMeasure, if set, is called when a measurement window starts (tests use it to break things mid-window).
	onMeasure func()
}

// startWindow waits out the warm-up and starts the measurement window: it tells onMeasure and starts metering the
// proxy's CPU. The caller takes its own counters right after.
func (e *env) startWindow(ctx context.Context, t *target) (*cpuMeter, error) {
	if err := waitCtx(ctx, e.warmup); err != nil {
		return nil, err
	}
	if e.onMeasure != nil {
		e.onMeasure()
	}
	return startCPU(t), nil
}

// connName returns an oslo-style connection_name "<program>:<pid>:<role>".
func (e *env) connName(role string) string {
	return fmt.Sprintf("amqptrace-bench:%d:%s", os.Getpid(), role)
}

// metrics is one round's result of one workload on one path: metric key -> value. A missing key is n/a.
type metrics map[string]float64

type workload struct {
	name string
	run  func(ctx context.Context, e *env, t *target) (metrics, error)
}

// workloads run on one path at a time, round by round. throughput and rpc are not among them: they run on all
// paths at once, interleaved, after the rounds (see slicedWorkloads).
var workloads = []workload{
	// idle runs first on each fresh proxy process; see doc.go.
	{"idle", runIdle},
	{"large", runLarge},
}

// cpuMeter measures a proxy's CPU time over a window; on the direct path it measures nothing.
type cpuMeter struct {
	pid   int
	start time.Duration
	err   error
}

func startCPU(t *target) *cpuMeter {
	if t.proc == nil {
		return &cpuMeter{}
	}
	m := &cpuMeter{pid: t.proc.pid()}
	m.start, m.err = procCPU(m.pid)
	return m
}

// perUnit returns the CPU used since start divided by units, in microseconds, or ok=false when there is no proxy,
// no unit or /proc could not be read. No CPU at all is no figure either: the process we watch forwarded nothing
// itself, so it is a launcher (say, perf record wrapping the proxy), and a 0 would pass every CPU target.
func (m *cpuMeter) perUnit(units float64) (float64, bool) {
	if m.pid == 0 || m.err != nil || units <= 0 {
		return 0, false
	}
	end, err := procCPU(m.pid)
	if err != nil || end <= m.start {
		return 0, false
	}
	return float64(end-m.start) / float64(time.Microsecond) / units, true
}

// workloadErr explains a failed workload. When the proxy died, that is the reason, not the client errors it caused;
// a killed proxy may not be reaped yet when its clients see their connections drop, so give it a moment.
func workloadErr(t *target, errs []error) error {
	if len(errs) > 0 && t.proc != nil {
		timer := time.NewTimer(2 * time.Second)
		select {
		case <-t.proc.done:
		case <-timer.C:
		}
		timer.Stop()
	}
	if err := checkProxy(t); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// checkProxy turns a proxy that died during a workload into an error, with its last output.
func checkProxy(t *target) error {
	if t.proc == nil {
		return nil
	}
	if ok, werr := t.proc.exited(); ok {
		return fmt.Errorf("%w: %s (%v); its output:\n%s", errProxyDied, t.proc.kind, werr, t.proc.output.String())
	}
	return nil
}

// stopWorkload ends a measured workload: it stops the workload's goroutines, closes its connections, waits for the
// goroutines and returns what workloadErr makes of the errors they reported. conns is cleared so that the
// workload's deferred cleanup does not close the connections a second time.
func stopWorkload(t *target, cancel context.CancelFunc, conns *[]*amqp.Connection, wg *sync.WaitGroup, errc chan error) error {
	cancel()
	closeAll(*conns)
	*conns = nil
	wg.Wait()
	close(errc)
	return workloadErr(t, drain(errc))
}
