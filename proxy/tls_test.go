package proxy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/proxy"
)

// testPKI is a throwaway CA and a leaf for localhost / 127.0.0.1, generated per test.
type testPKI struct {
	pool *x509.CertPool
	leaf tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "amqptrace test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{pool: pool, leaf: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}
}

func (k *testPKI) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{k.leaf}, MinVersion: tls.VersionTLS12}
}

func (k *testPKI) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: k.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// TestTLSBothSides: a TLS client talks to the proxy, which talks TLS to a TLS upstream. Bytes are exact both ways
// and half-close travels as close_notify + FIN through both TLS legs.
func TestTLSBothSides(t *testing.T) {
	pki := newTestPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	upConns := make(chan net.Conn, 1)
	up := serveUpstream(t, ln, func(c net.Conn) { upConns <- c })
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{
		Upstreams:   []string{up.addr()},
		ClientTLS:   pki.serverConfig(),
		UpstreamTLS: pki.clientConfig(),
		Tap:         rec.tap,
	})
	client, err := tls.Dial("tcp", addr, pki.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	toUp, toClient := payload(4, 1<<20), payload(5, 1<<20+77)
	gotUp, gotClient := exchange(t, client, upConns, toUp, toClient)
	requireEqual(t, "upstream received", gotUp, toUp)
	requireEqual(t, "client received", gotClient, toClient)
	end := rec.waitEnd(t)
	if !end.Info.ClientTLS || !end.Info.UpstreamTLS || end.Err != nil {
		t.Errorf("ConnEnd = %+v, want both sides TLS and a clean close", end)
	}
	c2s, s2c := rec.bytes()
	requireEqual(t, "tap client→server", c2s, toUp)
	requireEqual(t, "tap server→client", s2c, toClient)
}

// TestClientNeverHandshakes: a client that connects to the TLS port and never speaks is dropped after
// HandshakeTimeout, without dialling the broker.
func TestClientNeverHandshakes(t *testing.T) {
	pki := newTestPKI(t)
	up := startUpstream(t, echo)
	p, addr, _ := runProxy(t, proxy.Config{
		Upstreams:        []string{up.addr()},
		ClientTLS:        pki.serverConfig(),
		HandshakeTimeout: 50 * time.Millisecond,
	})
	c := dial(t, addr)
	expectClosed(t, c)
	st := p.Stats()
	if st.HandshakeFailures != 1 || st.BytesClientToServer != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

// batchConn passes writes through until hold is set; then it keeps them until flush sends them as one write.
type batchConn struct {
	net.Conn
	hold bool
	buf  []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *batchConn) flush() error {
	c.hold = false
	_, err := c.Conn.Write(c.buf)
	return err
}

// countingWriter counts the writes a tap direction gets and keeps their bytes.
type countingWriter struct {
	mu    sync.Mutex
	calls int
	buf   bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	return w.buf.Write(p)
}

// TestTLSRecordsReceivedTogetherAreForwardedTogether: a pipelined amqps client sends a TLS record per message. The
// proxy forwards the records that arrived together in one write (a TLS read returns one record; the pump drains
// the ones already received without waiting for more), byte for byte, and the tap sees the same bytes in the same
// few writes. Without the drain every record was its own write: 2,000 here.
func TestTLSRecordsReceivedTogetherAreForwardedTogether(t *testing.T) {
	pki := newTestPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const records = 2000
	var want []byte
	for i := range records {
		want = append(want, payload(uint64(i), 1+i*7919%1000)[:1+i*7919%1000]...)
	}
	got := make(chan []byte, 1)
	serveUpstream(t, ln, func(c net.Conn) {
		b, _ := io.ReadAll(io.LimitReader(c, int64(len(want))))
		_ = c.Close()
		got <- b
	})
	var c2s countingWriter
	ended := make(chan struct{})
	_, addr, _ := runProxy(t, proxy.Config{
		Upstreams: []string{ln.Addr().String()},
		ClientTLS: pki.serverConfig(),
		Tap: func(proxy.ConnInfo) proxy.Tap {
			return proxy.Tap{ClientToServer: &c2s, ServerToClient: io.Discard, Done: func(proxy.ConnEnd) { close(ended) }}
		},
	})
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	bc := &batchConn{Conn: raw}
	client := tls.Client(bc, pki.clientConfig())
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	bc.hold = true
	for i, off := 0, 0; i < records; i++ {
		n := 1 + i*7919%1000
		if _, err := client.Write(want[off : off+n]); err != nil { // one record each
			t.Fatal(err)
		}
		off += n
	}
	if err := bc.flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		requireEqual(t, "upstream received", b, want)
	case <-time.After(hangGuard):
		t.Fatal("the upstream did not receive every byte")
	}
	_ = client.Close() // the tap has had every byte once the connection's end is reported
	select {
	case <-ended:
	case <-time.After(hangGuard):
		t.Fatal("no ConnEnd reported")
	}
	c2s.mu.Lock()
	calls, tapped := c2s.calls, bytes.Clone(c2s.buf.Bytes())
	c2s.mu.Unlock()
	requireEqual(t, "tap client→server", tapped, want)
	t.Logf("%d records, %d bytes, forwarded in %d writes", records, len(want), calls)
	if calls > records/4 {
		t.Errorf("%d records that arrived together were forwarded in %d writes, want at most %d", records, calls, records/4)
	}
}

