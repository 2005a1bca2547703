package frames

import "encoding/binary"

// Resyncer is an optional interface of a Handler. Resync is called, from the goroutine that writes dir, when the
// decoder has lost its place in dir's stream (Decoder.Resync, or a framing error under Options.Resync) and before
// it hunts for the next frame boundary: whatever the handler was assembling from dir's earlier frames (a message
// whose body frames are still due) may have lost frames, and must not be completed by frames from after the hole.
// A panic in Resync switches decoding off like a panic in HandleFrame.
type Resyncer interface {
	Resync(dir Direction)
}

// Resync tells the decoder that the bytes it is given next do not follow the bytes it was given last: lost bytes
// were lost (a gap in a packet capture; a negative or zero lost when the number is not known), or the stream is
// being picked up in the middle (a capture that started after the connection did). The decoder drops any frame
// in progress, tells a Resyncer handler, and hunts for the next frame boundary it can prove: a frame header (a
// known type; a size within the limit; for a heartbeat channel 0 and no payload; for a method a known class; for a
// content header the basic class and weight 0) whose frame-end octet is where the size says. It buffers at most
// one frame's worth of bytes while a candidate cannot be decided yet. A direction being resynchronised expects no
// protocol header.
//
// Only the goroutine that writes the Decoder may call Resync. It does nothing once decoding is switched off.
func (d *Decoder) Resync(lost int64) {
	if d.conn.failed.Load() != nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			d.conn.fail(&DecodeError{Dir: d.dir, Offset: d.off, State: "resync", Err: panicError(r)})
		}
	}()
	if lost > 0 {
		d.off += lost
	}
	d.lostSync(0)
	d.publish()
}

// End tells the decoder that its stream has ended (the connection closed, the capture file is over): bytes held
// while hunting are decided with what is there, so the frames behind a candidate that can no longer be decided
// are not lost. Only the writing goroutine may call it; the decoder must not be written afterwards.
func (d *Decoder) End() {
	defer func() {
		if r := recover(); r != nil {
			d.conn.fail(&DecodeError{Dir: d.dir, Offset: d.off, State: "end", Err: panicError(r)})
		}
	}()
	for d.hunting && len(d.huntBuf) > 0 && d.conn.failed.Load() == nil {
		held := d.huntBuf
		d.huntBuf = nil
		d.off -= int64(len(held))
		if rest := d.huntFinal(held, true); len(rest) > 0 {
			d.decode(rest) // a framing error in there may hold bytes again: the loop decides them too
		}
	}
	d.endWrite()
	d.releaseCarry()
	d.publish()
}

// Hunting reports whether the decoder is looking for a frame boundary (see Resync). Only the writing goroutine
// may call it.
func (d *Decoder) Hunting() bool { return d.hunting }

// lostSync starts hunting: the frame in progress is dropped, the handler told. skipped is added to the skipped
// bytes.
func (d *Decoder) lostSync(skipped int64) {
	d.releaseCarry()
	d.hdrN = 0
	d.protoN = len(protocolHeader)
	d.hunting = true
	d.huntBuf = d.huntBuf[:0]
	d.n.Resyncs++
	d.n.Skipped += uint64(max(skipped, 0))
	if rs, ok := d.conn.h.(Resyncer); ok {
		rs.Resync(d.dir)
	}
}

// Verdicts of provable.
const (
	notFrame = iota
	undecided
	proven
)

// knownClass says whether a method frame's class id is one AMQP 0-9-1 defines (spec 1.2 and RabbitMQ's
// extensions): a false candidate inside a body almost never has one.
func knownClass(c uint16) bool {
	switch c {
	case ClassConnection, ClassChannel, ClassExchange, ClassQueue, ClassBasic, ClassConfirm, ClassTx:
		return true
	}
	return false
}

// provable decides whether a frame starts at b[0], as far as b reaches.
func provable(b []byte, limit uint32) int {
	switch Type(b[0]) {
	case TypeMethod, TypeHeader, TypeBody, TypeHeartbeat:
	default:
		return notFrame
	}
	if len(b) < 7 {
		return undecided
	}
	typ, ch, size := Type(b[0]), binary.BigEndian.Uint16(b[1:3]), binary.BigEndian.Uint32(b[3:7])
	if uint64(size)+8 > uint64(limit) {
		return notFrame
	}
	switch typ {
	case TypeHeartbeat:
		if ch != 0 || size != 0 {
			return notFrame
		}
	case TypeMethod:
		if size < 4 {
			return notFrame
		}
		if len(b) >= 9 && !knownClass(binary.BigEndian.Uint16(b[7:9])) {
			return notFrame
		}
	case TypeHeader:
		if size < 14 {
			return notFrame
		}
		if len(b) >= 11 && (binary.BigEndian.Uint16(b[7:9]) != ClassBasic || b[9] != 0 || b[10] != 0) {
			return notFrame
		}
	}
	end := 7 + int(size)
	if len(b) <= end {
		return undecided
	}
	if b[end] != frameEnd {
		return notFrame
	}
	return proven
}

// hunt looks for a provable frame boundary in the held bytes followed by p. It returns the bytes to decode as
// frames from there on (nil while still hunting); d.off is the stream offset of their first byte.
func (d *Decoder) hunt(p []byte) []byte { return d.huntFinal(p, false) }

// huntFinal is hunt; final says no byte will follow (see End), so a candidate that cannot be decided is no frame
// and one whole frame proves a boundary.
func (d *Decoder) huntFinal(p []byte, final bool) []byte {
	buf := p
	if len(d.huntBuf) > 0 {
		d.huntBuf = append(d.huntBuf, p...)
		buf = d.huntBuf
	}
	base := d.off - int64(len(buf)-len(p)) // stream offset of buf[0]
	d.off += int64(len(p))
	limit := d.conn.limit()
	// first is the earliest candidate that cannot be decided yet. A later candidate is taken over it only when
	// two whole frames prove it (it and the frame right after it): a false candidate inside a body can announce
	// any size up to the limit, and must not hold back the real frames behind it until that many bytes came.
	first := -1
	for i := range buf {
		switch provable(buf[i:], limit) {
		case notFrame:
			continue
		case undecided:
			if first < 0 && !final {
				first = i
			}
			continue
		}
		if first >= 0 {
			next := i + 8 + int(binary.BigEndian.Uint32(buf[i+3:i+7]))
			if next >= len(buf) || provable(buf[next:], limit) != proven {
				continue
			}
		}
		d.n.Skipped += uint64(i)
		d.hunting = false
		d.off = base + int64(i)
		rest := buf[i:]
		if len(d.huntBuf) > 0 {
			// The held bytes are decoded from a copy of their own: the decoder may start hunting again while it
			// walks them, and that reuses huntBuf.
			rest = append([]byte(nil), rest...)
			d.dropHuntBuf()
		}
		return rest
	}
	if first >= 0 {
		d.n.Skipped += uint64(first)
		if len(d.huntBuf) > 0 {
			n := copy(d.huntBuf, buf[first:])
			d.huntBuf = d.huntBuf[:n]
		} else {
			d.huntBuf = append(d.huntBuf[:0], buf[first:]...)
		}
		return nil
	}
	d.n.Skipped += uint64(len(buf))
	d.dropHuntBuf()
	return nil
}

// dropHuntBuf empties huntBuf, and lets a large one go: a connection that resynchronised once should not keep a
// frame's worth of memory for the rest of its life.
func (d *Decoder) dropHuntBuf() {
	if cap(d.huntBuf) > 64<<10 {
		d.huntBuf = nil
		return
	}
	d.huntBuf = d.huntBuf[:0]
}
