package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/amqptrace/amqptrace/correlate"
	"github.com/amqptrace/amqptrace/internal/brokertest"
	"github.com/amqptrace/amqptrace/internal/recorded"
)

const python = "/usr/bin/python3"

// manifest is what testdata/oslo_scenario.py prints: what it did, as the clients saw it, and every message every
// process published (logged inside the oslo.messaging driver, so it is an oracle independent of amqptrace).
type manifest struct {
	Exchange        string    `json:"exchange"`
	Suffix          string    `json:"suffix"`
	RequestID       string    `json:"request_id"`
	GlobalRequestID string    `json:"global_request_id"`
	AuthToken       string    `json:"auth_token"`
	AdminPassword   string    `json:"admin_password"`
	Processes       []process `json:"processes"`
	Actions         []action  `json:"actions"`
	Failures        []string  `json:"failures"`
}

type process struct {
	Role      string    `json:"role"`
	Service   string    `json:"service"`
	PID       int       `json:"pid"`
	Publishes []publish `json:"publishes"`
}

type publish struct {
	Exchange   string  `json:"exchange"`
	RoutingKey string  `json:"routing_key"`
	MsgID      *string `json:"msg_id"`
	UniqueID   string  `json:"unique_id"`
	Method     *string `json:"method"`
	EventType  *string `json:"event_type"`
	Ending     *bool   `json:"ending"`
	Reply      bool    `json:"reply"`
}

type action struct {
	Kind          string    `json:"kind"`
	Method        string    `json:"method"`
	Topic         string    `json:"topic"`
	Server        *string   `json:"server"`
	Status        string    `json:"status"`
	Caller        string    `json:"caller"`
	Callee        *string   `json:"callee"`
	Deliveries    int       `json:"deliveries"`
	ErrorClass    string    `json:"error_class"`
	ErrorModule   string    `json:"error_module"`
	EverDelivered *bool     `json:"ever_delivered"`
	Late          bool      `json:"late"`
	HeartbeatsMin int       `json:"heartbeats_min"`
	Big           bool      `json:"big"`
	SecretArg     bool      `json:"secret_arg"`
	EventType     string    `json:"event_type"`
	Priority      string    `json:"priority"`
	Parent        string    `json:"parent"`
	Outcome       string    `json:"outcome"`
	Publishes     []publish `json:"publishes"`
}

func (a *action) label() string {
	m := a.Method
	if a.Kind == "notification" {
		m = a.EventType
	}
	return fmt.Sprintf("%s %s %s.%s", a.Kind, m, a.Topic, strp(a.Server))
}

// requireOslo skips (or, in CI, fails) when Debian's oslo.messaging is not installed.
func requireOslo(t *testing.T) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import oslo_messaging, oslo_context").CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("%s cannot import oslo.messaging (apt-get install python3-oslo.messaging): %v\n%s", python,
			err, out)
		if brokertest.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// TestOsloScenario runs the real oslo.messaging scenario through client → relay A → pipeline → relay B → broker
