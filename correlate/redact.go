package correlate

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"strings"
)

// PayloadPolicy says whether RPC arguments, results and notification payloads reach records.
type PayloadPolicy uint8

// Payload policies. The zero value is PayloadRedacted, the default.
const (
	// PayloadRedacted keeps Args and Result after the values of secret-looking keys are replaced by "***" and long
	// strings are truncated.
	PayloadRedacted PayloadPolicy = iota
	// PayloadNone keeps no payload at all.
	PayloadNone
	// PayloadFull keeps payloads whole (within MaxPayloadBytes), except that keys naming an auth token are still
	// replaced: a Keystone token is a credential whatever the operator asked for.
	PayloadFull
)

// String returns the policy's flag spelling.
func (p PayloadPolicy) String() string {
	switch p {
	case PayloadNone:
		return "none"
	case PayloadFull:
		return "full"
	default:
		return "redacted"
	}
}

// ParsePayloadPolicy parses "none", "redacted" (or "") and "full".
func ParsePayloadPolicy(s string) (PayloadPolicy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "redacted":
		return PayloadRedacted, nil
	case "none":
		return PayloadNone, nil
	case "full":
		return PayloadFull, nil
	}
	return PayloadRedacted, fmt.Errorf("correlate: unknown payload policy %q (want none, redacted or full)", s)
}

// secretKeyParts are matched case-insensitively as substrings of object keys in redacted mode. They catch
// admin_password, auth_token, _context_auth_token, osprofiler's hmac_key, credentials, secret_key, and so on; the
// false positives (a "keypair" name) cost only a hidden value.
var secretKeyParts = [...]string{"password", "secret", "token", "key", "credential", "auth"}

// redactedValue replaces every secret value.
const redactedValue = `"***"`

// maxRedactDepth bounds nesting so a hostile body cannot drive recursion deep.
const maxRedactDepth = 32

// redactor copies one JSON value token by token, replacing secret values and truncating, within a byte budget.
// The output is always valid JSON: when the budget runs out it closes every open container after a "…" marker.
type redactor struct {
	full     bool
	maxBytes int
	maxStr   int
	out      []byte
	over     bool
}

// redactJSON returns a redacted, bounded copy of the JSON value src, or nil when the policy keeps nothing or src is
// not a JSON value this scanner can read.
func redactJSON(src []byte, policy PayloadPolicy, maxBytes int) json.RawMessage {
	if policy == PayloadNone || len(src) == 0 {
		return nil
	}
	r := redactor{full: policy == PayloadFull, maxBytes: maxBytes, maxStr: 256}
	if r.full {
		r.maxStr = maxBytes
	}
	r.out = make([]byte, 0, min(len(src), maxBytes)+16)
	end, ok := r.value(src, 0, 0)
	if !ok || (!r.over && skipWS(src, end) != len(src)) {
		return nil
	}
	return r.out
}

// budgetLeft says whether another element fits (with room to close the containers above).
func (r *redactor) budgetLeft(depth int) bool { return len(r.out)+depth+16 <= r.maxBytes }

func (r *redactor) value(b []byte, i, depth int) (int, bool) {
	i = skipWS(b, i)
	if i >= len(b) {
		return i, false
	}
	if depth >= maxRedactDepth && (b[i] == '{' || b[i] == '[') {
		end, ok := skipValue(b, i)
		r.out = append(r.out, `"…"`...)
		return end, ok
	}
	switch b[i] {
	case '{':
		return r.object(b, i, depth)
	case '[':
		return r.array(b, i, depth)
	case '"':
		raw, end, ok := scanString(b, i)
		if !ok || !validStringContent(raw) {
			return end, false
		}
		r.str(raw)
		return end, true
	default:
		end, ok := skipValue(b, i)
		if !ok {
			return end, false
		}
		if !json.Valid(b[i:end]) { // a number, true, false or null, and nothing else
			return end, false
		}
		r.out = append(r.out, b[i:end]...)
		return end, true
	}
}

