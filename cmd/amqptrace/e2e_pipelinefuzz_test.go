package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/amqptrace/amqptrace/internal/recorded"
)

// TestE2EPipelineFuzz runs the real binary with every sink on (events file, UI with a live websocket client and
// pollers of /api/calls, /api/graph and /metrics, OTLP export to an in-test collector) in front of a fake broker,
// and replays the real captured oslo.messaging connections of frames/testdata/oslo through it, mutated, several
// connections at a time, for AMQPTRACE_PIPELINE_FUZZ_TIME (default 20s):
//
//   - half of the iterations flip one byte at the next position of a sweep over every byte of every capture, both
//     directions, handshake included (so a run of the default length flips every position at least once);
//   - the others keep the handshake (Connection.Open and Open-Ok) intact, since nothing after it is decoded
//     without Open-Ok, and then flip random bytes, overwrite runs with 0xff/0xc9/0xf8, overwrite bytes inside the
//     strings the sinks use (method, event_type, publisher_id, _msg_id, _reply_q, _unique_id, request ids,
//     exchange, routing key, queue, consumer tag, content type, connection_name in Start-Ok, vhost) with invalid
//     UTF-8, truncate the stream or insert bytes; half of them also give the capture fresh ids, so records differ.
//
// The proxy must forward every byte both ways untouched (what the fake broker received is what the client sent,
// what the client received is what the fake broker sent), must never exit, and must exit 0 on SIGTERM. A mismatch
// prints the iteration's seed; AMQPTRACE_PIPELINE_FUZZ_SEED=<seed>[,<seed>...] replays exactly those iterations.
func TestE2EPipelineFuzz(t *testing.T) {
	skipShort(t)
	runFor := 20 * time.Second
	if s := os.Getenv("AMQPTRACE_PIPELINE_FUZZ_TIME"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("AMQPTRACE_PIPELINE_FUZZ_TIME=%q: want a positive Go duration", s)
		}
		runFor = d
	}
	var replay []uint64
	if s := os.Getenv("AMQPTRACE_PIPELINE_FUZZ_SEED"); s != "" {
		for _, f := range strings.Split(s, ",") {
			seed, err := strconv.ParseUint(strings.TrimSpace(f), 0, 64)
			if err != nil {
				t.Fatalf("AMQPTRACE_PIPELINE_FUZZ_SEED: %q: %v", f, err)
			}
			replay = append(replay, seed)
		}
	}
	const workers = 4
	caps := loadFuzzCaptures(t)
	sw := newSweep(caps)

	recv := startOTLPReceiver(t, false)
	fb := startFakeBroker(t)
	events := filepath.Join(t.TempDir(), "events.jsonl")
	p := startBin(t, "proxy", "--listen", "127.0.0.1:0", "--upstream", fb.addr(), "--http", "127.0.0.1:0",
		"--events", events, "--otlp-endpoint", recv.addr, "--shutdown-grace", "5s",
		// The fake broker is no broker: it takes each connection as an iteration's and may answer nothing, so
		// no health check connections and no wait for its answer.
		"--upstream-check", "none", "--upstream-await-answer=false")
	listen, httpAddr := p.listening(true)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	waitReady(t, p, client, httpAddr, 30*time.Second)

	// Observers: the websocket client and the pollers run for the whole fuzz run and stop before SIGTERM.
	stopObs := make(chan struct{})
	var obs sync.WaitGroup
	ws := &wsReader{url: "ws://" + httpAddr + "/api/ws"}
	if err := ws.connect(); err != nil {
		t.Fatalf("websocket: %v", err)
	}
	obs.Go(func() { ws.run(stopObs) })
	poll := &poller{client: client, addr: httpAddr}
	obs.Go(func() { poll.run(stopObs) })
	stopObservers := sync.OnceFunc(func() {
		close(stopObs)
		ws.close()
		obs.Wait()
	})
	t.Cleanup(stopObservers)

	// The fuzz run.
	st := &fuzzStats{}
	var (
		dialMu  sync.Mutex // one connection at a time is being set up, so the fake broker knows which plan it serves
		next    atomic.Uint64
		reports atomic.Int64
	)
	deadline := time.Now().Add(runFor)
	exited := func() bool {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	seedFor := func(i uint64) (uint64, bool) {
		if replay != nil {
			if i >= uint64(len(replay)) {
				return 0, false
			}
			return replay[i], true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		if i%2 == 0 {
			return sw.seed(rand.Uint32()), true
		}
		return uint64(rand.Uint32()), true
	}
	// abort is cancelled when the process exits, so iterations in flight stop waiting for it.
	abort, abortCancel := context.WithCancel(context.Background())
	var watch sync.WaitGroup
	watch.Go(func() {
		select {
		case <-p.done:
		case <-abort.Done():
		}
		abortCancel()
	})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for !exited() {
				seed, ok := seedFor(next.Add(1) - 1)
				if !ok {
					return
				}
				plan := makePlan(caps, sw, seed)
				err := runIteration(&dialMu, fb, listen, plan, abort)
				st.iterations.Add(1)
				st.bytes.Add(int64(len(plan.send[0]) + len(plan.send[1])))
				if err == nil {
					if pos, ok := sw.position(seed); ok {
						sw.done(pos)
					}
					continue
				}
				st.mismatches.Add(1)
				// A connection reset because the process is dying looks like a mismatch: give the exit a moment
				// to show, so the seeds printed are those of iterations the proxy really forwarded wrong.
				select {
				case <-p.done:
				case <-time.After(time.Second):
				}
				if exited() {
					return // the exit is the failure; the iteration it broke says nothing more
				}
				if reports.Add(1) <= 10 {
					t.Errorf("iteration seed=%#x (%s, %s): %v\nreplay: AMQPTRACE_PIPELINE_FUZZ_SEED=%#x go test -count=1 -run 'TestE2EPipelineFuzz$' ./cmd/amqptrace/",
						seed, caps[plan.capture].name, plan.desc, err, seed)
				}
			}
		})
	}
	wg.Wait()
	abortCancel()
	watch.Wait()
	exits := 0
	if exited() {
		exits = 1
		t.Errorf("amqptrace exited during the fuzz run: %v: %s", p.err, p.panicLine())
	}

	// The last scrape, taken with the process still up, gives the panic count.
	panics := -1.0
	if exits == 0 {
		last := scrapeMetrics(t, client, httpAddr)
		panics = last.sum("amqptrace_panics_total", nil)
		var nonzero []string
		for _, name := range []string{"amqptrace_panics_total", "amqptrace_dropped_total", "amqptrace_correlator_events_total"} {
			for _, m := range last[name].GetMetric() {
				if v := m.GetCounter().GetValue(); v != 0 {
					var labels []string
					for _, lp := range m.GetLabel() {
						labels = append(labels, lp.GetName()+"="+strconv.Quote(lp.GetValue()))
					}
					nonzero = append(nonzero, fmt.Sprintf("%s{%s}=%v", name, strings.Join(labels, ","), v))
				}
			}
		}
		t.Logf("last scrape: decode_disabled_connections_total=%v tap_failures_total=%v connections_total=%v; %s",
			last.sum("amqptrace_decode_disabled_connections_total", nil), last.sum("amqptrace_tap_failures_total", nil),
			last.sum("amqptrace_connections_total", nil), strings.Join(nonzero, " "))
	}
	stopObservers()
	if exits == 0 {
		p.signal(syscall.SIGTERM)
		if code := p.wait(30 * time.Second); code != 0 {
			t.Errorf("exit code %d after SIGTERM, want 0: %s", code, p.panicLine())
		}
	} else {
		p.wait(30 * time.Second)
	}
	fb.stop()

	raw, err := os.ReadFile(events)
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	if !utf8.Valid(raw) {
		t.Errorf("the events file is not valid UTF-8")
	}
	records := len(readEvents(t, events))
	_, spans, invalidSpans := recv.counts()
	if invalidSpans != 0 {
		t.Errorf("%d span strings were not valid UTF-8", invalidSpans)
	}
	if exits == 0 {
		if records == 0 {
			t.Errorf("no record in the events file: the run did not exercise the correlator")
		}
		if spans == 0 {
			t.Errorf("no span reached the OTLP receiver")
		}
		if err := poll.failure(); err != nil {
			t.Errorf("HTTP poller: %v", err)
		}
		if err := ws.failure(); err != nil {
			t.Errorf("websocket: %v", err)
		}
	}
	if st.mismatches.Load() > 0 {
		t.Errorf("%d iterations were not forwarded byte for byte (%d reported above; those the exit broke are not)",
			st.mismatches.Load(), min(reports.Load(), 10))
	}
	if fb.stray.Load() != 0 {
		t.Errorf("the fake broker got %d connections no iteration was waiting for", fb.stray.Load())
	}
	if panics < 0 {
		panics = 0
	}
	if panics > 0 {
		// A recovered panic keeps the proxy up, but it is a bug some input reached: the scrape above names where.
		t.Errorf("%v panics recovered (amqptrace_panics_total), want 0", panics)
	}
	covered, total, passes := sw.coverage()
	t.Logf("sweep: %d of %d byte positions flipped (%d full passes); observers: %d websocket messages (%d reconnects), %d polls of /api/calls, /api/graph and /metrics",
		covered, total, passes, ws.messages.Load(), ws.reconnects.Load(), poll.polls.Load())
	t.Logf("pipeline fuzz: iterations=%d connections=%d bytes=%d mismatches=%d exits=%d records=%d spans=%d panics=%d",
		st.iterations.Load(), fb.accepted.Load(), st.bytes.Load(), st.mismatches.Load(), exits, records, spans, int64(panics))
}