// and checks the records one by one against the scenario's manifest, the secrets against every output, and relay
// A's bytes against relay B's.
func TestOsloScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs real oslo.messaging processes")
	}
	brokerAddr := brokertest.Require(t)
	requireOslo(t)
	acct := brokerAccount(t)

	relayB := startRelay(t, brokerAddr) // witness of what the broker got
	h := startPipeline(t, relayB.addr(), nil)
	relayA := startRelay(t, h.addr) // witness of what the clients sent

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, python, "testdata/oslo_scenario.py", "--url", acct.rabbitURL(relayA.addr()),
		"--exchange", acct.exchange, "--suffix", acct.suffix)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("oslo scenario ran in %v (dedicated vhost: %v)", time.Since(start).Round(time.Millisecond), acct.dedicated)
	var m manifest
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil || runErr != nil || len(m.Failures) > 0 {
		t.Fatalf("oslo scenario: run: %v, manifest: %v, failures: %q\nstderr (tail):\n%s", runErr, err, m.Failures,
			tail(stderr.String(), 4000))
	}

	// Records arrive as RPCs become final: timeouts at deadline + grace. Wait for the count, then stop the
	// pipeline (which flushes anything still pending) and compare everything, so an extra record shows too.
	want := len(m.Actions)
	if !h.col.waitFor(60*time.Second, func(rs []correlate.Record) bool { return len(rs) >= want }) {
		t.Errorf("only %d of %d records within 60s", len(h.col.snapshot()), want)
	}
	if !relayA.waitIdle(30*time.Second) || !relayB.waitIdle(30*time.Second) {
		t.Errorf("connections still open 30s after the scenario ended")
	}
	h.stop()
	records := h.col.snapshot()

	t.Run("records", func(t *testing.T) { checkOsloRecords(t, &m, records) })
	t.Run("secrets", func(t *testing.T) { checkSecrets(t, h, relayA, acct, &m) })
	t.Run("byte-exact", func(t *testing.T) { checkByteExact(t, h, relayA, relayB) })
	t.Run("replay of our own capture", func(t *testing.T) { checkOwnCaptureReplay(t, relayA, records) })
}

// checkOwnCaptureReplay writes what relay A read, with its read times, as a pcap of our own making
// (recorded.Timed), replays it, and compares the records with the proxy's one by one: the same calls with the
// same outcome, callers and callees, timestamps in their order.
func checkOwnCaptureReplay(t *testing.T, relayA *relay, proxied []correlate.Record) {
	relayA.mu.Lock()
	var conns [][]recorded.Packet
	for i, rc := range relayA.conns {
		rc.readsMu.Lock()
		conns = append(conns, recorded.Timed(i, rc.reads))
		rc.readsMu.Unlock()
	}
	relayA.mu.Unlock()
	path := filepath.Join(t.TempDir(), "own.pcap")
	pkts := recorded.ByTime(conns)
	if err := recorded.WriteCaptureFile(path, pkts, false); err != nil {
		t.Fatal(err)
	}
	replayed, st := replayFileOn(t, path, recorded.BrokerPort)
	type view struct {
		Kind, Status, Method, MsgID, ErrorClass string
		Caller, Callee                          string
		Deliveries                              int
		ReplyDelivered                          bool
	}
	who := func(e *correlate.Endpoint) string {
		if e == nil {
			return ""
		}
		return fmt.Sprintf("%s/%d", e.Service, e.PID)
	}
	shape := func(rs []correlate.Record) map[string]view {
		out := map[string]view{}
		for _, r := range rs {
			v := view{Kind: string(r.Kind), Status: string(r.Status), Method: r.Method, MsgID: r.MsgID,
				Caller: who(r.Caller), Callee: who(r.Callee), Deliveries: r.Deliveries,
				ReplyDelivered: r.ReplyDelivered != nil}
			if r.Kind == correlate.KindFanout {
				// Which server got a fanout first is a matter of microseconds between two taps: compare the set.
				var cs []string
				for i := range r.Callees {
					cs = append(cs, who(&r.Callees[i]))
				}
				sort.Strings(cs)
				v.Callee = strings.Join(cs, ",")
			}
			if r.Error != nil {
				v.ErrorClass = r.Error.Class
			}
			out[fmt.Sprintf("%s/%d", r.UniqueID, r.Amends)] = v
		}
		return out
	}
	want, got := shape(proxied), shape(replayed)
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: proxy %+v, replay %+v (found %v)", k, w, g, ok)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: only in the replay: %+v", k, g)
		}
	}
	for _, r := range replayed {
		ts := []*time.Time{r.Published, r.Delivered, r.Replied, r.ReplyDelivered}
		for i := 1; i < len(ts); i++ {
			if ts[i-1] != nil && ts[i] != nil && ts[i].Before(*ts[i-1]) {
				t.Errorf("%s %s: timestamps out of order: %v", r.Kind, r.Method, ts)
			}
		}
		if r.Source != "replay" {
			t.Errorf("source %q", r.Source)
		}
	}
	t.Logf("own pcap: %d packets of %d connections; %d records replayed, %d through the proxy; %d gaps",
		len(pkts), len(conns), len(replayed), len(proxied), st.Capture.Gaps)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

