package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// The binary at a descriptor limit of 256 with 400 idle HTTP clients (more than the limit, none sends a byte):
// --http-max-conns keeps them in the kernel's backlog, so an AMQP client still connects through the proxy and
// works, and the HTTP side answers again once the idle ones are gone.
func TestE2EIdleHTTPClientsLeaveAMQPItsDescriptors(t *testing.T) {
	skipShort(t)
	broker := brokertest.Require(t)
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("no prlimit")
	}
	v := testVhost(t)
	const fdLimit, idle, cap = 256, 400, 32
	p := startBinVia(t, []string{prlimit, "--nofile=" + strconv.Itoa(fdLimit) + ":" + strconv.Itoa(fdLimit)},
		"proxy", "--listen", "127.0.0.1:0", "--upstream", broker, "--http", "127.0.0.1:0",
		"--http-max-conns", strconv.Itoa(cap))
	listen, httpAddr := p.listening(true)

	var idlers []net.Conn
	defer func() {
		for _, c := range idlers {
			_ = c.Close()
		}
	}()
	for i := range idle {
		c, err := net.DialTimeout("tcp", httpAddr, 10*time.Second)
		if err != nil {
			t.Fatalf("idle HTTP client %d: %v", i, err)
		}
		idlers = append(idlers, c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	queue := "e2e-httpbudget-" + randHex(4)
	stop := serve(t, dialPeer(t, v.url(listen), "e2e-httpbudget-server"), queue)
	defer stop()
	c := newCaller(t, v.url(listen))
	for range 3 {
		if err := c.call(ctx, queue); err != nil {
			t.Fatalf("AMQP call through the proxy with %d idle HTTP clients: %v", idle, err)
		}
	}

	// The calls went through while the idle clients were held, not after the server dropped them (its header
	// timeout does, after 10 s, which is what freed descriptors without the cap): every idle connection is still
	// open (a read finds no EOF, only its deadline).
	closed := 0
	for _, c := range idlers {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
			closed++
		}
	}
	if closed > 0 {
		t.Errorf("%d idle HTTP clients were dropped before the AMQP calls were done", closed)
	}
	for _, c := range idlers {
		_ = c.Close()
	}
	idlers = nil
	// The closed ones are freed as the server reads their EOF; /readyz answers once slots are back.
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	waitReady(t, p, client, httpAddr, 30*time.Second)
}