type fuzzStats struct {
	iterations, bytes, mismatches atomic.Int64
}

// --- captures ---

// fuzzCapture is one captured connection: the bytes each way (0: client → broker, 1: broker → client), where its
// handshake ends in each direction (after Connection.Open, after Connection.Open-Ok), and the byte ranges of the
// strings the sinks read.
type fuzzCapture struct {
	name    string
	streams [2][]byte
	hs      [2]int
	strs    [2][]strRegion
}

type strRegion struct {
	off, n int
	what   string
}

// loadFuzzCaptures reads ../../frames/testdata/oslo/conn-N.{c2s,s2c}.gz (the frames tests' captures of real
// oslo.messaging 14.0.3 traffic: an RPC server's listener, a reply listener, a sender with a call, its reply, a cast
// and a fanout, a notifier) and finds handshakes and strings in them.
func loadFuzzCaptures(t *testing.T) []*fuzzCapture {
	t.Helper()
	conns, err := recorded.Load(filepath.Join("..", "..", "frames", "testdata", "oslo"))
	if err != nil {
		t.Fatal(err)
	}
	var caps []*fuzzCapture
	for _, rc := range conns {
		c := &fuzzCapture{name: rc.Name, streams: [2][]byte{rc.C2S, rc.S2C}}
		for d := range c.streams {
			var err error
			c.hs[d], c.strs[d], err = scanStream(c.streams[d])
			if err != nil {
				t.Fatalf("%s direction %d: %v", rc.Name, d, err)
			}
		}
		if c.hs[0] == 0 || c.hs[1] == 0 {
			t.Fatalf("%s: no Connection.Open / Open-Ok", rc.Name)
		}
		caps = append(caps, c)
	}
	return caps
}

