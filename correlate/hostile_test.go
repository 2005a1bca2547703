package correlate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// Tests of what a hostile or broken client can make of the correlator: strings that are not text, logins the
// broker refuses, sinks that panic.

func TestCleanString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"select_destinations", 0, "select_destinations"},
		{"pin\xc9\xf8g", 0, "pin\uFFFD\uFFFDg"},
		{"\xff", 0, "\uFFFD"},
		{"abcdef", 4, "abcd"},
		{"ab\u00e9cd", 3, "ab"},         // é is two bytes: not split
		{"ab\xffcd", 4, "ab\uFFFD"[:2]}, // the replacement character (3 bytes) does not fit after "ab"
		{"ab\xffcd", 5, "ab\uFFFD"},
		{strings.Repeat("\x80", 100), 9, "\uFFFD\uFFFD\uFFFD"},
		{"", 10, ""},
	} {
		got := CleanString(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("CleanString(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if !utf8.ValidString(got) || (tc.max > 0 && len(got) > tc.max) {
			t.Errorf("CleanString(%q, %d) = %q: not valid or too long", tc.in, tc.max, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { CleanString("select_destinations", 256) }); n != 0 {
		t.Errorf("a valid string costs %v allocations, want 0", n)
	}
}

// rawEnvelope wraps inner in the oslo envelope byte for byte, so invalid UTF-8 in it stays invalid (json.Marshal
// would mend it). inner is written with ' for JSON's quotes, so that it can be an interpreted Go string with \x
// escapes; it must hold no other quote or backslash.
func rawEnvelope(inner string) []byte {
	return []byte(`{"oslo.version": "2.0", "oslo.message": "` + strings.ReplaceAll(inner, "'", `\"`) + `"}`)
}

// The publishes of the issue that killed the proxy: an oslo cast whose method, and a notification whose
// event_type, are not valid UTF-8, on a routing key that is not either. Every string of the records is valid
// UTF-8, with the bad bytes replaced, and encodes to JSON that round-trips.
func TestInvalidUTF8BecomesReplacementCharacters(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-\xffapi", 7, "10.0.0.9")
	cast := rawEnvelope("{'method': 'pin\xc9\xf8g', 'args': {'host': 'cmp\xfe1'}, 'version': '1.0', " +
		"'_unique_id': 'u-1\xc3', '_context_request_id': 'req-\xe2\x82'}")
	api.publish("nova", "compute.\xc9host", false, osloProps, cast)
	note := rawEnvelope("{'message_id': 'n-1', 'publisher_id': 'compute.\xf0\x9f', 'event_type': 'compute.\xff\xfeinstance'," +
		" 'priority': 'INFO', 'payload': {}, 'timestamp': '2026-12-02 04:00:00.000000'}")
	api.publish("nova", "notifications.info", false, osloProps, note)

	h.advance(time.Minute) // past the settle time: a cast is final once no more deliveries can come
	rs := h.records()
	if len(rs) != 2 {
		t.Fatalf("got %d records, want 2: %s", len(rs), dump(rs))
	}
	byKind := map[Kind]*Record{}
	for _, r := range rs {
		byKind[r.Kind] = r
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(b) {
			t.Errorf("record JSON is not valid UTF-8: %q", b)
		}
		checkValidStrings(t, r)
	}
	c := byKind[KindCast]
	if c == nil || c.Method != "pin\uFFFD\uFFFDg" || c.RoutingKey != "compute.\uFFFDhost" ||
		c.Caller.Service != "nova-\uFFFDapi" || c.UniqueID != "u-1\uFFFD" {
		t.Errorf("cast record: %s", dump(rs))
	}
	n := byKind[KindNotification]
	if n == nil || n.EventType != "compute.\uFFFD\uFFFDinstance" {
		t.Errorf("notification record: %s", dump(rs))
	}
}

// checkValidStrings fails for any string field of r (at any depth) that is not valid UTF-8.
func checkValidStrings(t *testing.T, r *Record) {
	t.Helper()
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case string:
			if !utf8.ValidString(v) {
				t.Errorf("%s = %q is not valid UTF-8", path, v)
			}
		case map[string]any:
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	// Decoding the encoder's output proves nothing (it mends); check the raw bytes, then every field by reflection
	// through a decode of bytes that are known valid.
	if !utf8.Valid(b) {
		t.Fatalf("record encodes to invalid UTF-8")
	}
	strs := []string{r.Method, r.Topic, r.Exchange, r.RoutingKey, r.MsgID, r.UniqueID, r.MessageID, r.RequestID,
		r.GlobalRequestID, r.ParentID, r.Queue, r.EventType, r.PublisherID, r.Priority, r.ReturnText}
	for _, e := range []*Endpoint{r.Caller, r.Callee} {
		if e != nil {
			strs = append(strs, e.Service, e.Host, e.Connection, e.User, e.Vhost)
		}
	}
	for i, s := range strs {
		if !utf8.ValidString(s) {
			t.Errorf("string field %d = %q is not valid UTF-8", i, s)
		}
	}
	if !utf8.Valid(r.Args) || !utf8.Valid(r.Result) {
		t.Errorf("args %q or result %q are not valid UTF-8", r.Args, r.Result)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	walk("record", v)
}

// A sink that panics on every record costs one counted drop per record and nothing else: the other sinks get every
// record, the Fanout goes on, and the panic is logged once, without its value.
func TestFanoutSinkPanicsCostOneDropEach(t *testing.T) {
	var logs bytes.Buffer
	var got atomic.Int64
	bad := SinkFunc(func(r *Record) { panic("label value " + r.Method + " is not valid UTF-8") })
	good := SinkFunc(func(*Record) { got.Add(1) })
	fan := NewNamedFanout(64, slog.New(slog.NewTextHandler(&logs, nil)),
		NamedSink{Name: "bad", Sink: bad}, NamedSink{Name: "good", Sink: good})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fan.Run(ctx) }()
	const n = 50
	for i := range n {
		fan.Record(&Record{Method: fmt.Sprintf("s3cret-%d", i)})
	}
	cancel() // Run delivers what is queued before it returns
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d, p := fan.Dropped(), fan.Panics(); d[0] != n || p[0] != n || d[1] != 0 || p[1] != 0 {
		t.Errorf("dropped %v, panics %v; want [%d 0] for both", d, p, n)
	}
	if got.Load() != n {
		t.Errorf("the good sink got %d records, want %d", got.Load(), n)
	}
	out := logs.String()
	if c := strings.Count(out, "panic recovered"); c != 1 {
		t.Errorf("%d panic lines, want 1:\n%s", c, out)
	}
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "component=sink:bad") ||
		!strings.Contains(out, "TestFanoutSinkPanicsCostOneDropEach") {
		t.Errorf("the panic line must name the component and the site, not the value:\n%s", out)
	}
}

// The correlator's own sink (in line, without a Fanout) panicking loses that record, counted, and the correlator
// goes on pairing.
func TestCorrelatorSurvivesPanickingSink(t *testing.T) {
	var n atomic.Int64
	h := newHarness(t, Config{})
	h.panicsExpected = 1
	h.c.sink = SinkFunc(func(r *Record) {
		if n.Add(1) == 1 {
			panic(r.Method)
		}
	})
	api := h.conn("nova-api", 7, "10.0.0.9")
	api.publish("nova", "compute", false, osloProps, castBody("first", "u1", reqID, nil))
	api.publish("nova", "compute", false, osloProps, castBody("second", "u2", reqID, nil))
	h.flush()
	h.c.shutdown()
	if n.Load() != 2 || h.c.Stats().Panics != 1 {
		t.Errorf("sink called %d times (want 2), panics %d (want 1)", n.Load(), h.c.Stats().Panics)
	}
}
