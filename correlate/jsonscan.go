package correlate

import (
	"bytes"
	"math/bits"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// A tiny JSON scanner for the few shapes oslo.messaging bodies have. It works on byte slices in place, never
// recurses (nesting is skipped by counting), and reports failure instead of panicking on any input, so it can read
// borrowed frame payloads, truncated heads and arbitrary fuzz input. It does not validate JSON beyond what it reads:
// skipping a value only has to find where the value ends.

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// scanString reads the JSON string that starts at b[i] (which must be '"'). It returns the raw content between the
// quotes, the index after the closing quote, and ok=false when the string is not closed within b.
func scanString(b []byte, i int) (raw []byte, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	start := i + 1
	// Jump from quote to quote (IndexByte is vectorised); a quote preceded by an odd run of backslashes is escaped.
	for j := start; j < len(b); {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			break
		}
		q := j + k
		bs := 0
		for p := q - 1; p >= start && b[p] == '\\'; p-- {
			bs++
		}
		if bs%2 == 0 {
			return b[start:q], q + 1, true
		}
		j = q + 1
	}
	return nil, len(b), false
}

// skipValue returns the index just after the JSON value that starts at b[i] (after whitespace), or ok=false when
// the value does not end within b.
func skipValue(b []byte, i int) (end int, ok bool) {
	i = skipWS(b, i)
	if i >= len(b) {
		return i, false
	}
	switch b[i] {
	case '"':
		_, end, ok = scanString(b, i)
		return end, ok
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			case '"':
				_, e, sok := scanString(b, j)
				if !sok {
					return len(b), false
				}
				j = e - 1
			}
		}
		return len(b), false
	default:
		// number, true, false, null: up to the next delimiter.
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || isWS(c) {
				break
			}
			j++
		}
		// A literal that runs to the end of the input is accepted: a whole value ("7") ends there; in a cut-off
		// object the member after it fails anyway.
		return j, j > i
	}
}

// unescapeString appends the decoded form of a JSON string's raw content to dst. When lenient is set, a cut-off
// escape at the end is dropped (truncated input) instead of failing.
func unescapeString(dst, raw []byte, lenient bool) ([]byte, bool) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			// Copy the run up to the next escape at once.
			j := len(raw)
			if k := bytes.IndexByte(raw[i+1:], '\\'); k >= 0 {
				j = i + 1 + k
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(raw) {
			return dst, lenient
		}
		out, n, ok := appendEscape(dst, raw[i:])
		if !ok {
			// A \u escape cut off by truncation is dropped when lenient; anything else malformed fails.
			return dst, lenient && raw[i+1] == 'u' && len(raw)-i < 12
		}
		dst, i = out, i+n
	}
	return dst, true
}

// appendEscape decodes the escape sequence at the start of b (a backslash and at least one more byte) onto dst and
// returns how many bytes of b it took; ok is false for an unknown escape or a malformed \u.
func appendEscape(dst, b []byte) ([]byte, int, bool) {
	var c byte
	switch b[1] {
	case '"', '\\', '/':
		c = b[1]
	case 'b':
		c = '\b'
	case 'f':
		c = '\f'
	case 'n':
		c = '\n'
	case 'r':
		c = '\r'
	case 't':
		c = '\t'
	case 'u':
		r, n, ok := readU(b)
		if !ok {
			return dst, 0, false
		}
		return utf8.AppendRune(dst, r), n, true
	default:
		return dst, 0, false
	}
	return append(dst, c), 2, true
}

