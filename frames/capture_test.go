package frames

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// TestCapturesSplit feeds every capture whole, byte by byte, in assorted chunk sizes, and split in two at every
// offset (at sampled offsets for the 8 MiB capture), and checks each gives the same frame sequence as whole.
func TestCapturesSplit(t *testing.T) {
	for _, dir := range []string{"amqp091", "oslo"} {
		for _, c := range loadCaptures(t, dir) {
			t.Run(c.name, func(t *testing.T) {
				want, conn := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
				if err := conn.Err(); err != nil {
					t.Fatalf("whole capture: %v", err)
				}
				if len(want.events[0]) == 0 || len(want.events[1]) == 0 {
					t.Fatalf("no frames decoded: %d, %d", len(want.events[0]), len(want.events[1]))
				}
				check := func(what string, cs, ss func() int) {
					t.Helper()
					got, conn := decodeCapture(t, c, cs, ss)
					if err := conn.Err(); err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					diffEvents(t, what+" client", want.events[0], got.events[0])
					diffEvents(t, what+" server", want.events[1], got.events[1])
					if st := conn.Stats(); st.Client.Bytes != uint64(len(c.c2s)) || st.Server.Bytes != uint64(len(c.s2c)) {
						t.Fatalf("%s: stats count %d/%d bytes, want %d/%d", what, st.Client.Bytes, st.Server.Bytes,
							len(c.c2s), len(c.s2c))
					}
				}
				check("byte by byte", every(1), every(1))
				for _, n := range []int{2, 3, 7, 8, 9, 4095, 32 << 10, 128<<10 + 1} {
					check("chunks", every(n), every(n))
				}
				rng := rand.New(rand.NewPCG(1, 2))
				check("random chunks", func() int { return 1 + rng.IntN(70000) }, func() int { return 1 + rng.IntN(300) })

				// Two pieces, split at offset i: every offset of captures up to 64 KiB. The 8 MiB capture would need
				// 8M decodes of 16 MiB, so it gets every offset of a 16 KiB prefix (the handshake and small frames,
				// checked against the prefix decoded whole) and 200 random offsets over the whole stream.
				splitAll := func(c capture, offsets []int) {
					want, _ := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
					for _, i := range offsets {
						for _, dir := range []Direction{ClientToServer, ServerToClient} {
							r := &recorder{}
							conn := NewConn(r, Options{})
							b := c.c2s
							d := conn.ClientDecoder()
							if dir == ServerToClient {
								feed(t, conn.ClientDecoder(), c.c2s, whole(c.c2s)) // learn frame_max
								b, d = c.s2c, conn.ServerDecoder()
							}
							if i >= len(b) {
								continue
							}
							feed(t, d, b[:i], whole(b))
							feed(t, d, b[i:], whole(b))
							if err := conn.Err(); err != nil {
								t.Fatalf("split at %d: %v", i, err)
							}
							diffEvents(t, "split "+dir.String(), want.events[dir], r.events[dir])
						}
					}
				}
				n := max(len(c.c2s), len(c.s2c))
				if n <= 64<<10 {
					offsets := make([]int, 0, n)
					for i := 1; i < n; i++ {
						offsets = append(offsets, i)
					}
					splitAll(c, offsets)
				} else {
					const prefix = 16 << 10
					offsets := make([]int, 0, prefix)
					for i := 1; i < prefix; i++ {
						offsets = append(offsets, i)
					}
					splitAll(capture{c2s: c.c2s[:prefix], s2c: c.s2c[:prefix]}, offsets)
					offsets = offsets[:0]
					for range 200 {
						offsets = append(offsets, 1+rng.IntN(n-1))
					}
					splitAll(c, offsets)
				}
			})
		}
	}
}

// frameMethods decodes every method frame of one direction.
func frameMethods(t *testing.T, evs []event) []Method {
	t.Helper()
	var out []Method
	for _, e := range evs {
		if e.Type != TypeMethod {
			continue
		}
		m, err := DecodeMethod(e.Payload)
		if err != nil {
			t.Fatalf("%v: %v", e, err)
		}
		out = append(out, m)
	}
	return out
}

