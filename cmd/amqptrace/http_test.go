package main

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/ui"
)

// The paths cmd adds to the UI's: /metrics needs the token when one is set, /readyz never does, both carry the
// UI's security headers, and without a token a foreign Host is refused on them too (DNS rebinding).
func TestHTTPPathsTokenAndHost(t *testing.T) {
	red, err := correlate.NewRedactor(correlate.RedactRules{})
	if err != nil {
		t.Fatal(err)
	}
	red.String("rabbit://u:pw@h/") // one url_password, for the metric
	for _, token := range []string{"", "tok"} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(redactionCollector{red})
		a := &app{ui: ui.New(ui.Config{Token: token}), registry: reg}
		h := a.httpHandler()
		for _, c := range []struct {
			path, host, auth string
			want             int
		}{
			{"/metrics", "127.0.0.1:8080", "", map[string]int{"": 200, "tok": 401}[token]},
			{"/metrics", "127.0.0.1:8080", "Bearer tok", 200},
			{"/readyz", "127.0.0.1:8080", "", 200},
			{"/healthz", "127.0.0.1:8080", "", 200},
			{"/api/calls", "127.0.0.1:8080", "", map[string]int{"": 200, "tok": 401}[token]},
			{"/metrics", "evil.example:8080", "", map[string]int{"": 421, "tok": 401}[token]},
			{"/readyz", "evil.example:8080", "", map[string]int{"": 421, "tok": 200}[token]},
			{"/api/topology", "evil.example:8080", "", map[string]int{"": 421, "tok": 401}[token]},
			{"/api/topology", "127.0.0.1:8080", "Bearer tok", 404}, // the guard passes; this app has no data path
		} {
			req := httptest.NewRequest("GET", c.path, nil)
			req.Host = c.host
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != c.want {
				t.Errorf("token %q: GET %s Host %s auth %q: %d, want %d", token, c.path, c.host, c.auth, w.Code, c.want)
			}
			if w.Header().Get("Content-Security-Policy") == "" || w.Header().Get("X-Frame-Options") != "DENY" {
				t.Errorf("token %q: GET %s: security headers missing", token, c.path)
			}
			if c.path == "/metrics" && w.Code == 200 &&
				!strings.Contains(w.Body.String(), `amqptrace_redactions_total{rule="url_password"} 1`) {
				t.Errorf("token %q: /metrics lacks the redaction count:\n%s", token, w.Body.String())
			}
		}
	}
}

func TestSplitPatterns(t *testing.T) {
	got := splitPatterns("a,b;;c{1,2}\n d ")
	if strings.Join(got, "|") != "a,b|c{1,2}|d" {
		t.Errorf("splitPatterns = %q", got)
	}
}