// methodStrings says where a method's short strings are, after class and method id: r skips a short (reserved or
// reply code), l a long long, b an octet, s is a short string to record.
var methodStrings = map[[2]uint16]struct {
	layout string
	names  []string
}{
	{10, 40}: {"s", []string{"vhost"}},
	{40, 10}: {"rss", []string{"exchange", "exchange_type"}},
	{50, 10}: {"rs", []string{"queue"}},
	{50, 11}: {"s", []string{"queue"}},
	{50, 20}: {"rsss", []string{"queue", "exchange", "routing_key"}},
	{50, 40}: {"rs", []string{"queue"}},
	{60, 20}: {"rss", []string{"queue", "consumer_tag"}},
	{60, 21}: {"s", []string{"consumer_tag"}},
	{60, 30}: {"s", []string{"consumer_tag"}},
	{60, 40}: {"rss", []string{"exchange", "routing_key"}},
	{60, 50}: {"rsss", []string{"reply_text", "exchange", "routing_key"}},
	{60, 60}: {"slbss", []string{"consumer_tag", "exchange", "routing_key"}},
}

// bodyKeys are the oslo keys whose string values the correlator keeps.
var bodyKeys = []string{"method", "event_type", "publisher_id", "priority", "message_id", "_msg_id", "_reply_q",
	"_unique_id", "_context_request_id", "_context_global_request_id", "namespace", "version", "oslo.version"}

