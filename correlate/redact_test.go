package correlate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// Keys whose values must go, and look-alikes that must stay, as they appear in real nova, neutron, cinder and
// keystone bodies.
func TestRedactKeys(t *testing.T) {
	secret := []string{
		"password", "admin_password", "adminPass", "admin_pass", "new_pass", "rescue_password", "auth_password",
		"Password", "PASSWORD", "passwd", "db_passwd", "passphrase", "secret", "client_secret", "secret_key",
		"token", "auth_token", "_context_auth_token", "X-Auth-Token", "authToken", "keystone_authtoken",
		"credential", "credentials", "os_credentials", "auth", "auth_data", "hmac_key", "hmacKey", "key",
		"ssh_key", "api_key", "apiKey", "apikey", "private_key", "privateKey", "private", "cert", "client_cert",
		"certificate", "adminpassword", "rootpass", "cookie", "session", "HTTPPassword", "vnc_password",
		"encryption_key", "fernet_keys", "newpassword", "user-password", "aws.secret",
	}
	stay := []string{
		"key_name", "keypair", "keypair_id", "keypairs", "token_expiry", "public_key", "publicKey", "routing_key",
		"sort_key", "sort_keys", "secret_ref", "password_expires_at", "auth_url", "auth_type", "cert_file",
		"key_id", "encryption_key_id", "name", "host", "author", "authority", "passthrough", "bypass", "compass",
		"tokenizer_name", "keyword", "monkey", "instance_uuid", "network_info", "connection_info", "display_name",
		"key_pair", "session_id", "ca_cert", "certificate_ref", "token_type", "primary_key", "auth_username",
		"auth_user", "auth_plugin",
	}
	for _, k := range secret {
		if !secretKey([]byte(k)) {
			t.Errorf("key %q is a secret, kept", k)
		}
	}
	for _, k := range stay {
		if secretKey([]byte(k)) {
			t.Errorf("key %q is not a secret, removed", k)
		}
	}
}

// Values that must go wherever they are, and strings that must stay.
func TestRedactValues(t *testing.T) {
	const fernet = "gAAAAABmZ2Fub3RhcmVhbHRva2VuYnV0bG9uZ2Vub3VnaF9fX19fX19fX19fX19fX19fX19fX19fX19fX19fX18="
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJub3ZhIiwiZXhwIjo5OX0.c2lnbmF0dXJlLW5vdC1yZWFs"
	const pki = "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJRTESMBAGA1UEChMJQmFsdGltb3Jl"
	pem := "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAnotreal\n-----END RSA PRIVATE KEY-----"
	for _, c := range []struct{ in, want string }{
		{"rabbit://nova:S3cr3t@ctl:5672/", "rabbit://nova:***@ctl:5672/"},
		{"connection = mysql+pymysql://nova:dbPW@10.0.0.1/nova?charset=utf8", "connection = mysql+pymysql://nova:***@10.0.0.1/nova?charset=utf8"},
		{"rabbit://a:p1@h1,b:p2@h2/", "rabbit://a:***@h2/"},
		{"run --password=hunter2 --user admin", "run --password=*** --user admin"},
		{"password=hunter2&user=admin", "password=***&user=admin"},
		{"{'admin_password': 'hunter2', 'name': 'vm'}", "{'admin_password': '***', 'name': 'vm'}"},
		{"Invalid token: " + fernet + " (expired)", "Invalid token: *** (expired)"},
		{"bearer " + fernet, "bearer ***"},
		{"Authorization: Bearer " + jwt, "Authorization: Bearer ***"},
		{"jwt " + jwt + " end", "jwt *** end"},
		{"pki " + pki, "pki ***"},
		{"key:\n" + pem + "\nafter", "key:\n***\nafter"},
		{"cut " + pem[:40], "cut ***"},
	} {
		if got := (*Redactor)(nil).String(c.in); got != c.want {
			t.Errorf("String(%q)\n = %q\nwant %q", c.in, got, c.want)
		}
	}
	for _, s := range []string{
		"Instance 44444444-4444-4444-8444-444444444444 could not be found.",
		"2024-05-01T12:00:00.000000", "http://controller:8774/v2.1", "rabbit://ctl:5672/", "mysql://nova@db/nova",
		"token_expiry=2026-01-01T00:00:00Z", "key_name=mykey", "keypair_id: 42", "gAAAAshort", "eyJ", "MIIshort",
		"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "password=None", "a=b, c: d",
		"ssh-rsa AAAAB3NzaC1yc2E public", "", "é=ü",
	} {
		if got := (*Redactor)(nil).String(s); got != s {
			t.Errorf("String(%q) = %q, want it unchanged", s, got)
		}
	}
}