// readU decodes "\uXXXX" (and a following low surrogate) at the start of b.
func readU(b []byte) (rune, int, bool) {
	r1, ok := hex4(b)
	if !ok {
		return 0, 0, false
	}
	if utf16.IsSurrogate(r1) {
		if r2, ok := hex4(b[6:]); ok && len(b) >= 12 && b[6] == '\\' {
			if r := utf16.DecodeRune(r1, r2); r != utf8.RuneError {
				return r, 12, true
			}
		}
		return utf8.RuneError, 6, true
	}
	return r1, 6, true
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// decodeString decodes the JSON string starting at b[i] ('"') into dst in one pass, and returns the index after its
// closing quote. It is scanString + unescapeString without walking the string twice, for oslo's big
// "oslo.message" value. That string is JSON text, so its escapes are nearly all \" and come every few bytes: it
// copies eight bytes at a time up to the next quote or backslash (a search for each backslash cost more in its
// call than in its scan) and decodes \" in line.
func decodeString(dst, b []byte, i int) ([]byte, int, bool) { return decodeWords(dst, b, i, false) }

// decodeWords is decodeString and, with clean, decodeCleanString: clean also stops at a control character and
// accepts only the escapes JSON has, as validStringContent does. The decoded text is never longer than the rest
// of b, which is the room it makes once.
func decodeWords(dst, b []byte, i int, clean bool) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return dst, i, false
	}
	const ones, high = 0x0101010101010101, 0x8080808080808080
	out := slices.Grow(dst, len(b)-i+8)
	n, buf := len(out), out[:cap(out)]
	for j := i + 1; ; {
		if j+8 <= len(b) {
			x := load8(b, j)
			store8(buf, n, x) // n+8 <= cap(buf): the output never runs ahead of the input
			q, y := x^(ones*'"'), x^(ones*'\\')
			m := (q-ones)&^q | (y-ones)&^y
			if clean {
				m |= (x - ones*0x20) &^ x
			}
			if m &= high; m == 0 {
				j, n = j+8, n+8
				continue
			}
			k := bits.TrailingZeros64(m) / 8
			j, n = j+k, n+k
			// JSON text held in a string stops here at every \" (two per name): decode it without the checks below.
			if b[j] == '\\' && j+1 < len(b) {
				if c := b[j+1]; c == '"' || c == '\\' {
					buf[n] = c
					j, n = j+2, n+1
					continue
				}
			}
		}
		if j >= len(b) {
			return buf[:n], len(b), false
		}
		switch c := b[j]; {
		case c == '"':
			return buf[:n], j + 1, true
		case clean && c < 0x20:
			return buf[:n], j, false
		case c != '\\': // in the last word of b
			buf[n] = c
			j, n = j+1, n+1
			continue
		}
		if j+1 >= len(b) {
			return buf[:n], len(b), false
		}
		switch b[j+1] {
		case '"', '\\', '/':
			buf[n] = b[j+1]
			j, n = j+2, n+1
			continue
		case 'u':
			if _, ok := hex4(b[j:]); clean && !ok {
				return buf[:n], j, false
			}
		case 'b', 'f', 'n', 'r', 't':
		default:
			if clean {
				return buf[:n], j, false
			}
		}
		e, k, ok := appendEscape(buf[:n], b[j:])
		if !ok {
			return buf[:n], j, false
		}
		j, n, buf = j+k, len(e), e[:cap(e)]
	}
}

// member is one "key": value pair of an object, as spans of the scanned buffer.
type member struct {
	key        []byte // raw key content (escapes not decoded; oslo keys never have any)
	start, end int    // the value's span
}

// objectScanner walks the members of a JSON object in place. next returns false at the closing brace (done=true)
// or at the first malformed or truncated spot (done=false); the members read before that stay valid, which is what
// reading the head of a truncated body needs.
type objectScanner struct {
	b    []byte
	i    int
	done bool // the closing brace was reached
	n    int
}

// openObject positions a scanner after the '{' at (or after whitespace before) b[i].
func openObject(b []byte, i int) (objectScanner, bool) {
	i = skipWS(b, i)
	if i >= len(b) || b[i] != '{' {
		return objectScanner{}, false
	}
	return objectScanner{b: b, i: i + 1}, true
}

// membersFrom positions a scanner at b[i] as if a member list started there (used to resume inside an object, for
// the tail of a truncated body).
func membersFrom(b []byte, i int) objectScanner { return objectScanner{b: b, i: i} }

func (s *objectScanner) next(m *member) bool { return s.key(m) && s.skip(m) }

// key reads the next member's name and sets m.key and m.start, the index where its value starts; the caller then
// either skips the value (skip) or reads it itself and says where it ended (took). false at the closing brace or
// at a malformed spot, as next.
func (s *objectScanner) key(m *member) bool {
	b := s.b
	i := skipWS(b, s.i)
	if i >= len(b) {
		return false
	}
	if b[i] == '}' {
		s.i, s.done = i+1, true
		return false
	}
	if s.n > 0 {
		if b[i] != ',' {
			return false
		}
		i = skipWS(b, i+1)
	}
	key, e, ok := scanString(b, i)
	if !ok {
		return false
	}
	i = skipWS(b, e)
	if i >= len(b) || b[i] != ':' {
		return false
	}
	m.key, m.start = key, skipWS(b, i+1)
	return true
}

// skip finds the end of the value key positioned m at and moves past it.
func (s *objectScanner) skip(m *member) bool {
	end, ok := skipValue(s.b, m.start)
	if !ok {
		// The value is cut off: report the member with what is there so a caller reading a truncated head can
		// still take a string prefix or nothing; it stops after this.
		s.i = len(s.b)
		return false
	}
	s.took(m, end)
	return true
}

// took moves past a value the caller read itself, which ended at end.
func (s *objectScanner) took(m *member, end int) {
	m.end = end
	s.i = end
	s.n++
}

// stringRaw returns the raw content of the member value at b[start:end], or ok=false when the value is not a
// string. The span is one objectScanner.next read whole, so a string value is its quotes and the raw content
// between them: nothing is scanned again.
func stringRaw(b []byte, start, end int) ([]byte, bool) {
	if end-start < 2 || b[start] != '"' {
		return nil, false
	}
	return b[start+1 : end-1], true
}

// stringValue returns the decoded string of the member value at b[start:end], or ok=false when the value is not a
// string.
func stringValue(b []byte, start, end int) (string, bool) {
	raw, ok := stringRaw(b, start, end)
	if !ok {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	out, ok := unescapeString(make([]byte, 0, len(raw)), raw, false)
	return string(out), ok
}

func isNull(b []byte, start, end int) bool {
	return end-start == 4 && string(b[start:end]) == "null"
}
