package correlate

import (
	"bytes"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/frames"
	"github.com/amqptrace/amqptrace/internal/wire"
)

// Tests of the handshake gate: nothing a connection sends before the broker accepts its login is decoded.

// preOpenClient writes a client's whole session in one go, as an attacker (or a client that does not wait) would:
// the handshake, then channel, publishes of every kind the correlator would decode (a body that is not JSON, one
// over BodyCap, a gzip one, an oslo call with invalid UTF-8), before the broker has said anything.
func preOpenClient(t *testing.T, tc *tconn) {
	t.Helper()
	big := append([]byte(`{"oslo.version": "2.0", "oslo.message": "`), bytes.Repeat([]byte("a"), 4096)...)
	big = append(big, `"}`...)
	gz := osloProps
	gz.ContentEncoding = "gzip"
	tc.c2s(wire.ProtocolHeader(), wire.StartOKPlain(wire.Table{"connection_name": "evil:1:x"}, "guest", "wrong"),
		wire.TuneOK(2047, frameMax, 60), wire.Open("/"), wire.ChannelOpen(1),
		wire.Message(1, "nova", "compute", osloProps, []byte(`{"oslo.version": "2.0", broken`), frameMax),
		wire.Message(1, "nova", "compute", osloProps, big, frameMax),
		wire.Message(1, "nova", "compute", gz, []byte("\x1f\x8b\x08\x00 not really gzip"), frameMax),
		wire.Message(1, "nova", "scheduler", callProps(1000), rawEnvelope("{'method': 'pin\xc9\xf8g', '_msg_id': 'm1',"+
			" '_reply_q': 'reply_x', '_unique_id': 'u1'}"), frameMax))
}

// A client whose login the broker refuses reaches nothing past the handshake: no record, no body decoded (no
// parse failure, no truncated body, no message queued), whatever it sent before the refusal.
func TestRefusedLoginDecodesNothing(t *testing.T) {
	for _, refusal := range []struct {
		name string
		s2c  [][]byte
	}{
		{"close 403", [][]byte{wire.Start(wire.Table{}), wire.Method(0, 10, 50, wire.Short(403),
			wire.ShortStr("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"), wire.Short(0), wire.Short(0))}},
		{"socket closed", [][]byte{wire.Start(wire.Table{})}},
	} {
		t.Run(refusal.name, func(t *testing.T) {
			h := newHarness(t, Config{BodyCap: 1024})
			h.ids++
			cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: "10.0.0.66:40000"})
			tc := &tconn{h: h, cn: cn, dec: frames.NewConn(h.stamped(cn), frames.Options{})}
			preOpenClient(t, tc)
			tc.s2c(refusal.s2c...)
			cn.Close("closed", nil)
			if rs := h.records(); len(rs) != 0 {
				t.Fatalf("records from a refused login: %s", dump(rs))
			}
			st := h.c.Stats()
			if st.MessagesIn != 0 || st.ParseFailures != 0 || st.TruncatedBodies != 0 || st.DecodeFailures != 0 ||
				st.UnknownMessages != 0 || st.PlainMessages != 0 {
				t.Errorf("a refused login reached the correlator: %+v", st)
			}
			if st.PreOpenFrames == 0 {
				t.Error("PreOpenFrames = 0: the frames after Connection.Open were not counted")
			}
		})
	}
}

