package correlate

import (
	"encoding/json"
	"strings"
	"testing"
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
	})
}