// scanStream walks the frames of one direction and returns the end of the handshake (the frame after
// Connection.Open or Open-Ok) and the string regions.
func scanStream(b []byte) (hs int, strs []strRegion, err error) {
	off := 0
	if bytes.HasPrefix(b, []byte("AMQP")) {
		off = 8
	}
	for off < len(b) {
		if off+7 > len(b) {
			return 0, nil, fmt.Errorf("frame header cut at %d", off)
		}
		typ := b[off]
		size := int(binary.BigEndian.Uint32(b[off+3:]))
		start, end := off+7, off+7+size
		if end+1 > len(b) || b[end] != 0xCE {
			return 0, nil, fmt.Errorf("bad frame at %d", off)
		}
		p := b[start:end]
		switch typ {
		case 1:
			if len(p) < 4 {
				break
			}
			cm := [2]uint16{binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])}
			if cm == [2]uint16{10, 40} || cm == [2]uint16{10, 41} {
				hs = end + 1
			}
			if cm == [2]uint16{10, 11} {
				// Start-Ok: the connection_name value in the client-properties table.
				key := []byte("\x0fconnection_nameS")
				if i := bytes.Index(p, key); i >= 0 && i+len(key)+4 <= len(p) {
					vs := i + len(key) + 4
					n := int(binary.BigEndian.Uint32(p[i+len(key):]))
					if vs+n <= len(p) {
						strs = append(strs, strRegion{start + vs, n, "connection_name"})
					}
				}
			}
			spec, ok := methodStrings[cm]
			if !ok {
				break
			}
			q, name := 4, 0
			for _, f := range spec.layout {
				if q >= len(p) {
					break
				}
				switch f {
				case 'r':
					q += 2
				case 'l':
					q += 8
				case 'b':
					q++
				case 's':
					n := int(p[q])
					if n > 0 && q+1+n <= len(p) {
						strs = append(strs, strRegion{start + q + 1, n, spec.names[name]})
					}
					q += 1 + n
					name++
				}
			}
		case 2:
			// Content header: content_type and content_encoding, when present.
			if len(p) < 14 {
				break
			}
			flags, q := binary.BigEndian.Uint16(p[12:]), 14
			for _, prop := range []struct {
				bit  uint16
				name string
			}{{0x8000, "content_type"}, {0x4000, "content_encoding"}} {
				if flags&prop.bit == 0 || q >= len(p) {
					continue
				}
				n := int(p[q])
				if n > 0 && q+1+n <= len(p) {
					strs = append(strs, strRegion{start + q + 1, n, prop.name})
				}
				q += 1 + n
			}
		case 3:
			// Body: the values of bodyKeys, as escaped keys inside oslo.message (`\"method\": \"`) or plain ones
			// (an envelope-less notification, or the envelope's own keys).
			for _, k := range bodyKeys {
				for _, form := range [][2]string{{`\"` + k + `\": \"`, `\"`}, {`"` + k + `": "`, `"`}} {
					for i := 0; ; {
						j := bytes.Index(p[i:], []byte(form[0]))
						if j < 0 {
							break
						}
						vs := i + j + len(form[0])
						ve := bytes.Index(p[vs:], []byte(form[1]))
						if ve < 0 {
							break
						}
						if ve > 0 {
							strs = append(strs, strRegion{start + vs, ve, k})
						}
						i = vs + ve
					}
				}
			}
		}
		off = end + 1
	}
	return hs, strs, nil
}