type groupKey struct{ kind, method, status string }

func checkOsloRecords(t *testing.T, m *manifest, records []correlate.Record) {
	pids := map[string]int{} // role → pid
	serverPID := map[string]int{"ctl1": 0}
	for _, p := range m.Processes {
		pids[p.Role] = p.PID
	}
	serverPID["ctl1"] = pids["conductor"]
	serverPID["host1.example.org"] = pids["compute1"]
	serverPID["host2"] = pids["compute2"]
	servicePID := map[string]int{"nova-api": pids["api"], "nova-conductor": pids["conductor"]}

	// Final and heartbeat replies per _msg_id, from the servers' own publish logs.
	heartbeats := map[string]int{}
	for _, p := range m.Processes {
		for _, pub := range p.Publishes {
			if pub.Reply && pub.MsgID != nil && pub.Ending != nil && !*pub.Ending {
				heartbeats[*pub.MsgID]++
			}
		}
	}

	// One action per published request, keyed by the _unique_id the driver put on the wire.
	byUnique := map[string]int{}
	wantGroups, gotGroups := map[groupKey]int{}, map[groupKey]int{}
	for i := range m.Actions {
		a := &m.Actions[i]
		if len(a.Publishes) != 1 {
			t.Fatalf("%s: the scenario logged %d publishes, want 1", a.label(), len(a.Publishes))
		}
		byUnique[a.Publishes[0].UniqueID] = i
		wantGroups[groupKey{a.Kind, a.label(), a.Status}]++
	}
	matched := make([]bool, len(m.Actions))
	msgIDs := map[string]bool{}
	var scheduleMsgID string
	for i := range m.Actions {
		if m.Actions[i].Method == "schedule" {
			scheduleMsgID = *m.Actions[i].Publishes[0].MsgID
		}
	}

	for i := range records {
		r := &records[i]
		idx, ok := byUnique[r.UniqueID]
		if !ok {
			t.Errorf("extra record: %s %s %s unique_id=%q msg_id=%q", r.Kind, r.Method, r.Status, r.UniqueID, r.MsgID)
			continue
		}
		a := &m.Actions[idx]
		if matched[idx] {
			t.Errorf("%s: a second record for unique_id %s", a.label(), r.UniqueID)
			continue
		}
		matched[idx] = true
		gotGroups[groupKey{string(r.Kind), a.label(), string(r.Status)}]++
		checkOsloRecord(t, m, a, r, serverPID, servicePID, heartbeats, scheduleMsgID)
		if r.MsgID != "" {
			if msgIDs[r.MsgID] {
				t.Errorf("%s: msg_id %s is not unique", a.label(), r.MsgID)
			}
			msgIDs[r.MsgID] = true
		}
	}
	for i, ok := range matched {
		if !ok {
			t.Errorf("missing record: %s (unique_id %s)", m.Actions[i].label(), m.Actions[i].Publishes[0].UniqueID)
		}
	}
	for k, n := range wantGroups {
		if gotGroups[k] != n {
			t.Errorf("%s [%s]: %d records, want %d", k.method, k.status, gotGroups[k], n)
		}
	}
	// The figures, per kind and status, for the report.
	counts := map[string]int{}
	for _, r := range records {
		counts[string(r.Kind)+"/"+string(r.Status)]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, counts[k])
	}
	t.Logf("%d actions, %d records:%s", len(m.Actions), len(records), b.String())
}