// Payloads as nova sends them: secrets at any depth, in arguments whose JSON is held in a string
// (connection_info), and look-alikes that stay; the same in both policies that keep a payload.
func TestRedactJSONPayload(t *testing.T) {
	const fernet = "gAAAAABmZ2Fub3RhcmVhbHRva2VuYnV0bG9uZ2Vub3VnaF9fX19fX19fX19fX19fX19fX19fX19fX19fX19fX18="
	connInfo, _ := json.Marshal(map[string]any{"driver_volume_type": "iscsi", "data": map[string]any{
		"auth_method": "CHAP", "auth_username": "u", "auth_password": "CHAP-PW-MARK", "target_iqn": "iqn.x",
		"extra": strings.Repeat("x", 300)}})
	args, _ := json.Marshal(map[string]any{
		"instance":        map[string]any{"metadata": map[string]any{"admin_pass": "META-PW"}, "key_name": "mykey"},
		"new_pass":        "NEW-PW",
		"adminPass":       "ADMIN-PW",
		"keypair_id":      "kp-1",
		"token_expiry":    "2026-01-01T00:00:00Z",
		"public_key":      "ssh-rsa AAAA pub",
		"transport_url":   "rabbit://nova:RABBIT-PW@ctl:5672/",
		"connection":      "mysql+pymysql://nova:DB-PW@db/nova",
		"cmdline":         "--password=CMD-PW",
		"connection_info": string(connInfo),
		"blob":            "token " + fernet,
		"nothing":         nil,
		"password":        nil,
	})
	x, err := NewRedactor(RedactRules{})
	if err != nil {
		t.Fatal(err)
	}
	for _, policy := range []PayloadPolicy{PayloadRedacted, PayloadFull} {
		out := x.JSON(args, policy, 4096)
		if !json.Valid(out) {
			t.Fatalf("%s: invalid JSON %s", policy, out)
		}
		for _, leak := range []string{"CHAP-PW-MARK", "META-PW", "NEW-PW", "ADMIN-PW", "RABBIT-PW", "DB-PW", "CMD-PW",
			fernet[:20]} {
			if strings.Contains(string(out), leak) {
				t.Errorf("%s: %s leaked: %s", policy, leak, out)
			}
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]any{"keypair_id": "kp-1", "token_expiry": "2026-01-01T00:00:00Z",
			"public_key": "ssh-rsa AAAA pub", "transport_url": "rabbit://nova:***@ctl:5672/", "nothing": nil,
			"password": nil, "new_pass": "***"} {
			if m[k] != want {
				t.Errorf("%s: %s = %v, want %v", policy, k, m[k], want)
			}
		}
		var ci map[string]any
		if err := json.Unmarshal([]byte(m["connection_info"].(string)), &ci); err != nil {
			t.Fatalf("%s: connection_info is no longer JSON: %v", policy, err)
		}
		data := ci["data"].(map[string]any)
		if data["auth_password"] != "***" || data["target_iqn"] != "iqn.x" || data["auth_username"] != "u" {
			t.Errorf("%s: connection_info data = %v", policy, data)
		}
		if ex, _ := data["extra"].(string); (policy == PayloadFull) != (len(ex) == 300) {
			t.Errorf("%s: a 300-byte string inside connection_info is %d bytes", policy, len(ex))
		}
	}
	// At least: 4 keys (new_pass, adminPass, admin_pass, auth_password) and the rest by value, per policy.
	c := x.Counts()
	if c[RuleKey] < 8 || c[RuleURLPassword] < 4 || c[RuleFernet] < 2 {
		t.Errorf("counts %v", c)
	}
}

// The operator's rules: extra key names (separator- and case-insensitive) and patterns, counted apart.
func TestRedactExtraRules(t *testing.T) {
	x, err := NewRedactor(RedactRules{Keys: []string{"vnc_pw", "floatingSeed"}, Patterns: []string{`SEKRIT-[0-9]+`}})
	if err != nil {
		t.Fatal(err)
	}
	out := string(x.JSON([]byte(`{"VNC-PW":"a","old_vncPw":"b","floating_seed":"c","note":"id SEKRIT-42 x","ok":"d"}`), PayloadFull, 4096))
	if want := `{"VNC-PW":"***","old_vncPw":"***","floating_seed":"***","note":"id *** x","ok":"d"}`; out != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	if got := x.String("msg SEKRIT-7, vnc_pw=zz"); got != "msg ***, vnc_pw=***" {
		t.Errorf("String = %q", got)
	}
	c := x.Counts()
	if c[RuleExtraKey] != 4 || c[RuleExtraPattern] != 2 {
		t.Errorf("counts %v", c)
	}
	if _, err := NewRedactor(RedactRules{Patterns: []string{"("}}); err == nil {
		t.Error("an invalid pattern was accepted")
	}
}