// --- plans ---

// sweep hands out byte positions across every capture and direction, in order, so that the single-byte flips
// cover every position; a sweep iteration's seed carries its position (plus one) in bits 32-62, so a seed alone
// replays it.
type sweep struct {
	caps    []*fuzzCapture
	total   int
	next    atomic.Int64
	mu      sync.Mutex
	covered []bool
	passes  int
	ncov    int
}

func newSweep(caps []*fuzzCapture) *sweep {
	s := &sweep{caps: caps}
	for _, c := range caps {
		s.total += len(c.streams[0]) + len(c.streams[1])
	}
	s.covered = make([]bool, s.total)
	return s
}

func (s *sweep) seed(low uint32) uint64 {
	pos := int(s.next.Add(1)-1) % s.total
	return uint64(pos+1)<<32 | uint64(low)
}

func (s *sweep) position(seed uint64) (int, bool) {
	p := int(seed>>32) - 1
	return p, p >= 0 && p < s.total
}

// locate maps a sweep position to a capture, a direction and an offset.
func (s *sweep) locate(pos int) (capture, dir, off int) {
	for i, c := range s.caps {
		for d := range 2 {
			if pos < len(c.streams[d]) {
				return i, d, pos
			}
			pos -= len(c.streams[d])
		}
	}
	panic("sweep position out of range")
}

// done marks a position flipped (in an iteration that was forwarded exactly).
func (s *sweep) done(pos int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.covered[pos] {
		s.covered[pos] = true
		s.ncov++
		if s.ncov == s.total {
			s.passes++
			s.ncov = 0
			clear(s.covered)
		}
	}
}

func (s *sweep) coverage() (covered, total, passes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.passes > 0 {
		return s.total, s.total, s.passes
	}
	return s.ncov, s.total, s.passes
}

// fuzzPlan is one iteration: which capture, the bytes each side sends, and how they were made.
type fuzzPlan struct {
	seed    uint64
	capture int
	send    [2][]byte
	desc    string
}

var dirName = [2]string{"c2s", "s2c"}

// invalidUTF8 is what the targeted mutations write: bytes that never start or continue valid UTF-8 here (0xff,
// 0xfe, 0xf8, 0xc0, 0xc1), a lead byte without its continuation (0xc9, 0xe2), a lone continuation (0x80, 0xbf),
// the start of a surrogate (0xed 0xa0).
var invalidUTF8 = []byte{0xff, 0xfe, 0xf8, 0xc0, 0xc1, 0xc9, 0xe2, 0x80, 0xbf, 0xed, 0xa0}