func checkOsloRecord(t *testing.T, m *manifest, a *action, r *correlate.Record, serverPID, servicePID map[string]int,
	heartbeats map[string]int, scheduleMsgID string) {
	t.Helper()
	name := a.label()
	pub := a.Publishes[0]
	errorf := func(format string, args ...any) { t.Errorf(name+": "+format, args...) }

	if string(r.Kind) != a.Kind || string(r.Status) != a.Status {
		errorf("kind/status %s/%s, want %s/%s", r.Kind, r.Status, a.Kind, a.Status)
	}
	if r.Protocol != "oslo" {
		errorf("protocol %q, want oslo", r.Protocol)
	}
	if a.Kind == "notification" {
		if r.EventType != a.EventType || r.Priority != a.Priority || r.PublisherID != "nova-api:e2e" {
			errorf("event %q/%q/%q, want %q/%q/nova-api:e2e", r.EventType, r.Priority, r.PublisherID, a.EventType,
				a.Priority)
		}
	} else {
		if r.Method != a.Method {
			errorf("method %q, want %q", r.Method, a.Method)
		}
		if r.Topic != a.Topic || strp(r.Server) != strp(a.Server) {
			errorf("topic/server %q/%s, want %q/%s (routing key %q)", r.Topic, strp(r.Server), a.Topic,
				strp(a.Server), r.RoutingKey)
		}
	}
	if r.Exchange != pub.Exchange || r.RoutingKey != pub.RoutingKey {
		errorf("exchange/routing key %q/%q, want %q/%q", r.Exchange, r.RoutingKey, pub.Exchange, pub.RoutingKey)
	}
	if a.Kind == "call" {
		if pub.MsgID == nil || r.MsgID != *pub.MsgID {
			errorf("msg_id %q, want %v", r.MsgID, pub.MsgID)
		}
	} else if r.MsgID != "" {
		errorf("msg_id %q on a %s", r.MsgID, a.Kind)
	}
	if r.RequestID != m.RequestID || r.GlobalRequestID != m.GlobalRequestID {
		errorf("request ids %q/%q, want %q/%q", r.RequestID, r.GlobalRequestID, m.RequestID, m.GlobalRequestID)
	}

	// Caller: service from connection_name, pid, and the loopback host.
	if r.Caller == nil {
		errorf("no caller")
	} else if r.Caller.Service != a.Caller || r.Caller.PID != servicePID[a.Caller] || r.Caller.Host != "127.0.0.1" {
		errorf("caller %s pid %d host %s, want %s pid %d host 127.0.0.1", r.Caller.Service, r.Caller.PID,
			r.Caller.Host, a.Caller, servicePID[a.Caller])
	}

	// Callee and deliveries.
	switch {
	case a.Callee == nil:
		if r.Callee != nil || r.Deliveries != 0 {
			errorf("callee %+v, %d deliveries: want none", r.Callee, r.Deliveries)
		}
	case a.Kind == "fanout":
		if r.Deliveries != a.Deliveries || len(r.Callees) != a.Deliveries {
			errorf("%d deliveries, %d callees, want %d", r.Deliveries, len(r.Callees), a.Deliveries)
		}
		got := map[int]bool{}
		for _, c := range r.Callees {
			if c.Service != *a.Callee {
				errorf("fanout callee %s, want %s", c.Service, *a.Callee)
			}
			got[c.PID] = true
		}
		if !got[serverPID["host1.example.org"]] || !got[serverPID["host2"]] {
			errorf("fanout callees %+v, want both compute pids %d and %d", r.Callees, serverPID["host1.example.org"],
				serverPID["host2"])
		}
	default:
		wantPID := serverPID["ctl1"] // the conductor is the only server of its topic
		if a.Server != nil {
			wantPID = serverPID[*a.Server]
		}
		if r.Callee == nil {
			errorf("no callee, want %s pid %d", *a.Callee, wantPID)
		} else if r.Callee.Service != *a.Callee || r.Callee.PID != wantPID {
			errorf("callee %s pid %d, want %s pid %d", r.Callee.Service, r.Callee.PID, *a.Callee, wantPID)
		}
		if r.Deliveries != 1 {
			errorf("%d deliveries, want 1", r.Deliveries)
		}
	}

	// Timestamps present where the proxy saw the event, and in order.
	if !orderedTimes(r) {
		errorf("timestamps out of order: published %v delivered %v replied %v reply_delivered %v", r.Published,
			r.Delivered, r.Replied, r.ReplyDelivered)
	}
	if r.Published == nil {
		errorf("no published time")
	}
	switch {
	case a.Kind == "call" && (a.Status != "timeout" || a.Late):
		if r.Delivered == nil || r.Replied == nil || r.ReplyDelivered == nil {
			errorf("missing times: delivered %v replied %v reply_delivered %v", r.Delivered, r.Replied,
				r.ReplyDelivered)
		}
	case a.Kind == "cast" || a.Kind == "fanout":
		if r.Delivered == nil {
			errorf("no delivered time")
		}
	}

	// Outcome details.
	if a.ErrorClass != "" {
		if r.Error == nil || r.Error.Class != a.ErrorClass || r.Error.Module != a.ErrorModule {
			errorf("error %+v, want %s.%s", r.Error, a.ErrorModule, a.ErrorClass)
		}
	} else if r.Error != nil {
		errorf("unexpected error %+v", r.Error)
	}
	if a.Status == "timeout" {
		if r.EverDelivered == nil || a.EverDelivered == nil || *r.EverDelivered != *a.EverDelivered {
			errorf("ever_delivered %v, want %v", r.EverDelivered, a.EverDelivered)
		}
		if r.LateReply != a.Late {
			errorf("late_reply %v, want %v", r.LateReply, a.Late)
		}
		if r.TimeoutMS != 1000 {
			errorf("timeout_ms %d, want 1000", r.TimeoutMS)
		}
	}
	if a.Kind == "call" && pub.MsgID != nil {
		if want := heartbeats[*pub.MsgID]; r.Heartbeats != want || len(r.HeartbeatTimes) != want {
			errorf("%d heartbeats (%d times), the server sent %d", r.Heartbeats, len(r.HeartbeatTimes), want)
		}
		if r.Heartbeats < a.HeartbeatsMin {
			errorf("%d heartbeats, want at least %d", r.Heartbeats, a.HeartbeatsMin)
		}
	}
	if a.Big && r.RequestBytes <= 256<<10 {
		errorf("request_bytes %d, want over 256 KiB", r.RequestBytes)
	}
	if a.Parent == "schedule" && r.ParentID != scheduleMsgID {
		errorf("parent_id %q, want the schedule call %q", r.ParentID, scheduleMsgID)
	}
}

