package correlate

import (
	"bytes"
	"math/bits"
)

// The fast copy. Most of a payload has nothing to remove: a call's arguments are ids, names, numbers and
// timestamps, with a secret or two among them. The token copy (redactor.value) writes every token it reads; the
// fast copy reads the same tokens with the same rules but writes nothing while the input can stand as it is, and
// copies the stretch before each change in one append (a payload without secrets is one copy, made by its caller).
// It keeps the input's white space and reads a string holding JSON (nova's connection_info, block_device_info) in
// its escaped form, in the same pass: nothing is decoded into a copy and escaped again, and the changes in it are
// written in its escaped form. Text whose strings have escapes of their own is decoded and copied as before.
// What it does not take (nesting deeper than maxRedactDepth, malformed input, a result over the budget) the token
// copy reads again from the start, and only the copy that is kept counts its removals (tally).

// spanState is where spanValue is in the grammar.
type spanState uint8

const (
	spanValue  spanState = iota // a value starts at i
	spanKey                     // a member's name starts at i
	spanClosed                  // a value ended just before i
)

// spanValue reads the JSON value at b[i] (after white space) at nesting depth, appending to r.out only what
// changes and the input before it that is not copied yet (from r.last); it returns the index after the value, and
// false where the token copy must take over. The caller copies b[r.last:end] after the last change (when
// r.edits > 0).
func (r *redactor) spanValue(b []byte, i, depth int) (int, bool) { return r.span(b, i, depth, false) }

// span is spanValue; with esc the value is JSON text held in a JSON string, read in its escaped form: its strings
// start and end with \", and its white space is spaces only (a tab would be a raw control character in the string
// that holds it).
func (r *redactor) span(b []byte, i, depth int, esc bool) (int, bool) {
	var stack uint64 // one bit per open container, 1 for an object; the innermost is bit 0
	open := 0        // how many containers are open
	i = skipSpace(b, i, esc)
	for st := spanValue; ; {
		switch st {
		case spanValue:
			if i >= len(b) {
				return i, false
			}
			switch c := b[i]; {
			case c == '"' && !esc: // first: most values are strings
				end, ok := r.spanString(b, i, depth+open)
				if !ok {
					return end, false
				}
				i, st = end, spanClosed
			case c == '{' || c == '[':
				if depth+open >= maxRedactDepth {
					return i, false // the token copy writes "…" for it
				}
				stack, open = stack<<1, open+1
				if c == '{' {
					stack |= 1
				}
				i = skipSpace(b, i+1, esc)
				if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
					i, stack, open, st = i+1, stack>>1, open-1, spanClosed
				} else if c == '{' {
					st = spanKey
				}
			case c == '\\' && esc:
				end, ok := r.spanEscapedString(b, i)
				if !ok {
					return end, false
				}
				i, st = end, spanClosed
			default:
				if end := shortScalar(b, i); end > i {
					i, st = end, spanClosed
					break
				}
				end, ok := skipValue(b, i)
				if !ok || !validScalar(b[i:end]) { // a number, true, false or null, and nothing else
					return end, false
				}
				i, st = end, spanClosed
			}
		case spanKey:
			colon, rule, ok := r.spanName(b, i, esc)
			if !ok {
				var key []byte
				if key, _, colon, ok = memberName(b, i, esc); !ok {
					return colon, false
				}
				rule = r.keyRule(key)
			}
			i, st = skipSpace(b, colon+1, esc), spanValue
			if rule >= 0 {
				skip := skipValue
				if esc {
					skip = skipEscapedValue
				}
				end, ok := skip(b, i)
				if !ok {
					return end, false
				}
				if end-i != 4 || string(b[i:end]) != "null" { // a null hides nothing: it stays
					v := redactedValue
					if esc {
						v = `\"***\"`
					}
					r.out = append(append(r.out, b[r.last:i]...), v...)
					r.last, r.edits = end, r.edits+1
					r.tally.add(r.x, rule, 1)
				}
				i, st = end, spanClosed
			}
		case spanClosed:
			if open == 0 {
				return i, true
			}
			i = skipSpace(b, i, esc)
			if i >= len(b) {
				return i, false
			}
			switch inObject := stack&1 != 0; {
			case b[i] == ',':
				i, st = skipSpace(b, i+1, esc), spanValue
				if inObject {
					st = spanKey
				}
			case inObject && b[i] == '}', !inObject && b[i] == ']':
				i, stack, open = i+1, stack>>1, open-1
			default:
				return i, false
			}
		}
	}
}

