package correlate

import (
	"strings"
	"unicode/utf8"
	"unsafe"
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
	if k := asciiPrefix(b); k == len(b) || utf8.Valid(b[k:]) {
		return b
	}
	return []byte(mend(string(b)))
}

// asciiPrefix returns a length of the start of b that is ASCII, all of b when it is. A payload (ids, names,
// numbers, JSON's punctuation) is ASCII throughout, which eight words ORed together prove 64 bytes at a time, an
// eighth of utf8.Valid's steps (the last 64 bytes overlap the ones before); what follows the ASCII starts a rune,
// so utf8.Valid takes it from there.
func asciiPrefix(b []byte) int {
	const high = 0x8080808080808080
	for i := 0; len(b) >= 64; i += 64 {
		i = min(i, len(b)-64)
		if (load8(b, i)|load8(b, i+8)|load8(b, i+16)|load8(b, i+24)|load8(b, i+32)|load8(b, i+40)|load8(b, i+48)|
			load8(b, i+56))&high != 0 {
			return i
		}
		if i+64 == len(b) {
			return len(b)
		}
	}
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if load8(b, i)&high != 0 {
			return i
		}
	}
	for ; i < len(b); i++ {
		if b[i] >= 0x80 {
			return i
		}
	}
	return len(b)
}

// What Record.edit does to a record's strings.
const (
	editClean  = 1 << iota // CleanString, with the field's bound
	editRedact             // Redactor.String, on the fields that hold free text or names from the wire
)

// edit cleans and redacts the strings of a record that is about to be emitted (editClean|editRedact, once, on the
// correlator's goroutine), or only redacts them (Redactor.Record: editRedact). Cleaning applies CleanString to
// every string, so that no sink has to guess which fields came from the wire: all of them may have, and every one
// leaves valid and bounded. Redaction applies the Redactor's value rules to the free-text fields: remote exception
// class, module and message, the Basic.Return text, names taken from the body or the properties. Args and Result
// were redacted as they were parsed (JSON), by the same rules, and the endpoints with their connection's identity,
// where it was read (Conn.vet): a record only shares them, and they are not walked. A pointed-to value that
// changes is copied first. It allocates only for a field that changes.
func (r *Record) edit(x *Redactor, mode int) {
	for _, f := range [...]*string{&r.MsgID, &r.UniqueID, &r.MessageID, &r.RequestID, &r.GlobalRequestID,
		&r.ParentID, &r.Protocol, &r.Priority} {
		*f = editText(*f, maxIDLen, x, mode&editClean)
	}
	for _, f := range [...]*string{&r.Method, &r.Topic, &r.Exchange, &r.RoutingKey, &r.Queue, &r.EventType,
		&r.PublisherID} {
		*f = editText(*f, maxIDLen, x, mode)
	}
	r.ReturnText = editText(r.ReturnText, maxMessageLen, x, mode)
	r.Cause = editText(r.Cause, maxMessageLen, x, mode&editClean)
	for i := range r.ParentCandidates { // the record's own slice
		r.ParentCandidates[i] = editText(r.ParentCandidates[i], maxIDLen, x, mode&editClean)
	}
	for _, p := range [...]**string{&r.Server, &r.Namespace, &r.Version} {
		if *p != nil {
			if v := editText(**p, maxIDLen, x, mode); v != **p {
				changed := v // only a changed value escapes: the common case allocates nothing
				*p = &changed
			}
		}
	}
	if e := r.Error; e != nil {
		c := RemoteError{Class: editText(e.Class, maxIDLen, x, mode), Module: editText(e.Module, maxIDLen, x, mode),
			Message: editText(e.Message, maxMessageLen, x, mode)}
		if c != *e {
			r.Error = &c
		}
	}
	for i := range r.Events { // the record's own slice
		r.Events[i].Detail = editText(r.Events[i].Detail, maxMessageLen, x, mode&editClean)
	}
	if mode&editClean != 0 {
		r.Args = cleanBytes(r.Args)
		r.Result = cleanBytes(r.Result)
	}
}

// editText is CleanString(s, max) (editClean) followed by x.String (editRedact). Nearly every string of a record
// is short ASCII without a byte that can start a value rule, which one pass of eight-byte words proves; only
// the others go through CleanString and the value rules.
func editText(s string, max int, x *Redactor, mode int) string {
	if s == "" || mode == 0 {
		return s
	}
	nonASCII, trig := textClass(s)
	if mode&editClean != 0 && (nonASCII || len(s) > max) {
		s = CleanString(s, max)
	}
	if mode&editRedact != 0 && (trig || x != nil && len(x.extraPats) > 0) {
		s = x.String(s)
	}
	return s
}

// textClass says whether s has a byte over 0x7F, and whether it has a byte between ':' and 'M', where every trigger
// of a built-in value rule lies (mayHoldTrigger's test, word by word).
func textClass(s string) (nonASCII, trig bool) {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	const lo, hi = ':' - 1, 'M' + 1                 // exclusive bounds
	b := unsafe.Slice(unsafe.StringData(s), len(s)) // only read
	var h, t uint64
	word := func(x uint64) {
		low7 := x & (ones * 127)
		h |= x
		t |= (ones*(127+hi) - low7) &^ x & (low7 + ones*(127-lo))
	}
	if len(b) < 8 {
		for _, c := range b {
			h |= uint64(c)
			if c > lo && c < hi {
				t |= high
			}
		}
		return h&high != 0, t&high != 0
	}
	for i := 0; i+8 <= len(b); i += 8 {
		word(load8(b, i))
	}
	word(load8(b, len(b)-8)) // the last bytes, overlapping the words before them
	return h&high != 0, t&high != 0
}

// cleaned returns e with every string mended by CleanString.
func (e Endpoint) cleaned() Endpoint {
	return Endpoint{Service: CleanString(e.Service, maxIDLen), PID: e.PID, Host: CleanString(e.Host, maxIDLen),
		Connection: CleanString(e.Connection, maxIDLen), User: CleanString(e.User, maxIDLen),
		Vhost: CleanString(e.Vhost, maxIDLen), Port: e.Port, Broker: CleanString(e.Broker, maxIDLen)}
}
