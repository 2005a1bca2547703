package correlate

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"
)

// PayloadPolicy says whether RPC arguments, results and notification payloads reach records.
type PayloadPolicy uint8

// Payload policies. The zero value is PayloadRedacted, the default. Secrets are removed in every policy that keeps
// a payload: the policy decides how much of the rest is kept, never whether the Redactor runs.
const (
	// PayloadRedacted keeps Args and Result after the Redactor, with strings over 256 bytes cut.
	PayloadRedacted PayloadPolicy = iota
	// PayloadNone keeps no payload at all.
	PayloadNone
	// PayloadFull keeps payloads whole (within MaxPayloadBytes, no string is cut), after the same Redactor.
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

// Redaction rules, as counted by Redactor.Counts (the rule label of amqptrace_redactions_total).
const (
	RuleKey          = "key"             // the value of a secret-looking key (JSON member, or key=value in text)
	RuleURLPassword  = "url_password"    // the password of a URL's userinfo: scheme://user:PW@host
	RuleFernet       = "fernet_token"    // a Keystone Fernet token: gAAAAA + base64url
	RuleJWT          = "jwt"             // a JSON Web Token: eyJ… . … . …
	RulePKIToken     = "pki_token"       // a Keystone PKI token or DER blob: MII + long base64
	RulePEM          = "pem_private_key" // a PEM block whose type ends in PRIVATE KEY
	RuleExtraKey     = "extra_key"       // a key named by RedactRules.Keys
	RuleExtraPattern = "extra_pattern"   // a match of RedactRules.Patterns
)

const numRules = 8

func ruleName(i int) string {
	return [numRules]string{RuleKey, RuleURLPassword, RuleFernet, RuleJWT, RulePKIToken, RulePEM, RuleExtraKey,
		RuleExtraPattern}[i]
}

const (
	ruleKey = iota
	ruleURL
	ruleFernet
	ruleJWT
	rulePKI
	rulePEM
	ruleExtraKey
	ruleExtraPattern
)

// RedactRules are the operator's additions to the built-in rules (amqptrace proxy --redact-keys, --redact-patterns).
type RedactRules struct {
	// Keys are extra key names whose values are removed. A key matches when it contains the name, ignoring case
	// and the separators _ - . and space: "vnc_pass" matches "vncPass", "VNC-PASS" and "old_vnc_pass".
	Keys []string
	// Patterns are extra regular expressions (Go RE2 syntax); every match in a string value, exception message
	// or log field is replaced by "***". Each is applied to every string, so keep them few and anchored.
	Patterns []string
}

// Redactor is the one place that decides what is a secret. It runs over every payload as it is parsed (Args,
// Result, remote exceptions) and over every emitted Record before any sink sees it; a sink that wants a second
// line of defence calls the same Redactor again, never rules of its own. The zero of *Redactor (nil) applies the
// built-in rules and counts nothing; NewRedactor adds the operator's rules and counts by rule. It is safe for
// concurrent use.
type Redactor struct {
	extraKeys []string // normalised: lower case, no separators
	extraPats []*regexp.Regexp
	counts    [numRules]atomic.Uint64
}

// NewRedactor returns a Redactor with the built-in rules plus rules; it fails on an invalid pattern.
func NewRedactor(rules RedactRules) (*Redactor, error) {
	x := &Redactor{}
	for _, k := range rules.Keys {
		if n := normalizeKey(k); n != "" {
			x.extraKeys = append(x.extraKeys, n)
		}
	}
	for _, p := range rules.Patterns {
		if strings.TrimSpace(p) == "" {
			continue
		}
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("correlate: redaction pattern %q: %v", p, err)
		}
		x.extraPats = append(x.extraPats, re)
	}
	return x, nil
}

// Counts returns how many values each rule has removed since NewRedactor, by rule name (every rule is present).
func (x *Redactor) Counts() map[string]uint64 {
	out := make(map[string]uint64, numRules)
	for i := range numRules {
		if x != nil {
			out[ruleName(i)] = x.counts[i].Load()
		} else {
			out[ruleName(i)] = 0
		}
	}
	return out
}

// tally holds what one payload's redaction removed, by rule, until the copy it belongs to is kept: a copy that is
// given up (a nested JSON string written as text after all, a fast copy redone by the token copy) counts nothing.
type tally [numRules]uint32

// add counts n removals by rule; a nil tally counts them on x at once.
func (t *tally) add(x *Redactor, rule int, n uint32) {
	if t == nil {
		if x != nil {
			x.counts[rule].Add(uint64(n))
		}
		return
	}
	t[rule] += n
}

// merge adds u to t.
func (t *tally) merge(u *tally) {
	for i, n := range u {
		t[i] += n
	}
}

// commit counts t on x.
func (t *tally) commit(x *Redactor) {
	if x == nil {
		return
	}
	for i, n := range t {
		if n > 0 {
			x.counts[i].Add(uint64(n))
		}
	}
}

// redactedText replaces every secret value.
const redactedText = "***"

// redactedValue is redactedText as a JSON value.
const redactedValue = `"***"`

// String returns s with every secret value removed by the value rules (URL passwords, key=value pairs with a
// secret key, tokens, PEM private keys, the operator's patterns). It returns s itself, without allocating, when
// there is nothing to remove. Use it for any text from the wire that goes to a log line or a record.
func (x *Redactor) String(s string) string {
	if s == "" {
		return s
	}
	// text only reads its input, so it may read s in place: the common case (nothing to remove) allocates nothing.
	out, changed := x.text(nil, unsafe.Slice(unsafe.StringData(s), len(s)), false)
	if !changed {
		return s
	}
	return string(out)
}

// Record removes secrets from every free-text field of r, in place, just before it is emitted: remote exception
// class, module and message, the Basic.Return text, names taken from the body or the properties. Args and Result
// were redacted as they were parsed (JSON), by the same rules, and the endpoints with their connection's identity,
// where it was read (Conn.vet): a record only shares them. A pointed-to value that changes is copied first.
func (x *Redactor) Record(r *Record) { r.edit(x, editRedact) }

func (x *Redactor) endpoint(e Endpoint) Endpoint {
	return Endpoint{Service: x.String(e.Service), PID: e.PID, Host: x.String(e.Host),
		Connection: x.String(e.Connection), User: x.String(e.User), Vhost: x.String(e.Vhost), Port: e.Port,
		Broker: x.String(e.Broker)}
}

// maxRedactDepth bounds nesting so a hostile body cannot drive recursion deep. JSON held in strings counts too.
const maxRedactDepth = 32

// maxNestedJSON bounds the JSON text held in one string that is parsed again (nova's connection_info,
// block_device_info, network_info are a few KiB). A longer string is treated as text: value rules only.
const maxNestedJSON = 256 << 10

