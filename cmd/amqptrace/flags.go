package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
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

// parseFlags parses args, then the environment, and prints usage that names each flag's variable: on help (asked
// for, so it is the command's output) to help, which is standard output.
func parseFlags(fs *flag.FlagSet, args []string, summary string, help io.Writer) error {
	fs.Usage = func() {
		out := help
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
	// The flag package would print its own message and the whole usage for a mistake: an operator gets one line
	// that names the flag instead (see flagError), and the usage only when asking for it.
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return err
	}
	if err != nil {
		return flagError(fs, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	return applyEnv(fs, os.Getenv)
}

var (
	errUndefined = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	errBadValue  = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-+([^:]+): (.*)$`)
	errNoValue   = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
)

// flagError rewrites one of the flag package's parse errors as one line that names the flag the way the usage does
// (--name), with a hint: the nearest flag for a misspelt one, the unit a bare number lacks for a duration.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if m := errUndefined.FindStringSubmatch(msg); m != nil {
		hint := ""
		if near := nearestFlag(fs, m[1]); near != "" {
			hint = "; did you mean --" + near + "?"
		}
		return fmt.Errorf("unknown flag --%s%s (%s --help lists them)", m[1], hint, fs.Name())
	}
	if m := errBadValue.FindStringSubmatch(msg); m != nil {
		val, name, why := m[1], m[2], m[3]
		if g, ok := lookupGetter(fs, name); ok {
			if _, isDuration := g.Get().(time.Duration); isDuration {
				if _, numErr := strconv.ParseFloat(val, 64); numErr == nil {
					return fmt.Errorf("--%s %q: a duration needs a unit; did you mean %ss?", name, val, val)
				}
				why = "not a duration (e.g. 500ms, 5s, 2m)"
			}
		}
		return fmt.Errorf("--%s %q: %s", name, val, why)
	}
	if m := errNoValue.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("--%s needs a value", m[1])
	}
	return err
}

// lookupGetter returns flag name's value when it can say what it holds (every flag the flag package defines).
func lookupGetter(fs *flag.FlagSet, name string) (flag.Getter, bool) {
	f := fs.Lookup(name)
	if f == nil {
		return nil, false
	}
	g, ok := f.Value.(flag.Getter)
	return g, ok
}

// nearestFlag returns the flag of fs within two edits of name (the closest), or "".
func nearestFlag(fs *flag.FlagSet, name string) string {
	best, bestD := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance of a and b (flag names: a few dozen bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// upstreamAddrs splits --upstream into the addresses the proxy dials. An entry may be host:port or, as operators
// copy it from transport_url, amqp://user:pass@host:port/vhost or amqps://...: only host and port are kept (the
// port defaults to 5672, or 5671 for amqps), because the credentials and the vhost are each client's own and travel
// in its handshake; they are never logged. tls says an amqps URL asked for TLS to the broker; plain and TLS entries
// cannot be mixed, since --upstream-tls applies to every upstream.
func upstreamAddrs(list string) (addrs []string, tls bool, err error) {
	var plain bool
	scheme := "" // of the URL before: transport_url lists hosts as rabbit://u:p@h1:5672,u:p@h2:5672/
	for _, u := range splitList(list) {
		if !strings.Contains(u, "://") && scheme != "" && strings.ContainsAny(u, "@/") {
			u = scheme + "://" + u
		}
		if !strings.Contains(u, "://") {
			addrs, plain = append(addrs, u), true
			continue
		}
		pu, perr := url.Parse(u)
		if perr != nil || pu.Host == "" {
			return nil, false, badUsagef("--upstream %q: want host:port or amqp://host:port", redactURL(u))
		}
		port := "5672"
		scheme = pu.Scheme
		switch pu.Scheme {
		case "amqp", "rabbit":
			plain = true
		case "amqps":
			tls, port = true, "5671"
		default:
			return nil, false, badUsagef("--upstream %q: scheme %q: want host:port, amqp:// or amqps://", redactURL(u), pu.Scheme)
		}
		if p := pu.Port(); p != "" {
			port = p
		}
		addrs = append(addrs, net.JoinHostPort(pu.Hostname(), port))
	}
	if tls && plain {
		return nil, false, badUsagef("--upstream: amqps:// and plain entries mixed; TLS (--upstream-tls) applies to every upstream")
	}
	return addrs, tls, nil
}

// redactURL hides the password of a URL in an error message.
func redactURL(u string) string {
	if pu, err := url.Parse(u); err == nil {
		return pu.Redacted()
	}
	if i := strings.LastIndex(u, "@"); i >= 0 {
		return "…" + u[i:]
	}
	return u
}

// unknownEnv returns the AMQPTRACE_* variables in environ that set no flag of fs (a typo, or a flag of another
// command), each with the nearest variable that does ("" if none is near), so an operator learns why a setting
// did not apply.
func unknownEnv(fs *flag.FlagSet, environ []string) [][2]string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	var out [][2]string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || known[name] {
			continue
		}
		near := nearestFlag(fs, strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, envPrefix), "_", "-")))
		if near != "" {
			near = envName(near)
		}
		out = append(out, [2]string{name, near})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
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