// A record's free text is redacted at emit: a remote exception carrying a DB URL and a token.
func TestRedactRecord(t *testing.T) {
	const fernet = "gAAAAABmZ2Fub3RhcmVhbHRva2VuYnV0bG9uZ2Vub3VnaF9fX19fX19fX19fX19fX19fX19fX19fX19fX19fX18="
	ep := &Endpoint{Service: "nova-compute", User: "nova"}
	r := &Record{Caller: ep, Error: &RemoteError{Class: "DBError", Module: "oslo_db.exception",
		Message: "cannot connect to mysql+pymysql://nova:DBPW@db/nova with token " + fernet},
		ReturnText: "NO_ROUTE"}
	orig := r.Error
	var x *Redactor
	x.Record(r)
	if strings.Contains(r.Error.Message, "DBPW") || strings.Contains(r.Error.Message, fernet[:12]) {
		t.Errorf("message kept a secret: %q", r.Error.Message)
	}
	if orig.Message == r.Error.Message || r.Caller != ep {
		t.Error("a shared value was changed in place, or an unchanged one copied")
	}
}

// FuzzRedactJSON: valid JSON in, valid JSON out, never longer than the bound, in both policies that keep a
// payload; and no value under a secret key survives.
func FuzzRedactJSON(f *testing.F) {
	for _, s := range []string{
		`{"admin_password":"p","connection_info":"{\"data\": {\"auth_password\": \"c\"}}","n":[1,2.5e3,null,true]}`,
		`{"transport_url":"rabbit://u:PW@h/","m":"--password=x token gAAAAABmZ2Fub3RhcmVhbHRva2VuYnV0bG9uZ2Vub3VnaA"}`,
		`["{\"a\": [\"{\\\"password\\\": 1}\"]}", "\u00e9\ud83d\ude00", "-----BEGIN EC PRIVATE KEY-----\nx"]`,
		`"plain"`, `{"k":{"k":{"k":{"k":"deep"}}}}`, `{"` + strings.Repeat("k", 300) + `":1}`,
	} {
		f.Add([]byte(s), uint16(200))
	}
	f.Fuzz(func(t *testing.T, in []byte, bound uint16) {
		if !json.Valid(in) {
			return
		}
		maxBytes := 64 + int(bound)%4096
		for _, policy := range []PayloadPolicy{PayloadRedacted, PayloadFull} {
			out := (*Redactor)(nil).JSON(in, policy, maxBytes)
			if out == nil {
				t.Fatalf("%s: valid JSON %q gave nothing", policy, in)
			}
			if !json.Valid(out) {
				t.Fatalf("%s: %q gave invalid %q", policy, in, out)
			}
			if len(out) > maxBytes {
				t.Fatalf("%s: %d bytes out, bound %d: %q", policy, len(out), maxBytes, out)
			}
		}
		checkNestedPaths(t, in, maxBytes)
	})
}

// checkNestedPaths: in the token copy, a JSON string holding JSON is redacted the same by value's one-pass way
// (nestedAt) as by the way every other string takes (scanCleanString, then stringValue, which tries nested). (The
// fast copy, which keeps what fits the bound whole, is compared with the token copy by FuzzRedactSpanMatchesTokens.)
func checkNestedPaths(t *testing.T, in []byte, maxBytes int) {
	t.Helper()
	if len(in) < 2 || in[0] != '"' || in[1] != '{' && in[1] != '[' {
		return
	}
	for _, policy := range []PayloadPolicy{PayloadRedacted, PayloadFull} {
		got, _ := (*Redactor)(nil).copyAt(new(redactScratch), in, 0, policy, maxBytes, true)
		var sc redactScratch
		r := redactor{maxBytes: maxBytes, maxStr: 256, sc: &sc, tokens: true}
		if policy == PayloadFull {
			r.maxStr = maxBytes
		}
		var want []byte
		if raw, end, trig, ok := scanCleanString(in, 0); ok && skipWS(in, end) == len(in) {
			r.stringValue(raw, trig, 0)
			want = r.out
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s, bound %d: %q gave %q, the long way %q", policy, maxBytes, in, got, want)
		}
	}
}

// JSON held in a string, of every shape nested has to tell apart, goes the same way through value's one pass and
// through the long way: objects and arrays, secrets inside, escapes of every kind (a surrogate pair, a lone
// surrogate, \/), deeper strings holding JSON, text that only starts like JSON, a budget too small for it.
func TestNestedOnePassMatchesLongWay(t *testing.T) {
	inner := []string{`{"auth_password": "c", "x": [1, 2]}`, `[{"a": "\u00e9\ud83d\ude00 \ud83d"}, "\/\b"]`,
		`{"k": "{\"password\": \"p\", \"n\": \"{}\"}"}`, `{not json`, `{"a": 1} tail`, `[]`, `{}`, `[`,
		`{"s": "` + strings.Repeat("x", 300) + `"}`, `{"u": "rabbit://u:PW@h/ --password=q"}`}
	for _, text := range inner {
		q, err := json.Marshal(text)
		if err != nil {
			t.Fatal(err)
		}
		for _, maxBytes := range []int{20, 40, 64, 100, 300, 4096} {
			checkNestedPaths(t, q, maxBytes)
		}
	}
}

