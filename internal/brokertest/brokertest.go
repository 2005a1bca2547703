// Package brokertest is the shared fixture for tests that need the real RabbitMQ broker.
//
// The broker is found at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/). `make test` makes sure it runs
// before tests start. When it cannot be reached, a test that needs it is skipped on a developer's machine and fails
// in CI (CI=true): CI must never go green by skipping the tests that matter.
package brokertest

import (
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// DefaultURL is the broker used when AMQP_URL is not set.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// URL returns the broker URL from AMQP_URL, else DefaultURL.
func URL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Addr returns host:port of the broker (default port 5672, or 5671 for amqps).
func Addr() string {
	u, err := url.Parse(URL())
	if err != nil {
		return "127.0.0.1:5672"
	}
	host := u.Host
	if u.Port() == "" {
		port := "5672"
		if u.Scheme == "amqps" {
			port = "5671"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	return host
}

// URLVia returns the broker URL with its host:port replaced by addr (e.g. a proxy's listen address), keeping the
// credentials and vhost.
func URLVia(addr string) string {
	u, err := url.Parse(URL())
	if err != nil {
		return "amqp://guest:guest@" + addr + "/"
	}
	u.Host = addr
	return u.String()
}

// InCI reports whether the tests run in CI, where a missing broker is a failure.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "false" && v != "0"
}

// Require makes sure the broker accepts TCP connections and returns its address. Outside CI a missing broker
// skips the test; in CI it fails it.
func Require(tb testing.TB) string {
	tb.Helper()
	addr := Addr()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		if InCI() {
			tb.Fatalf("RabbitMQ is not reachable at %s (CI=true, so this fails instead of skipping): %v", addr, err)
		}
		tb.Skipf("RabbitMQ is not reachable at %s (run `make test`, which starts it): %v", addr, err)
	}
	_ = c.Close()
	return addr
}
