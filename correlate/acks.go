package correlate

import "time"

// Consumers' answers. A cast, fanout or notification has no reply, so without its consumer's Basic.Ack the wire
// shows only the instant it was delivered. The ack (or Reject, or Nack) is the consumer saying it is done with
// the message, and for oslo's notification listener that is after its handler returned: delivery to ack is how
// long the listener held the message (its handler's run, plus up to one turn of the listener's poll loop, which
// sends the ack; oslo lets that turn grow to 5 s while no message comes). oslo's RPC server answers on receipt,
// in its I/O thread, so for an RPC cast delivery to ack is near zero and says nothing of the handler; for calls
// the reply tells more, and their acks are not tracked.
//
// Delivery tags count up per channel, so the deliveries awaiting an answer are kept per channel in tag order and
// an answer (its own tag, or every tag up to it with multiple) takes them from the front. A record whose
// deliveries are all in waits for its outstanding answers up to Config.AckWait after its last delivery.

// maxUnackedPerConn bounds the deliveries of one connection whose answer is awaited: a consumer with unlimited
// prefetch can hold thousands of a backlog's messages, and each entry keeps its record alive. Past it a delivery
// is not tracked (counted): its consumer span stays an instant.
const maxUnackedPerConn = 4096

// unackedDelivery is one delivery of a one-way record whose consumer's answer is awaited.
type unackedDelivery struct {
	tag    uint64
	p      *pending
	callee int // index into p.rec.Callees
	at     time.Time
}

// awaitAnswer awaits the answer of ev's consumer, which acknowledges, to ev: a delivery of p on ch, about to be
// taken as its next callee. Only one-way records wait for answers.
func (c *Correlator) awaitAnswer(ch *chanState, p *pending, ev *event) {
	if p.rec.Kind == KindCall || p.done || len(p.rec.Callees) >= maxCallees {
		return
	}
	st := &ev.conn.st
	if n := len(ch.unacked); n > 0 && ch.unacked[n-1].tag >= ev.deliveryTag {
		return // not in tag order: the channel was reopened, or the capture is confused; not worth a guess
	}
	if st.unacked >= maxUnackedPerConn {
		st.unacked -= ch.dropAnswered()
		if st.unacked >= maxUnackedPerConn {
			c.ctr.acksUntracked.Add(1)
			return
		}
	}
	ch.unacked = append(ch.unacked, unackedDelivery{tag: ev.deliveryTag, p: p, callee: len(p.rec.Callees), at: ev.at})
	st.unacked++
	p.unacked++
	p.lastTracked = ev.at
}

// dropAnswered removes the entries whose record is over (ended at its AckWait, or evicted) and returns how many.
func (ch *chanState) dropAnswered() int {
	kept := ch.unacked[:0]
	for _, d := range ch.unacked {
		if !d.p.done {
			kept = append(kept, d)
		}
	}
	n := len(ch.unacked) - len(kept)
	clear(ch.unacked[len(kept):])
	ch.unacked = kept
	return n
}

// onAck takes a consumer's Basic.Ack, Reject or Nack.
func (c *Correlator) onAck(ev *event) {
	st := &ev.conn.st
	ch := st.chans[ev.channel]
	if ch == nil || len(ch.unacked) == 0 {
		return
	}
	outcome := AckAccepted
	switch {
	case ev.requeue:
		outcome = AckRequeued
	case ev.rejected:
		outcome = AckRejected
	}
	n := 0
	if ev.multiple {
		// Every delivery up to the tag (tag 0: every outstanding one).
		for n < len(ch.unacked) && (ev.deliveryTag == 0 || ch.unacked[n].tag <= ev.deliveryTag) {
			c.takeAnswer(&ch.unacked[n], ev.at, outcome)
			n++
		}
	} else {
		// An answer usually names the oldest outstanding delivery; others are skipped over, not answered (an
		// untracked call's delivery has no entry, and a consumer may answer out of order).
		for n < len(ch.unacked) && ch.unacked[n].tag < ev.deliveryTag {
			n++
		}
		if n == len(ch.unacked) || ch.unacked[n].tag != ev.deliveryTag {
			return
		}
		c.takeAnswer(&ch.unacked[n], ev.at, outcome)
		copy(ch.unacked[n:], ch.unacked[n+1:])
		ch.unacked[len(ch.unacked)-1] = unackedDelivery{}
		ch.unacked = ch.unacked[:len(ch.unacked)-1]
		st.unacked--
		return
	}
	clear(ch.unacked[:n])
	ch.unacked = ch.unacked[n:]
	st.unacked -= n
}

// takeAnswer puts one delivery's answer on its record, and ends a record that waited only for its answers.
func (c *Correlator) takeAnswer(d *unackedDelivery, at time.Time, outcome AckOutcome) {
	p := d.p
	if p.done {
		return // its record ended first (AckWait, eviction): the answer is no longer anyone's
	}
	c.ctr.consumerAcks.Add(1)
	p.rec.Acks = append(p.rec.Acks, Ack{Callee: d.callee, Delivered: d.at, At: at, Outcome: outcome})
	c.oneLessAwaited(p)
}

// oneLessAwaited notes that one of p's awaited answers is in, or will never come (its channel closed).
func (c *Correlator) oneLessAwaited(p *pending) {
	p.unacked--
	if p.unacked == 0 && p.ackHeld != 0 {
		c.end(p, p.ackHeld) // the end it was about to come to, now that nothing is awaited
	}
}

// forgetUnacked drops a closed channel's awaited answers: the broker requeues what was not answered.
func (c *Correlator) forgetUnacked(st *connState, ch *chanState) {
	for i := range ch.unacked {
		if p := ch.unacked[i].p; !p.done {
			c.oneLessAwaited(p)
		}
	}
	st.unacked -= len(ch.unacked)
	ch.unacked = nil
}

// awaitAnswers holds a one-way record that was to end for why while answers to its deliveries are outstanding,
// up to AckWait after its last tracked delivery; the last answer resumes that end. It reports whether the record
// waits.
func (c *Correlator) awaitAnswers(p *pending, why endReason) bool {
	if p.unacked == 0 || p.ackHeld != 0 {
		return false
	}
	p.ackHeld = why
	c.schedule(p, p.lastTracked.Add(c.cfg.ackWait()))
	return true
}

// firstAnswerUS is the first delivery's time to its consumer's answer, 0 if none was seen.
func firstAnswerUS(r *Record) int64 {
	if a := r.AnswerTo(0); a != nil {
		return max(a.At.Sub(a.Delivered).Microseconds(), 0)
	}
	return 0
}
