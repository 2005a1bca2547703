package cloudsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// queueExpires is rabbit_transient_queues_ttl (1800 s) as oslo sends it: x-expires in ms, an AMQP signed 32-bit
// integer ('I'), which is what py-amqp picks for an int that fits.
const queueExpires = int32(1800000)

// maxBody bounds what the simulated services parse from a delivery. Their own messages are a few KiB; anything
// bigger is not theirs and is acknowledged and dropped.
const maxBody = 1 << 20

// process is one simulated OpenStack process: a program name and a fake pid shared by all its connections, as in
// connection_name "<program>:<pid>:<uuid4>". Like an oslo transport it owns a send "pool" (here one sender
// connection, opened on the first publish), a reply listener (opened on the first call) and, for notifiers, a
// separate notification sender (oslo's notification transport has its own pool).
type process struct {
	c       *Cloud
	program string
	pid     int
	host    string
	log     *slog.Logger

	sendMu sync.Mutex // serialises publishes on the sender; held across the publisher confirm, as py-amqp blocks
	send   *sender

	notifyMu sync.Mutex
	notify   *sender

	replyMu sync.Mutex
	reply   *replyListener
}

// dial opens one connection of p, named and presented the way py-amqp presents an oslo connection.
func (p *process) dial(purpose string) (*amqp.Connection, error) {
	name := fmt.Sprintf("%s:%d:%s", p.program, p.pid, dashedID())
	uri, err := amqp.ParseURI(p.c.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cloudsim: parse URL: %w", err)
	}
	cfg := amqp.Config{
		// oslo's default rabbit_login_method is AMQPLAIN.
		SASL:      []amqp.Authentication{&amqp.AMQPlainAuth{Username: uri.Username, Password: uri.Password}},
		Vhost:     uri.Vhost,
		Heartbeat: 60 * time.Second, // heartbeat_timeout_threshold default
		Locale:    "en_US",
		// amqp091-go writes "capabilities" into this table, so every connection gets its own.
		Properties: amqp.Table{"product": "py-amqp", "product_version": "5.1.1", "connection_name": name},
	}
	if uri.Scheme == "amqp" {
		props := encodeClientProperties(name)
		dial := amqp.DefaultDial(30 * time.Second)
		cfg.Dial = func(network, addr string) (net.Conn, error) {
			conn, err := dial(network, addr)
			if err != nil {
				return nil, err
			}
			return newWireFixConn(conn, props), nil
		}
	}
	conn, err := amqp.DialConfig(p.c.cfg.URL, cfg)
	if err != nil {
		return nil, fmt.Errorf("cloudsim: %s %s connection: %w", p.program, purpose, err)
	}
	p.log.Debug("connection opened", "purpose", purpose, "connection_name", name)
	return conn, nil
}

// sender is one send connection with its single channel 1, as oslo's pooled connections are.
type sender struct {
	conn       *amqp.Connection
	ch         *amqp.Channel
	confirming bool
	exchanges  map[string]bool // Connection._declared_exchanges
	queues     map[string]bool // Connection._declared_queues (notifier only)
}

func (p *process) openSender(purpose string) (*sender, error) {
	conn, err := p.dial(purpose)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	// Replies are mandatory; a reply to a vanished reply queue comes back as Basic.Return. Count them.
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	p.c.pumps.Go(func() { drainReturns(p.c, returns) })
	return &sender{conn: conn, ch: ch, exchanges: map[string]bool{}, queues: map[string]bool{}}, nil
}

func drainReturns(c *Cloud, returns <-chan amqp.Return) {
	for range returns {
		c.mu.Lock()
		c.counts.Returned++
		c.mu.Unlock()
	}
}

func (s *sender) close() {
	_ = s.conn.Close()
}

// exchangeSpec is an exchange as oslo declares it.
type exchangeSpec struct {
	name       string
	kind       string // "topic" or "fanout"; "" for the default exchange, which is never declared
	autoDelete bool
}

