package correlate

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Bodies whose parse can take long run on body workers, not in the assembler: the assembler runs on the goroutine
// that forwards the connection's bytes (the event loop serves many connections, so a slow body there would delay
// every socket it serves). Compressed bodies always go (inflating is unbounded in CPU for a small input: a 79-byte
// bzip2 body inflates to 64 MiB), and so do bodies over offloadMin. Small plain bodies, nearly all of a cloud's
// traffic, stay inline, where the parse is a few microseconds and allocates nothing.
//
// Every hand-off is bounded and never waits: a job is refused when the queue is full, when the bytes queued would
// pass workBytes, or when its connection already has workPerConn jobs queued (so one connection cannot take the
// workers from the others). A refused body is not parsed: its event goes on without ids (counted as shed, an
// observation drop); forwarding never notices. A worker's event reaches the correlator after the ones read after
// it; the reorder window (Config.Reorder) puts it back in read order, and inflation is bounded in time (maxInflate)
// so that a worker's delay stays well inside the window.
//
// Inflation also has a CPU budget, over all workers: inflateCPU of inflating per second. A worker is a thread the
// machine's other work (the event loops, the broker itself when it runs beside the proxy) does not get, and a
// client that sends compressed bodies as fast as it can would otherwise keep one busy all the time; past the budget
// a compressed body is shed like a refused one. Plain bodies over offloadMin are not budgeted: their parse is
// linear in their size, which BodyCap bounds.
const (
	offloadMin  = 64 << 10
	workQueue   = 256
	workBytes   = 64 << 20
	workPerConn = 4
	maxInflate  = 25 * time.Millisecond
	inflateCPU  = 100 * time.Millisecond
)

// inflateBudget is a token bucket of inflation time: it fills at inflateCPU per second, up to inflateCPU.
type inflateBudget struct {
	mu   sync.Mutex
	left time.Duration
	at   time.Time
}

// allow says whether an inflation may start at now.
func (b *inflateBudget) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.at.IsZero() {
		b.left = inflateCPU
	} else if d := now.Sub(b.at); d > 0 {
		fill := time.Duration(d.Seconds() * float64(inflateCPU)) // in float: d can be hours
		b.left = min(inflateCPU, b.left+fill)
	}
	b.at = now
	return b.left > 0
}

// spend takes d, an inflation's time, from the budget.
func (b *inflateBudget) spend(d time.Duration) {
	b.mu.Lock()
	b.left -= d
	b.mu.Unlock()
}

// bodyJob is one body to parse: the event it completes and the bytes, owned by the job.
type bodyJob struct {
	ev         *event
	body       []byte // the whole body (nil when truncated)
	head, tail []byte // a truncated body's ends
	truncated  bool
	comp       compression
	key        bodyKey // the publish cache's key, when remember
	remember   bool
	size       int64 // bytes held, for the budget
}

// bodyWorkers run the jobs. They start with the correlator's Run and end with it.
type bodyWorkers struct {
	jobs    chan bodyJob
	bytes   atomic.Int64
	inflate inflateBudget
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newBodyWorkers() *bodyWorkers {
	return &bodyWorkers{jobs: make(chan bodyJob, workQueue), stop: make(chan struct{})}
}

// workers is how many body workers run: half the Ps, at least one. The event loops and the correlator take the
// rest; bodies worth a worker are rare in a cloud's traffic.
func workers() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// start runs the workers for c.
func (w *bodyWorkers) start(c *Correlator) {
	for range workers() {
		w.wg.Add(1)
		go w.run(c)
	}
}

// close stops the workers and waits for them; jobs still queued are dropped with the correlator.
func (w *bodyWorkers) close() {
	close(w.stop)
	w.wg.Wait()
}

// submit hands j to the workers without waiting. false: refused, the caller goes on without the parse.
func (w *bodyWorkers) submit(cn *Conn, j bodyJob) bool {
	if cn.work.Add(1) > workPerConn {
		cn.work.Add(-1)
		return false
	}
	if w.bytes.Add(j.size) > workBytes {
		w.bytes.Add(-j.size)
		cn.work.Add(-1)
		return false
	}
	select {
	case w.jobs <- j:
		return true
	default:
		w.bytes.Add(-j.size)
		cn.work.Add(-1)
		return false
	}
}

func (w *bodyWorkers) run(c *Correlator) {
	defer w.wg.Done()
	p := c.newBodyParser()
	for {
		select {
		case <-w.stop:
			return
		case j := <-w.jobs:
			w.do(c, &p, j)
		}
	}
}

// do parses one job's body into its event and hands the event to the correlator. A panic costs this body's parse
// (counted); the event goes on.
func (w *bodyWorkers) do(c *Correlator, p *bodyParser, j bodyJob) {
	defer func() {
		w.bytes.Add(-j.size)
		j.ev.conn.work.Add(-1)
		c.send(j.ev, 1)
	}()
	defer c.panics.Recover(nil)
	var started time.Time
	if j.comp != compNone {
		if started = time.Now(); !w.inflate.allow(started) {
			c.ctr.bodiesShed.Add(1) // not parsed: the event goes on without the body's ids
			return
		}
		defer func() { w.inflate.spend(time.Since(started)) }()
	}
	failed := parseContent(c, p, j.ev, j.body, j.head, j.tail, j.truncated, j.comp)
	if j.remember && !j.ev.truncated {
		c.bodies.store(j.key, &j.ev.body, failed)
	}
	if failed {
		c.ctr.parseFailures.Add(1)
	}
}

// parseContent inflates (when comp says so) and parses a body into ev.body, and says whether a body that looked
// like JSON failed to parse. It runs on a body worker, or inline for a small plain body.
func parseContent(c *Correlator, p *bodyParser, ev *event, body, head, tail []byte, truncated bool, comp compression) (failed bool) {
	if comp != compNone && len(body) > 0 {
		h, t, tr, ok := p.decompress(body)
		if p.inflateCut {
			c.ctr.inflateCut.Add(1)
		}
		if ok {
			body, head, tail, truncated = h, h, t, tr
			if tr {
				body = nil
			}
		}
	}
	switch {
	case truncated:
		ev.truncated = true
		c.ctr.truncated.Add(1)
		p.parseTruncated(head, tail, &ev.body)
	case len(body) > 0:
		p.parse(body, &ev.body)
	}
	p.trim()
	return len(body) > 0 && !ev.body.parsed && body[0] == '{'
}
