package correlate

// The fast copy. Most of a payload has nothing to remove: a call's arguments are ids, names, numbers and
// timestamps, with a secret or two among them. The token copy (redactor.value) writes every token it reads; the
// fast copy reads the same tokens with the same rules but writes nothing while the input can stand as it is, and
// copies the stretch before each change in one append (a payload without secrets is one copy, made by its caller).
// It keeps the input's white space and leaves a string holding JSON as it was quoted when nothing in it changes.
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
func (r *redactor) spanValue(b []byte, i, depth int) (int, bool) {
	var stack uint64 // one bit per open container, 1 for an object; the innermost is bit 0
	open := 0        // how many containers are open
	i = skipWS(b, i)
	for st := spanValue; ; {
		switch st {
		case spanValue:
			if i >= len(b) {
				return i, false
			}
			switch c := b[i]; c {
			case '{', '[':
				if depth+open >= maxRedactDepth {
					return i, false // the token copy writes "…" for it
				}
				stack, open = stack<<1, open+1
				if c == '{' {
					stack |= 1
				}
				i = skipWS(b, i+1)
				if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
					i, stack, open, st = i+1, stack>>1, open-1, spanClosed
				} else if c == '{' {
					st = spanKey
				}
			case '"':
				end, ok := r.spanString(b, i, depth+open)
				if !ok {
					return end, false
				}
				i, st = end, spanClosed
			default:
				end, ok := skipValue(b, i)
				if !ok || !validScalar(b[i:end]) { // a number, true, false or null, and nothing else
					return end, false
				}
				i, st = end, spanClosed
			}
		case spanKey:
			key, _, colon, ok := memberName(b, i)
			if !ok {
				return colon, false
			}
			i, st = skipWS(b, colon+1), spanValue
			if rule := r.keyRule(key); rule >= 0 {
				end, ok := skipValue(b, i)
				if !ok {
					return end, false
				}
				if end-i != 4 || string(b[i:end]) != "null" { // a null hides nothing: it stays
					r.out = append(append(r.out, b[r.last:i]...), redactedValue...)
					r.last, r.edits = end, r.edits+1
					r.tally.add(r.x, rule, 1)
				}
				i, st = end, spanClosed
			}
		case spanClosed:
			if open == 0 {
				return i, true
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return i, false
			}
			switch inObject := stack&1 != 0; {
			case b[i] == ',':
				i, st = skipWS(b, i+1), spanValue
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

// spanString reads the string value at b[i] ('"') at nesting depth, as the token copy's value does, and writes it
// only when it changes: a secret value in it, a cut, or JSON held in it that changes.
func (r *redactor) spanString(b []byte, i, depth int) (int, bool) {
	if i+1 < len(b) && (b[i+1] == '{' || b[i+1] == '[') && depth+1 < maxRedactDepth {
		mark := len(r.out)
		r.out = append(r.out, b[r.last:i]...)
		if end, ok := r.nestedAt(b, i, depth); ok {
			if r.nestedSame {
				r.out = r.out[:mark]
			} else {
				r.last, r.edits = end, r.edits+1
			}
			return end, true
		}
		r.out = r.out[:mark]
	}
	raw, end, trig, ok := scanCleanString(b, i)
	if !ok {
		return end, false
	}
	if len(raw) <= r.maxStr && (len(raw) == 0 || raw[0] != '{' && raw[0] != '[' && !isWS(raw[0])) {
		if !trig && !r.pats {
			return end, true // nothing for the rules, no JSON in it, not cut
		}
		out, changed := r.x.textInto(r.sc.text[:0], raw, true, nextValueStart, &r.tally)
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
