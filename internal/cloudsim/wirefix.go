package cloudsim

import (
	"encoding/binary"
	"net"
	"sync"
)

// AMQP 0-9-1 frame and property constants (spec section 4.2.3 and the Basic class property list).
const (
	frameMethod = 1
	frameHeader = 2

	propContentType     = 0x8000
	propContentEncoding = 0x4000
	propHeaders         = 0x2000
	propDeliveryMode    = 0x1000
	propPriority        = 0x0800

	// maxRewrite bounds the frames wireFixConn buffers: content headers and Connection.Start-Ok are a few hundred
	// bytes; anything bigger is forwarded untouched.
	maxRewrite = 64 << 10
)

// wireFixConn sits under amqp091-go on the simulated services' own sockets and rewrites two kinds of outgoing
// frames so the bytes match py-amqp 5.1.1, which is what oslo.messaging really sends:
//
//   - content headers: amqp091-go leaves out an empty headers table and a zero priority; py-amqp (kombu) always
//     sends both, giving property flags 0xf800 (0xf900 with expiration). The rewrite inserts them.
//   - Connection.Start-Ok: amqp091-go replaces the client capabilities with its own set; the rewrite sends
//     py-amqp's client properties (product, product_version, capabilities, connection_name) instead and keeps
//     the mechanism, the response (credentials, copied as bytes, never decoded or logged) and the locale.
//
// Every other frame passes through unchanged and unbuffered (large bodies are not copied more than once).
// It is a writer-side filter only: reads go straight to the socket.
type wireFixConn struct {
	net.Conn
	props []byte // encoded client-properties table, including its 4-byte length

	mu         sync.Mutex
	headerLeft int    // bytes of the 8-byte protocol header still to pass
	pass       int    // bytes of the current frame still to forward untouched
	buf        []byte // partial frame being collected (its 7-byte header, or a whole frame to rewrite)
	out        []byte
}

func newWireFixConn(c net.Conn, props []byte) *wireFixConn {
	return &wireFixConn{Conn: c, props: props, headerLeft: 8}
}

// Write parses the outgoing stream incrementally (amqp091-go flushes a bufio.Writer, so frames can straddle
// writes) and writes the possibly rewritten bytes before returning, keeping write order and backpressure.
func (w *wireFixConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	w.out = w.fix(w.out[:0], p)
	if len(w.out) > 0 {
		if _, err := w.Conn.Write(w.out); err != nil {
			return 0, err
		}
	}
	if cap(w.out) > maxRewrite {
		w.out = nil // do not keep a large body's buffer for the life of the connection
	}
	return n, nil
}

func (w *wireFixConn) fix(out, p []byte) []byte {
	for len(p) > 0 {
		switch {
		case w.headerLeft > 0:
			k := min(w.headerLeft, len(p))
			out = append(out, p[:k]...)
			w.headerLeft -= k
			p = p[k:]
		case w.pass > 0:
			k := min(w.pass, len(p))
			out = append(out, p[:k]...)
			w.pass -= k
			p = p[k:]
		case len(w.buf) < 7:
			k := min(7-len(w.buf), len(p))
			w.buf = append(w.buf, p[:k]...)
			p = p[k:]
			if len(w.buf) == 7 && !w.wants() {
				out = append(out, w.buf...)
				w.pass = int(binary.BigEndian.Uint32(w.buf[3:7])) + 1 // payload + frame-end octet
				w.buf = w.buf[:0]
			}
		default:
			total := 7 + int(binary.BigEndian.Uint32(w.buf[3:7])) + 1
			k := min(total-len(w.buf), len(p))
			w.buf = append(w.buf, p[:k]...)
			p = p[k:]
			if len(w.buf) == total {
				out = append(out, w.rewrite(w.buf)...)
				w.buf = w.buf[:0]
			}
		}
	}
	return out
}

// wants reports whether the frame whose 7-byte header is in w.buf is one to collect and rewrite.
func (w *wireFixConn) wants() bool {
	size := binary.BigEndian.Uint32(w.buf[3:7])
	if size > maxRewrite {
		return false
	}
	switch w.buf[0] {
	case frameHeader:
		return true
	case frameMethod:
		return w.buf[1] == 0 && w.buf[2] == 0 // channel 0: connection class; Start-Ok is checked in rewrite
	}
	return false
}