// JSON returns a redacted, bounded copy of the JSON value src, or nil when the policy keeps nothing or src is
// not a JSON value this scanner can read. The result is valid JSON and at most maxBytes long: when the budget runs
// out every open container is closed after a "…" marker. Values of secret keys become "***"; every string is
// passed through the value rules; a string that holds JSON (an object or array) is parsed, redacted and
// re-encoded. PayloadRedacted also cuts strings over 256 bytes; PayloadFull keeps them whole.
func (x *Redactor) JSON(src []byte, policy PayloadPolicy, maxBytes int) json.RawMessage {
	return x.json(nil, src, policy, maxBytes)
}

// json is JSON with scratch buffers kept in sc between calls (nil: new ones). The result is never in sc.
func (x *Redactor) json(sc *redactScratch, src []byte, policy PayloadPolicy, maxBytes int) json.RawMessage {
	if policy == PayloadNone || len(src) == 0 {
		return nil
	}
	if sc == nil {
		sc = new(redactScratch)
	}
	out, end := x.jsonAt(sc, src, 0, policy, maxBytes)
	if end >= 0 && skipWS(src, end) != len(src) {
		return nil // more than one value
	}
	return out
}

// jsonAt is json for the JSON value that starts at b[i] and may be followed by more text: it also returns the
// index just after the value, or -1 when it cannot tell (the budget ran out before the value's end, or the value
// is not one it accepts, and then the result is nil).
func (x *Redactor) jsonAt(sc *redactScratch, b []byte, i int, policy PayloadPolicy, maxBytes int) (json.RawMessage, int) {
	return x.copyAt(sc, b, i, policy, maxBytes, false)
}

// copyAt is jsonAt; tokens makes it take the token copy all the way down (the tests' reference for the fast copy).
func (x *Redactor) copyAt(sc *redactScratch, b []byte, i int, policy PayloadPolicy, maxBytes int, tokens bool) (json.RawMessage, int) {
	if policy == PayloadNone || i >= len(b) {
		return nil, -1
	}
	r := redactor{x: x, pats: x != nil && len(x.extraPats) > 0, maxBytes: maxBytes, maxStr: 256, sc: sc, tokens: tokens}
	if policy == PayloadFull {
		r.maxStr = maxBytes
	}
	// The value's length is not known before it is read, and the rest of b can be twice it (an oslo call's
	// _context_* keys follow its args): the copy is made in scratch and then cut to size, as a record keeps it.
	r.out, r.last = sc.whole[:0], i
	if !tokens {
		end, ok := r.spanValue(b, i, 0)
		if ok && r.edits > 0 {
			r.out = append(r.out, b[r.last:end]...)
		}
		sc.whole = r.out
		if ok {
			out := b[i:end]
			if r.edits > 0 {
				out = r.out
			}
			if len(out)+16 <= maxBytes {
				r.tally.commit(x)
				return slices.Clone(out), end
			}
		}
	}
	// What the fast copy does not take: the token copy reads it again.
	r = redactor{x: r.x, pats: r.pats, maxBytes: maxBytes, maxStr: r.maxStr, sc: sc, out: sc.whole[:0], tokens: tokens}
	end, ok := r.value(b, i, 0)
	sc.whole = r.out
	if !ok {
		return nil, -1
	}
	r.tally.commit(x)
	out := json.RawMessage(slices.Clone(r.out))
	if r.over {
		return out, -1
	}
	return out, end
}

// redactJSON is JSON with the built-in rules only.
func redactJSON(src []byte, policy PayloadPolicy, maxBytes int) json.RawMessage {
	return (*Redactor)(nil).JSON(src, policy, maxBytes)
}

// redactor copies one JSON value token by token, replacing secret values and truncating, within a byte budget.
// The output is always valid JSON: when the budget runs out it closes every open container after a "…" marker.
type redactor struct {
	x        *Redactor
	pats     bool // x has patterns of the operator's, which every string is matched against
	maxBytes int
	maxStr   int
	out      []byte
	over     bool
	sc       *redactScratch
	level    int // how many strings holding JSON this copy is inside
	tally    tally
	// The fast copy (span) writes nothing while the input can stand as it is: last is where the input not yet
	// copied to out starts, and edits counts the values it changed.
	last, edits int
	tokens      bool      // the token copy only, in nested JSON too (the tests' reference)
	keys        *keyCache // sc.keys once a name was looked up in it (keyCache)
}

// redactScratch is what a redaction writes and then drops: the owner of one (a bodyParser, so one per connection
// direction, used by one goroutine) keeps its buffers from one payload to the next.
type redactScratch struct {
	text  []byte // a string's content after the value rules, until it is copied out
	whole []byte // jsonAt's copy, until it is cut to size
	// nested holds, for each level of JSON held in a string, the string's unescaped text and its redacted copy.
	nested [][2][]byte
	// keys remembers keyRule's verdict on the member names seen: a connection sends the same few dozen names in
	// every message.
	keys *keyCache
}

// keyCache is a small cache of keyRule's verdicts, for one Redactor's rules: a name may sit in one of two slots
// side by side, chosen by a hash of its length and its first and last eight bytes; a new name takes a free one of
// them or replaces the first. A slot keeps the name's keyWords and length, which are the whole name up to 24
// bytes, so that most names are compared without a call; a longer name is kept too and compared whole. Names longer
// than maxCachedKeyLen are not kept, so it holds at most keyCacheSize*maxCachedKeyLen bytes of names. Its slots are
// 6 KiB, allocated by the first payload a body parser (one per connection and direction) redacts: an idle
// connection has none.
type keyCache struct {
	of    *Redactor
	slots [keyCacheSize / 2]keyPair
}

type keyPair [2]keySlot

type keySlot struct {
	w    keyWords
	name string // only for a name over 24 bytes
	n    uint8  // the name's length; 0 for a free slot
	rule int8
}

// keyWords are the words a keyCache slot keeps of a name: its first eight bytes (little endian, zero above a
// shorter name's end), for a name over 16 bytes the eight after them, and for a name over eight bytes its last
// eight. With the length they are the whole name up to 24 bytes. spanName reads the same words off the input in
// place.
type keyWords struct{ first, mid, last uint64 }

const (
	keyCacheBits    = 7
	keyCacheSize    = 1 << keyCacheBits
	maxCachedKeyLen = 48
	wholeKeyWords   = 24 // a name up to this long is told by its keyWords
)

// keyRule is Redactor.keyRule through the scratch's cache. A hit costs a hash of two words and the comparison of
// three (and of the rest of a name over 24 bytes); only a name over 24 bytes that takes a slot is copied.
func (r *redactor) keyRule(key []byte) int {
	if len(key) > maxCachedKeyLen || len(key) == 0 {
		return r.x.keyRule(key)
	}
	return r.cachedKeyRule(key, wordsOf(key))
}

// wordsOf returns the keyWords of a name.
func wordsOf(key []byte) (w keyWords) {
	n := len(key)
	if n < 8 {
		for j := n - 1; j >= 0; j-- {
			w.first = w.first<<8 | uint64(key[j])
		}
		return w
	}
	w.first = load8(key, 0)
	if n > 16 {
		w.mid = load8(key, 8)
	}
	if n > 8 {
		w.last = load8(key, n-8)
	}
	return w
}