// publish sends one message on p's sender (or notification sender) and waits for the publisher confirm, declaring
// the exchange the first time, and sending Confirm.Select just before the channel's first publish, like
// impl_rabbit._publish over py-amqp with confirm_publish=True.
func (p *process) publish(ctx context.Context, notify bool, ex exchangeSpec, key string, mandatory bool, body []byte, exp string) error {
	mu, sp, purpose := &p.sendMu, &p.send, "sender"
	if notify {
		mu, sp, purpose = &p.notifyMu, &p.notify, "notification sender"
	}
	mu.Lock()
	defer mu.Unlock()
	if *sp == nil {
		s, err := p.openSender(purpose)
		if err != nil {
			return err
		}
		*sp = s
		p.c.track(s.close)
	}
	s := *sp
	err := p.publishOn(ctx, s, notify, ex, key, mandatory, body, exp)
	if err != nil && s.conn.IsClosed() {
		// A dead connection is replaced on the next publish, as oslo's pool does after a connection error.
		*sp = nil
		p.log.Warn("sender connection lost", "purpose", purpose, "err", err)
	}
	return err
}

func (p *process) publishOn(ctx context.Context, s *sender, notify bool, ex exchangeSpec, key string, mandatory bool, body []byte, exp string) error {
	if notify && !s.queues[ex.name+"\x00"+key] {
		// _publish_and_creates_default_queue: kombu Queue.declare (exchange, queue, bind) so that notifications
		// are kept even when nobody listens yet.
		if err := s.ch.ExchangeDeclare(ex.name, ex.kind, false, ex.autoDelete, false, false, nil); err != nil {
			return err
		}
		if _, err := s.ch.QueueDeclare(key, false, false, false, false, nil); err != nil {
			return err
		}
		if err := s.ch.QueueBind(key, key, ex.name, false, nil); err != nil {
			return err
		}
		s.queues[ex.name+"\x00"+key] = true
	}
	if ex.kind != "" && !s.exchanges[ex.name] {
		if err := s.ch.ExchangeDeclare(ex.name, ex.kind, false, ex.autoDelete, false, false, nil); err != nil {
			return err
		}
		s.exchanges[ex.name] = true
	}
	if !s.confirming {
		if err := s.ch.Confirm(false); err != nil {
			return err
		}
		s.confirming = true
	}
	dc, err := s.ch.PublishWithDeferredConfirmWithContext(ctx, ex.name, key, mandatory, false, amqp.Publishing{
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		Headers:         amqp.Table{}, // written as an empty table by wireFixConn (amqp091-go drops it)
		DeliveryMode:    amqp.Persistent,
		Expiration:      exp,
		Body:            body,
	})
	if err != nil {
		return err
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !acked {
		return errors.New("cloudsim: publish nacked by the broker")
	}
	return nil
}

// replyMsg is the part of a reply a caller needs.
type replyMsg struct {
	result  json.RawMessage
	failure *remoteError
}

// replyListener is a process's reply queue consumer (AMQPDriverBase._get_reply_q + ReplyWaiter).
type replyListener struct {
	queue string
	conn  *amqp.Connection

	mu      sync.Mutex
	waiters map[string]chan replyMsg // by _msg_id; each channel has room for the one final reply
}

// replyQueue returns p's reply queue, opening the reply listener on the first call, as oslo does lazily.
func (p *process) replyQueue() (*replyListener, error) {
	p.replyMu.Lock()
	defer p.replyMu.Unlock()
	if p.reply != nil {
		return p.reply, nil
	}
	conn, err := p.dial("reply listener")
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		rl := &replyListener{queue: "reply_" + hexID(), conn: conn, waiters: map[string]chan replyMsg{}}
		var dl <-chan amqp.Delivery
		_, err = ch.QueueDeclare(rl.queue, false, false, false, false, amqp.Table{"x-expires": queueExpires})
		if err == nil {
			dl, err = ch.Consume(rl.queue, "1", false, false, false, false, nil)
		}
		if err == nil {
			p.reply = rl
			p.c.track(func() { _ = conn.Close() })
			p.c.pumps.Go(func() { pumpReplies(p, rl, dl) })
			return rl, nil
		}
	}
	_ = conn.Close()
	return nil, fmt.Errorf("cloudsim: %s reply listener: %w", p.program, err)
}

