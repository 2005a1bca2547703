package correlate

import "time"

// Saturation: is a slow call a slow server or a full one? On the wire a call is
//
//	delivered ──(waits for a worker of the server's executor pool)──► taken ──(handled)──► reply published
//
// and "taken" shows only when the call is monitored: a caller that sets call_monitor_timeout (oslo's _timeout)
// makes the server start a watchdog when a worker dispatches the call, which publishes its first heartbeat reply
// exactly _timeout/2 later (oslo.messaging rpc/dispatcher.py). So the first heartbeat, less that interval, is when
// a worker took the call. (oslo's RPC listener acknowledges every delivery on receipt, in its I/O thread, so the
// consumer's Basic.Ack says nothing about workers.)
//
// A call's wait for a worker (Record.ServerWaitUS) is given only when the wire proves it: the call was taken
// after another call of the same process was answered, that is, a worker came free and then took it. A call
// taken late for any other reason (scheduling) gets none; an unmonitored call gets none: nothing is invented.

// serverLoad is what the wire shows of one server process's workers.
type serverLoad struct {
	handling int           // monitored calls taken and not answered: workers known to be busy
	freed    [16]time.Time // when its last calls were answered (a worker came free), a ring
	next     int
	peak     int       // the most handling at once in the current minute ...
	peakPrev int       // ... and in the one before
	minute   time.Time // start of the current minute
}

// maxServersTracked bounds the processes whose load is kept.
const maxServersTracked = 10000

// procOf keys a process: service, pid and host, as oslo names every connection of a process alike.
func procOf(ep *Endpoint) Endpoint { return Endpoint{Service: ep.Service, PID: ep.PID, Host: ep.Host} }

func (c *Correlator) load(ep *Endpoint, at time.Time) *serverLoad {
	k := procOf(ep)
	l := c.servers[k]
	if l == nil {
		if len(c.servers) >= maxServersTracked {
			return nil
		}
		l = &serverLoad{minute: at}
		c.servers[k] = l
	}
	if d := at.Sub(l.minute); d >= time.Minute {
		l.peakPrev, l.peak, l.minute = l.peak, l.handling, at
		if d >= 2*time.Minute {
			l.peakPrev = 0
		}
	}
	return l
}

// heartbeatStart takes a monitored call's first heartbeat (published by its server): a worker took the call one
// heartbeat interval (_timeout/2) before.
func (c *Correlator) heartbeatStart(p *pending, ev *event) {
	r := &p.rec
	if p.monitorS < 2 || r.Delivered == nil || r.Callee == nil || !p.startedAt.IsZero() {
		return
	}
	start := ev.at.Add(-time.Duration(p.monitorS) * time.Second / 2)
	if start.Before(*r.Delivered) {
		start = *r.Delivered // the heartbeat was read early against the delivery; it cannot have started before
	}
	p.startedAt = start
	l := c.load(r.Callee, ev.at) // the server: the heartbeat may have been read as its delivery to the caller
	if l == nil {
		return
	}
	if l.freedIn(*r.Delivered, start) {
		// A worker came free after the call arrived, and then it was taken: it waited for one.
		r.ServerWaitUS = start.Sub(*r.Delivered).Microseconds()
		c.ctr.serverWaits.Add(1)
	}
	l.handling++
	l.peak = max(l.peak, l.handling)
	p.loaded = l
}

// answered notes that a server published call p's final reply: a worker is free.
func (c *Correlator) answered(p *pending, at time.Time) {
	if l := p.loaded; l != nil {
		l.handling--
		p.loaded = nil
		l.free(at)
		return
	}
	if p.rec.Callee != nil {
		if l := c.load(p.rec.Callee, at); l != nil {
			l.free(at)
		}
	}
}

// free notes that a worker came free at t.
func (l *serverLoad) free(t time.Time) {
	l.freed[l.next] = t
	l.next = (l.next + 1) % len(l.freed)
}

// freedIn says whether a worker came free after from and no later than to. Several calls of a round are answered
// at nearly the same time, and a call taken after the first of them may be seen taken after the last: any one of
// the recent ones in the window proves the wait.
func (l *serverLoad) freedIn(from, to time.Time) bool {
	for _, t := range l.freed {
		if t.After(from) && !t.After(to) {
			return true
		}
	}
	return false
}
