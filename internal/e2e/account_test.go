package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os/exec"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/internal/brokertest"
)

// account is where a test's clients log in. dedicated means a vhost and user made for this test (isolated from
// the other tests sharing the broker, with a password found nowhere else); otherwise it is the broker URL's
// account, and topics and exchanges carry a random suffix instead.
type account struct {
	user, pass, vhost string
	dedicated         bool
	exchange, suffix  string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// brokerAccount makes a dedicated vhost and user with rabbitmqctl when the broker is local and rabbitmqctl works,
// and removes them when the test ends; else it falls back to the broker URL's account.
func brokerAccount(t *testing.T) account {
	t.Helper()
	u, err := url.Parse(brokertest.URL())
	if err != nil {
		t.Fatalf("AMQP_URL: %v", err)
	}
	pass, _ := u.User.Password()
	vhost := u.Path
	if len(vhost) > 0 && vhost[0] == '/' {
		vhost = vhost[1:]
	}
	fallback := account{user: u.User.Username(), pass: pass, vhost: vhost, exchange: "e2e_" + randHex(4),
		suffix: "_" + randHex(4)}

	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		t.Logf("broker %s is not local: using its account and suffixed topics", host)
		return fallback
	}
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		t.Logf("rabbitmqctl not found: using %s and suffixed topics", u.User.Username())
		return fallback
	}
	id := randHex(4)
	a := account{user: "amqptrace-e2e-" + id, pass: "S3cr3t-" + randHex(10), vhost: "amqptrace-e2e-" + id,
		dedicated: true, exchange: "nova"}
	run := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, ctl, args...).CombinedOutput()
		if err != nil {
			t.Logf("rabbitmqctl %s: %v\n%s", args[0], err, out)
		}
		return err
	}
	if err := run("add_vhost", a.vhost); err != nil {
		return fallback
	}
	t.Cleanup(func() { _ = run("delete_vhost", a.vhost) })
	// The password goes on the command line of a short-lived local process: acceptable for a throwaway test
	// account that is deleted when the test ends.
	if err := run("add_user", a.user, a.pass); err != nil {
		return fallback
	}
	t.Cleanup(func() { _ = run("delete_user", a.user) })
	if err := run("set_permissions", "-p", a.vhost, a.user, ".*", ".*", ".*"); err != nil {
		return fallback
	}
	return a
}

// rabbitURL is the oslo.messaging transport_url for this account via addr.
func (a account) rabbitURL(addr string) string {
	u := url.URL{Scheme: "rabbit", User: url.UserPassword(a.user, a.pass), Host: addr, Path: "/" + a.vhost}
	return u.String()
}
