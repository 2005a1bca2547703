package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/proxy"
)

// payload builds a stream a decoder would choke on: an AMQP 1.0 protocol header (not 0-9-1), a frame header whose
// size runs past the data, a frame missing its end octet, then random garbage.
func payload(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var b bytes.Buffer
	b.WriteString("AMQP\x00\x01\x00\x00")
	b.Write([]byte{1, 0, 1, 0, 0, 0x10, 0x00, 'x', 'y'}) // method frame claiming 4096 bytes, 2 present
	b.Write([]byte{8, 0, 0, 0, 0, 0, 0, 0x00})           // heartbeat without its 0xCE end octet
	for b.Len() < size {
		b.WriteByte(byte(r.Uint32()))
	}
	return b.Bytes()
}

// writeChunked writes p in random-sized chunks (1 byte to 64 KiB) and then half-closes.
func writeChunked(c net.Conn, p []byte, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 1))
	for len(p) > 0 {
		n := min(len(p), 1+r.IntN(64<<10))
		if r.IntN(8) == 0 {
			n = min(len(p), 1+r.IntN(16)) // sprinkle tiny writes: truncated frames at every boundary
		}
		if _, err := c.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

// exchange sends toUp from the client and toClient from the upstream at the same time through the proxy, and
// returns what each side received.
func exchange(t *testing.T, client net.Conn, upConns <-chan net.Conn, toUp, toClient []byte) (gotUp, gotClient []byte) {
	t.Helper()
	var wg sync.WaitGroup
	var errs [2]error
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[0] = writeChunked(client, toUp, 11)
	}()
	var up net.Conn
	select {
	case up = <-upConns:
	case <-t.Context().Done():
		t.Fatal("no upstream connection")
	}
	go func() {
		defer wg.Done()
		errs[1] = writeChunked(up, toClient, 22)
	}()
	var rerrs [2]error
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		gotUp, rerrs[0] = readAllGuarded(up)
	}()
	gotClient, rerrs[1] = readAllGuarded(client)
	rwg.Wait()
	wg.Wait()
	for _, err := range append(errs[:], rerrs[:]...) {
		if err != nil {
			t.Fatal(err)
		}
	}
	_ = up.Close()
	return gotUp, gotClient
}

func requireEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at offset %d", what, len(got), len(want), i)
	}
}

func TestForwardByteExact(t *testing.T) {
	const size = 4 << 20
	toUp, toClient := payload(1, size), payload(2, size+12345)

	cases := []struct {
		name     string
		fail     func(p []byte) (int, error)
		disabled bool
	}{
		{name: "tap records"},
		{name: "tap panics on first write", fail: func([]byte) (int, error) { panic("boom") }, disabled: true},
		{
			name:     "tap returns an error",
			fail:     func([]byte) (int, error) { return 0, errors.New("decoder gave up") },
			disabled: true,
		},
		{name: "tap writes short", fail: func(p []byte) (int, error) { return len(p) / 2, nil }, disabled: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			upConns := make(chan net.Conn, 1)
			up := startUpstream(t, func(c net.Conn) { upConns <- c })
			rec := newRecorder()
			rec.failC2S = tc.fail
			p, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: rec.tap})

			client := dial(t, addr)
			gotUp, gotClient := exchange(t, client, upConns, toUp, toClient)
			requireEqual(t, "upstream received", gotUp, toUp)
			requireEqual(t, "client received", gotClient, toClient)
			_ = client.Close()

			end := rec.waitEnd(t)
			if end.TapDisabled != tc.disabled {
				t.Errorf("TapDisabled = %v, want %v", end.TapDisabled, tc.disabled)
			}
			if end.ClientToServerBytes != int64(len(toUp)) || end.ServerToClientBytes != int64(len(toClient)) {
				t.Errorf("ConnEnd bytes = %d/%d, want %d/%d",
					end.ClientToServerBytes, end.ServerToClientBytes, len(toUp), len(toClient))
			}
			if end.Reason != proxy.ReasonClientClosed && end.Reason != proxy.ReasonUpstreamClosed || end.Err != nil {
				t.Errorf("Reason = %q, Err = %v; want a clean close", end.Reason, end.Err)
			}
			tapC2S, tapS2C := rec.bytes()
			if tc.disabled {
				// Observation stopped for the whole connection at the failure; what it saw before is a prefix.
				if !bytes.HasPrefix(toClient, tapS2C) || !bytes.HasPrefix(toUp, tapC2S) {
					t.Errorf("tap saw %d/%d bytes that are not a prefix of the streams", len(tapC2S), len(tapS2C))
				}
			} else {
				requireEqual(t, "tap client→server", tapC2S, toUp)
				requireEqual(t, "tap server→client", tapS2C, toClient)
			}
			st := p.Stats()
			wantFailures := int64(0)
			if tc.disabled {
				wantFailures = 1
			}
			if st.TapFailures != wantFailures || st.BytesClientToServer != int64(len(toUp)) ||
				st.BytesServerToClient != int64(len(toClient)) || st.ConnsOpen != 0 || st.ConnsTotal != 1 {
				t.Errorf("Stats = %+v", st)
			}
		})
	}
}

