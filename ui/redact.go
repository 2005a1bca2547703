package ui

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
)

// maxPayload caps the args or result bytes the UI copies per record. Larger payloads are replaced by a note: the
// ring holds RecentSize records and must stay small whatever the traffic carries.
const maxPayload = 16 << 10

// cloneRecord deep-copies r so that the Server never keeps memory owned by the correlator (correlate.Sink
// contract). Strings are immutable in Go and shared; everything reached through a pointer or slice is copied.
// Oversized args and results are not copied at all.
func cloneRecord(r *correlate.Record) *correlate.Record {
	c := *r
	c.Server = cloneStr(r.Server)
	c.Namespace = cloneStr(r.Namespace)
	c.Version = cloneStr(r.Version)
	c.Caller = cloneEndpoint(r.Caller)
	c.Callee = cloneEndpoint(r.Callee)
	if r.Callees != nil {
		c.Callees = append([]correlate.Endpoint(nil), r.Callees...)
	}
	c.Published = cloneTime(r.Published)
	c.Confirmed = cloneTime(r.Confirmed)
	c.Delivered = cloneTime(r.Delivered)
	c.Replied = cloneTime(r.Replied)
	c.ReplyDelivered = cloneTime(r.ReplyDelivered)
	c.Deadline = cloneTime(r.Deadline)
	if r.HeartbeatTimes != nil {
		c.HeartbeatTimes = append([]time.Time(nil), r.HeartbeatTimes...)
	}
	if r.Error != nil {
		e := *r.Error
		c.Error = &e
	}
	if r.EverDelivered != nil {
		b := *r.EverDelivered
		c.EverDelivered = &b
	}
	c.Args = clonePayload(r.Args)
	c.Result = clonePayload(r.Result)
	return &c
}

func cloneStr(p *string) *string {
	if p == nil {
		return nil
	}
	s := *p
	return &s
}

func cloneTime(p *time.Time) *time.Time {
	if p == nil {
		return nil
	}
	t := *p
	return &t
}

func cloneEndpoint(p *correlate.Endpoint) *correlate.Endpoint {
	if p == nil {
		return nil
	}
	e := *p
	return &e
}

func clonePayload(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if len(b) > maxPayload {
		return omittedNote(len(b))
	}
	return append(json.RawMessage(nil), b...)
}

func omittedNote(n int) json.RawMessage {
	return json.RawMessage(strconv.Quote("(omitted: " + strconv.Itoa(n) + " bytes, over the UI cap)"))
}

// secretKey matches object keys whose values must never be shown. It is deliberately broad ("auth" also hides
// "author"): hiding a harmless value costs nothing, showing a token costs a credential rotation.
var secretKey = regexp.MustCompile(`(?i)pass(word|wd|phrase)?|secret|token|credential|private.?key|api.?key|auth|session|cookie|signature`)

// urlPassword matches the password part of a URL with user info (rabbit://user:pass@host, mysql+pymysql://...).
var urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s"]*:)[^@\s"]+@`)

const redacted = "***"

// redactText hides passwords in URLs and whole Keystone Fernet tokens inside free text such as exception messages.
func redactText(s string) string {
	if strings.Contains(s, "://") {
		s = urlPassword.ReplaceAllString(s, "${1}"+redacted+"@")
	}
	return s
}

// looksLikeToken reports values that are credentials whatever key they sit under: Keystone Fernet tokens
// ("gAAAAA" + base64) and PKI tokens ("MII" + long base64).
func looksLikeToken(s string) bool {
	return len(s) >= 64 && (strings.HasPrefix(s, "gAAAAA") || strings.HasPrefix(s, "MII"))
}

// redactJSON parses a JSON payload, replaces the values of secret-looking keys and token-looking strings, and
// re-encodes it. A payload that does not parse is hidden entirely: we cannot tell where a secret would be.
func redactJSON(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return json.RawMessage(strconv.Quote("(hidden: payload is not valid JSON)"))
	}
	v = redactValue(v, 0)
	out, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(strconv.Quote("(hidden: payload could not be re-encoded)"))
	}
	if len(out) > maxPayload {
		return omittedNote(len(out))
	}
	return out
}

// maxDepth bounds recursion on hostile payloads; encoding/json already bounds nesting, this keeps our walk cheap.
const maxDepth = 64

func redactValue(v any, depth int) any {
	if depth > maxDepth {
		return redacted
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secretKey.MatchString(k) {
				if e != nil {
					x[k] = redacted
				}
				continue
			}
			x[k] = redactValue(e, depth+1)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = redactValue(e, depth+1)
		}
		return x
	case string:
		if looksLikeToken(x) {
			return redacted
		}
		return redactText(x)
	default:
		return v
	}
}

// sanitize redacts a record the Server owns, in place, before it is stored or shown anywhere.
func sanitize(r *correlate.Record) {
	r.Args = redactJSON(r.Args)
	r.Result = redactJSON(r.Result)
	if r.Error != nil {
		r.Error.Message = redactText(r.Error.Message)
	}
	r.ReturnText = redactText(r.ReturnText)
}