// The same bytes from a client whose login succeeds: what it pipelined after Connection.Open was held until
// Open-Ok and is decoded then, in order, so a client that does not wait for Open-Ok loses nothing.
func TestFramesBeforeOpenOKAreHeldAndReplayed(t *testing.T) {
	h := newHarness(t, Config{BodyCap: 1024})
	h.ids++
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: "10.0.0.67:40000"})
	tc := &tconn{h: h, cn: cn, dec: frames.NewConn(h.stamped(cn), frames.Options{})}
	preOpenClient(t, tc)
	if st := h.c.Stats(); st.MessagesIn != 0 {
		t.Fatalf("%d messages queued before Open-Ok", st.MessagesIn)
	}
	tc.s2c(wire.Start(wire.Table{}), wire.Tune(2047, frameMax, 60), wire.OpenOK(), wire.ChannelOpenOK(1))
	h.flush()
	st := h.c.Stats()
	// The channel open and the four publishes; the body over BodyCap was decoded as such.
	if st.MessagesIn != 5 || st.TruncatedBodies != 1 || st.PreOpenFrames != 0 {
		t.Errorf("after Open-Ok: messages %d (want 5), truncated %d (want 1), pre-open frames %d (want 0)",
			st.MessagesIn, st.TruncatedBodies, st.PreOpenFrames)
	}
	cn.Close("done", nil)
	h.advance(time.Minute)
	rs := h.records()
	var call *Record
	for _, r := range rs {
		if r.Kind == KindCall {
			call = r
		}
	}
	if call == nil || call.Method != "pin\uFFFD\uFFFDg" || call.Caller.Service != "evil" {
		t.Errorf("the pipelined call: %s", dump(rs))
	}
}

// More than maxHeld bytes between Open and Open-Ok are dropped (counted), not buffered.
func TestHeldFramesAreBounded(t *testing.T) {
	h := newHarness(t, Config{})
	h.ids++
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: "10.0.0.68:40000"})
	tc := &tconn{h: h, cn: cn, dec: frames.NewConn(h.stamped(cn), frames.Options{})}
	tc.c2s(wire.ProtocolHeader(), wire.StartOKPlain(wire.Table{}, "guest", "guest"), wire.TuneOK(2047, frameMax, 60),
		wire.Open("/"), wire.ChannelOpen(1))
	body := bytes.Repeat([]byte("x"), 60000)
	for range 4 {
		tc.c2s(wire.Message(1, "", "q", wire.Properties{}, body, frameMax))
	}
	cn.hsMu.Lock()
	held := cn.hs.heldLen
	cn.hsMu.Unlock()
	if held > maxHeld {
		t.Errorf("%d bytes held, bound %d", held, maxHeld)
	}
	if st := h.c.Stats(); st.PreOpenFrames == 0 {
		t.Error("frames over the bound were not counted")
	}
	cn.Close("done", nil)
}

// A client that publishes once and closes right after Open-Ok (a notifier, a CLI) may be read whole before the
// Open-Ok that let it publish: its Close waits with its other frames, and the publish is not lost.
func TestCloseRightAfterOpenOKKeepsThePublish(t *testing.T) {
	h := newHarness(t, Config{})
	h.ids++
	cn := h.c.NewConn(ConnInfo{ID: h.ids, Client: "10.0.0.69:40000"})
	tc := &tconn{h: h, cn: cn, dec: frames.NewConn(h.stamped(cn), frames.Options{})}
	tc.c2s(wire.ProtocolHeader(), wire.StartOKPlain(wire.Table{"connection_name": "nova-compute:1:x"}, "guest", "guest"),
		wire.TuneOK(2047, frameMax, 60), wire.Open("/"), wire.ChannelOpen(1),
		wire.Message(1, "nova", "notifications.info", osloProps, castBody("ignored", "u7", "req-7", nil), frameMax),
		wire.Method(1, 20, 40, wire.Short(200), wire.ShortStr("bye"), wire.Short(0), wire.Short(0)),
		wire.Method(0, 10, 50, wire.Short(200), wire.ShortStr("bye"), wire.Short(0), wire.Short(0)))
	tc.s2c(wire.Start(wire.Table{}), wire.Tune(2047, frameMax, 60), wire.OpenOK(), wire.ChannelOpenOK(1))
	cn.Close("done", nil)
	h.advance(time.Minute)
	r := h.only()
	if r.UniqueID != "u7" || r.Published == nil {
		t.Fatalf("record %s", dump([]*Record{r}))
	}
	if st := h.c.Stats(); st.PreOpenFrames != 0 {
		t.Errorf("PreOpenFrames %d: the frames were dropped, not held", st.PreOpenFrames)
	}
}