// pumpReplies acks each reply on receipt and hands a final one to its waiter. Heartbeats are counted; a final
// reply nobody waits for is a late reply (oslo logs "No calling threads waiting for msg_id"). It ends when the
// connection closes.
func pumpReplies(p *process, rl *replyListener, dl <-chan amqp.Delivery) {
	for d := range dl {
		_ = d.Ack(false)
		var r replyFields
		if len(d.Body) > maxBody || unwrap(d.Body, &r) != nil {
			p.c.countBad()
			continue
		}
		if !r.Ending {
			continue // call-monitor heartbeat: the caller keeps waiting for its own deadline
		}
		_, awaited := p.c.awaitLate.LoadAndDelete(r.MsgID)
		p.deliverReply(rl, &r)
		if awaited {
			p.c.lateWait.done() // after deliverReply has counted it
		}
	}
}

// deliverReply hands a final reply to its waiter, or counts it as late when the caller has given up.
func (p *process) deliverReply(rl *replyListener, r *replyFields) {
	rm := replyMsg{result: r.Result}
	if r.Failure != nil {
		var f struct {
			Class   string `json:"class"`
			Module  string `json:"module"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal([]byte(*r.Failure), &f)
		rm.failure = &remoteError{Class: f.Class, Module: f.Module, Message: f.Message}
	}
	rl.mu.Lock()
	w, ok := rl.waiters[r.MsgID]
	delete(rl.waiters, r.MsgID)
	rl.mu.Unlock()
	if !ok {
		p.c.lateReply(p, r.MsgID)
		return
	}
	w <- rm // buffered for exactly this one send
}

// replyFields is what a reply listener reads from a reply's inner message.
type replyFields struct {
	Result  json.RawMessage `json:"result"`
	Failure *string         `json:"failure"`
	Ending  bool            `json:"ending"`
	MsgID   string          `json:"_msg_id"`
}

// unwrap parses an oslo 2.0 envelope and then its inner message into v.
func unwrap(body []byte, v any) error {
	var env struct {
		Version string `json:"oslo.version"`
		Message string `json:"oslo.message"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return err
	}
	if env.Version != "2.0" {
		return fmt.Errorf("cloudsim: oslo.version %q", env.Version)
	}
	return json.Unmarshal([]byte(env.Message), v)
}

// request is an incoming RPC request as the dispatcher sees it.
type request struct {
	Method   string          `json:"method"`
	Args     json.RawMessage `json:"args"`
	MsgID    string          `json:"_msg_id"`
	ReplyQ   string          `json:"_reply_q"`
	Timeout  *int            `json:"_timeout"`
	UniqueID string          `json:"_unique_id"`

	User            *string  `json:"_context_user"`
	Project         *string  `json:"_context_project_id"`
	UserName        *string  `json:"_context_user_name"`
	ProjectName     *string  `json:"_context_project_name"`
	AuthToken       *string  `json:"_context_auth_token"`
	RequestID       string   `json:"_context_request_id"`
	GlobalRequestID *string  `json:"_context_global_request_id"`
	Roles           []string `json:"_context_roles"`
	IsAdmin         bool     `json:"_context_is_admin"`
	RemoteAddress   *string  `json:"_context_remote_address"`
}

// context rebuilds the caller's request context, which the server carries into the RPCs it makes while handling
// this one (RequestContext.from_dict), so a whole boot shares one request_id.
func (r *request) context() *reqContext {
	s := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	return &reqContext{
		User: s(r.User), Project: s(r.Project), UserName: s(r.UserName), ProjectName: s(r.ProjectName),
		AuthToken: s(r.AuthToken), RequestID: r.RequestID, GlobalRequestID: s(r.GlobalRequestID),
		Roles: r.Roles, IsAdmin: r.IsAdmin, RemoteAddress: s(r.RemoteAddress), Timestamp: time.Now(),
	}
}

// handler serves one method. For a call it returns the result or a remote exception; for casts both are ignored.
type handler func(ctx context.Context, req *request) (any, *remoteError)

// rpcServer is one oslo RPC server: one listener connection consuming <topic>, <topic>.<server> and a fanout queue.
type rpcServer struct {
	p        *process
	exchange string
	topic    string
	server   string
	methods  map[string]handler

	conn     *amqp.Connection
	ch       *amqp.Channel
	fanoutQ  string
	handlers sync.WaitGroup // owned by serve: Add only from serve, Wait at its end
}

// start declares the server's topology in AMQPDriverBase.listen's order and starts consuming with tags 1, 2, 3.
func (s *rpcServer) start() error {
	conn, err := s.p.dial("listener " + s.topic)
	if err != nil {
		return err
	}
	s.conn = conn
	if err := s.declare(); err != nil {
		_ = conn.Close()
		return fmt.Errorf("cloudsim: %s listener %s: %w", s.p.program, s.topic, err)
	}
	return nil
}

func (s *rpcServer) declare() error {
	ch, err := s.conn.Channel()
	if err != nil {
		return err
	}
	s.ch = ch
	s.fanoutQ = s.topic + "_fanout_" + hexID()
	type step struct {
		exchange, kind string
		autoDelete     bool
		queue          string
		args           amqp.Table
		key            string
	}
	steps := []step{
		{s.exchange, "topic", false, s.topic, nil, s.topic},
		{s.exchange, "topic", false, s.topic + "." + s.server, nil, s.topic + "." + s.server},
		{s.topic + "_fanout", "fanout", true, s.fanoutQ, amqp.Table{"x-expires": queueExpires}, s.topic},
	}
	for _, st := range steps {
		if err := ch.ExchangeDeclare(st.exchange, st.kind, false, st.autoDelete, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(st.queue, false, false, false, false, st.args); err != nil {
			return err
		}
		if err := ch.QueueBind(st.queue, st.key, st.exchange, false, nil); err != nil {
			return err
		}
	}
	var dls [3]<-chan amqp.Delivery
	for i, st := range steps {
		if dls[i], err = ch.Consume(st.queue, fmt.Sprint(i+1), false, false, false, false, nil); err != nil {
			return err
		}
	}
	s.p.c.pumps.Go(func() { serveRPC(s, dls) })
	return nil
}

// stop does what oslo's listener does on a clean shutdown: delete the fanout queue (the broker then cancels that
// consumer), then close the connection, which ends serveRPC.
func (s *rpcServer) stop() {
	if s.ch != nil {
		_, _ = s.ch.QueueDelete(s.fanoutQ, false, false, false)
	}
	_ = s.conn.Close()
}

// serveRPC is the listener's consume loop: ack on receipt (RpcAMQPListener acks before dispatching), then run the
// method on its own goroutine, as oslo's executor does. It returns once the connection is closed and every
// handler it started has returned.
func serveRPC(s *rpcServer, dls [3]<-chan amqp.Delivery) {
	defer s.handlers.Wait()
	for dls[0] != nil || dls[1] != nil || dls[2] != nil {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-dls[0]:
			if !ok {
				dls[0] = nil
				continue
			}
		case d, ok = <-dls[1]:
			if !ok {
				dls[1] = nil
				continue
			}
		case d, ok = <-dls[2]:
			if !ok {
				dls[2] = nil
				continue
			}
		}
		_ = d.Ack(false)
		req := new(request)
		if len(d.Body) > maxBody || unwrap(d.Body, req) != nil {
			s.p.c.countBad()
			continue
		}
		h, ok := s.methods[req.Method]
		if !ok {
			s.p.c.countBad()
			continue
		}
		s.handlers.Add(1)
		s.p.c.inflight.add(1)
		go func() {
			defer s.handlers.Done()
			defer s.p.c.inflight.done()
			s.dispatch(h, req)
		}()
	}
}

// dispatch runs one method with the fate its caller drew, sending call-monitor heartbeats while it runs when the
// call set _timeout (RPCDispatcher._watchdog: every _timeout/2 s, only if that is at least 1 s), then the reply.
func (s *rpcServer) dispatch(h handler, req *request) {
	c := s.p.c
	ctx := c.runCtx
	if req.MsgID == "" {
		// A cast is one step of a boot's chain: the caster added to the chain before publishing.
		if b := c.bootOf(req.RequestID); b != nil {
			defer b.done(1)
		}
	}
	f := c.takeFate(req.MsgID)
	stopHB := func() {}
	if req.MsgID != "" && req.Timeout != nil && *req.Timeout/2 >= 1 {
		if f.delay >= time.Duration(*req.Timeout/2)*time.Second {
			c.mu.Lock()
			c.counts.MonitoredSlow++
			c.mu.Unlock()
		}
		hbCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		every := time.Duration(*req.Timeout/2) * time.Second
		go func() {
			defer close(done)
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-hbCtx.Done():
					return
				case <-t.C:
					if s.p.reply1(hbCtx, req, nil, nil, false) == nil {
						c.mu.Lock()
						c.counts.Heartbeats++
						c.mu.Unlock()
					}
				}
			}
		}()
		stopHB = func() { cancel(); <-done }
	}
	if !sleepCtx(ctx, f.delay) {
		stopHB()
		return
	}
	var result any
	var rerr *remoteError
	if f.err != nil {
		rerr = f.err
	} else {
		result, rerr = h(ctx, req)
	}
	stopHB()
	if req.MsgID == "" {
		return // cast or fanout: nothing goes back
	}
	late := f.status == "timeout"
	if late {
		// Run waits for this reply to reach its caller's reply queue, so a run bounded by MaxBoots ends with
		// every late reply counted.
		c.lateWait.add(1)
		c.awaitLate.Store(req.MsgID, struct{}{})
	}
	if err := s.p.reply1(ctx, req, result, rerr, true); err == nil {
		c.mu.Lock()
		c.counts.Replies++
		c.mu.Unlock()
	} else if _, ok := c.awaitLate.LoadAndDelete(req.MsgID); ok && late {
		c.lateWait.done()
	}
}