// A tap that stops working on the server→client side turns observation off for both directions: the decoder
// state of a connection is one thing.
func TestTapFailureStopsBothDirections(t *testing.T) {
	upConns := make(chan net.Conn, 1)
	up := startUpstream(t, func(c net.Conn) { upConns <- c })
	var mu sync.Mutex
	var seen bytes.Buffer
	ends := make(chan proxy.ConnEnd, 1)
	tap := func(proxy.ConnInfo) proxy.Tap {
		return proxy.Tap{
			ClientToServer: writerFunc(func(p []byte) (int, error) {
				mu.Lock()
				defer mu.Unlock()
				return seen.Write(p)
			}),
			ServerToClient: writerFunc(func([]byte) (int, error) { return 0, io.ErrClosedPipe }),
			Done:           func(e proxy.ConnEnd) { ends <- e },
		}
	}
	p, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: tap})
	client := dial(t, addr)
	u := <-upConns
	// upstream speaks first and the client answers only after the failing tap has run: the failure precedes the
	// c2s bytes. Receiving "hello" is not enough: the tap runs after the write, and on the goroutine pumps the
	// client→server pump could forward and tap "after" before the other pump's tap has failed (3 runs in 200).
	if _, err := u.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	for p.Stats().TapFailures == 0 { // counted once the tap is off
		select {
		case <-t.Context().Done():
			t.Fatal("the failing tap was never reported")
		case <-time.After(time.Millisecond):
		}
	}
	if _, err := client.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(u, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	_ = u.Close()
	var e proxy.ConnEnd
	select {
	case e = <-ends:
	case <-t.Context().Done():
	}
	mu.Lock()
	defer mu.Unlock()
	if !e.TapDisabled || seen.Len() != 0 {
		t.Fatalf("TapDisabled = %v, client→server tap saw %q; want disabled and nothing", e.TapDisabled, seen.String())
	}
}