// spanName is memberName and keyRule in one pass for the names most members have: no escape, 1 to
// maxCachedKeyLen-1 bytes, in input that runs on for at least eight bytes after the name's start (sixteen for a name
// over seven bytes). It returns the colon's index and the key's rule; false, having read nothing for good, for any
// other name (or malformed input), which the caller gives to memberName. It finds the name's end with a stop test
// alone (nameStops: a name needs no trigger), and the words it read on the way are the keyWords keyRule's cache is
// probed with.
func (r *redactor) spanName(b []byte, i int, esc bool) (colon, rule int, ok bool) {
	s := i + 1 // the name's first byte
	if esc {
		if s++; s+8 > len(b) || b[i] != '\\' || b[i+1] != '"' {
			return 0, 0, false
		}
	} else if s+8 > len(b) || b[i] != '"' {
		return 0, 0, false
	}
	// Most names end within their first sixteen bytes, which are read as two words; a longer one is read on
	// while eight more bytes are there (and a name over maxCachedKeyLen is left to memberName).
	var w keyWords
	w.first = load8(b, s)
	e := s
	if m := nameStops(w.first); m != 0 {
		if m&0x80 != 0 {
			return 0, 0, false // an empty name
		}
		e, w.first = s+bits.TrailingZeros64(m)/8, w.first&((m^(m-1))>>8) // the bytes before the stop
	} else if s+16 > len(b) {
		return 0, 0, false
	} else if second := load8(b, s+8); nameStops(second) != 0 {
		if e = s + 8 + bits.TrailingZeros64(nameStops(second))/8; e > s+8 {
			w.last = load8(b, e-8)
		}
	} else {
		for e = s + 16; ; e += 8 {
			if e+8 > len(b) || e-s >= maxCachedKeyLen {
				return 0, 0, false
			}
			if m := nameStops(load8(b, e)); m != 0 {
				e += bits.TrailingZeros64(m) / 8
				break
			}
		}
		if w.last = load8(b, e-8); e-s > 16 { // a name of exactly 16 bytes is its first and last words (wordsOf)
			w.mid = second
		}
	}
	end := e + 1
	if esc {
		if e+1 >= len(b) || b[e] != '\\' || b[e+1] != '"' {
			return 0, 0, false
		}
		end++
	} else if b[e] != '"' {
		return 0, 0, false
	}
	if colon = end; colon >= len(b) || b[colon] != ':' {
		if colon = skipSpace(b, end, esc); colon >= len(b) || b[colon] != ':' {
			return 0, 0, false
		}
	}
	if n := uint8(e - s); r.keys != nil && n <= wholeKeyWords { // cachedKeyRule's hit, inline
		if rule, ok := r.keys.pair(w, n).hit(w, n); ok {
			return colon, rule, true
		}
	}
	return colon, r.cachedKeyRule(b[s:e], w), true
}

// nameStops is stopBytes for spanName, cheaper by taking a space and a '!' for stops too (bytes below '"'+1): a
// name holds neither, and one that does is not ended by them but left to memberName.
func nameStops(x uint64) uint64 {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	return ((x - ones*('"'+1)) | (x ^ ones*'\\' - ones)) &^ x & high
}

// spanString reads the string value at b[i] ('"') at nesting depth, as the token copy's value does, and writes it
// only when it changes: a secret value in it, a cut, or JSON held in it that changes.
func (r *redactor) spanString(b []byte, i, depth int) (int, bool) {
	if i+1 < len(b) && (b[i+1] == '{' || b[i+1] == '[') && depth+1 < maxRedactDepth {
		if end, ok := r.spanHeld(b, i, depth); ok {
			return end, true
		}
		mark := len(r.out)
		r.out = append(r.out, b[r.last:i]...)
		at := len(r.out)
		if end, ok := r.nestedAt(b, i, depth); ok {
			if bytes.Equal(r.out[at:], b[i:end]) { // nothing in it changed: it stays as it was quoted
				r.out = r.out[:mark]
			} else {
				r.last, r.edits = end, r.edits+1
			}
			return end, true
		}
		r.out = r.out[:mark]
	}
	// Most strings have no escape: their closing quote is the first stop (scanCleanString's first run, inline).
	var raw []byte
	end, trig := stringRun(b, i+1)
	if ok := end < len(b) && b[end] == '"'; ok {
		if n := end - i - 1; !trig && !r.pats && n <= r.maxStr && (n == 0 || textStart(b[i+1])) {
			return end + 1, true // nothing for the rules, no JSON in it, not cut (below, without raw)
		}
		raw, end = b[i+1:end], end+1
	} else if raw, end, trig, ok = scanCleanString(b, i); !ok {
		return end, false
	}
	if len(raw) <= r.maxStr && (len(raw) == 0 || textStart(raw[0])) {
		if !trig && !r.pats {
			return end, true // nothing for the rules, no JSON in it, not cut
		}
		out, changed := r.x.rules(r.sc.text[:0], raw, true, &r.tally)
		if !changed {
			return end, true
		}
		r.sc.text = out
		r.out = append(r.out, b[r.last:i]...)
		r.str(out)
	} else {
		r.out = append(r.out, b[r.last:i]...)
		r.stringValue(raw, trig, depth)
	}
	r.last, r.edits = end, r.edits+1
	return end, true
}