// rewrite returns the replacement for one whole frame (header, payload, frame-end). Anything it does not
// recognise, or cannot parse, is returned as it came.
func (w *wireFixConn) rewrite(f []byte) []byte {
	payload := f[7 : len(f)-1]
	var np []byte
	switch f[0] {
	case frameHeader:
		np = fixContentHeader(payload)
	case frameMethod:
		np = fixStartOk(payload, w.props)
	}
	if np == nil {
		return f
	}
	nf := make([]byte, 7, 7+len(np)+1)
	copy(nf, f[:3])
	binary.BigEndian.PutUint32(nf[3:7], uint32(len(np)))
	nf = append(nf, np...)
	return append(nf, 0xce)
}

// fixContentHeader adds an empty headers table and priority 0 to a Basic content header that lacks them.
// It returns nil when there is nothing to change or the payload does not parse.
func fixContentHeader(p []byte) []byte {
	// class-id(2) weight(2) body-size(8) property-flags(2)
	if len(p) < 14 || binary.BigEndian.Uint16(p[0:2]) != 60 {
		return nil
	}
	flags := binary.BigEndian.Uint16(p[12:14])
	if flags&1 != 0 || flags&(propHeaders|propPriority) == propHeaders|propPriority {
		return nil
	}
	off := 14
	for _, bit := range []uint16{propContentType, propContentEncoding} {
		if flags&bit != 0 {
			if off >= len(p) {
				return nil
			}
			off += 1 + int(p[off])
		}
	}
	if off > len(p) {
		return nil
	}
	np := make([]byte, 0, len(p)+5)
	np = append(np, p[:off]...)
	if flags&propHeaders == 0 {
		np = append(np, 0, 0, 0, 0)
	} else {
		if off+4 > len(p) {
			return nil
		}
		n := 4 + int(binary.BigEndian.Uint32(p[off:off+4]))
		if off+n > len(p) {
			return nil
		}
		np = append(np, p[off:off+n]...)
		off += n
	}
	if flags&propDeliveryMode != 0 {
		if off >= len(p) {
			return nil
		}
		np = append(np, p[off])
		off++
	}
	if flags&propPriority == 0 {
		np = append(np, 0)
	}
	np = append(np, p[off:]...)
	binary.BigEndian.PutUint16(np[12:14], flags|propHeaders|propPriority)
	return np
}

// fixStartOk replaces the client-properties table of a Connection.Start-Ok (class 10, method 11) with props.
// It returns nil for any other method or a payload that does not parse.
func fixStartOk(p []byte, props []byte) []byte {
	if len(p) < 8 || binary.BigEndian.Uint16(p[0:2]) != 10 || binary.BigEndian.Uint16(p[2:4]) != 11 || props == nil {
		return nil
	}
	tableEnd := 8 + int(binary.BigEndian.Uint32(p[4:8]))
	if tableEnd > len(p) {
		return nil
	}
	np := make([]byte, 0, len(p)-tableEnd+4+len(props))
	np = append(np, p[:4]...)
	np = append(np, props...)
	return append(np, p[tableEnd:]...) // mechanism, response, locale: unchanged
}

// encodeClientProperties encodes py-amqp 5.1.1's client properties for one connection, in its order, as an AMQP
// field table with its length prefix.
func encodeClientProperties(connectionName string) []byte {
	var t []byte
	str := func(k, v string) {
		t = append(t, byte(len(k)))
		t = append(t, k...)
		t = append(t, 'S')
		t = binary.BigEndian.AppendUint32(t, uint32(len(v)))
		t = append(t, v...)
	}
	str("product", "py-amqp")
	str("product_version", "5.1.1")
	var caps []byte
	for _, c := range []string{"authentication_failure_close", "connection.blocked", "consumer_cancel_notify"} {
		caps = append(caps, byte(len(c)))
		caps = append(caps, c...)
		caps = append(caps, 't', 1)
	}
	t = append(t, byte(len("capabilities")))
	t = append(t, "capabilities"...)
	t = append(t, 'F')
	t = binary.BigEndian.AppendUint32(t, uint32(len(caps)))
	t = append(t, caps...)
	str("connection_name", connectionName)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(t))), t...)
}
