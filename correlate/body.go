package correlate

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"time"
)

// msgKind is what an oslo.messaging body says it is.
type msgKind uint8

const (
	mkUnknown      msgKind = iota
	mkRequest              // has "method": a call when it also has _msg_id, else a cast or fanout
	mkReply                // _msg_id with result/failure/ending and no method
	mkNotification         // event_type with publisher_id or priority
	// mkLegacyReply is result/failure/ending with no _msg_id and no method: the reply of 2012-era nova rpc
	// (Folsom), which names its call only by where it is sent, a direct exchange named after the call's _msg_id.
	mkLegacyReply
)

// Bounds on what is kept from a body. A hostile body could hold a megabyte "method"; ids and names are short.
const (
	maxIDLen      = 256
	maxMessageLen = 1024 // a remote exception's message
)

// bodyInfo is what the correlator needs from one body. Every string and slice in it is owned (copied out of the
// frame or scratch buffer it was read from).
type bodyInfo struct {
	kind     msgKind
	envelope bool // oslo 2.0 envelope ({"oslo.version", "oslo.message"}); false for 1.0 bodies
	parsed   bool // the body was a JSON object (or at least its head was)

	method, namespace, version string
	hasNamespace, hasVersion   bool
	monitorS                   int // _timeout: the caller's call-monitor timeout in seconds
	msgID, replyQ, uniqueID    string
	requestID, globalRequestID string

	hasEnding, ending     bool
	hasResult, hasFailure bool
	failure               *RemoteError

	eventType, publisherID, priority, messageID string

	args, result json.RawMessage // redacted per policy; nil when not kept
}

// bodyParser parses oslo.messaging bodies. It keeps scratch buffers between calls, so each assembler owns one and
// the hot path allocates only the strings it keeps.
type bodyParser struct {
	policy     PayloadPolicy
	red        *Redactor // nil: the built-in rules, not counted
	maxPayload int
	bodyCap    int
	inflateFor time.Duration // bound on one body's inflation (0: none); past it the body reads as truncated
	inflateCut bool          // the last decompress stopped at inflateFor
	inner      []byte        // the decoded oslo.message string
	dec        []byte        // decompressed body
	rs         redactScratch
	// strs holds the decoded string values taken from the current object and spans says which field each one
	// goes to: keep makes them one string, one allocation per body instead of one per id.
	strs  []byte
	spans []strSpan
}

// strSpan is a field's string in bodyParser.strs.
type strSpan struct {
	dst        *string
	start, end int
}

// keepScratch is the largest scratch buffer a parser keeps between messages. Parsers live as long as their
// connection (one per direction), and OpenStack keeps thousands of connections open for days: one large message
// must not pin its size on a connection forever. Typical oslo messages are a few KiB, so they reuse the buffers.
const keepScratch = 64 << 10

// trim lets go of scratch buffers that grew past keepScratch for one large message.
func (p *bodyParser) trim() {
	if cap(p.inner) > keepScratch {
		p.inner = nil
	}
	if cap(p.dec) > keepScratch {
		p.dec = nil
	}
	p.rs.trim()
}

// parse reads a whole body.
func (p *bodyParser) parse(body []byte, out *bodyInfo) {
	if p.envelope(body) {
		*out = bodyInfo{envelope: true, parsed: true}
		is, ok := openObject(p.inner, 0)
		if !ok {
			out.parsed = false
			return
		}
		p.members(out, &is, p.inner)
		p.keep()
		if cap(p.inner) > 4*p.bodyCap {
			p.inner = nil // do not pin a huge scratch buffer
		}
		out.classify()
		return
	}
	s, ok := openObject(body, 0)
	if !ok {
		return
	}
	out.parsed = true
	p.members(out, &s, body)
	p.keep()
	out.classify()
}