// everyByte is where the value rules were tried before nextValueStart: at every byte that can start one.
func everyByte(s []byte, i int) (trig, start int) {
	for ; i < len(s); i++ {
		switch s[i] {
		case ':', '=', 'g', 'e', 'M', '-':
			return i, i
		}
	}
	return len(s), len(s)
}

// redactFragments are the pieces the generated keys and strings are made of: every word secretWord and aboutWord
// name, the heads of the value rules and what surrounds them, and bytes of every kind.
var redactFragments = []string{
	"pass", "passwd", "password", "passwords", "passphrase", "pwd", "secret", "secrets", "token", "tokens",
	"credential", "credentials", "creds", "auth", "hmac", "private", "privkey", "cookie", "cookies", "session",
	"signature", "apikey", "authtoken", "apikeys", "privatekey", "hmackey", "accesskey", "authkey", "sshkey",
	"encryptionkey", "signingkey", "masterkey", "sessionkey", "fernetkey", "secretkey", "cryptkey", "key", "keys",
	"cert", "certs", "certificate", "public", "routing", "sort", "primary", "ca", "bypass", "compass", "admin", "new",
	"root", "name", "id", "expiry", "ref", "url", "file", "user", "pair", "host", "instance", "uuid", "connection",
	"info", "_", "-", ".", " ", "\\", "\"", "'", ":", "=", "://", "@", "/", "--", "gAAAAA", "gAAAAAB", "eyJ", "MII",
	"-----BEGIN ", "-----END ", "PRIVATE KEY-----", "RSA ", "CERTIFICATE-----", "\n", "None", "null", "***", ",",
	"}", "&", "é", "\x00", "\xff", "A", "J", "B", "y", "Zm9vYmFyYmF6cXV4", "abcdefgh.", "0123456789",
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "eyJhbGciOi.", "eyJzdWIiOiJub3ZhIn0.c2ln",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJub3ZhIn0.c2lnbmF0dXJl", "rabbit://", "mysql+pymysql://nova:", "u:p@h", "PW@",
	"MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJRTESMBAGA1UEChMJ",
}

// genRedactInput joins a few fragments, each in its own case (as is, upper, or capitalised), sometimes with a
// random byte between them.
func genRedactInput(rng *rand.Rand) []byte {
	var b []byte
	for n := 1 + rng.IntN(8); n > 0; n-- {
		f := redactFragments[rng.IntN(len(redactFragments))]
		switch rng.IntN(4) {
		case 0:
			f = strings.ToUpper(f)
		case 1:
			if f != "" {
				f = strings.ToUpper(f[:1]) + f[1:]
			}
		}
		b = append(b, f...)
		if rng.IntN(6) == 0 {
			b = append(b, byte(rng.IntN(256)))
		}
	}
	return b
}

// The key prefilter never says "not secret" of a key that secretKeyWords calls secret.
func TestSecretKeyPrefilter(t *testing.T) {
	for _, w := range redactFragments {
		for _, k := range []string{w, strings.ToUpper(w), "x_" + w, "admin" + w, w + "_x"} {
			if secretKeyWords([]byte(k)) && !keyMayBeSecret([]byte(k)) {
				t.Errorf("prefilter hides secret key %q", k)
			}
		}
	}
	rng := rand.New(rand.NewPCG(14, 1))
	secret := 0
	for range 200000 {
		k := genRedactInput(rng)
		slow := secretKeyWords(k)
		if secretKey(k) != slow {
			t.Fatalf("secretKey(%q) = %v, secretKeyWords says %v", k, !slow, slow)
		}
		if slow {
			secret++
		}
	}
	if secret < 10000 {
		t.Errorf("only %d of the generated keys are secret: the test says little", secret)
	}
}

