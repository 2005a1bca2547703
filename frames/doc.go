// Package frames decodes AMQP 0-9-1 as it flows through the proxy: the protocol header, frames split by size,
// methods, content-header properties and field tables. It imports nothing but the standard library.
//
// # What it does
//
// A Conn holds two Decoders, one per direction of a proxied connection. Each Decoder is an io.Writer push parser
// (the shape of nats-server's parse(buf)): the proxy pump writes the bytes it has just forwarded, and the Decoder
// walks them, frames them by size, checks the 0xCE end octet and hands each complete frame to the Handler:
//
//	conn := frames.NewConn(handler, frames.Options{})
//	// client → broker pump, after forwarding buf[:n]:
//	conn.ClientDecoder().Write(buf[:n])
//	// broker → client pump:
//	conn.ServerDecoder().Write(buf[:n])
//
// Frame layout (spec 4.2.3); frame_max counts all of it, so a payload is at most frame_max − 8 bytes:
//
//	+------+---------+---------+ +-------------+ +-----------+
//	| type | channel |  size   | |   payload   | | frame-end |
//	+------+---------+---------+ +-------------+ +-----------+
//	 octet  short     long        size octets     octet 0xCE
//
// The Decoder only splits frames. It fills Frame{Dir, Type, Channel, Payload, ClassID, MethodID, Offset} and does
// not decode method arguments or properties: the Handler calls DecodeMethod, DecodeContentHeader or DecodeTable
// for the few frames it cares about, so heartbeats, body frames and passed-over methods cost no allocation. The one
// method the Decoder reads itself is Connection.Tune / Tune-Ok, in place, to learn frame_max.
//
// # Who owns which bytes
//
// Write never keeps p. A Frame and its Payload are borrowed: valid only during the HandleFrame call; the Payload
// is a sub-slice of p when the frame arrived in one Write, and of a pooled carry buffer when it straddled writes.
// A frame is copied only in that second case; the carry buffer is bounded by frame_max (and
// Options.MaxFrameSize) and returned to its pool as soon as the frame is complete, so an idle connection holds no
// buffer. A frame header is size-checked before anything is buffered, so a header claiming 4 GiB costs nothing.
// DecodeMethod, DecodeContentHeader and DecodeTable return values that own their memory; DecodeMessageArgs, which
// reads the Basic.Publish or Basic.Deliver of every message without allocating, fills a MessageArgs whose slices
// alias the payload.
//
// # Failure
//
// Write always returns len(p), nil and never blocks: its caller is forwarding bytes and must never be slowed or
// failed by observation. A framing error (wrong protocol header, bad end octet, unknown frame type, oversized
// frame) or a panic (in decoding or in the Handler) switches decoding off for the whole Conn: the error is kept
// (Conn.Err, a *DecodeError wrapping ErrProtocolHeader, ErrFrameEnd, ErrFrameTooLarge, ErrMalformed or ErrPanic),
// logged once, and from then on both Decoders only count bytes. There is no resynchronisation: after a framing
// error no later byte can be trusted.
//
// # Secrets
//
// Connection.Start-Ok carries the password (PLAIN or AMQPLAIN response). DecodeMethod extracts only the user name;
// no returned value, error or log line contains the response. DecodeError snippets hold at most a frame header.
//
// # Concurrency
//
// The two Decoders of a Conn are written by two goroutines; each Decoder by one goroutine only. They share frame_max
// and the on/off switch through atomics. The Handler is called from both goroutines, possibly at the same time.
// Conn.Stats and Conn.Err may be called from anywhere.
//
// # Non-goals
//
// No encoding (internal/wire builds frames for tests), no content assembly across frames (package correlate), no
// AMQP 1.0, no validation beyond what keeps the stream in step: the broker is the protocol's judge, we only watch.
package frames