// A TapFunc that panics leaves the connection untapped but forwarding. The panic value (which could quote a
// password) stays out of the log, and the log has lines per connection, not per read.
func TestTapFuncPanics(t *testing.T) {
	up := startUpstream(t, func(c net.Conn) { _, _ = io.Copy(c, c); _ = c.Close() })
	var logs syncBuffer
	p, addr, stop := runProxy(t, proxy.Config{
		Upstreams: []string{up.addr()},
		Tap:       func(proxy.ConnInfo) proxy.Tap { panic(fmt.Sprintf("secret %s", "hunter2")) },
		Logger:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	client := dial(t, addr)
	msg := payload(3, 100_000)
	go func() { _ = writeChunked(client, msg, 5) }()
	got, err := readAllGuarded(client)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "echo", got, msg)
	if st := p.Stats(); st.TapFailures != 1 {
		t.Fatalf("TapFailures = %d, want 1", st.TapFailures)
	}
	_ = client.Close()
	stop() // joins the connection, so its close line is written
	out := logs.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("the panic value reached the log:\n%s", out)
	}
	// open, tap disabled, closed: three lines however many reads the 100 kB took.
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("%d log lines, want 3:\n%s", n, out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Many connections at once on an event loop: their reads land in the same epoll batches, and each batch's bytes
// reach the taps only after the whole batch was forwarded. Every connection's tap must still see exactly its own
// streams, in order.
func TestForwardByteExactManyConns(t *testing.T) {
	const conns, size = 8, 1 << 20
	upConns := make(chan net.Conn, conns)
	up := startUpstream(t, func(c net.Conn) { upConns <- c })
	var mu sync.Mutex
	taps := map[string]*[2]bytes.Buffer{} // by client address
	ended := make(chan struct{}, conns)
	tap := func(ci proxy.ConnInfo) proxy.Tap {
		mu.Lock()
		defer mu.Unlock()
		b := &[2]bytes.Buffer{}
		taps[ci.Client.String()] = b
		w := func(i int) io.Writer {
			return writerFunc(func(p []byte) (int, error) {
				mu.Lock()
				defer mu.Unlock()
				return b[i].Write(p)
			})
		}
		// Done comes after the connection's last tap write.
		return proxy.Tap{ClientToServer: w(0), ServerToClient: w(1), Done: func(proxy.ConnEnd) { ended <- struct{}{} }}
	}
	_, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, Tap: tap})

	// Each client says who it is in its first bytes, so that its upstream connection can be matched to it.
	byName := make(map[string]chan net.Conn, conns)
	for i := range conns {
		byName[fmt.Sprintf("client-%02d", i)] = make(chan net.Conn, 1)
	}
	go func() {
		for range conns {
			c := <-upConns
			var name [9]byte
			if _, err := io.ReadFull(c, name[:]); err != nil {
				t.Error(err)
				return
			}
			byName[string(name[:])] <- c
		}
	}()
	type result struct {
		client         string
		toUp, toClient []byte
		gotUp, gotCl   []byte
		err            error
	}
	results := make(chan result, conns)
	for i := range conns {
		go func() {
			name := fmt.Sprintf("client-%02d", i)
			r := result{toUp: append([]byte(name), payload(uint64(100+i), size)...), toClient: payload(uint64(200+i), size+i)}
			defer func() { results <- r }()
			client, err := net.Dial("tcp", addr)
			if err != nil {
				r.err = err
				return
			}
			defer client.Close()
			r.client = client.LocalAddr().String()
			if _, r.err = client.Write(r.toUp[:len(name)]); r.err != nil {
				return
			}
			upc := <-byName[name]
			defer upc.Close()
			var wg sync.WaitGroup
			var errs [4]error
			wg.Add(3)
			go func() { defer wg.Done(); errs[0] = writeChunked(client, r.toUp[len(name):], uint64(i)) }()
			go func() { defer wg.Done(); errs[1] = writeChunked(upc, r.toClient, uint64(i+50)) }()
			go func() { defer wg.Done(); r.gotUp, errs[2] = readAllGuarded(upc) }()
			r.gotCl, errs[3] = readAllGuarded(client)
			wg.Wait()
			r.gotUp = append([]byte(name), r.gotUp...)
			r.err = errors.Join(errs[:]...)
		}()
	}
	var all []result
	for range conns {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		requireEqual(t, "upstream received", r.gotUp, r.toUp)
		requireEqual(t, "client received", r.gotCl, r.toClient)
		all = append(all, r)
	}
	for range conns {
		select {
		case <-ended:
		case <-time.After(hangGuard):
			t.Fatal("not every connection ended")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range all {
		b := taps[r.client]
		requireEqual(t, "tap client→server of "+r.client, b[0].Bytes(), r.toUp)
		requireEqual(t, "tap server→client of "+r.client, b[1].Bytes(), r.toClient)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