// Trying the value rules only where nextValueStart says finds what trying them at every byte finds.
func TestTextTriggers(t *testing.T) {
	x, err := NewRedactor(RedactRules{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(14, 2))
	changed := 0
	for range 200000 {
		s := genRedactInput(rng)
		for _, esc := range []bool{false, true} {
			fast, fc := x.textFrom([]byte("pre"), s, esc, nextValueStart)
			slow, sc := x.textFrom([]byte("pre"), s, esc, everyByte)
			if fc != sc || !bytes.Equal(fast, slow) {
				t.Fatalf("text(%q, esc %v) = %q %v, trying every byte gives %q %v", s, esc, fast, fc, slow, sc)
			}
			// The built-in rules alone, with the noSecretText shortcut, as the copies call them.
			bf, bfc := (*Redactor)(nil).rules(nil, s, esc, nil)
			bs, bsc := (*Redactor)(nil).textFrom(nil, s, esc, everyByte)
			if bfc != bsc || !bytes.Equal(bf, bs) {
				t.Fatalf("built-in rules(%q, esc %v) = %q %v, trying every byte gives %q %v", s, esc, bf, bfc, bs, bsc)
			}
			if sc {
				changed++
			}
		}
	}
	// Each rule is exercised (the counts are of both scans).
	for rule, n := range x.Counts() {
		if n < 200 && rule != RuleExtraKey && rule != RuleExtraPattern {
			t.Errorf("rule %s removed %d values in the generated strings: the test says little of it", rule, n)
		}
	}
	if changed < 5000 {
		t.Errorf("only %d of the generated strings had a secret: the test says little", changed)
	}
	t.Logf("%d of %d strings had a secret; counts %v", changed, 2*200000, x.Counts())
}

// FuzzRedactFastPaths: the prefilters of keys and values never hide what the slow paths find.
func FuzzRedactFastPaths(f *testing.F) {
	for _, s := range []string{"adminPass", "x=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJub3ZhIn0.c2ln", "a -----BEGIN EC PRIVATE KEY-----",
		"rabbit://u:p@h/", "tok gAAAAABmZ2Fub3RhcmVhbHRva2VuYnV0bG9uZ2Vub3VnaA", "--password=x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		if secretKey(s) != secretKeyWords(s) {
			t.Fatalf("secretKey(%q) = %v, secretKeyWords differs", s, secretKey(s))
		}
		for _, esc := range []bool{false, true} {
			fast, fc := (*Redactor)(nil).rules(nil, s, esc, nil) // with noSecretText, as the copies call it
			slow, sc := (*Redactor)(nil).textFrom(nil, s, esc, everyByte)
			if fc != sc || !bytes.Equal(fast, slow) {
				t.Fatalf("text(%q, esc %v) = %q, trying every byte gives %q", s, esc, fast, slow)
			}
		}
		// A JSON string that scanCleanString finds no trigger in skips the value rules: they find nothing in it.
		if raw, _, trig, ok := scanCleanString(append(append([]byte{'"'}, s...), '"'), 0); ok && !trig {
			if out, changed := (*Redactor)(nil).text(nil, raw, true); changed {
				t.Fatalf("no trigger in %q, but text gives %q", raw, out)
			}
		}
	})
}

// validScalar agrees with json.Valid on the scalars skipValue can return to value (no white space, comma or
// closing bracket in them, and no quote or opening bracket first).
func TestValidScalar(t *testing.T) {
	const alphabet = "0123456789-+.eEtrufalsn\"{[:x"
	rng := rand.New(rand.NewPCG(14, 3))
	valid := 0
	for _, s := range []string{"0", "-0", "1.5e+3", "01", "1.", ".5", "-", "1e", "true", "nul", "truee", "1E-0", ""} {
		if validScalar([]byte(s)) != json.Valid([]byte(s)) {
			t.Errorf("validScalar(%q) = %v, json.Valid differs", s, validScalar([]byte(s)))
		}
	}
	for range 200000 {
		b := make([]byte, 1+rng.IntN(8))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if rng.IntN(3) == 0 {
			b[0] = "123456789-tfn"[rng.IntN(13)]
		} else if b[0] == '"' || b[0] == '{' || b[0] == '[' {
			b[0] = 'x' // value reads strings, objects and arrays itself
		}
		if got := validScalar(b); got != json.Valid(b) {
			t.Fatalf("validScalar(%q) = %v, json.Valid differs", b, got)
		} else if got {
			valid++
		}
	}
	if valid < 1000 {
		t.Errorf("only %d valid scalars generated", valid)
	}
}

// mayHoldTrigger is exact: for every byte value at every place of a word of otherwise harmless bytes, it says yes
// exactly when the byte lies between ':' and 'M'.
func TestMayHoldTrigger(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			b := []byte("abc-_.9 ")
			b[pos] = byte(c)
			want := c >= ':' && c <= 'M'
			if got := mayHoldTrigger(binary.LittleEndian.Uint64(b)); got != want {
				t.Fatalf("byte %#x at %d: %v, want %v", c, pos, got, want)
			}
		}
	}
}

