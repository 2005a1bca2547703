package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/gorilla/websocket"

	"github.com/amqptrace/amqptrace/correlate"
)

// tailOptions are the flags of `amqptrace tail`. --http and --http-token have the names (and so the environment
// variables) of the running amqptrace's own flags: on a host whose unit sets AMQPTRACE_HTTP and
// AMQPTRACE_HTTP_TOKEN, `amqptrace tail` finds the UI without being told.
type tailOptions struct {
	http, token string
	service     string
	method      string
	kinds       string
	statuses    string
	minDuration time.Duration
	minQueue    time.Duration
	format      string
	local       bool
	history     bool
}

// tailFilter decides which rows tail prints.
type tailFilter struct {
	service, method string
	kinds, statuses map[string]bool
	minDuration     time.Duration
	minQueue        time.Duration
}

func (f *tailFilter) keep(r *correlate.Record) bool {
	if len(f.kinds) > 0 && !f.kinds[string(r.Kind)] {
		return false
	}
	if len(f.statuses) > 0 && !f.statuses[string(r.Status)] {
		return false
	}
	if f.method != "" && !strings.Contains(strings.ToLower(r.Method), f.method) {
		return false
	}
	if f.service != "" && !strings.Contains(strings.ToLower(endpointName(r.Caller)), f.service) &&
		!strings.Contains(strings.ToLower(endpointName(r.Callee)), f.service) {
		return false
	}
	if time.Duration(r.DurationUS)*time.Microsecond < f.minDuration {
		return false
	}
	return time.Duration(r.QueueUS)*time.Microsecond >= f.minQueue
}

// tailUpdate is the part of a UI websocket message tail reads.
type tailUpdate struct {
	Type     string             `json:"type"`
	Calls    []correlate.Record `json:"calls"`
	Skipped  int                `json:"skipped"`
	Instance string             `json:"instance"`
}

func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("amqptrace tail", flag.ContinueOnError)
	var o tailOptions
	fs.StringVar(&o.http, "http", "127.0.0.1:8080", "the running amqptrace's --http address (host:port, or an http:// or https:// URL)")
	fs.StringVar(&o.token, "http-token", "", "its --http-token, if it has one")
	fs.StringVar(&o.service, "service", "", "only calls whose caller or callee service contains this (case-insensitive)")
	fs.StringVar(&o.method, "method", "", "only calls whose method contains this (case-insensitive)")
	fs.StringVar(&o.kinds, "kind", "", "only these kinds, comma-separated: call, cast, fanout, notification")
	fs.StringVar(&o.statuses, "status", "", "only these statuses, comma-separated: ok, error, timeout, unroutable, ...")
	fs.DurationVar(&o.minDuration, "slower-than", 0, "only records whose duration is at least this (e.g. 1s)")
	fs.DurationVar(&o.minQueue, "queue-over", 0, "only records that waited in the queue at least this (e.g. 100ms)")
	fs.StringVar(&o.format, "format", "table", "table (aligned columns) or json (one record per line, as the UI's table gets it)")
	fs.BoolVar(&o.local, "local-time", false, "print times in the local time zone instead of UTC")
	fs.BoolVar(&o.history, "history", true, "print the recent calls the UI holds first, then follow")
	if err := parseFlags(fs, args, "amqptrace tail: follow a running amqptrace's live calls in the terminal (its UI websocket).", stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return badUsage(err)
	}
	wsURL, err := tailURL(o.http)
	if err != nil {
		return err
	}
	f := &tailFilter{service: strings.ToLower(o.service), method: strings.ToLower(o.method),
		kinds: setOf(o.kinds), statuses: setOf(o.statuses), minDuration: o.minDuration, minQueue: o.minQueue}
	for k := range f.kinds {
		switch correlate.Kind(k) {
		case correlate.KindCall, correlate.KindCast, correlate.KindFanout, correlate.KindNotification:
		default:
			return badUsagef("--kind %q: want call, cast, fanout or notification", k)
		}
	}
	var p tailPrinter
	switch o.format {
	case "table":
		p = &tablePrinter{w: stdout, loc: time.UTC}
		if o.local {
			p.(*tablePrinter).loc = time.Local
		}
	case "json":
		p = &jsonPrinter{w: stdout}
	default:
		return badUsagef("--format %q: want table or json", o.format)
	}
	return followUI(ctx, wsURL, o.token, o.history, f, p, stderr)
}

// tailURL turns --http into the UI's websocket URL.
func tailURL(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return "", badUsagef("--http %q: want host:port or http://host:port", addr)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", badUsagef("--http %q: scheme %q: want http or https", addr, u.Scheme)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/ws"
	return u.String(), nil
}

