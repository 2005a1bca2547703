package ui

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Websocket timing. The ping keeps NATs and proxies from dropping an idle-looking connection and lets the reader
// notice a dead peer; writeWait bounds how long one write may block before the client counts as gone.
const (
	writeWait  = 10 * time.Second
	pongWait   = 40 * time.Second
	pingEvery  = 15 * time.Second
	closeGrace = time.Second // how long a going-away close frame may take at shutdown
	readLimit  = 4096        // clients send only tiny control messages
)

// hub is the set of websocket clients and the sequence of published updates.
//
// The set is mutated only under mu held exclusively, including when publish drops a slow client in the middle of
// its loop: there is no read-locked iteration that could need to upgrade (the superplane#6427 freeze).
type hub struct {
	s       *Server
	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
	seq     uint64
	// last published state, for snapshots
	graph, headline json.RawMessage
	total, kicked   uint64
	wg              sync.WaitGroup // writer goroutines
}

type client struct {
	conn *websocket.Conn
	send chan []byte
	done chan struct{} // closed when the client must stop (kicked, shutdown, reader gone)
	once sync.Once
	// goingAway asks the writer to send a close frame (shutdown); kicked clients are cut without one.
	goingAway bool
	remote    string
}

func newHub(s *Server) *hub {
	return &hub{s: s, clients: make(map[*client]struct{}),
		graph: json.RawMessage(`{"by":"service","window_s":60,"nodes":[],"edges":[]}`), headline: json.RawMessage(`{}`)}
}

// stop ends the client once. A kicked (slow) client's connection is closed at once, which also unblocks a writer
// stuck in a write to a peer that does not read.
func (c *client) stop(goingAway bool) {
	c.once.Do(func() {
		c.goingAway = goingAway
		close(c.done)
		if !goingAway {
			c.conn.Close()
			return
		}
		// The writer sends the close frame; if it is stuck in a write to a peer that does not read, cut the
		// connection after the grace so that shutdown never waits for writeWait.
		time.AfterFunc(2*closeGrace, func() { c.conn.Close() })
	})
}

// subscribe registers c and queues its snapshot first, under mu, so that no delta can overtake it. It returns
// false when the hub is closed (Run ended or not started a writer any more).
func (h *hub) subscribe(c *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	snap, err := json.Marshal(update{Type: "snapshot", Seq: h.seq, Time: h.s.now(), Graph: h.graph,
		Headline: h.headline, Calls: h.s.recentRows(snapshotCalls), Jaeger: h.s.jaegerEnabled(), Instance: h.s.instance})
	if err != nil {
		return false
	}
	c.send <- snap // the queue is new and empty: this cannot block
	h.clients[c] = struct{}{}
	h.total++
	wgGo(&h.wg, func() { h.s.writePump(c) })
	return true
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	c.stop(false)
}

// publish sends one delta to every client without blocking: a full queue kicks that client.
func (h *hub) publish(graph, headline json.RawMessage, calls []json.RawMessage, skipped int, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.seq++
	h.graph, h.headline = graph, headline
	if len(h.clients) == 0 {
		return
	}
	msg, err := json.Marshal(update{Type: "delta", Seq: h.seq, Time: now, Graph: graph, Headline: headline,
		Calls: calls, Skipped: skipped, Jaeger: h.s.jaegerEnabled(), Instance: h.s.instance})
	if err != nil {
		h.s.log.Error("ui: encode delta", "err", err)
		return
	}
	for c := range h.clients {
		select {
		case c.send <- msg:
		default:
			delete(h.clients, c) // safe: we hold mu exclusively, and deleting during range is defined in Go
			h.kicked++
			c.stop(false)
			h.s.log.Info("ui: websocket client too slow, disconnected", "remote", c.remote)
		}
	}
}

// closeAll ends every client with a going-away close frame and waits for their writers.
func (h *hub) closeAll() {
	h.mu.Lock()
	h.closed = true
	for c := range h.clients {
		delete(h.clients, c)
		c.stop(true)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func (h *hub) stats() (clients int, total, kicked, seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients), h.total, h.kicked, h.seq
}

// writePump is the only goroutine that writes to c.conn (gorilla allows one concurrent writer). Named so that it
// is recognisable in goroutine dumps.
func (s *Server) writePump(c *client) {
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	defer c.conn.Close()
	defer s.panics.Recover(nil) // a panic ends this client's connection, not the process
	for {
		select {
		case msg := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				c.stop(false)
				return
			}
		case <-ping.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				c.stop(false)
				return
			}
		case <-c.done:
			if c.goingAway {
				_ = c.conn.SetWriteDeadline(time.Now().Add(closeGrace))
				_ = c.conn.WriteMessage(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"))
			}
			return
		}
	}
}

// serveWS upgrades, subscribes, and then reads until the peer goes: reading is needed to process pongs and the
// close handshake. The handler goroutine is the reader; writePump is the writer.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 16 << 10,
		CheckOrigin:     s.checkOrigin,
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has written the HTTP error. Count Origin refusals so an operator can see a misconfigured proxy.
		if !s.checkOrigin(r) {
			s.originRejected.Add(1)
		}
		return
	}
	c := &client{conn: conn, send: make(chan []byte, s.cfg.clientQueue()), done: make(chan struct{}),
		remote: r.RemoteAddr}
	if !s.hub.subscribe(c) {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "server not running"), time.Now().Add(closeGrace))
		conn.Close()
		return
	}
	s.log.Debug("ui: websocket client connected", "remote", r.RemoteAddr)
	conn.SetReadLimit(readLimit)
	_ = conn.SetReadDeadline(time.Now().Add(pongWait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			break
		}
		// Any client message also proves liveness.
		_ = conn.SetReadDeadline(time.Now().Add(pongWait))
	}
	s.hub.unsubscribe(c)
	s.log.Debug("ui: websocket client gone", "remote", r.RemoteAddr)
}