// A connection's identity is vetted once, where it is read: a connection_name that carries a secret or invalid
// UTF-8 reaches every record (which only shares the identity) and the connection's log line mended and redacted.
func TestIdentityIsVettedWhereItIsRead(t *testing.T) {
	var logs bytes.Buffer
	h := newHarness(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h.ids++
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: "10.0.0.9:40000"})
	tc := &tconn{h: h, cn: cn, dec: frames.NewConn(h.stamped(cn), frames.Options{})}
	name := "nova-api --password=IDENT-PW \xc9:77:x"
	tc.c2s(wire.ProtocolHeader(), wire.StartOKPlain(wire.Table{"connection_name": name}, "guest", "guest"),
		wire.TuneOK(2047, frameMax, 60), wire.Open("/vhost password=VHOST-PW"), wire.ChannelOpen(1))
	tc.s2c(wire.Start(wire.Table{}), wire.Tune(2047, frameMax, 60), wire.OpenOK(), wire.ChannelOpenOK(1))
	tc.publish("nova", "compute", false, osloProps, castBody("go", "u1", "req-1", nil))
	cn.Close("done", nil)
	h.advance(time.Minute)
	r := h.only()
	got, _ := json.Marshal(r.Caller)
	for _, out := range []string{string(got), logs.String()} {
		if strings.Contains(out, "IDENT-PW") || strings.Contains(out, "VHOST-PW") || strings.Contains(out, "\xc9") {
			t.Errorf("identity not vetted: %s", out)
		}
	}
	if r.Caller.PID != 77 || !strings.Contains(r.Caller.Connection, "--password=***") || !utf8.ValidString(r.Caller.Service) {
		t.Errorf("caller %s", got)
	}
}