func (r *redactor) object(b []byte, i, depth int) (int, bool) {
	r.out = append(r.out, '{')
	i++
	for n := 0; ; n++ {
		i = skipWS(b, i)
		if i >= len(b) {
			return i, false
		}
		if b[i] == '}' {
			r.out = append(r.out, '}')
			return i + 1, true
		}
		if n > 0 {
			if b[i] != ',' {
				return i, false
			}
			i = skipWS(b, i+1)
		}
		key, e, ok := scanString(b, i)
		if !ok || !validStringContent(key) {
			return e, false
		}
		i = skipWS(b, e)
		if i >= len(b) || b[i] != ':' {
			return i, false
		}
		i++
		if !r.budgetLeft(depth) {
			if n > 0 {
				r.out = append(r.out, ',')
			}
			r.out = append(r.out, `"…":"…"}`...)
			r.over = true
			return len(b), true
		}
		if n > 0 {
			r.out = append(r.out, ',')
		}
		r.out = append(r.out, '"')
		r.out = append(r.out, key...)
		r.out = append(r.out, '"', ':')
		if r.secretKey(key) {
			end, ok := skipValue(b, i)
			if !ok {
				return end, false
			}
			r.out = append(r.out, redactedValue...)
			i = end
			continue
		}
		end, ok := r.value(b, i, depth+1)
		if !ok {
			return end, false
		}
		if r.over {
			r.out = append(r.out, '}')
			return len(b), true
		}
		i = end
	}
}

func (r *redactor) array(b []byte, i, depth int) (int, bool) {
	r.out = append(r.out, '[')
	i++
	for n := 0; ; n++ {
		i = skipWS(b, i)
		if i >= len(b) {
			return i, false
		}
		if b[i] == ']' {
			r.out = append(r.out, ']')
			return i + 1, true
		}
		if n > 0 {
			if b[i] != ',' {
				return i, false
			}
			i++
		}
		if n > 0 {
			r.out = append(r.out, ',')
		}
		if !r.budgetLeft(depth) {
			r.out = append(r.out, `"…"]`...)
			r.over = true
			return len(b), true
		}
		end, ok := r.value(b, i, depth+1)
		if !ok {
			return end, false
		}
		if r.over {
			r.out = append(r.out, ']')
			return len(b), true
		}
		i = end
	}
}

// str writes a string value from its raw (still escaped) content, cut to maxStr bytes at an escape and UTF-8
// boundary.
func (r *redactor) str(raw []byte) {
	limit := min(r.maxStr, r.maxBytes-len(r.out)-24)
	r.out = append(r.out, '"')
	if len(raw) <= limit {
		r.out = append(r.out, raw...)
		r.out = append(r.out, '"')
		return
	}
	cut, escEnd := 0, 0
	for cut < len(raw) {
		step := 1
		if raw[cut] == '\\' {
			step = 2
			if cut+1 < len(raw) && raw[cut+1] == 'u' {
				step = 6
			}
		}
		if cut+step > limit {
			break
		}
		cut += step
		if step > 1 {
			escEnd = cut
		}
	}
	// Never split a UTF-8 sequence: back off over continuation bytes, but at most three (a sequence is at most
	// four bytes; more continuation bytes in a row is invalid UTF-8 anyway) and never into an escape, which would
	// leave a lone backslash and invalid JSON (found by FuzzBodyParser: "\b" followed by stray 0xb9 bytes).
	for back := 0; back < 3 && cut > escEnd && cut < len(raw) && raw[cut]&0xC0 == 0x80; back++ {
		cut--
	}
	r.out = append(r.out, raw[:max(cut, 0)]...)
	r.out = append(r.out, `…"`...)
}

func (r *redactor) secretKey(key []byte) bool {
	if r.full {
		return containsFold(key, "auth_token")
	}
	for _, p := range secretKeyParts {
		if containsFold(key, p) {
			return true
		}
	}
	return false
}

// containsFold reports whether s contains the lower-case ASCII word sub, ignoring ASCII case, without allocating.
func containsFold(s []byte, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

// validStringContent checks what the redactor copies verbatim: no raw control characters and only JSON escapes, so
// the output is always valid JSON.
func validStringContent(raw []byte) bool {
	for i := 0; ; i++ {
		if i = ctlOrBackslash(raw, i); i >= len(raw) {
			return true
		}
		if raw[i] < 0x20 || i+1 >= len(raw) {
			return false
		}
		switch raw[i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			if _, ok := hex4(raw[i:]); !ok {
				return false
			}
			i += 5
		default:
			return false
		}
	}
}

// ctlOrBackslash returns the index of the first control character (below 0x20) or backslash in b at or after i,
// or len(b). Argument strings run for hundreds of bytes without either, so it tests eight bytes at a time with the
// "has a byte below n" trick: (x - 0x0101..01*n) &^ x & 0x8080..80 is non-zero exactly when some byte of x is
// below n (n <= 0x80), and its lowest set bit is in the lowest such byte (a borrow can only mark bytes above it).
// A backslash is a zero byte of x ^ 0x5c5c..5c, that is a byte below 1.
func ctlOrBackslash(b []byte, i int) int {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		y := x ^ (ones * '\\')
		if m := ((x-ones*0x20)&^x | (y-ones)&^y) & high; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 || b[i] == '\\' {
			return i
		}
	}
	return len(b)
}
