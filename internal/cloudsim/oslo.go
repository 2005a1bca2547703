package cloudsim

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"time"
)

// Identifiers. oslo uses uuid4 everywhere; they come from crypto/rand rather than the seeded generator because
// reply and fanout queue names live on the broker for 30 minutes (x-expires): two runs (or two parallel tests)
// with the same seed must not share them.

func uuid4() [16]byte {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// hexID is uuid4().hex: _msg_id, _unique_id, reply and fanout queue suffixes.
func hexID() string {
	u := uuid4()
	return hex.EncodeToString(u[:])
}

// dashedID is str(uuid4()): request ids, notification message_id, instance uuids, connection ids.
func dashedID() string {
	u := uuid4()
	s := hex.EncodeToString(u[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

// reqContext is the request context an OpenStack service carries through one API request: every RPC it makes while
// handling that request packs the same context, which is how one boot's messages share a request_id.
type reqContext struct {
	User, Project, UserName, ProjectName string
	AuthToken                            string // FAKE Fernet-looking token, so amqptrace's redaction is exercised
	RequestID, GlobalRequestID           string // GlobalRequestID may be "" (null)
	Roles                                []string
	IsAdmin                              bool
	RemoteAddress                        string
	Timestamp                            time.Time
}

func newUserContext(remote string, now time.Time) *reqContext {
	return &reqContext{
		User:            "4c8b1a1e7dbd4b0a9f0f6c1d2e3f4a5b",
		Project:         "9a7d6c5b4e3f4a2b8c1d0e9f8a7b6c5d",
		UserName:        "demo",
		ProjectName:     "demo",
		AuthToken:       fakeToken(),
		RequestID:       "req-" + dashedID(),
		GlobalRequestID: "req-" + dashedID(),
		Roles:           []string{"member", "reader"},
		RemoteAddress:   remote,
		Timestamp:       now,
	}
}

// newAdminContext is what periodic tasks use (neutron agents' report_state): a fresh request id per task and no
// global request id.
func newAdminContext(now time.Time) *reqContext {
	return &reqContext{
		UserName:  "",
		AuthToken: fakeToken(),
		RequestID: "req-" + dashedID(),
		Roles:     []string{"admin"},
		IsAdmin:   true,
		Timestamp: now,
	}
}

// fakeToken looks like a Keystone Fernet token ("gAAAAAB" + url-safe base64) but grants nothing anywhere.
func fakeToken() string {
	return "gAAAAABfake-" + hexID() + hexID() + "-not-a-real-token"
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// appendContext appends the _context_* keys in the order of nova's RequestContext.to_dict (oslo.context keys
// first). sanitized is the notifier's view (notifier._sanitize_context): auth_token and remote_address are
// dropped and come back as null.
func (c *reqContext) appendContext(o object, sanitized bool) object {
	token, remote := any(c.AuthToken), nullable(c.RemoteAddress)
	if sanitized {
		token, remote = nil, nil
	}
	identity := nullString(c.User) + " " + nullString(c.Project) + " - - -"
	return append(o,
		member{"_context_user", nullable(c.User)},
		member{"_context_project_id", nullable(c.Project)},
		member{"_context_system_scope", nil},
		member{"_context_project", nullable(c.Project)},
		member{"_context_domain", nil},
		member{"_context_user_domain", nil},
		member{"_context_project_domain", nil},
		member{"_context_is_admin", c.IsAdmin},
		member{"_context_read_only", false},
		member{"_context_show_deleted", false},
		member{"_context_auth_token", token},
		member{"_context_request_id", c.RequestID},
		member{"_context_global_request_id", nullable(c.GlobalRequestID)},
		member{"_context_resource_uuid", nil},
		member{"_context_roles", c.Roles},
		member{"_context_user_identity", identity},
		member{"_context_is_admin_project", true},
		member{"_context_user_name", nullable(c.UserName)},
		member{"_context_project_name", nullable(c.ProjectName)},
		member{"_context_remote_address", remote},
		member{"_context_timestamp", c.Timestamp.UTC().Format("2006-01-02T15:04:05.000000")},
		member{"_context_read_deleted", "no"},
		member{"_context_quota_class", nil},
	)
}

func nullString(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// envelope wraps an inner message as serialize_msg does and serialises both levels like json.dumps.
func envelope(inner object) []byte {
	return []byte(pyDumps(object{{"oslo.version", "2.0"}, {"oslo.message", pyDumps(inner)}}))
}

// rpcRequest is what an RPC client puts in a call, cast or fanout (rpc/client.py _make_message, then
// AMQPDriverBase._send).
type rpcRequest struct {
	Method    string
	Args      object
	Namespace string // omitted when ""
	Version   string // omitted when ""
	// Calls only:
	MsgID   string
	ReplyQ  string
	Monitor int // call_monitor_timeout in seconds; 0 → "_timeout": null
}

func (r *rpcRequest) body(ctx *reqContext, uniqueID string) []byte {
	o := object{{"method", r.Method}, {"args", r.Args}}
	if r.Namespace != "" {
		o = append(o, member{"namespace", r.Namespace})
	}
	if r.Version != "" {
		o = append(o, member{"version", r.Version})
	}
	if r.MsgID != "" {
		var to any
		if r.Monitor > 0 {
			to = r.Monitor
		}
		o = append(o, member{"_msg_id", r.MsgID}, member{"_reply_q", r.ReplyQ}, member{"_timeout", to})
	}
	o = append(o, member{"_unique_id", uniqueID})
	return envelope(ctx.appendContext(o, false))
}

// replyBody is AMQPIncomingMessage._send_reply's message: no context, no _reply_q.
func replyBody(result any, failure *remoteError, ending bool, msgID, uniqueID string) []byte {
	var f any
	if failure != nil {
		f = failure.json()
	}
	return envelope(object{
		{"result", result}, {"failure", f}, {"ending", ending}, {"_msg_id", msgID}, {"_unique_id", uniqueID},
	})
}

// remoteError is a remote exception as serialize_remote_exception encodes it.
type remoteError struct {
	Class, Module, Message string
	Kwargs                 object
}

func (e *remoteError) json() string {
	tb := []string{
		"Traceback (most recent call last):\n",
		"  File \"/usr/lib/python3/dist-packages/oslo_messaging/rpc/server.py\", line 165, in _process_incoming\n    res = self.dispatcher.dispatch(message)\n",
		"  File \"/usr/lib/python3/dist-packages/oslo_messaging/rpc/dispatcher.py\", line 309, in dispatch\n    return self._do_dispatch(endpoint, method, ctxt, args)\n",
		e.Module + "." + e.Class + ": " + e.Message + "\n",
	}
	return pyDumps(object{
		{"class", e.Class}, {"module", e.Module}, {"message", e.Message},
		{"tb", tb}, {"args", []string{e.Message}}, {"kwargs", e.Kwargs},
	})
}

// notificationBody is Notifier._notify's message plus the driver's _unique_id and the sanitized context.
func notificationBody(ctx *reqContext, publisher, eventType, priority string, payload object, now time.Time) []byte {
	o := object{
		{"message_id", dashedID()},
		{"publisher_id", publisher},
		{"event_type", eventType},
		{"priority", priority},
		{"payload", payload},
		{"timestamp", pyDatetime(now)},
		{"_unique_id", hexID()},
	}
	return envelope(ctx.appendContext(o, true))
}

// pyDatetime is str(datetime.utcnow()): the microseconds are left out when they are zero.
func pyDatetime(t time.Time) string {
	t = t.UTC()
	s := t.Format("2006-01-02 15:04:05")
	if us := t.Nanosecond() / 1000; us != 0 {
		s += "." + leftPad(strconv.Itoa(us), 6)
	}
	return s
}

func leftPad(s string, n int) string {
	for len(s) < n {
		s = "0" + s
	}
	return s
}

// expiration is kombu's str(int(timeout*1000)).
func expiration(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10)
}
