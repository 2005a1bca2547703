package frames

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrFrameEnd means a frame did not end with the 0xCE frame-end octet (spec 4.2.3): the stream is out of step, so
// nothing after it can be trusted.
var ErrFrameEnd = errors.New("frames: bad frame-end octet (want 0xce)")

// ErrFrameTooLarge means a frame header announced a frame larger than the negotiated frame_max (which counts the
// 7-byte header and the end octet), or larger than Options.MaxFrameSize. The decoder rejects it before buffering
// a single payload byte.
var ErrFrameTooLarge = errors.New("frames: frame larger than frame_max")

// ErrProtocolHeader means the connection does not speak AMQP 0-9-1: the client's first eight bytes were not
// "AMQP\x00\x00\x09\x01" (AMQP 1.0, HTTP, TLS, garbage), or the broker answered with its own protocol header,
// which it does to refuse ours right before it closes.
var ErrProtocolHeader = errors.New("frames: not an AMQP 0-9-1 protocol header")

// ErrMalformed means a frame or a method, content-header or field-table payload does not follow the grammar: an
// unknown frame type, a length beyond the bytes that remain, an unknown field type, nesting deeper than
// maxTableDepth.
var ErrMalformed = errors.New("frames: malformed")

// ErrPanic means decoding (or the Handler) panicked; the panic was recovered and decoding switched off.
var ErrPanic = errors.New("frames: panic while decoding")

// DecodeError says where and why a Decoder switched decoding off. It wraps one of the sentinel errors above, so
// callers branch with errors.Is.
//
// It never carries payload bytes: Snippet holds at most the frame header (or the first protocol-header bytes),
// which cannot contain credentials.
type DecodeError struct {
	Dir Direction
	// Offset is the stream offset, in this direction, of the frame (or protocol header) being decoded.
	Offset int64
	// FrameType is the type octet of that frame; zero while in the protocol header.
	FrameType Type
	// State is what the decoder was doing: "protocol header", "frame header", "frame end", "frame", "handler".
	State string
	// Snippet is up to 8 bytes: the frame header (or protocol header) as seen.
	Snippet []byte
	Err     error
}

func (d Direction) String() string {
	switch d {
	case ClientToServer:
		return "client→server"
	case ServerToClient:
		return "server→client"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("frames: %s decoding off at offset %d (%s, frame type %d, bytes [% x]): %v",
		e.Dir, e.Offset, e.State, e.FrameType, e.Snippet, e.Err)
}

// Unwrap returns the sentinel (or wrapped) cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// HexSnippet returns Snippet as a hex string, for log attributes.
func (e *DecodeError) HexSnippet() string { return hex.EncodeToString(e.Snippet) }