// cachedKeyRule is keyRule for a name of 1 to maxCachedKeyLen bytes whose keyWords are w. A name of up to 24
// bytes is told by its words alone; everything that calls out (a longer name's comparison, a miss, the first name
// of a copy) is left to functions it returns through, so that nothing of it is kept over a call.
func (r *redactor) cachedKeyRule(key []byte, w keyWords) int {
	kc := r.keys
	if kc == nil {
		return r.firstKeyRule(key, w)
	}
	n := uint8(len(key))
	pair := kc.pair(w, n)
	if n <= wholeKeyWords {
		if rule, ok := pair.hit(w, n); ok {
			return rule
		}
	}
	return r.slotKeyRule(pair, key, w)
}

// pair returns the pair of slots a name of n bytes whose keyWords are w may sit in.
func (kc *keyCache) pair(w keyWords, n uint8) *keyPair {
	return &kc.slots[(w.first^w.last<<7^w.last>>11^uint64(n))*0x9E3779B97F4A7C15>>(64-keyCacheBits+1)]
}

// hit returns the rule a slot of p keeps for the name of n bytes, at most wholeKeyWords, whose keyWords are w.
func (p *keyPair) hit(w keyWords, n uint8) (rule int, ok bool) {
	if a := &p[0]; a.n == n && a.w == w {
		return int(a.rule), true
	}
	if b := &p[1]; b.n == n && b.w == w {
		return int(b.rule), true
	}
	return 0, false
}

// firstKeyRule is cachedKeyRule for the first name r looks up: it finds the cache first.
func (r *redactor) firstKeyRule(key []byte, w keyWords) int {
	r.keyCache()
	return r.cachedKeyRule(key, w)
}

// slotKeyRule is cachedKeyRule in the slots pair, whole: for a name over 24 bytes, or one its words missed.
func (r *redactor) slotKeyRule(pair *keyPair, key []byte, w keyWords) int {
	n := uint8(len(key))
	a, b := &pair[0], &pair[1]
	if a.n == n && a.w == w && (n <= wholeKeyWords || a.name == string(key)) {
		return int(a.rule)
	}
	if b.n == n && b.w == w && (n <= wholeKeyWords || b.name == string(key)) {
		return int(b.rule)
	}
	rule := r.x.keyRule(key)
	if a.n != 0 && b.n == 0 {
		a = b
	}
	*a = keySlot{w: w, n: n, rule: int8(rule)}
	if n > wholeKeyWords {
		a.name = string(key)
	}
	return rule
}

// keyCache returns the scratch's cache of key verdicts, new when it has none or one of another Redactor's rules,
// and keeps it in r for the rest of the copy.
func (r *redactor) keyCache() *keyCache {
	kc := r.sc.keys
	if kc == nil || kc.of != r.x {
		kc = &keyCache{of: r.x}
		r.sc.keys = kc
	}
	r.keys = kc
	return kc
}

// trim lets go of buffers that grew past keepScratch.
func (sc *redactScratch) trim() {
	if cap(sc.text) > keepScratch {
		sc.text = nil
	}
	if cap(sc.whole) > keepScratch {
		sc.whole = nil
	}
	for i := range sc.nested {
		for j := range sc.nested[i] {
			if cap(sc.nested[i][j]) > keepScratch {
				sc.nested[i][j] = nil
			}
		}
	}
}

