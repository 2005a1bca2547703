package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/amqptrace/amqptrace/internal/pipeline"
	"github.com/amqptrace/amqptrace/proxy"
)

// envPrefix is the prefix of the environment variables that set flags: --otlp-endpoint is AMQPTRACE_OTLP_ENDPOINT.
const envPrefix = "AMQPTRACE_"

// envName returns the environment variable for a flag name.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag of fs that was not given on the command line from its AMQPTRACE_* variable, so that a
// systemd unit or a container can configure amqptrace without a command line. Command-line flags win.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", envName(f.Name), v, err))
		}
	})
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("invalid environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

// parseFlags parses args, then the environment, and prints usage that names each flag's variable.
func parseFlags(fs *flag.FlagSet, args []string, summary string) error {
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "%s\n\nFlags (each also from the environment variable shown):\n", summary)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(out, "  --%s", f.Name)
			if name != "" {
				fmt.Fprintf(out, " %s", name)
			}
			fmt.Fprintf(out, "\n      %s", strings.ReplaceAll(usage, "\n", "\n      "))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
				fmt.Fprintf(out, " (default %s)", f.DefValue)
			}
			fmt.Fprintf(out, "\n      $%s\n", envName(f.Name))
		})
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	return applyEnv(fs, os.Getenv)
}

// upstreamConfig checks --upstream (host:port each, port 1-65535: a one-line error naming the flag otherwise),
// resolves each name once and warns about those that do not resolve (a name may come to resolve later, and the
// proxy checks the upstreams itself, so this is no failure), and turns the health flags into the pipeline's.
func (o *options) upstreamConfig(ctx context.Context, log *slog.Logger) ([]string, pipeline.Health, error) {
	var h pipeline.Health
	ups := splitList(o.upstream)
	if len(ups) == 0 {
		return nil, h, errors.New("--upstream: no broker address given")
	}
	for _, u := range ups {
		host, port, err := net.SplitHostPort(u)
		if err != nil {
			return nil, h, fmt.Errorf("--upstream %q: want host:port (%v)", u, err)
		}
		if host == "" {
			return nil, h, fmt.Errorf("--upstream %q: no host", u)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, h, fmt.Errorf("--upstream %q: port %q is not a number from 1 to 65535", u, port)
		}
	}
	var err error
	if h.Strategy, err = proxy.ParseStrategy(o.upstreamStrategy); err != nil {
		return nil, h, fmt.Errorf("--upstream-strategy: %v", err)
	}
	if h.Check, err = proxy.ParseCheck(o.upstreamCheck); err != nil {
		return nil, h, fmt.Errorf("--upstream-check: %v", err)
	}
	for name, d := range map[string]time.Duration{"--dial-budget": o.dialBudget, "--upstream-check-interval": o.upstreamCheckInterval,
		"--upstream-backoff": o.upstreamBackoff, "--upstream-max-backoff": o.upstreamMaxBackoff} {
		if d < 0 {
			return nil, h, fmt.Errorf("%s %v: must not be negative", name, d)
		}
	}
	h.AwaitAnswer, h.DialBudget, h.CheckInterval = o.upstreamAwaitAnswer, o.dialBudget, o.upstreamCheckInterval
	h.Backoff, h.MaxBackoff = o.upstreamBackoff, o.upstreamMaxBackoff

	for _, u := range ups {
		host, _, _ := net.SplitHostPort(u)
		if net.ParseIP(host) != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
		addrs, err := net.DefaultResolver.LookupHost(rctx, host)
		cancel()
		if err != nil {
			log.Warn("upstream name does not resolve (now); the proxy keeps it and resolves it again at each dial",
				"upstream", u, "err", err)
			continue
		}
		log.Debug("upstream resolved", "upstream", u, "addrs", addrs)
	}
	return ups, h, nil
}