// makePlan builds the iteration a seed stands for; the same seed always gives the same plan.
func makePlan(caps []*fuzzCapture, sw *sweep, seed uint64) *fuzzPlan {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	if pos, ok := sw.position(seed); ok {
		k, d, off := sw.locate(pos)
		p := &fuzzPlan{seed: seed, capture: k}
		p.send = [2][]byte{bytes.Clone(caps[k].streams[0]), bytes.Clone(caps[k].streams[1])}
		x := byte(1 + rng.IntN(255))
		p.send[d][off] ^= x
		p.desc = fmt.Sprintf("sweep: flip %s@%d ^%#02x", dirName[d], off, x)
		return p
	}
	k := rng.IntN(len(caps))
	c := caps[k]
	p := &fuzzPlan{seed: seed, capture: k}
	p.send = [2][]byte{bytes.Clone(c.streams[0]), bytes.Clone(c.streams[1])}
	var desc []string
	if rng.IntN(2) == 0 {
		freshIDs(&p.send, rng)
		desc = append(desc, "fresh ids")
	}
	if rng.IntN(10) == 0 {
		p.desc = strings.Join(append(desc, "unmutated"), ", ")
		return p
	}
	// Length-preserving mutations first (string regions are offsets into the capture), then at most one
	// truncation or insertion.
	for range 1 + rng.IntN(3) {
		d := rng.IntN(2)
		b := p.send[d]
		after := c.hs[d]
		switch r := rng.IntN(100); {
		case r < 25: // a random byte after the handshake
			off := after + rng.IntN(len(b)-after)
			x := byte(1 + rng.IntN(255))
			b[off] ^= x
			desc = append(desc, fmt.Sprintf("flip %s@%d ^%#02x", dirName[d], off, x))
		case r < 45: // a run of 0xff/0xc9/0xf8 after the handshake
			off := after + rng.IntN(len(b)-after)
			n := min(1+rng.IntN(16), len(b)-off)
			for i := range n {
				b[off+i] = []byte{0xff, 0xc9, 0xf8}[rng.IntN(3)]
			}
			desc = append(desc, fmt.Sprintf("bad run %s@%d+%d", dirName[d], off, n))
		case r < 95: // invalid UTF-8 inside a string the sinks read
			if len(c.strs[d]) == 0 {
				continue
			}
			s := c.strs[d][rng.IntN(len(c.strs[d]))]
			n := 1 + rng.IntN(min(s.n, 4))
			if rng.IntN(4) == 0 {
				n = s.n // the whole string
			}
			off := s.off + rng.IntN(s.n-n+1)
			for i := range n {
				b[off+i] = invalidUTF8[rng.IntN(len(invalidUTF8))]
			}
			desc = append(desc, fmt.Sprintf("invalid UTF-8 in %s %s@%d+%d", s.what, dirName[d], off, n))
		default: // a random byte anywhere, handshake included
			off := rng.IntN(len(b))
			x := byte(1 + rng.IntN(255))
			b[off] ^= x
			desc = append(desc, fmt.Sprintf("flip %s@%d ^%#02x (anywhere)", dirName[d], off, x))
		}
	}
	switch r := rng.IntN(100); {
	case r < 8: // truncate after the handshake
		d := rng.IntN(2)
		cut := c.hs[d] + rng.IntN(len(p.send[d])-c.hs[d])
		p.send[d] = p.send[d][:cut]
		desc = append(desc, fmt.Sprintf("truncate %s at %d", dirName[d], cut))
	case r < 16: // insert random bytes after the handshake
		d := rng.IntN(2)
		at := c.hs[d] + rng.IntN(len(p.send[d])-c.hs[d]+1)
		ins := make([]byte, 1+rng.IntN(8))
		for i := range ins {
			ins[i] = byte(rng.IntN(256))
		}
		p.send[d] = append(p.send[d][:at:at], append(ins, p.send[d][at:]...)...)
		desc = append(desc, fmt.Sprintf("insert %d bytes in %s at %d", len(ins), dirName[d], at))
	}
	p.desc = strings.Join(desc, ", ")
	return p
}

// freshIDs replaces every 32-digit lower-case hex run (oslo's _msg_id, _unique_id, reply and fanout queue
// suffixes) with a new one, the same everywhere in both directions, so the correlator sees new calls.
func freshIDs(send *[2][]byte, rng *rand.Rand) {
	const hexDigits = "0123456789abcdef"
	isHex := func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }
	repl := map[string][]byte{}
	for d := range 2 {
		b := send[d]
		for i := 0; i < len(b); {
			if !isHex(b[i]) {
				i++
				continue
			}
			j := i
			for j < len(b) && isHex(b[j]) {
				j++
			}
			if j-i == 32 {
				old := string(b[i:j])
				r, ok := repl[old]
				if !ok {
					r = make([]byte, 32)
					for k := range r {
						r[k] = hexDigits[rng.IntN(16)]
					}
					repl[old] = r
				}
				copy(b[i:j], r)
			}
			i = j
		}
	}
}

// --- one iteration ---

// iterConn is what the fake broker's side of one iteration saw.
type iterConn struct {
	plan     *fuzzPlan
	accepted chan struct{}
	done     chan struct{}
	got      []byte
	err      error
}

const iterTimeout = 20 * time.Second