// checkSecrets looks for every secret in every output of the pipeline, after making sure each of them did cross
// the wire (so the check can fail).
func checkSecrets(t *testing.T, h *harness, relayA *relay, acct account, m *manifest) {
	var wire []byte
	for _, rc := range relayA.recorded() {
		wire = append(wire, rc.c2s.Bytes()...)
	}
	secrets := map[string]string{
		"auth token":     m.AuthToken,
		"admin_password": m.AdminPassword,
	}
	if acct.dedicated {
		secrets["AMQP password"] = acct.pass
	} else {
		// Without a dedicated user the password may be a common word ("guest"), so look for its AMQPLAIN
		// encoding instead: the PASSWORD key, type 'S', a 32-bit length, the password.
		l := len(acct.pass)
		secrets["AMQPLAIN response"] = "PASSWORDS" + string([]byte{byte(l >> 24), byte(l >> 16), byte(l >> 8), byte(l)}) +
			acct.pass
	}
	outputs := map[string][]byte{
		"events (JSON Lines)": h.events.Bytes(),
		"records (JSON)":      h.recordsJSON(),
		"logs (debug)":        h.logs.Bytes(),
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s: empty secret", what)
		}
		if !bytes.Contains(wire, []byte(s)) {
			t.Errorf("%s never crossed the wire: the check below proves nothing", what)
		}
		for where, out := range outputs {
			if bytes.Contains(out, []byte(s)) {
				t.Errorf("%s leaked into the %s", what, where)
			}
		}
	}
	t.Logf("secrets checked in %d bytes of events, %d bytes of records, %d bytes of debug logs",
		len(outputs["events (JSON Lines)"]), len(outputs["records (JSON)"]), len(outputs["logs (debug)"]))
	if len(outputs["events (JSON Lines)"]) == 0 || len(outputs["logs (debug)"]) == 0 {
		t.Errorf("an output is empty: the secret scan proves nothing")
	}
	if os.Getenv("E2E_DUMP") != "" {
		_ = os.WriteFile("/tmp/e2e-events.jsonl", outputs["events (JSON Lines)"], 0o600)
		_ = os.WriteFile("/tmp/e2e-logs.json", outputs["logs (debug)"], 0o600)
	}
}