// members reads every member of the object s is in. A payload (args, payload, result: an object or an array) is
// read once, by the Redactor, which also finds where it ends; every other value is skipped by the scanner and
// taken by field. When the Redactor cannot say where the payload ended (it ran out of budget, or the value is not
// JSON it accepts), the scanner skips it as any other value.
func (p *bodyParser) members(out *bodyInfo, s *objectScanner, b []byte) {
	var m member
	for s.key(&m) {
		if p.policy == PayloadNone || m.start >= len(b) || b[m.start] != '{' && b[m.start] != '[' || !payloadKey(m.key) {
			if !s.skip(&m) {
				return
			}
			p.field(out, b, &m)
			continue
		}
		v, end := p.red.jsonAt(&p.rs, b, m.start, p.policy, p.maxPayload)
		if end >= 0 {
			s.took(&m, end)
		} else if !s.skip(&m) {
			return
		}
		if string(m.key) == "result" {
			out.hasResult, out.result = true, v
		} else {
			out.args = v
		}
	}
}

// payloadKey says whether a member of the inner message holds a payload the Redactor reads.
func payloadKey(k []byte) bool {
	return string(k) == "args" || string(k) == "payload" || string(k) == "result"
}

// envelope decodes the oslo.message string of an oslo 2.0 envelope into p.inner, reading the outer object once.
// It reports false for any other body (a 1.0 message is the inner message itself).
func (p *bodyParser) envelope(body []byte) bool {
	i := skipWS(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i++
	for n := 0; ; n++ {
		i = skipWS(body, i)
		if i < len(body) && body[i] == '}' {
			return false
		}
		if n > 0 {
			if i >= len(body) || body[i] != ',' {
				return false
			}
			i = skipWS(body, i+1)
		}
		key, e, ok := scanString(body, i)
		if !ok {
			return false
		}
		i = skipWS(body, e)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		i = skipWS(body, i+1)
		if string(key) == "oslo.message" {
			inner, _, ok := decodeString(p.inner[:0], body, i)
			p.inner = inner
			return ok
		}
		if n > 0 || string(key) != "oslo.version" {
			return false // not an envelope: keep the scan cheap for plain bodies
		}
		if i, ok = skipValue(body, i); !ok {
			return false
		}
	}
}

// parseTruncated reads a body of which only the first bytes (head) and the last bytes (tail) were kept. The method
// and args come first in an oslo request; the ids (_msg_id, _reply_q, _unique_id) and the _context_* keys come after
// args. So the head gives the method and the tail gives the ids: an RPC with a huge argument still correlates.
func (p *bodyParser) parseTruncated(head, tail []byte, out *bodyInfo) {
	inner, envelope := p.headInner(head)
	s, ok := openObject(inner, 0)
	if !ok {
		// Not a JSON object (a compressed body that decompressed to something else, say): its tail holds no oslo
		// ids, and searching half a BodyCap for each anchor key is the most expensive thing the parser can do.
		out.classify()
		return
	}
	out.parsed = true
	var m member
	for s.next(&m) {
		if payloadKey(m.key) {
			continue // a fragment cannot be redacted reliably: keep nothing of a truncated payload
		}
		p.field(out, inner, &m)
	}
	p.keep()
	out.envelope = envelope
	if len(tail) > 0 {
		p.tailFields(tail, envelope, out)
	}
	out.classify()
}

// headInner returns the readable start of the inner message in a truncated head: the decoded prefix of the
// oslo.message string for an enveloped body, or the head itself.
func (p *bodyParser) headInner(head []byte) ([]byte, bool) {
	const marker = `"oslo.message"`
	k := bytes.Index(head[:min(len(head), 256)], []byte(marker))
	if k < 0 {
		return head, false
	}
	i := skipWS(head, k+len(marker))
	if i >= len(head) || head[i] != ':' {
		return head, false
	}
	i = skipWS(head, i+1)
	if i >= len(head) || head[i] != '"' {
		return head, false
	}
	raw := head[i+1:]
	if r, _, ok := scanString(head, i); ok {
		raw = r
	}
	inner, _ := unescapeString(p.inner[:0], raw, true)
	p.inner = inner
	return inner, true
}

// tailAnchors are the keys oslo writes after args, in the order it writes them. The tail is read from the last
// occurrence of the first anchor that leads to the end of the inner object: a nested key of the same name inside
// args ends its object early and fails that check.
var tailAnchors = [...]string{"namespace", "version", "_msg_id", "_reply_q", "_timeout", "_unique_id"}

func (p *bodyParser) tailFields(tail []byte, envelope bool, out *bodyInfo) {
	for _, key := range tailAnchors {
		var pat []byte
		if envelope {
			pat = []byte(`\"` + key + `\":`)
		} else {
			pat = []byte(`"` + key + `":`)
		}
		at := bytes.LastIndex(tail, pat)
		if at < 0 {
			continue
		}
		var buf []byte
		if envelope {
			// The match must start an escape sequence, not sit inside one (an even run of backslashes before it).
			bs := 0
			for j := at - 1; j >= 0 && tail[j] == '\\'; j-- {
				bs++
			}
			if bs%2 != 0 {
				continue
			}
			raw := tail[at:]
			if r, _, ok := scanString(append([]byte{'"'}, raw...), 0); ok {
				raw = r // stop at the end of the oslo.message string
			} else {
				continue
			}
			dec, ok := unescapeString(nil, raw, false)
			if !ok {
				continue
			}
			buf = dec
		} else {
			buf = tail[at:]
		}
		var tmp bodyInfo
		s := membersFrom(buf, 0)
		var m member
		for s.next(&m) {
			p.field(&tmp, buf, &m)
		}
		p.keep()
		if !s.done {
			continue
		}
		rest := skipWS(buf, s.i)
		if !envelope && rest < len(buf) {
			continue // plain body: the object must end the tail
		}
		if envelope && rest != len(buf) {
			continue
		}
		out.mergeTail(&tmp)
		return
	}
}

// mergeTail copies the fields a tail scan found into out.
func (b *bodyInfo) mergeTail(t *bodyInfo) {
	if t.hasNamespace {
		b.namespace, b.hasNamespace = t.namespace, true
	}
	if t.hasVersion {
		b.version, b.hasVersion = t.version, true
	}
	for _, f := range [...]struct{ dst, src *string }{
		{&b.msgID, &t.msgID}, {&b.replyQ, &t.replyQ}, {&b.uniqueID, &t.uniqueID},
		{&b.requestID, &t.requestID}, {&b.globalRequestID, &t.globalRequestID},
		{&b.eventType, &t.eventType}, {&b.publisherID, &t.publisherID}, {&b.priority, &t.priority},
		{&b.messageID, &t.messageID},
	} {
		if *f.src != "" {
			*f.dst = *f.src
		}
	}
	if t.hasEnding {
		b.hasEnding, b.ending = true, t.ending
	}
	if t.hasFailure {
		b.hasFailure, b.failure = true, t.failure
	}
	b.hasResult = b.hasResult || t.hasResult
	b.parsed = true
}

// field takes one top-level member of the inner message. String fields are set by keep, after the last member.
func (p *bodyParser) field(out *bodyInfo, b []byte, m *member) {
	switch string(m.key) {
	case "method":
		p.str(&out.method, b, m)
	case "namespace":
		out.hasNamespace = p.str(&out.namespace, b, m)
	case "version":
		out.hasVersion = p.str(&out.version, b, m)
	case "_msg_id":
		p.str(&out.msgID, b, m)
	case "_reply_q":
		p.str(&out.replyQ, b, m)
	case "_unique_id":
		p.str(&out.uniqueID, b, m)
	case "_timeout":
		// Usually null: only a digit is worth parsing (a failed Atoi allocates its error).
		if v := b[m.start:m.end]; len(v) > 0 && v[0] >= '1' && v[0] <= '9' {
			if n, err := strconv.Atoi(string(v)); err == nil && n < 1<<20 {
				out.monitorS = n
			}
		}
	case "_context_request_id":
		p.str(&out.requestID, b, m)
	case "_context_global_request_id":
		p.str(&out.globalRequestID, b, m)
	case "event_type":
		p.str(&out.eventType, b, m)
	case "publisher_id":
		p.str(&out.publisherID, b, m)
	case "priority":
		p.str(&out.priority, b, m)
	case "message_id":
		p.str(&out.messageID, b, m)
	case "ending":
		out.hasEnding = true
		out.ending = string(b[m.start:m.end]) == "true"
	case "result":
		out.hasResult = true
		if !isNull(b, m.start, m.end) {
			out.result = p.red.json(&p.rs, b[m.start:m.end], p.policy, p.maxPayload)
		}
	case "failure":
		out.hasFailure = true
		if f, ok := stringValue(b, m.start, m.end); ok && f != "" {
			out.failure = parseFailure(p.red, []byte(f))
		}
	case "args", "payload":
		out.args = p.red.json(&p.rs, b[m.start:m.end], p.policy, p.maxPayload)
	}
}

// str queues the string value of m, decoded and cut to maxIDLen bytes, for dst (keep sets it); ok is false when
// the value is not a string (dst becomes "") or holds a bad escape (dst gets what decoded before it).
func (p *bodyParser) str(dst *string, b []byte, m *member) (ok bool) {
	start := len(p.strs)
	if raw, isStr := stringRaw(b, m.start, m.end); isStr {
		p.strs, ok = unescapeString(p.strs, raw, false)
	}
	end := min(len(p.strs), start+maxIDLen)
	p.strs = p.strs[:end]
	p.spans = append(p.spans, strSpan{dst: dst, start: start, end: end})
	return ok
}

// maxSharedStrs bounds the strings of one body that share an allocation. Only repeated keys go past it (every
// field is at most maxIDLen bytes): those get one string each, so the few kept do not pin the rest.
const maxSharedStrs = 4 << 10

// keep sets the fields queued by str, in order (a repeated key's last value wins), from one string.
func (p *bodyParser) keep() {
	if len(p.strs) <= maxSharedStrs {
		all := string(p.strs)
		for _, sp := range p.spans {
			*sp.dst = all[sp.start:sp.end]
		}
	} else {
		for _, sp := range p.spans {
			*sp.dst = string(p.strs[sp.start:sp.end])
		}
	}
	clear(p.spans) // drop the pointers into the event
	p.strs, p.spans = p.strs[:0], p.spans[:0]
}

// classify decides the kind from the keys present (oslo-wire-format.md sections 0 and 4).
func (b *bodyInfo) classify() {
	switch {
	case b.method != "":
		b.kind = mkRequest
	case b.eventType != "" && (b.publisherID != "" || b.priority != ""):
		b.kind = mkNotification
	case b.msgID != "" && (b.hasEnding || b.hasResult || b.hasFailure):
		b.kind = mkReply
	case b.hasEnding || b.hasResult || b.hasFailure:
		b.kind = mkLegacyReply
	default:
		b.kind = mkUnknown
	}
}

// parseFailure reads the serialized remote exception of a reply (JSON in the reply's JSON). Re-raised remote
// exceptions carry a "_Remote" suffix on class and module, which oslo strips before use; so do we.
// The message passes the Redactor before it is cut to maxMessageLen, so that no cut hides part of a secret from
// it (a database URL, a token in an exception message); the traceback is not kept.
func parseFailure(x *Redactor, f []byte) *RemoteError {
	s, ok := openObject(f, 0)
	if !ok {
		return &RemoteError{Class: "RemoteError", Message: truncate(x.String(string(f)), maxMessageLen)}
	}
	e := &RemoteError{}
	var m member
	for s.next(&m) {
		v, _ := stringValue(f, m.start, m.end)
		switch string(m.key) {
		case "class":
			e.Class = truncate(strings.TrimSuffix(v, "_Remote"), maxIDLen)
		case "module":
			e.Module = truncate(strings.TrimSuffix(v, "_Remote"), maxIDLen)
		case "message":
			e.Message = truncate(x.String(v), maxMessageLen)
		}
	}
	if e.Class == "" {
		e.Class = "RemoteError"
	}
	return e
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// compression names a body compression found in content_encoding or kombu's "compression" header.
type compression uint8

const (
	compNone compression = iota
	compGzip             // gzip, or zlib: kombu's "application/x-gzip" is zlib.compress output
	compBzip2
)

func compressionOf(contentEncoding, header string) compression {
	if header == "" && (contentEncoding == "utf-8" || contentEncoding == "") {
		return compNone // what kombu sends on every uncompressed message: skip the lower-casing and searching
	}
	for _, s := range [...]string{header, contentEncoding} {
		s = strings.ToLower(s)
		switch {
		case strings.Contains(s, "bz2"), strings.Contains(s, "bzip2"):
			return compBzip2
		case strings.Contains(s, "gzip"), strings.Contains(s, "zlib"), strings.Contains(s, "deflate"):
			return compGzip
		}
	}
	return compNone
}

// decompressHook, when a test sets it, runs at the start of every decompress (to see which goroutine inflates).
var decompressHook func()

// maxInflateFactor bounds decompression work: a body inflating past bodyCap*maxInflateFactor is read no further.
const maxInflateFactor = 64

// decompress inflates body within bounds. It returns the whole output when it fits in bodyCap, else its first and
// last bodyCap/2 bytes with truncated set. ok is false when the body is not in a format we know.
func (p *bodyParser) decompress(body []byte) (head, tail []byte, truncated, ok bool) {
	if decompressHook != nil {
		decompressHook()
	}
	var r io.Reader
	var err error
	switch {
	case len(body) >= 2 && body[0] == 0x1f && body[1] == 0x8b:
		r, err = gzip.NewReader(bytes.NewReader(body))
	case len(body) >= 3 && string(body[:3]) == "BZh":
		r = bzip2.NewReader(bytes.NewReader(body))
	case len(body) >= 2 && body[0]&0x0f == 8 && (uint16(body[0])<<8|uint16(body[1]))%31 == 0:
		r, err = zlib.NewReader(bytes.NewReader(body))
	default:
		return nil, nil, false, false
	}
	if err != nil {
		return nil, nil, false, false
	}
	// A time bound as well as the byte bound: some inputs inflate slowly (bzip2), and the workers serve every
	// connection's bodies.
	p.inflateCut = false
	start := time.Now()
	overtime := func() bool {
		if p.inflateFor > 0 && time.Since(start) > p.inflateFor {
			p.inflateCut = true
			return true
		}
		return false
	}
	limit := p.bodyCap
	buf := p.dec[:0]
	if cap(buf) < limit+1 {
		buf = make([]byte, 0, min(limit+1, 4*len(body)+512))
	}
	// Read up to bodyCap+1 bytes: all of it when it fits.
	for len(buf) <= limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := r.Read(buf[len(buf):min(cap(buf), limit+1)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			p.dec = buf
			return buf, nil, false, true
		}
		if rerr != nil || overtime() {
			p.dec = buf
			return buf, nil, true, len(buf) > 0
		}
	}
	p.dec = buf
	// Too big: keep the head and a rolling tail.
	half := limit / 2
	head = buf[:half:half]
	ring := make([]byte, half)
	copy(ring, buf[len(buf)-min(half, len(buf)-half):])
	filled := min(half, len(buf)-half)
	total := len(buf)
	chunk := make([]byte, 32<<10)
	for total < maxInflateFactor*limit {
		n, rerr := r.Read(chunk)
		total += n
		if c := chunk[:n]; len(c) >= half {
			copy(ring, c[len(c)-half:])
			filled = half
		} else {
			keep := min(filled, half-len(c))
			copy(ring, ring[filled-keep:filled])
			copy(ring[keep:], c)
			filled = keep + len(c)
		}
		if rerr != nil || overtime() {
			break
		}
	}
	return head, ring[:filled], true, true
}