// document redacts the whole of src as one value at nesting depth; false when src is not one JSON value.
func (r *redactor) document(src []byte, depth int) bool {
	end, ok := r.value(src, 0, depth) // the token copy: the callers have tried the fast copy
	return ok && (r.over || skipWS(src, end) == len(src))
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
		if i+1 < len(b) && (b[i+1] == '{' || b[i+1] == '[') && depth+1 < maxRedactDepth {
			if end, ok := r.nestedAt(b, i, depth); ok {
				return end, true
			}
		}
		raw, end, trig, ok := scanCleanString(b, i)
		if !ok {
			return end, false
		}
		if !trig && !r.pats && len(raw) <= r.strLimit() && (len(raw) == 0 || raw[0] != '{' && raw[0] != '[' && !isWS(raw[0])) {
			r.out = append(r.out, b[i:end]...) // nothing for the rules, no JSON in it, not cut: as it was quoted
			return end, true
		}
		r.stringValue(raw, trig, depth)
		return end, true
	default:
		end, ok := skipValue(b, i)
		if !ok {
			return end, false
		}
		if !validScalar(b[i:end]) { // a number, true, false or null, and nothing else
			return end, false
		}
		if len(r.out)+end-i+depth+16 > r.maxBytes {
			r.out = append(r.out, `"…"`...) // a number too long for what is left
			return end, true
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
		ks := i // the key's opening quote
		key, e, colon, ok := memberName(b, i, false)
		if !ok {
			return e, false
		}
		i = colon + 1
		if !r.budgetLeft(depth + len(key) + 8) {
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
		r.out = append(append(r.out, b[ks:e]...), ':') // the key as it was quoted
		if rule := r.keyRule(key); rule >= 0 {
			end, ok := skipValue(b, i)
			if !ok {
				return end, false
			}
			if j := skipWS(b, i); end-j == 4 && string(b[j:end]) == "null" {
				r.out = append(r.out, "null"...) // nothing to hide: keep saying there was nothing
			} else {
				r.out = append(r.out, redactedValue...)
				r.tally.add(r.x, rule, 1)
			}
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

// memberName reads the name of an object member at b[i] ('"') and the colon after it: the name's raw content, the
// index after its closing quote and the colon's index. With esc the object is JSON text held in a string, read in
// its escaped form (see span).
func memberName(b []byte, i int, esc bool) (key []byte, end, colon int, ok bool) {
	switch stop := 0; {
	case esc:
		key, end, _, ok = scanEscapedString(b, i)
	case i < len(b) && b[i] == '"':
		// Names have no escapes: their closing quote is found here, without scanCleanString's call (a name per
		// member of every payload).
		if stop, _ = stringRun(b, i+1); stop < len(b) && b[stop] == '"' {
			key, end, ok = b[i+1:stop], stop+1, true
			break
		}
		fallthrough
	default:
		key, end, _, ok = scanCleanString(b, i)
	}
	if !ok {
		return nil, end, end, false
	}
	colon = skipSpace(b, end, esc)
	if colon >= len(b) || b[colon] != ':' {
		return nil, colon, colon, false
	}
	return key, end, colon, true
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

// stringValue writes one string value: JSON held in it is redacted as JSON; anything else passes the value rules
// and is cut to maxStr. trig is scanCleanString's: false when no built-in value rule can match raw.
func (r *redactor) stringValue(raw []byte, trig bool, depth int) {
	if j := skipWS(raw, 0); j < len(raw) && (raw[j] == '{' || raw[j] == '[') && len(raw) <= maxNestedJSON &&
		depth+1 < maxRedactDepth && r.nested(raw, depth) {
		return
	}
	if !trig && !r.pats {
		r.str(raw)
		return
	}
	if out, changed := r.x.rules(r.sc.text[:0], raw, true, &r.tally); changed {
		r.sc.text = out
		r.str(out)
		return
	}
	r.str(raw)
}

// nested redacts the JSON text held in the string raw and writes it back as a string, escaped again; false (and
// nothing written) when raw does not hold exactly one JSON value or the result would not fit.
func (r *redactor) nested(raw []byte, depth int) bool {
	room, bufs := r.nestedScratch(depth)
	if bufs == nil {
		return false
	}
	text := unescapeChecked(bufs[0][:0], raw)
	bufs[0] = text
	return r.nestedText(text, raw, room, depth)
}

// nestedAt is value's way to a string at b[i] whose content starts with '{' or '[': it decodes the string in the
// same pass that finds its end and checks it (decodeCleanString), and redacts the JSON in it as nested does.
// false, with nothing written, when the string is not one nested would take or nested fails on it: value then
// reads it again the long way, which also tries nested.
func (r *redactor) nestedAt(b []byte, i, depth int) (int, bool) {
	room, bufs := r.nestedScratch(depth)
	if bufs == nil {
		return i, false
	}
	text, end, ok := decodeCleanString(bufs[0][:0], b, i)
	bufs[0] = text
	if !ok || end-i-2 > maxNestedJSON || !r.nestedText(text, b[i+1:end-1], room, depth) {
		return i, false
	}
	return end, true
}

// nestedScratch returns the room an inner copy has (re-escaping can double the length: every quote gains a
// backslash, so it gets half of what is left) and this level's buffers (a string inside the inner copy uses the
// next level's), or nil when there is no room worth trying.
func (r *redactor) nestedScratch(depth int) (int, *[2][]byte) {
	room := (r.maxBytes - len(r.out) - depth - 24) / 2
	if room < 16 {
		return room, nil
	}
	for len(r.sc.nested) <= r.level {
		r.sc.nested = append(r.sc.nested, [2][]byte{})
	}
	return room, &r.sc.nested[r.level]
}

// nestedText redacts the JSON text held in a string (decoded) into this level's second buffer and writes it as a
// string, escaped again; false, with nothing written, when text is not exactly one JSON value or does not fit.
func (r *redactor) nestedText(text, raw []byte, room, depth int) bool {
	bufs := &r.sc.nested[r.level]
	sub := redactor{x: r.x, pats: r.pats, maxBytes: room, maxStr: r.maxStr, out: bufs[1][:0], sc: r.sc, level: r.level + 1}
	if r.tokens {
		sub.tokens = true
	} else if end, ok := sub.spanValue(text, 0, depth+1); ok && skipWS(text, end) == len(text) {
		if sub.edits == 0 {
			// Nothing in it to change: the string stays as it was quoted, and is not escaped again.
			r.sc.nested[r.level][1] = sub.out
			r.tally.merge(&sub.tally)
			r.out = append(append(append(r.out, '"'), raw...), '"')
			return true
		}
		if sub.out = append(sub.out, text[sub.last:]...); len(sub.out)+16 <= room {
			r.sc.nested[r.level][1] = sub.out
			r.tally.merge(&sub.tally)
			r.out = append(escapeQuotes(append(r.out, '"'), sub.out), '"')
			return true
		}
	}
	bufs = &r.sc.nested[r.level] // the inner copy may have grown r.sc.nested
	if n := min(len(text), room) + 16; cap(bufs[1]) < n {
		bufs[1] = make([]byte, 0, n)
	}
	sub = redactor{x: r.x, pats: r.pats, maxBytes: room, maxStr: r.maxStr, out: bufs[1][:0], sc: r.sc, level: r.level + 1,
		tokens: r.tokens}
	ok := sub.document(text, depth+1)
	bufs = &r.sc.nested[r.level]
	bufs[1] = sub.out
	if !ok {
		return false
	}
	r.tally.merge(&sub.tally)
	// The token copy has no raw control characters (strings are copied as they were escaped, and no whitespace
	// is written between tokens); the fast copy above keeps the text's own white space, which escapeQuotes
	// escapes too.
	r.out = append(escapeQuotes(append(r.out, '"'), sub.out), '"')
	return true
}

// unescapeChecked appends the decoded form of raw, the content of a JSON string that scanCleanString accepted
// (so every escape in it is whole and valid), to dst. JSON text held in a string has an escape every few bytes
// (\" around every name): it copies eight bytes at a time up to the next backslash and decodes \" and \\ in line.
func unescapeChecked(dst, raw []byte) []byte {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	out := slices.Grow(dst, len(raw)+8)
	n, buf := len(out), out[:cap(out)] // at most len(raw) bytes are written, and one word past them
	for i := 0; i < len(raw); {
		if i+8 <= len(raw) {
			x := load8(raw, i)
			store8(buf, n, x)
			y := x ^ (ones * '\\')
			m := (y - ones) &^ y & high
			if m == 0 {
				i, n = i+8, n+8
				continue
			}
			k := bits.TrailingZeros64(m) / 8
			i, n = i+k, n+k
		} else if raw[i] != '\\' {
			buf[n] = raw[i]
			i, n = i+1, n+1
			continue
		}
		// raw[i] is a backslash.
		if c := raw[i+1]; c == '"' || c == '\\' || c == '/' {
			buf[n] = c
			i, n = i+2, n+1
			continue
		}
		e, k, ok := appendEscape(buf[:n], raw[i:])
		if !ok { // not content scanCleanString accepts: keep the rest as it is
			return append(buf[:n], raw[i:]...)
		}
		i, n, buf = i+k, len(e), e[:cap(e)]
	}
	return buf[:n]
}

// decodeCleanString is scanCleanString and unescapeChecked in one pass: it appends the decoded content of the JSON
// string at b[i] ('"') to dst and returns the index after its closing quote; ok is false where scanCleanString
// says so. It copies eight bytes at a time up to the next quote, backslash or control character (the result can
// only be shorter than the rest of b, which is the room it makes).
func decodeCleanString(dst, b []byte, i int) (out []byte, end int, ok bool) {
	return decodeWords(dst, b, i, true)
}

// escapeQuotes appends s to dst as the content of a JSON string: a backslash before every quote and backslash,
// which at most doubles it, and the control characters a copy's white space may hold (tab, newline, return) as
// their escapes. It copies eight bytes at a time up to the next of them.
func escapeQuotes(dst, s []byte) []byte {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	out := slices.Grow(dst, 2*len(s)+8)
	n, buf := len(out), out[:cap(out)]
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			x := load8(s, i)
			store8(buf, n, x)
			q, y := x^(ones*'"'), x^(ones*'\\')
			m := ((q-ones)&^q | (y-ones)&^y | (x-ones*0x20)&^x) & high
			if m == 0 {
				i, n = i+8, n+8
				continue
			}
			k := bits.TrailingZeros64(m) / 8
			i, n = i+k, n+k
		} else if c := s[i]; c != '"' && c != '\\' && c >= 0x20 {
			buf[n] = c
			i, n = i+1, n+1
			continue
		}
		if c := s[i]; c < 0x20 {
			// Six bytes at most for one: room for the rest at twice its length is made again.
			e := slices.Grow(appendEscaped(buf[:n], c), 2*(len(s)-i)+8)
			n, buf = len(e), e[:cap(e)]
			i++
			continue
		}
		buf[n], buf[n+1] = '\\', s[i]
		i, n = i+1, n+2
	}
	return buf[:n]
}

// appendEscaped appends the JSON escape of the control character c.
func appendEscaped(dst []byte, c byte) []byte {
	switch c {
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	}
	const hex = "0123456789abcdef"
	return append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
}

// validScalar says whether b is one JSON number, true, false or null and nothing else, as json.Valid would (b has
// no white space around it: skipValue ends it there).
func validScalar(b []byte) bool {
	switch string(b) {
	case "true", "false", "null":
		return true
	}
	digits := func(i int) int {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i + 1)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		if j := digits(i + 1); j > i+1 {
			i = j
		} else {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if j := digits(i); j > i {
			i = j
		} else {
			return false
		}
	}
	return i == len(b)
}

// strLimit is how many bytes of a string's content str keeps whole.
func (r *redactor) strLimit() int { return min(r.maxStr, r.maxBytes-len(r.out)-24) }

// str writes a string value from its raw (still escaped) content, cut to maxStr bytes at an escape and UTF-8
// boundary.
func (r *redactor) str(raw []byte) {
	limit := r.strLimit()
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

// --- keys ---------------------------------------------------------------------------------------------------------

// keyRule returns the rule a key's value is removed by, or -1 when the key is not secret.
func (x *Redactor) keyRule(key []byte) int {
	if secretKey(key) {
		return ruleKey
	}
	if x != nil && len(x.extraKeys) > 0 {
		var buf [64]byte
		n := normalizeInto(buf[:0], key)
		for _, k := range x.extraKeys {
			if strings.Contains(string(n), k) {
				return ruleExtraKey
			}
		}
	}
	return -1
}

func normalizeKey(k string) string { return string(normalizeInto(nil, []byte(k))) }

func normalizeInto(dst, key []byte) []byte {
	for _, c := range key {
		switch {
		case c >= 'A' && c <= 'Z':
			dst = append(dst, c+'a'-'A')
		case c == '_' || c == '-' || c == '.' || c == ' ' || c == '\\':
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// maxKeyWords bounds the words of a key that are looked at; real keys have a handful. maxKeyLen bounds the bytes
// of a key that are looked at (lower-cased on the stack); a longer key is judged by its first maxKeyLen bytes.
const (
	maxKeyWords = 12
	maxKeyLen   = 96
)

// secretKey decides by words, not by substrings, so that look-alikes stay: a key is split at separators and
// camel-case humps ("adminPass" is admin+pass, "new_pass" new+pass, "_context_auth_token" context+auth+token) and
// is secret when one of its words names a secret (pass, passwd, password, secret, token, credential, auth, hmac,
// private, cert, cookie, session, signature, key; or a compound like "adminpassword", "authtoken", "apikey") -
// unless the next word says the value is about the secret rather than the secret itself (key_name, keypair_id,
// token_expiry, secret_ref, password_expires_at, auth_url, cert_file...) or the word before says the key is not
// a credential (public_key, routing_key, sort_key). "keypair" is one word and not "key": it names a key pair.
//
// It runs for every key of every payload, so it lower-cases and splits in one pass on the stack and compares
// whole words with switch statements; substrings are looked for only in long words (compounds).
func secretKey(key []byte) bool { return keyMayBeSecret(key) && secretKeyWords(key) }

// keyTrigrams holds, as bits indexed by trigramIndex, the first three letters of every stem a secret word of
// secretWord contains: pass, pwd, secret, session, token, cred(ential), auth, hmac, priv(ate), cookie, signature,
// key, cert. A word that secretWord accepts contains one of these stems (TestSecretKeyPrefilter checks it against
// secretKeyWords over generated keys), and a word is a run of the key's bytes, so a key with none of these trigrams,
// in any case, is not secret.
var keyTrigrams = func() (t [1 << 15 / 64]uint64) {
	for _, w := range [...]string{"pas", "pwd", "sec", "ses", "tok", "cre", "aut", "hma", "pri", "coo", "sig", "key",
		"cer"} {
		x := trigramIndex(w[0], w[1], w[2])
		t[x/64] |= 1 << (x % 64)
	}
	return t
}()

// trigramIndex folds three bytes into 15 bits, five each: an ASCII letter's low five bits are the same in both
// cases. Other bytes share indexes with letters, which can only make keyMayBeSecret say yes more often.
func trigramIndex(a, b, c byte) uint { return uint(a&31)<<10 | uint(b&31)<<5 | uint(c&31) }

// keyMayBeSecret is secretKey's prefilter: false when no three bytes of the key (within maxKeyLen) are one of
// keyTrigrams, which most keys of a payload (host, instance_uuid, display_name) are not. It reads each byte once,
// with one table lookup.
func keyMayBeSecret(key []byte) bool {
	key = key[:min(len(key), maxKeyLen)]
	if len(key) < 3 {
		return false
	}
	x := uint(key[0]&31)<<5 | uint(key[1]&31)
	for _, c := range key[2:] {
		x = (x<<5 | uint(c&31)) & (1<<15 - 1)
		if keyTrigrams[x/64]&(1<<(x%64)) != 0 {
			return true
		}
	}
	return false
}

// secretKeyWords is secretKey without its prefilter.
func secretKeyWords(key []byte) bool {
	var low [maxKeyLen]byte
	var w [maxKeyWords][2]int
	key = key[:min(len(key), maxKeyLen)]
	n, start := 0, -1
	for i := 0; i <= len(key); i++ {
		boundary, sep := i == len(key), i == len(key)
		if i < len(key) {
			c := key[i]
			switch {
			case isLower(c) || c >= '0' && c <= '9':
				low[i] = c
			case isUpper(c):
				low[i] = c + 'a' - 'A'
				// A camel hump (adminPass), or the last capital of a run (HTTPPassword) starts a word.
				boundary = start >= 0 && (isLower(key[i-1]) || isUpper(key[i-1]) && i+1 < len(key) && isLower(key[i+1]))
			default:
				boundary, sep = true, true
			}
		}
		if boundary && start >= 0 {
			if n == maxKeyWords {
				break
			}
			w[n] = [2]int{start, i}
			n++
			start = -1
		}
		if !sep && start < 0 {
			start = i
		}
	}
	ls := unsafe.String(&low[0], len(key)) // read-only view of the lower-cased key; it does not outlive low
	for i := range n {
		var prev, next string
		if i > 0 {
			prev = ls[w[i-1][0]:w[i-1][1]]
		}
		if i+1 < n {
			next = ls[w[i+1][0]:w[i+1][1]]
		}
		if secretWord(ls[w[i][0]:w[i][1]], prev) && (next == "" || !aboutWord(next)) {
			return true
		}
	}
	return false
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlnum(c byte) bool { return isUpper(c) || isLower(c) || c >= '0' && c <= '9' }

// secretWord says whether one lower-case word of a key names a secret; prev is the word before it ("" for the
// first).
func secretWord(w, prev string) bool {
	switch w {
	case "pass", "passwd", "password", "passwords", "passphrase", "pwd", "secret", "secrets", "token", "tokens",
		"credential", "credentials", "creds", "auth", "hmac", "private", "privkey", "cookie", "cookies", "session",
		"signature", "apikey", "authtoken", "apikeys", "privatekey", "hmackey", "accesskey", "authkey", "sshkey",
		"encryptionkey", "signingkey", "masterkey", "sessionkey", "fernetkey", "secretkey", "cryptkey":
		return true
	case "key", "keys", "cert", "certs", "certificate":
		// A public key or certificate, and the keys of a lookup, are not credentials.
		switch prev {
		case "public", "routing", "sort", "primary", "foreign", "partition", "shard", "dict", "cache", "lookup",
			"idempotency", "ca":
			return false
		}
		return true
	}
	if len(w) < 7 {
		return false
	}
	// Compounds written as one word: adminpassword, newpass, rootpass, keystoneauthtoken, clientsecret.
	if k := strings.Index(w, "pass"); k >= 0 {
		if strings.HasSuffix(w, "pass") {
			switch w {
			case "bypass", "compass", "surpass", "overpass", "underpass", "trespass":
				return false
			}
			return true
		}
		if strings.Contains(w[k:], "password") || strings.Contains(w[k:], "passwd") {
			return true
		}
	}
	return strings.Contains(w, "secret") || strings.Contains(w, "token") || strings.Contains(w, "credential")
}

// aboutWord names a property of a secret that is not the secret: key_name, token_expiry, secret_ref.
func aboutWord(w string) bool {
	switch w {
	case "name", "names", "id", "ids", "uuid", "type", "types", "pair", "pairs", "expiry", "expires", "expiration",
		"ttl", "ref", "href", "path", "file", "format", "length", "size", "count", "algorithm", "alg", "manager",
		"url", "uri", "enabled", "required", "method", "version", "strategy", "policy", "provider", "location",
		"fingerprint", "user", "username", "userid", "domain", "project", "plugin", "section", "host", "port",
		"protocol", "scheme", "mode", "level", "status", "state":
		return true
	}
	return false
}

// eqFold reports whether the ASCII bytes w equal the lower-case s, ignoring case.
func eqFold(w []byte, s string) bool {
	if len(w) != len(s) {
		return false
	}
	for i := range w {
		c := w[i]
		if isUpper(c) {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func hasSuffixFold(w []byte, s string) bool { return len(w) >= len(s) && eqFold(w[len(w)-len(s):], s) }

// --- values in text -----------------------------------------------------------------------------------------------

// valueTrigger marks, for each byte, whether it can place a built-in value rule, so that text reads a string with
// one table lookup per byte: ':' (a URL's "://", "key: value") and '=' ("key=value") are where their rule is
// tried; for a token the rarest byte of its fixed head is: the 'J' of "eyJ", an 'A' (the first after the 'g' of
// "gAAAAA"), the 'M' of "MII" and the 'B' after the five dashes of "-----BEGIN ". Lower-case prose, ids and
// timestamps have few of these, and none of the letters e, g and '-' that start the tokens.
var valueTrigger = func() (t [256]bool) {
	for _, c := range ":=JAMB" {
		t[c] = true
	}
	return t
}()

// mayHoldTrigger says whether one of the eight bytes in w lies between ':' and 'M', where every trigger lies
// (":=ABJM"): lower-case words, digits, '-', '_', '.' and spaces do not, so most text is passed over eight bytes
// at a time (the "has a byte between m and n" word test; bytes over 0x7F are never triggers and never match).
func mayHoldTrigger(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	const lo, hi = ':' - 1, 'M' + 1 // exclusive bounds
	low7 := w & (ones * 127)
	return (ones*(127+hi)-low7)&^w&(low7+ones*(127-lo))&highs != 0
}

// nextValueStart returns the first trigger at or after i and where the value rule it places would start (before
// the trigger for a token: "eyJ" starts two bytes before its 'J'), or len(s) when there is none. The bytes between
// a start and its trigger are the token's fixed head, none of them a trigger of another rule, so text tries every
// start in the same order as a scan of every byte would.
func nextValueStart(s []byte, i int) (trig, start int) {
	for ; i < len(s); i++ {
		for i+8 <= len(s) && !mayHoldTrigger(load8(s, i)) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		if !valueTrigger[s[i]] {
			continue
		}
		switch s[i] {
		case ':', '=', 'M':
			return i, i
		case 'J':
			if i >= 2 && s[i-2] == 'e' && s[i-1] == 'y' {
				return i, i - 2
			}
		case 'A':
			if i >= 1 && s[i-1] == 'g' {
				return i, i - 1
			}
		case 'B':
			if i >= 5 && string(s[i-5:i]) == "-----" {
				return i, i - 5
			}
		}
	}
	return len(s), len(s)
}

// text appends s to dst with every secret value replaced by "***" and reports whether anything was replaced;
// when nothing was, dst is returned as it came (s is not copied). esc says s is the raw content of a JSON string
// (escapes still in it: an escaped quote \" is a quote, and a backslash ends a value so that no escape is split).
func (x *Redactor) text(dst, s []byte, esc bool) ([]byte, bool) { return x.rules(dst, s, esc, nil) }

// rules is text counting into t (nil: on x at once). Text in which no rule can match (noSecretText, for the
// built-in rules alone) is passed over without trying them.
func (x *Redactor) rules(dst, s []byte, esc bool, t *tally) ([]byte, bool) {
	if (x == nil || len(x.extraKeys) == 0 && len(x.extraPats) == 0) && noSecretText(s) {
		return dst, false
	}
	return x.textInto(dst, s, esc, nextValueStart, t)
}

// noSecretText says whether no built-in value rule can match s. Each needs an '@' (a URL's userinfo) or three ASCII
// letters in a row that valueTrigrams holds, case aside: a secret key a word secretWord accepts, which holds one of
// the stems of keyTrigrams in letters, and a token its head (gAAAAA, eyJ, MII, BEGIN). Timestamps, addresses with
// ports, URLs without userinfo and most names have neither, and are the text that most often holds a ':' or an
// upper-case letter, where the rules are tried. The operator's keys and patterns can match anything: with them
// the rules are always tried.
//
// It reads eight bytes at a time, six apart, so that every three bytes in a row lie in one word, and looks up
// only where three letters start: a letter is a byte between 'a' and 'z' once 0x20 is set in it (the word test of
// mayHoldTrigger), an '@' a zero byte of x^'@'.
func noSecretText(s []byte) bool {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	const lo, hi = 'a' - 1, 'z' + 1 // exclusive bounds
	for j := 0; len(s) >= 8; j += 6 {
		if j+8 > len(s) {
			j = len(s) - 8 // the last word, overlapping the one before
		}
		x := load8(s, j)
		l := x | ones*0x20
		low7 := l & (ones * 127)
		let := (ones*(127+hi) - low7) &^ l & (low7 + ones*(127-lo)) & high
		if at := x ^ ones*'@'; (at-ones)&^at&high != 0 {
			return false
		}
		for run := let & (let >> 8) & (let >> 16); run != 0; run &= run - 1 { // bytes 0 to 5 at most
			w := x >> (bits.TrailingZeros64(run) &^ 7)
			if t := trigramIndex(byte(w), byte(w>>8), byte(w>>16)); valueTrigrams[t/64]&(1<<(t%64)) != 0 {
				return false
			}
		}
		if j+8 == len(s) {
			return true
		}
	}
	// A short s: every three bytes are looked up (other bytes only add indexes of stems).
	var x uint // the last three bytes as a trigramIndex (in its low 15 bits); the first two make none of a stem
	for _, c := range s {
		x = x<<5 | uint(c&31)
		if c == '@' || valueTrigrams[x>>6&uint(len(valueTrigrams)-1)]>>(x&63)&1 != 0 {
			return false
		}
	}
	return true
}

// valueTrigrams is keyTrigrams and the first three bytes of each token's head, as bits indexed by trigramIndex.
var valueTrigrams = func() (t [1 << 15 / 64]uint64) {
	t = keyTrigrams
	for _, w := range [...]string{"gAA", "eyJ", "MII", "BEG"} {
		x := trigramIndex(w[0], w[1], w[2])
		t[x/64] |= 1 << (x % 64)
	}
	return t
}()

// textFrom is text with the places where a value rule is tried given by next (nextValueStart; the tests compare it
// with trying at every byte).
func (x *Redactor) textFrom(dst, s []byte, esc bool, next func(s []byte, i int) (trig, start int)) ([]byte, bool) {
	return x.textInto(dst, s, esc, next, nil)
}

// textInto is textFrom counting into t (nil: on x at once).
func (x *Redactor) textInto(dst, s []byte, esc bool, next func(s []byte, i int) (trig, start int), t *tally) ([]byte, bool) {
	start := len(dst)
	changed := false
	last := 0 // s[last:] is not copied yet
	for i := 0; i < len(s); {
		trig, at := next(s, i)
		if trig >= len(s) {
			break
		}
		i = trig + 1
		if at < last {
			continue // inside the value replaced last
		}
		from, to, rule := x.valueAt(s, at, esc)
		if rule < 0 {
			continue
		}
		if !changed {
			dst = append(dst[:start], s[:from]...)
			changed = true
		} else {
			dst = append(dst, s[last:from]...)
		}
		dst = append(dst, redactedText...)
		t.add(x, rule, 1)
		last = to
		i = max(to, i)
	}
	if changed {
		dst = append(dst, s[last:]...)
	}
	if x != nil && len(x.extraPats) > 0 {
		cur := s
		if changed {
			cur = dst[start:]
		}
		for _, re := range x.extraPats {
			if !re.Match(cur) {
				continue
			}
			n := 0
			repl := re.ReplaceAllFunc(cur, func([]byte) []byte { n++; return []byte(redactedText) })
			if n > 0 {
				t.add(x, ruleExtraPattern, uint32(n))
				dst = append(dst[:start], repl...)
				cur, changed = dst[start:], true
			}
		}
	}
	return dst, changed
}

// valueAt looks for a secret value at the trigger s[i] and returns the span to replace and its rule, or rule -1.
func (x *Redactor) valueAt(s []byte, i int, esc bool) (from, to, rule int) {
	switch s[i] {
	case ':':
		if i+2 < len(s) && s[i+1] == '/' && s[i+2] == '/' {
			return urlPassword(s, i)
		}
		return x.pair(s, i, esc)
	case '=':
		return x.pair(s, i, esc)
	case 'g':
		if hasPrefixAt(s, i, "gAAAAA") && tokenStart(s, i) {
			if end := runOf(s, i, isB64URL); end-i >= 40 {
				return i, end, ruleFernet
			}
		}
	case 'e':
		if hasPrefixAt(s, i, "eyJ") && tokenStart(s, i) {
			if end := jwtEnd(s, i); end > 0 {
				return i, end, ruleJWT
			}
		}
	case 'M':
		if hasPrefixAt(s, i, "MII") && tokenStart(s, i) {
			if end := runOf(s, i, isB64Std); end-i >= 64 {
				return i, end, rulePKI
			}
		}
	case '-':
		if hasPrefixAt(s, i, "-----BEGIN ") {
			if end := pemPrivateEnd(s, i); end > 0 {
				return i, end, rulePEM
			}
		}
	}
	return 0, 0, -1
}

func hasPrefixAt(s []byte, i int, p string) bool {
	return len(s)-i >= len(p) && string(s[i:i+len(p)]) == p
}

// tokenStart says s[i] starts a word: a token glued to letters before it is part of something else.
func tokenStart(s []byte, i int) bool { return i == 0 || !isAlnum(s[i-1]) }

func isB64URL(c byte) bool { return isAlnum(c) || c == '-' || c == '_' || c == '=' }
func isB64Std(c byte) bool { return isAlnum(c) || c == '+' || c == '/' || c == '=' }

func runOf(s []byte, i int, in func(byte) bool) int {
	for i < len(s) && in(s[i]) {
		i++
	}
	return i
}

// jwtEnd returns the end of a JWT (three base64url segments joined by dots, the first two at least 8 long) that
// starts at s[i], or 0.
func jwtEnd(s []byte, i int) int {
	isSeg := func(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }
	a := runOf(s, i, isSeg)
	if a-i < 8 || a >= len(s) || s[a] != '.' {
		return 0
	}
	b := runOf(s, a+1, isSeg)
	if b-a-1 < 8 || b >= len(s) || s[b] != '.' {
		return 0
	}
	return runOf(s, b+1, isSeg)
}

// pemPrivateEnd returns the end of a PEM private key block starting at s[i] ("-----BEGIN ... PRIVATE KEY-----"
// through the matching END line), or the end of s when the END line is missing (a cut message), or 0 when the
// block is not a private key.
func pemPrivateEnd(s []byte, i int) int {
	head := s[i+len("-----BEGIN "):]
	k := indexBytes(head[:min(len(head), 64)], "-----")
	if k < 0 || !hasSuffixFold(head[:k], "private key") {
		return 0
	}
	rest := i + len("-----BEGIN ") + k + 5
	e := indexBytes(s[rest:], "-----END ")
	if e < 0 {
		return len(s)
	}
	e += rest + len("-----END ")
	if k := indexBytes(s[e:], "-----"); k >= 0 {
		return e + k + 5
	}
	return len(s)
}

func indexBytes(s []byte, sub string) int { return strings.Index(string(s), sub) }

// urlPassword handles "://" at s[i]: the password of scheme://user:PW@host, or rule -1. The authority ends at '/',
// '?', '#', white space, a quote or a backslash; its userinfo is everything before its last '@'.
func urlPassword(s []byte, i int) (from, to, rule int) {
	if i == 0 || !isAlnum(s[i-1]) {
		return 0, 0, -1
	}
	start := i + 3
	end := start
	for end < len(s) {
		c := s[end]
		if c == '/' || c == '?' || c == '#' || c == ' ' || c == '\t' || c == '\n' || c == '"' || c == '\'' ||
			c == '\\' || c == '<' || c == '>' || c < 0x20 {
			break
		}
		end++
	}
	at := -1
	for j := end - 1; j >= start; j-- {
		if s[j] == '@' {
			at = j
			break
		}
	}
	if at < 0 {
		return 0, 0, -1
	}
	for j := start; j < at; j++ {
		if s[j] == ':' {
			if j+1 == at || string(s[j+1:at]) == redactedText {
				return 0, 0, -1
			}
			return j + 1, at, ruleURL
		}
	}
	return 0, 0, -1
}

// pairKeyByte marks the bytes of a key that pair reads backwards from its separator: letters, digits, _ - and '.'.
var pairKeyByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = isAlnum(byte(c)) || c == '_' || c == '-' || c == '.'
	}
	return t
}()

// pair handles "key=value" and "key: value" at the separator s[i]: when the key before it is secret (the key
// rules above, after an optional closing quote and "--" prefix), the value after it is replaced. A quoted value
// runs to its closing quote; a bare one to white space or one of , ; & ) } ] or a quote.
func (x *Redactor) pair(s []byte, i int, esc bool) (from, to, rule int) {
	// The key, backwards: spaces, an optional closing quote, then identifier bytes.
	k := i - 1
	for k >= 0 && s[k] == ' ' {
		k--
	}
	if k >= 0 && (s[k] == '"' || s[k] == '\'') {
		k--
		if esc && k >= 0 && s[k] == '\\' {
			k--
		}
	}
	kend := k + 1
	for lo := max(kend-65, 0); k >= lo && pairKeyByte[s[k]]; {
		k--
	}
	key := s[k+1 : kend]
	if len(key) < 3 || kend-k > 64 {
		return 0, 0, -1
	}
	rule = x.keyRule(key)
	if rule < 0 {
		return 0, 0, -1
	}
	// The value.
	v := i + 1
	for v < len(s) && s[v] == ' ' {
		v++
	}
	var quote byte
	if v < len(s) && (s[v] == '"' || s[v] == '\'') {
		quote = s[v]
		v++
	} else if esc && v+1 < len(s) && s[v] == '\\' && s[v+1] == '"' {
		quote = '"'
		v += 2
	}
	end := v
	for end < len(s) {
		c := s[end]
		if quote != 0 {
			if c == quote || (esc && c == '\\') {
				break
			}
		} else if c == ' ' || c == ',' || c == ';' || c == '&' || c == ')' || c == '}' || c == ']' || c == '"' ||
			c == '\'' || c == '\\' || c < 0x20 {
			break
		}
		end++
	}
	if end == v || string(s[v:end]) == redactedText {
		return 0, 0, -1
	}
	if quote == 0 && (string(s[v:end]) == "None" || string(s[v:end]) == "null") {
		return 0, 0, -1
	}
	return v, end, rule
}

// scanCleanString is scanString and validStringContent in one pass, for the redactor: the raw content of the JSON
// string at b[i] ('"'), the index after its closing quote, and ok=false when the string is not closed within b or
// its content is not what validStringContent accepts. trig reports whether the content holds a byte between ':'
// and 'M' (where every trigger of a built-in value rule lies: see mayHoldTrigger) or a \u escape; when it does not,
// text would find nothing to replace in it. It reads eight bytes at a time with the word tests of ctlOrBackslash
// and mayHoldTrigger, and stops only at a quote, a backslash or a control character.
func scanCleanString(b []byte, i int) (raw []byte, end int, trig, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false, false
	}
	start := i + 1
	for j := start; ; {
		stop, t := stringRun(b, j)
		trig = trig || t
		if stop >= len(b) {
			return nil, len(b), false, false
		}
		switch c := b[stop]; {
		case c == '"':
			return b[start:stop], stop + 1, trig, true
		case c < 0x20 || stop+1 >= len(b):
			return nil, stop, false, false
		}
		switch b[stop+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			j = stop + 2
		case 'u':
			if _, ok := hex4(b[stop:]); !ok {
				return nil, stop, false, false
			}
			trig = true
			j = stop + 6
		default:
			return nil, stop, false, false
		}
	}
}

// scanEscapedString is scanCleanString for a string of JSON text held in a string, read in its escaped form: it
// starts at b[i] with \" and ends at the next \". Its content must have no escape of its own (that would be a \\
// here), which JSON text written by json.dumps or jsonutils holds in names, ids, URLs and numbers; ok is false for
// any other, and the caller decodes the text instead.
func scanEscapedString(b []byte, i int) (raw []byte, end int, trig, ok bool) {
	if i+1 >= len(b) || b[i] != '\\' || b[i+1] != '"' {
		return nil, i, false, false
	}
	stop, trig := stringRun(b, i+2)
	if stop+1 >= len(b) || b[stop] != '\\' || b[stop+1] != '"' {
		return nil, stop, false, false
	}
	return b[i+2 : stop], stop + 2, trig, true
}

// stringRun returns the index of the first quote, backslash or control character in b at or after j (len(b) when
// there is none), and whether a byte between ':' and 'M' comes before it (where every trigger of a built-in value
// rule lies: see mayHoldTrigger). It reads eight bytes at a time with the word tests of ctlOrBackslash and
// mayHoldTrigger.
func stringRun(b []byte, j int) (stop int, trig bool) {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	const lo, hi = ':' - 1, 'M' + 1 // exclusive bounds, as in mayHoldTrigger
	var t uint64                    // the trigger bytes seen, as high bits (the other bits say nothing)
	for ; j+8 <= len(b); j += 8 {
		x := load8(b, j)
		low7 := x & (ones * 127)
		tw := (ones*(127+hi) - low7) &^ x & (low7 + ones*(127-lo))
		if stop := stopBytes(x); stop != 0 {
			// stop^(stop-1) is every bit up to the lowest stop byte's high bit, which tw does not have: a stop
			// byte is no trigger.
			return j + bits.TrailingZeros64(stop)/8, (t|tw&(stop^(stop-1)))&high != 0
		}
		t |= tw
	}
	t &= high
	for ; j < len(b); j++ { // the tail
		c := b[j]
		if c == '"' || c == '\\' || c < 0x20 {
			break
		}
		if c > lo && c < hi {
			t = 1
		}
	}
	return j, t != 0
}

// stopBytes marks, as high bits, the bytes of the word x that end a run of string content: a quote, a backslash or a
// control character (the "has a byte below n" test of ctlOrBackslash, with a quote and a backslash as zero bytes of
// x^'"' and x^'\\'). The lowest mark is the first such byte. A byte with its high bit set is none of them and has it
// set in all three words, so one &^x serves the three tests.
func stopBytes(x uint64) uint64 {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	return ((x - ones*0x20) | (x ^ ones*'"' - ones) | (x ^ ones*'\\' - ones)) &^ x & high
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
		x := load8(b, i)
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
