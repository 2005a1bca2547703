package correlate

// endReason is why a pending RPC leaves the table. Every path out goes through Correlator.end, which alone decides
// the record's status, LateReply, EverDelivered, Cause and Incomplete from the reason and what was seen.
type endReason uint8

const (
	// endFinal: the last piece came (a call's final reply was delivered or confirmed; a one-way message's
	// expected deliveries are all in). The record may still wait one window for a piece this proxy should see
	// (hold) before it is emitted.
	endFinal endReason = iota + 1
	// endHoldOver: a held record's extra window has passed.
	endHoldOver
	// endDue: its time came: a call's deadline plus the grace, a one-way message's settle time or queue horizon.
	endDue
	// endReturned: the broker returned the publish (Basic.Return): unroutable.
	endReturned
	// endEvicted: the pending table was full (count or memory).
	endEvicted
	// endShutdown: the correlator is stopping.
	endShutdown
)

// end emits p's record for the given reason. For endFinal it may instead start a hold and return.
func (c *Correlator) end(p *pending, why endReason) {
	r := &p.rec
	if (why == endFinal || why == endHoldOver || why == endDue) && r.Kind != KindCall && c.awaitAnswers(p, why) {
		return // over but for its consumers' answers, which it waits for (acks.go)
	}
	switch why {
	case endFinal:
		if c.hold(p) {
			return
		}
	case endEvicted, endShutdown:
		r.Incomplete = true
	case endReturned:
		c.finalize(p, StatusUnroutable)
		return
	}
	if r.Kind != KindCall {
		c.finalize(p, okUnless(p))
		return
	}
	// A call. It has its final reply when it ended on it (directly or after a hold), or when the reply was
	// published and its delivery (or confirm) never showed up before it was due.
	if why == endFinal || why == endHoldOver || p.finalSeen {
		c.finalize(p, c.replyOutcome(p))
		return
	}
	if why == endDue {
		c.ctr.expired.Add(1)
	}
	ever := r.Deliveries > 0
	r.EverDelivered = &ever
	r.Cause = p.brokerCause
	c.finalize(p, StatusTimeout)
}

// replyOutcome is the status of a call that has its final reply. The caller's view decides: a reply after the
// deadline leaves the call timed out (LateReply set), except in a follow-up record, which already says the call
// timed out and only tells what the reply was, and when.
func (c *Correlator) replyOutcome(p *pending) Status {
	r := &p.rec
	status := StatusOK
	if r.Error != nil {
		status = StatusError
	}
	at := r.ReplyDelivered
	if at == nil {
		at = r.Replied
	}
	switch late := at != nil && !p.deadline.IsZero() && at.After(p.deadline); {
	case late && r.Amends != 0:
		r.LateReply = true
		r.LateByUS = at.Sub(p.deadline).Microseconds()
		c.ctr.repliesAfterRecord.Add(1)
	case late:
		status = StatusTimeout
		r.LateReply = true
		ever := r.Deliveries > 0 || r.Replied != nil
		r.EverDelivered = &ever
		c.ctr.lateReplies.Add(1)
	}
	if p.msgKey != "" && p.replyUnique != "" {
		c.finished.final(p.msgKey, p.replyUnique)
	}
	return status
}

func okUnless(p *pending) Status {
	if p.rec.Status != "" {
		return p.rec.Status
	}
	return StatusOK
}
