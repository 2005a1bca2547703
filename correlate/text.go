package correlate

import (
	"strings"
	"unicode/utf8"
)

// CleanString is the one rule for every string that amqptrace derived from the wire and hands to something that
// requires valid text: Prometheus label values (the client panics on invalid UTF-8), span attributes (OTLP is
// protobuf, whose string fields must be UTF-8: one bad attribute fails the whole export batch), JSON on the
// websocket (a browser closes a connection on an invalid text frame), log fields and the records themselves.
//
// It returns s with every invalid byte sequence replaced by U+FFFD and, when max > 0, cut to at most max bytes on
// a rune boundary. A string that is already valid and short enough is returned as it is, without allocating.
func CleanString(s string, max int) string {
	if max > 0 && len(s) > max+utf8.UTFMax {
		// Validate only what can survive the cut. A rune split here starts past max, so the cut below drops it.
		s = s[:max+utf8.UTFMax]
	}
	if !utf8.ValidString(s) {
		s = mend(s)
	}
	if max > 0 && len(s) > max {
		s = cutRunes(s, max)
	}
	return s
}

// mend replaces every byte of s that does not start a valid UTF-8 sequence with U+FFFD, one for each byte, as
// encoding/json does: the records and their JSON then agree on what the bad bytes became.
func mend(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// cutRunes cuts a valid s to at most n bytes without splitting a rune.
func cutRunes(s string, n int) string {
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// cleanBytes is CleanString for JSON payloads kept in a record (args, result): a valid document keeps its
// structure, since invalid UTF-8 can only stand inside its strings.
func cleanBytes(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	return []byte(mend(string(b)))
}

// clean applies CleanString to every string of a record that is about to be emitted, so that no sink has to
// guess which fields came from the wire: all of them may have, and every one leaves valid and bounded. It allocates
// only for a field that needs mending. Endpoints are not walked: every one in a record is a connection's identity,
// vetted once where it was read (Conn.vet), and a record only shares it.
func (r *Record) clean() {
	for _, f := range [...]*string{&r.Method, &r.Topic, &r.Exchange, &r.RoutingKey, &r.MsgID, &r.UniqueID,
		&r.MessageID, &r.RequestID, &r.GlobalRequestID, &r.ParentID, &r.Protocol, &r.Queue, &r.EventType,
		&r.PublisherID, &r.Priority} {
		*f = CleanString(*f, maxIDLen)
	}
	r.ReturnText = CleanString(r.ReturnText, maxMessageLen)
	r.Cause = CleanString(r.Cause, maxMessageLen)
	for i := range r.ParentCandidates { // the record's own slice
		r.ParentCandidates[i] = CleanString(r.ParentCandidates[i], maxIDLen)
	}
	for _, p := range [...]**string{&r.Server, &r.Namespace, &r.Version} {
		if *p != nil {
			if v := CleanString(**p, maxIDLen); v != **p {
				mended := v // only a mended value escapes: the common case allocates nothing
				*p = &mended
			}
		}
	}
	if e := r.Error; e != nil {
		c := RemoteError{Class: CleanString(e.Class, maxIDLen), Module: CleanString(e.Module, maxIDLen),
			Message: CleanString(e.Message, maxMessageLen)}
		if c != *e {
			r.Error = &c
		}
	}
	for i := range r.Events { // the record's own slice
		r.Events[i].Detail = CleanString(r.Events[i].Detail, maxMessageLen)
	}
	r.Args = cleanBytes(r.Args)
	r.Result = cleanBytes(r.Result)
}

// cleaned returns e with every string mended by CleanString.
func (e Endpoint) cleaned() Endpoint {
	return Endpoint{Service: CleanString(e.Service, maxIDLen), PID: e.PID, Host: CleanString(e.Host, maxIDLen),
		Connection: CleanString(e.Connection, maxIDLen), User: CleanString(e.User, maxIDLen),
		Vhost: CleanString(e.Vhost, maxIDLen), Port: e.Port, Broker: CleanString(e.Broker, maxIDLen)}
}