// spanHeld reads the string at b[i] ('"', then '{' or '[') as JSON text held in it, in its escaped form, with
// its changes written in that form; false, with nothing written or counted, when the string is not one JSON
// value of that form (its strings have escapes of their own, it is longer than maxNestedJSON) and the caller
// takes it as nestedAt does.
func (r *redactor) spanHeld(b []byte, i, depth int) (int, bool) {
	mark, last, edits, t := len(r.out), r.last, r.edits, r.tally
	end, ok := r.span(b, i+1, depth+1, true)
	if ok {
		end = skipSpace(b, end, true)
	}
	if !ok || end >= len(b) || b[end] != '"' || end-i-1 > maxNestedJSON {
		r.out, r.last, r.edits, r.tally = r.out[:mark], last, edits, t
		return i, false
	}
	return end + 1, true
}

// spanEscapedString reads a string value of JSON text held in a string (esc) at b[i] (\") and writes the value
// rules' changes to its content. A string the token copy would cut, or would read as JSON held in it again, is
// left to it (false).
func (r *redactor) spanEscapedString(b []byte, i int) (int, bool) {
	// scanEscapedString, inline, with the content's bounds only: most strings are passed over.
	if i+1 >= len(b) || b[i] != '\\' || b[i+1] != '"' {
		return i, false
	}
	stop, trig := stringRun(b, i+2)
	if stop+1 >= len(b) || b[stop] != '\\' || b[stop+1] != '"' {
		return stop, false
	}
	end := stop + 2
	if n := stop - i - 2; n > r.maxStr || n > 0 && !textStart(b[i+2]) {
		return end, false
	}
	if !trig && !r.pats {
		return end, true
	}
	raw := b[i+2 : stop]
	out, changed := r.x.rules(r.sc.text[:0], raw, true, &r.tally)
	if !changed {
		return end, true
	}
	if len(out) > r.maxStr {
		return end, false
	}
	r.sc.text = out
	r.out = append(append(r.out, b[r.last:i+2]...), out...)
	r.last, r.edits = end-2, r.edits+1
	return end, true
}

// skipEscapedValue is skipValue for JSON text held in a string, in its escaped form (esc): the end of the value at
// b[i], whose strings are scanEscapedString's.
func skipEscapedValue(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '\\' {
		_, end, _, ok := scanEscapedString(b, i)
		return end, ok
	}
	if i >= len(b) || b[i] != '{' && b[i] != '[' {
		return skipValue(b, i)
	}
	for depth, j := 0, i; j < len(b); j++ {
		switch b[j] {
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return j + 1, true
			}
		case '\\':
			_, e, _, ok := scanEscapedString(b, j)
			if !ok {
				return e, false
			}
			j = e - 1
		case '"':
			return j, false // the end of the string that holds the text
		}
	}
	return len(b), false
}

// shortScalar returns the end of the scalar at b[i] when it is one of the common ones, a positive integer or null,
// followed by a comma or a closing bracket, as skipValue and validScalar would take it; i for any other, which
// they read.
func shortScalar(b []byte, i int) int {
	j := i
	switch c := b[i]; {
	case c >= '1' && c <= '9':
		for j++; j < len(b) && b[j] >= '0' && b[j] <= '9'; {
			j++
		}
	case c == 'n' && len(b)-i > 4 && string(b[i:i+4]) == "null":
		j += 4
	}
	if j < len(b) && (b[j] == ',' || b[j] == '}' || b[j] == ']') {
		return j
	}
	return i
}

// textStart says whether a string whose content starts with c is text to the fast copy: not JSON held in it, and
// no white space first (the token copy would read such a string as JSON held in it, after the white space).
func textStart(c byte) bool { return c != '{' && c != '[' && (c > ' ' || !isWS(c)) }

// skipSpace is skipWS, or with esc spaces only (JSON text held in a string, read in its escaped form). Compact JSON
// has no white space, and every byte of it is above ' ': one comparison passes it.
func skipSpace(b []byte, i int, esc bool) int {
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || !esc && (b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) {
		i++
	}
	return i
}