// reply1 publishes one reply (final or heartbeat) to the default exchange, mandatory, from p's send pool.
func (p *process) reply1(ctx context.Context, req *request, result any, rerr *remoteError, ending bool) error {
	body := replyBody(result, rerr, ending, req.MsgID, hexID())
	return p.publish(ctx, false, exchangeSpec{}, req.ReplyQ, true, body, "")
}

// notificationListener is a notification consumer (a telemetry agent): tag 1 notifications.error, tag 2
// notifications.info on one listener connection. It acks after "processing", as NotificationServer does. It
// exists so the notification queues the notifiers create are drained in a long demo.
type notificationListener struct {
	p        *process
	exchange string
	topic    string
	conn     *amqp.Connection
}

func (n *notificationListener) start() error {
	conn, err := n.p.dial("notification listener")
	if err != nil {
		return err
	}
	n.conn = conn
	err = func() error {
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		var dls []<-chan amqp.Delivery
		for _, prio := range []string{"error", "info"} {
			q := n.topic + "." + prio
			if err := ch.ExchangeDeclare(n.exchange, "topic", false, false, false, false, nil); err != nil {
				return err
			}
			if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
				return err
			}
			if err := ch.QueueBind(q, q, n.exchange, false, nil); err != nil {
				return err
			}
		}
		for i, prio := range []string{"error", "info"} {
			dl, err := ch.Consume(n.topic+"."+prio, fmt.Sprint(i+1), false, false, false, false, nil)
			if err != nil {
				return err
			}
			dls = append(dls, dl)
		}
		for _, dl := range dls {
			n.p.c.pumps.Go(func() { drainNotifications(dl) })
		}
		return nil
	}()
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("cloudsim: %s notification listener: %w", n.p.program, err)
	}
	return nil
}

func drainNotifications(dl <-chan amqp.Delivery) {
	for d := range dl {
		_ = d.Ack(false)
	}
}

func (n *notificationListener) stop() { _ = n.conn.Close() }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