// runIteration dials the proxy, sends the plan's client bytes in random chunks and half-closes, reads everything
// back, and compares both directions with what the fake broker saw.
// It gives up at once when abort is cancelled (the process under test exited).
func runIteration(dialMu *sync.Mutex, fb *fakeBroker, proxyAddr string, plan *fuzzPlan, abort context.Context) error {
	ic := &iterConn{plan: plan, accepted: make(chan struct{}), done: make(chan struct{})}
	dialMu.Lock()
	fb.expect <- ic
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		select {
		case <-fb.expect:
		default:
		}
		dialMu.Unlock()
		return fmt.Errorf("dial the proxy: %w", err)
	}
	select {
	case <-ic.accepted:
	case <-abort.Done():
	case <-time.After(10 * time.Second):
	}
	select {
	case <-ic.accepted:
	default:
		select {
		case <-fb.expect: // not taken: the proxy never dialled the fake broker
		case <-ic.accepted:
		}
	}
	dialMu.Unlock()
	select {
	case <-ic.accepted:
	default:
		_ = c.Close()
		return errors.New("the proxy did not dial the upstream within 10s (or exited)")
	}
	// The process may die mid-iteration: then close the client side rather than wait for deadlines.
	stopAbort := context.AfterFunc(abort, func() { _ = c.Close() })
	defer stopAbort()

	_ = c.SetDeadline(time.Now().Add(iterTimeout))
	got, rerr, wErr := converse(c, plan.send[0], rand.New(rand.NewPCG(plan.seed, 1)))
	select {
	case <-ic.done:
	case <-abort.Done():
		<-ic.done // the fake broker's read ends when the proxy's sockets go
	case <-time.After(iterTimeout + 5*time.Second):
		return errors.New("the fake broker's side never finished")
	}
	var errs []error
	if wErr != nil {
		errs = append(errs, fmt.Errorf("client write: %w", wErr))
	}
	if rerr != nil {
		errs = append(errs, fmt.Errorf("client read: %w", rerr))
	}
	if ic.err != nil {
		errs = append(errs, fmt.Errorf("fake broker: %w", ic.err))
	}
	if d := firstDiff(ic.got, plan.send[0]); d != "" {
		errs = append(errs, fmt.Errorf("client → broker: %s", d))
	}
	if d := firstDiff(got, plan.send[1]); d != "" {
		errs = append(errs, fmt.Errorf("broker → client: %s", d))
	}
	return errors.Join(errs...)
}

// firstDiff describes how got differs from want, or returns "".
func firstDiff(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("%d bytes arrived, %d were sent; first difference at %d", len(got), len(want), i)
}

// writeChunks writes b in chunks whose sizes rng picks (single bytes, small, medium or the rest).
func writeChunks(c net.Conn, b []byte, rng *rand.Rand) error {
	for len(b) > 0 {
		var n int
		switch rng.IntN(8) {
		case 0:
			n = 1
		case 1, 2:
			n = 1 + rng.IntN(16)
		case 3, 4, 5:
			n = 1 + rng.IntN(512)
		default:
			n = len(b)
		}
		n = min(n, len(b))
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// --- the fake broker ---

// fakeBroker accepts the proxy's upstream connections. Each one is the connection of the iteration that is
// being set up (the runner holds a lock from its dial until the fake broker took its plan): it writes the plan's
// broker bytes in random chunks, half-closes, and records everything it receives until EOF.
type fakeBroker struct {
	ln       net.Listener
	expect   chan *iterConn
	accepted atomic.Int64
	stray    atomic.Int64
	wg       sync.WaitGroup
	stopOnce sync.Once
}

func startFakeBroker(t *testing.T) *fakeBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBroker{ln: ln, expect: make(chan *iterConn, 1)}
	fb.wg.Go(fb.serve)
	t.Cleanup(fb.stop)
	return fb
}

func (fb *fakeBroker) addr() string { return fb.ln.Addr().String() }

func (fb *fakeBroker) stop() {
	fb.stopOnce.Do(func() {
		_ = fb.ln.Close()
		fb.wg.Wait()
	})
}

func (fb *fakeBroker) serve() {
	for {
		c, err := fb.ln.Accept()
		if err != nil {
			return
		}
		fb.accepted.Add(1)
		select {
		case ic := <-fb.expect:
			close(ic.accepted)
			fb.wg.Go(func() { fb.handle(c, ic) })
		case <-time.After(5 * time.Second):
			fb.stray.Add(1)
			_ = c.Close()
		}
	}
}

func (fb *fakeBroker) handle(c net.Conn, ic *iterConn) {
	defer close(ic.done)
	_ = c.SetDeadline(time.Now().Add(iterTimeout))
	got, rerr, wErr := converse(c, ic.plan.send[1], rand.New(rand.NewPCG(ic.plan.seed, 2)))
	ic.got = got
	ic.err = errors.Join(rerr, wErr)
}

// --- observers ---

// wsReader is one UI websocket client that keeps reading (and reconnects if the server drops it while the run
// goes on); every message must be valid UTF-8 and JSON.
type wsReader struct {
	url        string
	mu         sync.Mutex
	conn       *websocket.Conn
	closed     bool
	messages   atomic.Int64
	reconnects atomic.Int64
	errMu      sync.Mutex
	err        error
}

func (w *wsReader) connect() error {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(w.url, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		_ = c.Close()
		return errors.New("closed")
	}
	w.conn = c
	return nil
}

func (w *wsReader) fail(err error) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *wsReader) failure() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