// The scratch's cache of key verdicts says what keyRule says: for more names than it has slots (so slots are
// shared and replaced), in a second pass that reads them from the cache, and after the scratch moves to a Redactor
// with other rules.
func TestKeyCacheAgreesWithKeyRule(t *testing.T) {
	extra, err := NewRedactor(RedactRules{Keys: []string{"seed"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 3 * keyCacheSize {
		names = append(names, []string{"host", "admin_password", "key_name", "seed", "x_seed", "auth_token",
			"a"}[i%7]+strings.Repeat("_", i/7%3)+string(rune('a'+i%26)))
	}
	names = append(names, "newPass", "s", "seed_"+strings.Repeat("x", maxCachedKeyLen), "pw", "seed",
		// Over 16 bytes, with the same length and first and last eight bytes: a slot's words cannot tell them
		// apart, its copy of the name must.
		"prefix__hostname__suffix", "prefix__password__suffix")
	var sc redactScratch
	for _, x := range []*Redactor{nil, extra, nil} {
		for pass := range 2 {
			for _, n := range names {
				r := redactor{x: x, sc: &sc}
				if got, want := r.keyRule([]byte(n)), x.keyRule([]byte(n)); got != want {
					t.Fatalf("redactor %p, pass %d: keyRule(%q) = %d through the cache, %d without", x, pass, n, got,
						want)
				}
			}
		}
	}
}

// Record.edit, the emit path's one pass over a record's strings, does what CleanString on every string and then
// Redactor.String on the free-text fields did as two passes, whatever the strings hold: plain ids, triggers of the
// value rules with and without a secret, other scripts, invalid UTF-8, strings past their bound, and an operator's
// pattern.
func TestRecordEditIsCleanThenRedact(t *testing.T) {
	extra, err := NewRedactor(RedactRules{Patterns: []string{`sekrit-[0-9]+`}})
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"", "bench_topic", "req-0123456789abcdef", "12:00:00", "rabbit://u:PW@h/", "x password=pw y",
		"gAAAAABmZ2Fub3RhcmVhbHRva2VuYnV0bG9uZ2Vub3VnaF9fX19fX19fX19fX19fX19fX19fX19f", "café", "bad \xc9 byte",
		"sekrit-42", // no trigger of a built-in rule: only the pattern finds it
		strings.Repeat("long-id", 60), strings.Repeat("é", 200) + " --password=z", "ABCDEFGHIJKLM"}
	rng := rand.New(rand.NewPCG(14, 13))
	pick := func() string { return texts[rng.IntN(len(texts))] }
	ptr := func() *string {
		if rng.IntN(4) == 0 {
			return nil
		}
		s := pick()
		return &s
	}
	for range 3000 {
		r := Record{Method: pick(), Topic: pick(), Server: ptr(), Exchange: pick(), RoutingKey: pick(),
			Namespace: ptr(), Version: ptr(), MsgID: pick(), UniqueID: pick(), MessageID: pick(), RequestID: pick(),
			GlobalRequestID: pick(), ParentID: pick(), ParentCandidates: []string{pick(), pick()}, Protocol: pick(),
			Queue: pick(), Cause: pick(), ReturnText: pick(), EventType: pick(), PublisherID: pick(), Priority: pick(),
			Events: []RecordEvent{{Type: "x", Detail: pick()}}, Args: []byte(`{"a":"` + pick() + `"}`)}
		if rng.IntN(2) == 0 {
			r.Error = &RemoteError{Class: pick(), Module: pick(), Message: pick()}
		}
		for _, x := range []*Redactor{nil, extra} {
			got, want := r, r
			got.ParentCandidates, want.ParentCandidates = slices.Clone(r.ParentCandidates), slices.Clone(r.ParentCandidates)
			got.Events, want.Events = slices.Clone(r.Events), slices.Clone(r.Events)
			got.edit(x, editClean|editRedact)
			// The two passes, written out.
			id := func(s string) string { return CleanString(s, maxIDLen) }
			msg := func(s string) string { return CleanString(s, maxMessageLen) }
			for _, f := range []*string{&want.MsgID, &want.UniqueID, &want.MessageID, &want.RequestID,
				&want.GlobalRequestID, &want.ParentID, &want.Protocol, &want.Priority, &want.ParentCandidates[0],
				&want.ParentCandidates[1]} {
				*f = id(*f)
			}
			for _, f := range []*string{&want.Method, &want.Topic, &want.Exchange, &want.RoutingKey, &want.Queue,
				&want.EventType, &want.PublisherID} {
				*f = x.String(id(*f))
			}
			want.ReturnText, want.Cause = x.String(msg(want.ReturnText)), msg(want.Cause)
			want.Events[0].Detail = msg(want.Events[0].Detail)
			for _, p := range []**string{&want.Server, &want.Namespace, &want.Version} {
				if *p != nil {
					v := x.String(id(**p))
					*p = &v
				}
			}
			if e := want.Error; e != nil {
				want.Error = &RemoteError{Class: x.String(id(e.Class)), Module: x.String(id(e.Module)),
					Message: x.String(msg(e.Message))}
			}
			want.Args = cleanBytes(want.Args)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("redactor %p:\n got  %+v\n want %+v", x, got, want)
			}
		}
	}
}

// textClass at every place of every byte that matters to it, in strings around the word size.
func TestTextClassMatchesByteLoop(t *testing.T) {
	for n := range 40 {
		for _, c := range []byte{':', '=', 'A', 'M', '9', 'N', 'a', 0x7f, 0x80, 0xba, 0xc9, 0xff} {
			for at := -1; at < n; at++ {
				b := bytes.Repeat([]byte{'a'}, n)
				if at >= 0 {
					b[at] = c
				}
				var nonASCII, trig bool
				for _, c := range b {
					nonASCII = nonASCII || c >= 0x80
					trig = trig || c >= ':' && c <= 'M'
				}
				if gn, gt := textClass(string(b)); gn != nonASCII || gt != trig {
					t.Fatalf("textClass(%q) = %v, %v; want %v, %v", b, gn, gt, nonASCII, trig)
				}
			}
		}
	}
}

// FuzzRedactSpanMatchesTokens: the fast copy (spanValue) and the token copy remove the same values and keep the
// same rest. Their texts differ only in white space, which the fast copy keeps, also inside a string holding JSON
// that it leaves as it was quoted; so both are compared as values, with every string that holds JSON read as the
// value it holds. The bound is large enough that neither cuts for room.
func FuzzRedactSpanMatchesTokens(f *testing.F) {
	for _, s := range []string{
		`{"admin_password": "p", "connection_info": "{\"data\": {\"auth_password\": \"c\", \"n\": 1}}", "n": [1, 2.5e3, null, true]}`,
		`{"transport_url": "rabbit://u:PW@h/", "m": "--password=x token gAAAAABmZ2Fub3RhcmVhbHRva2VuYnV0bG9uZ2Vub3VnaA"}`,
		`["{\"a\": [\"{\\\"password\\\": 1}\"]}", "\u00e9\ud83d\ude00", "-----BEGIN EC PRIVATE KEY-----\nx"]`,
		`{"s": "` + strings.Repeat("x", 300) + `", "key_name": "k", "token": null, "t":"{\n\t\"secret\": 2}"}`,
		`{"a": {}, "b": [], "c": [{}], "d": " {\"password\": 1}"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		for _, policy := range []PayloadPolicy{PayloadRedacted, PayloadFull} {
			x, err := NewRedactor(RedactRules{})
			if err != nil {
				t.Fatal(err)
			}
			y, _ := NewRedactor(RedactRules{})
			fast, fe := x.copyAt(new(redactScratch), in, 0, policy, 1<<20, false)
			slow, se := y.copyAt(new(redactScratch), in, 0, policy, 1<<20, true)
			if fast == nil || slow == nil || !json.Valid(fast) || fe != se {
				t.Fatalf("%s: %q: fast %q (end %d), tokens %q (end %d)", policy, in, fast, fe, slow, se)
			}
			if a, b := jsonValueDeep(t, fast), jsonValueDeep(t, slow); !reflect.DeepEqual(a, b) {
				t.Fatalf("%s: %q: fast %q, tokens %q", policy, in, fast, slow)
			}
			if a, b := x.Counts(), y.Counts(); !reflect.DeepEqual(a, b) {
				t.Fatalf("%s: %q: fast counted %v, tokens %v", policy, in, a, b)
			}
		}
	})
}

// jsonValueDeep decodes b, and every string in it that holds one JSON object or array (as the redactor reads it:
// after leading white space), into that value.
func jsonValueDeep(t *testing.T, b []byte) any {
	t.Helper()
	decode := func(b []byte) (any, error) {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber() // 1E700 is valid JSON, and no float64
		var v any
		err := d.Decode(&v)
		return v, err
	}
	v, err := decode(b)
	if err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	var deep func(v any) any
	deep = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				v[k] = deep(e)
			}
		case []any:
			for i, e := range v {
				v[i] = deep(e)
			}
		case string:
			if s := strings.TrimLeft(v, " \t\n\r"); len(s) > 0 && (s[0] == '{' || s[0] == '[') {
				if json.Valid([]byte(v)) {
					if inner, err := decode([]byte(v)); err == nil {
						return deep(inner)
					}
				}
			}
		}
		return v
	}
	return deep(v)
}

// noSecretText reads words six bytes apart and then one overlapping the end: a secret at any offset of text of
// any length is still found, as trying the rules at every byte finds it.
func TestNoSecretTextOffsets(t *testing.T) {
	secrets := []string{"pw:x", "db_pass=x", "u@h", "rabbit://u:p@h/", "a Token: x"}
	for _, pad := range []string{"0", "-", "a", "1.2"} {
		for _, sec := range secrets {
			for n := range 40 {
				for at := 0; at+len(sec) <= n; at++ {
					s := []byte(strings.Repeat(pad, n)[:n])
					copy(s[at:], sec)
					got, gc := (*Redactor)(nil).rules(nil, s, false, nil)
					want, wc := (*Redactor)(nil).textFrom(nil, s, false, everyByte)
					if gc != wc || !bytes.Equal(got, want) {
						t.Fatalf("rules(%q) = %q %v, trying every byte gives %q %v", s, got, gc, want, wc)
					}
				}
			}
		}
	}
}

// asciiPrefix never passes a byte over 0x7F wherever it lies, and cleanBytes keeps what utf8.Valid accepts.
func TestASCIIPrefix(t *testing.T) {
	for n := 1; n < 150; n++ {
		for at := range n + 1 {
			b := bytes.Repeat([]byte{'a'}, n)
			if at < n {
				b[at] = 0xC3
			}
			if got := asciiPrefix(b); got > at || at == n && got != n {
				t.Fatalf("asciiPrefix(%d bytes, 0xC3 at %d) = %d", n, at, got)
			}
			if got := cleanBytes(b); utf8.Valid(b) != (&got[0] == &b[0]) || !utf8.Valid(got) {
				t.Fatalf("cleanBytes(%q) = %q", b, got)
			}
		}
	}
}

// shortScalar takes only what skipValue and validScalar take, and ends it where skipValue does.
func TestShortScalar(t *testing.T) {
	for _, s := range []string{"1,", "10}", "2]", "4096,", "0,", "01,", "1.5,", "1e5,", "-1,", "7", "12 ,", "null,",
		"null}", "nul,", "nullx,", "null", "n", "true,", "1x,", ",", "}"} {
		b := []byte(s)
		end := shortScalar(b, 0)
		if end == 0 {
			continue
		}
		if e, ok := skipValue(b, 0); !ok || e != end || !validScalar(b[:e]) {
			t.Errorf("shortScalar(%q) = %d; skipValue gives %d %v", s, end, e, ok)
		}
	}
	if shortScalar([]byte("4096,"), 0) != 4 || shortScalar([]byte("null}"), 0) != 4 {
		t.Error("shortScalar does not take a plain integer or null")
	}
}

// TestSpanNameKeepsKeyWords: a name spanName reads in place takes the key cache's slot under the same keyWords as
// keyRule gives the name as a slice (wordsOf), at every length the cache keeps, so the two paths share one entry.
func TestSpanNameKeepsKeyWords(t *testing.T) {
	for n := 1; n < maxCachedKeyLen; n++ {
		name := make([]byte, n)
		for i := range name {
			name[i] = 'a' + byte(i%26)
		}
		in := []byte(`"` + string(name) + `": 1, "` + strings.Repeat("p", 64) + `": 2}`)
		r := redactor{sc: new(redactScratch)}
		r.keyCache()
		if _, _, ok := r.spanName(in, 0, false); !ok {
			t.Fatalf("spanName did not read the %d-byte name in %q", n, in)
		}
		w, k := wordsOf(name), uint8(n)
		if p := r.keys.pair(w, k); !(p[0].n == k && p[0].w == w || p[1].n == k && p[1].w == w) {
			t.Errorf("a %d-byte name read in place is not kept under its keyWords %+v: slots %+v", n, w, *p)
		}
	}
}