// TestTLSClientOnEventLoop: a TLS client in front of a plain upstream is forwarded by an event loop once its
// handshake is done (its bytes are tapped on runEventLoop, not on a pump, unless the tests run on the pumps), and
// the loop keeps the pumps' promises: bytes exact both ways while both directions run at once, with the client's
// socket too small for what one read from the upstream seals, so records wait for it, a half-close each way (close_notify from
// the client ends the upstream's stream with a FIN; the upstream's FIN reaches the client as close_notify), and the
// tap sees the plaintext of both streams.
func TestTLSClientOnEventLoop(t *testing.T) {
	pki := newTestPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upConns := make(chan net.Conn, 1)
	up := serveUpstream(t, ln, func(c net.Conn) { upConns <- c })
	rec := newRecorder()
	var tapper tapGoroutine
	tap := func(info proxy.ConnInfo) proxy.Tap {
		tp := rec.tap(info)
		tp.ClientToServer = tapper.wrap(tp.ClientToServer)
		return tp
	}
	// Small buffers on both ends of the client's connection (a few KiB, fixed: no autotuning), so that the records
	// of one 32 KiB read from the upstream never fit at once and wait in the loop for the client's socket.
	small := func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096))
		})
		return errors.Join(err, serr)
	}
	pln, err := (&net.ListenConfig{Control: small}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, addr, _ := runProxyOn(t, proxy.Config{Upstreams: []string{up.addr()}, ClientTLS: pki.serverConfig(), Tap: tap}, pln)
	client, err := tls.DialWithDialer(&net.Dialer{Control: small}, "tcp", addr, pki.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	toUp, toClient := payload(6, 3<<20+5), payload(7, 4<<20+3)
	gotUp, gotClient := exchange(t, smallReads{client}, upConns, toUp, toClient)
	requireEqual(t, "upstream received", gotUp, toUp)
	requireEqual(t, "client received", gotClient, toClient)
	end := rec.waitEnd(t)
	if !end.Info.ClientTLS || end.Info.UpstreamTLS || end.Err != nil ||
		end.ClientToServerBytes != int64(len(toUp)) || end.ServerToClientBytes != int64(len(toClient)) {
		t.Errorf("ConnEnd = %+v, want client TLS, a clean close and every byte counted", end)
	}
	c2s, s2c := rec.bytes()
	requireEqual(t, "tap client→server", c2s, toUp)
	requireEqual(t, "tap server→client", s2c, toClient)
	want := "proxy.runEventLoop"
	if os.Getenv(pumpsEnv) == "goroutines" {
		want = "proxy.pumpClientToServer"
	}
	if got := tapper.first(); !strings.Contains(got, want) {
		t.Errorf("the client's bytes were tapped on a goroutine without %s in its stack:\n%s", want, got)
	}
}

// smallReads reads a TLS client 700 bytes at a time.
type smallReads struct{ *tls.Conn }

func (c smallReads) Read(p []byte) (int, error) { return c.Conn.Read(p[:min(len(p), 700)]) }

// tapGoroutine keeps the stack of the goroutine that made a tap writer's first write.
type tapGoroutine struct {
	mu    sync.Mutex
	stack string
}

func (g *tapGoroutine) wrap(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		g.mu.Lock()
		if g.stack == "" {
			buf := make([]byte, 64<<10)
			g.stack = string(buf[:runtime.Stack(buf, false)])
		}
		g.mu.Unlock()
		return w.Write(p)
	})
}

func (g *tapGoroutine) first() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stack
}

// TestTLSClientSendsGarbageAfterHandshake: a client that completes its handshake and then sends bytes that are no
// TLS record loses its connection (a client error), and the proxy goes on serving the next client.
func TestTLSClientSendsGarbageAfterHandshake(t *testing.T) {
	pki := newTestPKI(t)
	up := startUpstream(t, echo)
	rec := newRecorder()
	_, addr, _ := runProxy(t, proxy.Config{Upstreams: []string{up.addr()}, ClientTLS: pki.serverConfig(), Tap: rec.tap})
	raw := dial(t, addr)
	client := tls.Client(raw, pki.clientConfig())
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		t.Fatal(err)
	}
	echoed := make([]byte, 8)
	_ = client.SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := io.ReadFull(client, echoed); err != nil || string(echoed) != "AMQP\x00\x00\x09\x01" {
		t.Fatalf("echo through the proxy: %q, %v", echoed, err)
	}
	if _, err := raw.Write(bytes.Repeat([]byte{0x17, 0x03, 0x03, 0x00, 0x10, 0xde, 0xad}, 100)); err != nil {
		t.Fatal(err)
	}
	for {
		_ = raw.SetReadDeadline(time.Now().Add(hangGuard))
		var b [512]byte
		if _, err := raw.Read(b[:]); err != nil { // the proxy's alert may come first, then the close
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the connection is still open")
			}
			break
		}
	}
	if end := rec.waitEnd(t); end.Reason != proxy.ReasonClientError || end.Err == nil {
		t.Errorf("ConnEnd = %+v, want a client error", end)
	}
	next, err := tls.Dial("tcp", addr, pki.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if _, err := next.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = next.SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := io.ReadFull(next, echoed[:4]); err != nil || string(echoed[:4]) != "ping" {
		t.Fatalf("the next client's echo: %q, %v", echoed[:4], err)
	}
}
