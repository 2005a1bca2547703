// Command amqptrace is a transparent AMQP 0-9-1 tracing proxy for OpenStack.
//
//	amqptrace proxy --listen 127.0.0.1:5673 --upstream 127.0.0.1:5672 --http 127.0.0.1:8080 [--otlp-endpoint host:4317] [--events FILE|-]
//	amqptrace demo      # proxy + UI + a simulated OpenStack cloud in front of the local RabbitMQ
//	amqptrace capture --interface lo --port 5672 --events -   # passive: packets on the broker's port
//	amqptrace replay capture.pcapng --http 127.0.0.1:8080    # a capture file someone sent you
//	amqptrace tail --http 127.0.0.1:8080 --status error,timeout   # live calls in the terminal
//	amqptrace version
//
// Every flag can also be set from an AMQPTRACE_* environment variable (--otlp-endpoint is
// AMQPTRACE_OTLP_ENDPOINT). Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 on a runtime failure,
// 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

const usage = `amqptrace: a transparent AMQP 0-9-1 tracing proxy for OpenStack (oslo.messaging over RabbitMQ).

Usage:
  amqptrace proxy [flags]    forward clients to RabbitMQ, trace every RPC (see: amqptrace proxy --help)
  amqptrace demo [flags]     proxy + UI + a simulated OpenStack cloud against the local RabbitMQ
  amqptrace capture [flags]  trace from the packets on the broker's port, no proxy (needs CAP_NET_RAW)
  amqptrace replay FILE...   trace the RPCs in pcap/pcapng files (tcpdump -w, tshark -w)
  amqptrace tail [flags]     follow a running amqptrace's calls in the terminal (--service, --status, --slower-than)
  amqptrace version          print the version
  amqptrace help             this text

Every flag can also be set from the environment: --otlp-endpoint is AMQPTRACE_OTLP_ENDPOINT.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a mistake in how amqptrace was called (a flag, an argument, the environment): exit code 2, and
// its message printed as it is, one line that names the flag.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// badUsage marks err as a usage mistake.
func badUsage(err error) error { return usageError{err} }

// badUsagef is badUsage of a formatted message.
func badUsagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}

// runContext runs one command until it finishes or ctx ends, and returns its exit code.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var err error
	switch args[0] {
	case "proxy":
		err = runProxy(ctx, args[1:], stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "capture":
		err = runCapture(ctx, args[1:], stdout, stderr)
	case "replay":
		err = runReplay(ctx, args[1:], stdout, stderr)
	case "tail":
		err = runTail(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "amqptrace %s\n", version)
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "amqptrace: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "amqptrace: %s\n", userMessage(err))
		return 2
	default:
		fmt.Fprintf(stderr, "amqptrace: %s\n", userMessage(err))
		return 1
	}
}

// packagePrefix matches the "correlate: " a library error starts with, at the start or after a ": ".
var packagePrefix = regexp.MustCompile(`(^|: )(correlate|tracing|ui|proxy|capture|frames|pipeline|metrics): `)

// userMessage is err's text without our package names (an operator knows flags, not packages) and on one line.
func userMessage(err error) string {
	msg := packagePrefix.ReplaceAllString(err.Error(), "$1")
	return strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", " ")), " ")
}