func TestGoldenAMQP091(t *testing.T) {
	c := loadCaptures(t, "amqp091")[0]
	r, conn := decodeCapture(t, c, every(32<<10), every(32<<10))
	if err := conn.Err(); err != nil {
		t.Fatal(err)
	}
	if got := conn.FrameMax(); got != 131072 {
		t.Errorf("FrameMax = %d, want 131072", got)
	}
	var startOK *ConnectionStartOK
	for _, m := range frameMethods(t, r.events[ClientToServer]) {
		switch m := m.(type) {
		case *ConnectionStartOK:
			startOK = m
		}
	}
	if startOK == nil || startOK.User != "guest" || startOK.Mechanism != "PLAIN" ||
		startOK.ClientProperties["connection_name"] != "frames-capture" {
		t.Fatalf("Start-Ok = %#v", startOK)
	}
	// Per channel: publishes (client), confirms (server), deliveries (server), acks (client).
	count := func(d Direction, class, method uint16) map[uint16]int {
		n := map[uint16]int{}
		for _, e := range r.events[d] {
			if e.Type == TypeMethod && e.ClassID == class && e.MethodID == method {
				n[e.Channel]++
			}
		}
		return n
	}
	pubs := count(ClientToServer, 60, 40)
	if pubs[1] != 10 || pubs[3] != 1 || len(pubs) != 2 {
		t.Errorf("publishes per channel = %v, want ch1:10 ch3:1", pubs)
	}
	// Broker confirms may cover several tags (multiple=true): check they cover exactly 1..10.
	covered := map[uint64]bool{}
	var last uint64
	for _, e := range r.events[ServerToClient] {
		if e.Type != TypeMethod || e.ClassID != 60 || e.MethodID != 80 {
			continue
		}
		m, _ := DecodeMethod(e.Payload)
		a := m.(*BasicAck)
		from := a.DeliveryTag
		if a.Multiple {
			from = last + 1
		}
		for tag := from; tag <= a.DeliveryTag; tag++ {
			covered[tag] = true
		}
		last = a.DeliveryTag
	}
	if len(covered) != 10 || !covered[1] || !covered[10] {
		t.Errorf("broker acks cover %v, want tags 1..10", covered)
	}
	if d := count(ServerToClient, 60, 60); d[2] != 11 {
		t.Errorf("deliveries = %v, want 11 on channel 2", d)
	}
	if a := count(ClientToServer, 60, 80); a[2] != 11 {
		t.Errorf("consumer acks = %v, want 11 on channel 2", a)
	}
	// The 8 MiB message: 65 body frames each way, each payload ≤ frame_max − 8, and on the client side other
	// channels' frames interleave with them.
	for d := range 2 {
		bodies, total, interleaved, inBig, bigCh := 0, 0, false, false, uint16(0)
		for _, e := range r.events[d] {
			if e.Len > 131072-8 {
				t.Fatalf("%v: payload over frame_max-8", e)
			}
			switch {
			case e.Type == TypeHeader && !inBig && bodies == 0:
				var h ContentHeader
				if err := DecodeContentHeader(e.Payload, &h); err != nil {
					t.Fatal(err)
				}
				inBig, bigCh = h.BodySize == 8<<20, e.Channel
			case inBig && e.Channel == bigCh && e.Type == TypeBody:
				bodies++
				total += e.Len
				inBig = total < 8<<20
			case inBig && e.Channel != bigCh:
				interleaved = true
			}
		}
		if bodies < 64 || total != 8<<20 {
			t.Errorf("%v: %d body frames with %d bytes, want ≥ 64 frames and 8 MiB", Direction(d), bodies, total)
		}
		// amqp091-go writes a message's frames under one lock and RabbitMQ's per-channel writer sends a delivery
		// as one block, so this capture interleaves channels between messages, not inside one.
		t.Logf("%v: 8 MiB body in %d frames; other channels inside it: %v", Direction(d), bodies, interleaved)
		switches, chans, prev := 0, map[uint16]bool{}, uint16(0)
		for _, e := range r.events[d] {
			if e.Channel != 0 {
				if prev != 0 && e.Channel != prev {
					switches++
				}
				chans[e.Channel], prev = true, e.Channel
			}
		}
		if len(chans) < 3 || switches < 4 {
			t.Errorf("%v: channels %v, %d switches between them; want 3 interleaved channels", Direction(d), chans, switches)
		}
	}
}

func TestGoldenOslo(t *testing.T) {
	nameRE := regexp.MustCompile(`^oslo_capture\.py:[0-9]+:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	var startOKs int
	kinds := map[string]int{}
	for _, c := range loadCaptures(t, "oslo") {
		r, conn := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
		if err := conn.Err(); err != nil {
			t.Fatal(err)
		}
		for _, m := range frameMethods(t, r.events[ClientToServer]) {
			switch m := m.(type) {
			case *ConnectionStartOK:
				startOKs++
				name, _ := m.ClientProperties["connection_name"].(string)
				if !nameRE.MatchString(name) || m.User != "guest" || m.Mechanism != "AMQPLAIN" {
					t.Errorf("Start-Ok: connection_name %q user %q mechanism %q", name, m.User, m.Mechanism)
				}
			case *BasicPublish:
				switch {
				case strings.HasSuffix(m.Exchange, "_fanout"):
					kinds["fanout"]++
				case strings.HasPrefix(m.RoutingKey, "reply_") && m.Exchange == "":
					kinds["reply"]++
				case strings.HasSuffix(m.RoutingKey, "_notifications.info"):
					kinds["notification"]++
				case m.Exchange == "openstack":
					kinds["call or cast"]++
				default:
					kinds["other"]++
				}
			}
		}
	}
	if startOKs != 4 {
		t.Errorf("%d connections, want 4", startOKs)
	}
	want := map[string]int{"fanout": 1, "reply": 1, "notification": 1, "call or cast": 2}
	if len(kinds) != len(want) {
		t.Errorf("publishes %v, want %v", kinds, want)
	}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("publishes %v, want %v", kinds, want)
		}
	}
}

// TestConcurrentDirections writes the two directions from two goroutines, as the proxy pumps do (run with -race:
// frame_max and the on/off switch are shared).
func TestConcurrentDirections(t *testing.T) {
	c := loadCaptures(t, "amqp091")[0]
	want, _ := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
	var mu sync.Mutex
	r := &recorder{}
	conn := NewConn(HandlerFunc(func(f *Frame) { mu.Lock(); r.HandleFrame(f); mu.Unlock() }), Options{})
	var wg sync.WaitGroup
	for _, w := range []struct {
		d *Decoder
		b []byte
	}{{conn.ClientDecoder(), c.c2s}, {conn.ServerDecoder(), c.s2c}} {
		wg.Go(func() {
			for p := w.b; len(p) > 0; {
				n := min(32<<10, len(p))
				w.d.Write(p[:n])
				p = p[n:]
			}
		})
	}
	wg.Wait()
	if conn.Err() != nil {
		t.Fatal(conn.Err())
	}
	diffEvents(t, "client", want.events[0], r.events[0])
	diffEvents(t, "server", want.events[1], r.events[1])
}