// checkByteExact compares what the clients exchanged (relay A) with what the broker exchanged (relay B),
// connection by connection, and both with the pipeline's own byte counts.
func checkByteExact(t *testing.T, h *harness, relayA, relayB *relay) {
	a, b := relayA.recorded(), relayB.recorded()
	if len(a) != len(b) {
		t.Errorf("%d client connections, %d broker connections", len(a), len(b))
	}
	keys := map[streamKey]int{}
	var c2s, s2c int
	for _, rc := range a {
		keys[rc.key()]++
		c2s += rc.c2s.Len()
		s2c += rc.s2c.Len()
	}
	for _, rc := range b {
		keys[rc.key()]--
	}
	for k, n := range keys {
		if n != 0 {
			t.Errorf("a connection's streams differ between client and broker (c2s %x…, s2c %x…: %+d)", k.c2s[:4],
				k.s2c[:4], n)
		}
	}
	st := h.p.Stats()
	if st.Proxy.BytesClientToServer != int64(c2s) || st.Proxy.BytesServerToClient != int64(s2c) {
		t.Errorf("proxy forwarded %d/%d bytes, the client relay saw %d/%d", st.Proxy.BytesClientToServer,
			st.Proxy.BytesServerToClient, c2s, s2c)
	}
	if st.Decode.Client.Bytes != uint64(c2s) || st.Decode.Server.Bytes != uint64(s2c) {
		t.Errorf("decoders saw %d/%d bytes, the client relay %d/%d", st.Decode.Client.Bytes, st.Decode.Server.Bytes,
			c2s, s2c)
	}
	if st.Decode.ConnsOff != 0 || st.Decode.ConnsLive != 0 || st.Decode.ConnsClosed != int64(len(a)) {
		t.Errorf("decode: %d switched off, %d live, %d closed (want 0, 0, %d)", st.Decode.ConnsOff,
			st.Decode.ConnsLive, st.Decode.ConnsClosed, len(a))
	}
	if st.Correlate.QueueDrops != 0 || st.Correlate.DecodeFailures != 0 || st.Correlate.ParseFailures != 0 ||
		st.RecordsDropped() != 0 {
		t.Errorf("drops or failures: %+v, records dropped %d", st.Correlate, st.RecordsDropped())
	}
	t.Logf("%d connections, %d bytes client→broker, %d bytes broker→client, identical on both sides; frames c2s %d "+
		"(methods %d, headers %d, bodies %d, heartbeats %d), s2c %d (methods %d, headers %d, bodies %d, heartbeats %d)",
		len(a), c2s, s2c, st.Decode.Client.Frames, st.Decode.Client.Methods, st.Decode.Client.Headers,
		st.Decode.Client.Bodies, st.Decode.Client.Heartbeats, st.Decode.Server.Frames, st.Decode.Server.Methods,
		st.Decode.Server.Headers, st.Decode.Server.Bodies, st.Decode.Server.Heartbeats)
}