func (w *wsReader) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.conn != nil {
		_ = w.conn.Close()
	}
}

func (w *wsReader) run(stop <-chan struct{}) {
	for {
		w.mu.Lock()
		c := w.conn
		w.mu.Unlock()
		for c != nil {
			_, msg, err := c.ReadMessage()
			if err != nil {
				break
			}
			w.messages.Add(1)
			if !utf8.Valid(msg) {
				w.fail(fmt.Errorf("a message is not valid UTF-8: %.200q", msg))
			} else if !json.Valid(msg) {
				w.fail(fmt.Errorf("a message is not JSON: %.200q", msg))
			}
		}
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond): // reconnect back-off
		}
		w.reconnects.Add(1)
		if err := w.connect(); err != nil {
			w.mu.Lock()
			w.conn = nil
			w.mu.Unlock()
		}
	}
}

// poller fetches /api/calls, /api/graph and /metrics over and over: each must answer 200 with valid UTF-8, the
// first two JSON, the last Prometheus text that parses.
type poller struct {
	client *http.Client
	addr   string
	polls  atomic.Int64
	mu     sync.Mutex
	err    error
}

func (p *poller) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *poller) run(stop <-chan struct{}) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for _, path := range []string{"/api/calls?limit=200", "/api/graph", "/metrics"} {
			if err := p.check(path); err != nil {
				select {
				case <-stop: // the run ended while a request was in flight
					return
				default:
				}
				p.mu.Lock()
				if p.err == nil {
					p.err = err
				}
				p.mu.Unlock()
			}
		}
		p.polls.Add(1)
	}
}

func (p *poller) check(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, p.client, "http://"+p.addr+path)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %.200q", path, code, body)
	}
	if !utf8.Valid(body) {
		return fmt.Errorf("GET %s: the body is not valid UTF-8", path)
	}
	if path == "/metrics" {
		tp := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := tp.TextToMetricFamilies(bytes.NewReader(body)); err != nil {
			return fmt.Errorf("GET /metrics does not parse: %w", err)
		}
		return nil
	}
	if !json.Valid(body) {
		return fmt.Errorf("GET %s: not JSON: %.200q", path, body)
	}
	return nil
}

// converse writes send to c in random chunks and half-closes, while reading everything the other side sends until
// EOF; then it closes c. It returns what was read, the read error and the write error.
func converse(c net.Conn, send []byte, rng *rand.Rand) (got []byte, readErr, writeErr error) {
	werr := make(chan error, 1)
	go func() {
		err := writeChunks(c, send, rng)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, readErr = io.ReadAll(c)
	writeErr = <-werr
	_ = c.Close()
	return got, readErr, writeErr
}