// followUI reads the UI's websocket until ctx ends, reconnecting with a capped backoff when the connection drops
// (amqptrace restarting is when an operator most wants the tail to carry on). A refused token is final.
func followUI(ctx context.Context, wsURL, token string, history bool, f *tailFilter, p tailPrinter, stderr io.Writer) error {
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	backoff := 250 * time.Millisecond
	instance := ""
	for first := true; ; first = false {
		conn, res, err := websocket.DefaultDialer.DialContext(ctx, wsURL, hdr)
		if res != nil && (res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden) {
			return fmt.Errorf("tail: %s answered %s: give its --http-token (or AMQPTRACE_HTTP_TOKEN)", wsURL, res.Status)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if first {
				return fmt.Errorf("tail: %s: %v (is amqptrace running with --http there?)", wsURL, err)
			}
			fmt.Fprintf(stderr, "amqptrace tail: reconnecting in %v: %v\n", backoff, err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		err = readUI(ctx, conn, history && first, &instance, f, p, stderr)
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(stderr, "amqptrace tail: connection lost (%v); reconnecting\n", err)
	}
}

// readUI prints one websocket connection's calls. The first message is a snapshot of recent calls: printed only
// when asked (history), and after a reconnect to the same instance not at all, so no row is printed twice.
func readUI(ctx context.Context, conn *websocket.Conn, history bool, instance *string, f *tailFilter, p tailPrinter, stderr io.Writer) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		var u tailUpdate
		if err := json.Unmarshal(b, &u); err != nil {
			return fmt.Errorf("a message that is not an amqptrace update: %v", err)
		}
		restarted := u.Instance != *instance && *instance != ""
		*instance = u.Instance
		if restarted {
			fmt.Fprintln(stderr, "amqptrace tail: amqptrace restarted; following the new instance")
		}
		if u.Type == "snapshot" && !history && !restarted {
			continue
		}
		for i := range u.Calls {
			if f.keep(&u.Calls[i]) {
				if err := p.print(&u.Calls[i]); err != nil {
					return err
				}
			}
		}
		if u.Skipped > 0 {
			fmt.Fprintf(stderr, "amqptrace tail: %d calls in this update not sent by the UI (over its per-update cap)\n", u.Skipped)
		}
	}
}

// tailPrinter writes one row per record.
type tailPrinter interface {
	print(r *correlate.Record) error
}

type jsonPrinter struct{ w io.Writer }

func (p *jsonPrinter) print(r *correlate.Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.w, "%s\n", b)
	return err
}

// tablePrinter writes aligned columns; the header comes before the first row.
type tablePrinter struct {
	w      io.Writer
	loc    *time.Location
	header bool
}

func (p *tablePrinter) print(r *correlate.Record) error {
	if !p.header {
		p.header = true
		zone := "UTC"
		if p.loc != time.UTC {
			zone = "local"
		}
		if _, err := fmt.Fprintf(p.w, "%-12s  %-12s  %-10s  %9s  %9s  %9s  %s\n", "TIME "+zone, "KIND", "STATUS",
			"TOTAL ms", "QUEUE ms", "SERVER ms", "CALLER → CALLEE  METHOD"); err != nil {
			return err
		}
	}
	at := "-"
	if r.Published != nil {
		at = r.Published.In(p.loc).Format("15:04:05.000")
	} else if r.Delivered != nil {
		at = r.Delivered.In(p.loc).Format("15:04:05.000")
	}
	method := r.Method
	if r.Kind == correlate.KindNotification && r.EventType != "" {
		method = r.EventType
	}
	line := fmt.Sprintf("%-12s  %-12s  %-10s  %9s  %9s  %9s  %s → %s  %s", at, r.Kind, r.Status,
		millis(r.DurationUS), millis(r.QueueUS), millis(r.ServerUS), endpointName(r.Caller), endpointName(r.Callee), method)
	if r.Error != nil && r.Error.Class != "" {
		line += "  (" + r.Error.Class + ")"
	}
	_, err := fmt.Fprintln(p.w, terminalSafe(line))
	return err
}

// millis prints microseconds as milliseconds with one decimal, "-" for none.
func millis(us int64) string {
	if us <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(us)/1000)
}

// endpointName is the service of an endpoint with its host, or "?" when the wire did not say.
func endpointName(e *correlate.Endpoint) string {
	if e == nil || e.Service == "" {
		return "?"
	}
	if e.Host != "" {
		return e.Service + "@" + e.Host
	}
	return e.Service
}

// terminalSafe replaces control characters (escape sequences a client put in a method name or a service name
// would otherwise drive the operator's terminal) with U+FFFD.
func terminalSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}

// setOf splits a comma-separated list into a set of lower-case words.
func setOf(list string) map[string]bool {
	out := map[string]bool{}
	for _, w := range splitList(list) {
		out[strings.ToLower(w)] = true
	}
	return out
}
