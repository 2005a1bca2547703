package correlate

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"
)

// Topology is the broker's routing as the wire showed it through this proxy, one entry per vhost: what was
// declared, bound and consumed, and by which service. A client that connects to the broker some other way is not
// in it, and neither is what was declared before the proxy started (a capture picked up mid-stream).
type Topology struct {
	At     time.Time       `json:"at"`
	Vhosts []VhostTopology `json:"vhosts"`
	// Omitted counts the entries (vhosts, exchanges, queues, bindings) left out past the view's bounds.
	Omitted int `json:"omitted,omitempty"`
}

// VhostTopology is one vhost's exchanges, queues and bindings, each list sorted by name. The queues and exchanges
// that belong to one caller process or one call (oslo's reply_<id> queues and exchanges, a legacy caller's
// per-call <msg_id> ones) are not listed: Private counts them per service.
type VhostTopology struct {
	Vhost     string           `json:"vhost"`
	Exchanges []ExchangeView   `json:"exchanges"`
	Queues    []QueueView      `json:"queues"`
	Bindings  []BindingView    `json:"bindings"`
	Private   []PrivateObjects `json:"private"`
}

// ExchangeView is one exchange. Declared is false when only a passive declaration was seen: then the flags are
// not known.
type ExchangeView struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Declared   bool   `json:"declared"`
	Durable    bool   `json:"durable"`
	AutoDelete bool   `json:"auto_delete"`
	Internal   bool   `json:"internal,omitempty"`
	DeclaredBy string `json:"declared_by,omitempty"` // the service that declared it first
}

// QueueView is one queue. Declared is false for a queue only seen consumed: then its flags are not known.
type QueueView struct {
	Name       string `json:"name"`
	Declared   bool   `json:"declared"`
	Durable    bool   `json:"durable"`
	AutoDelete bool   `json:"auto_delete"`
	Exclusive  bool   `json:"exclusive"`
	// MessageTTLMS is x-message-ttl and ExpiresMS x-expires, in milliseconds (0: none).
	MessageTTLMS int64 `json:"message_ttl_ms,omitempty"`
	ExpiresMS    int64 `json:"expires_ms,omitempty"`
	MaxLength    int64 `json:"max_length,omitempty"`
	// QueueType is x-queue-type (quorum, stream, classic; empty: the broker's default), HAPolicy x-ha-policy.
	QueueType          string `json:"queue_type,omitempty"`
	HAPolicy           string `json:"ha_policy,omitempty"`
	DeadLetterExchange string `json:"dead_letter_exchange,omitempty"`
	DeclaredBy         string `json:"declared_by,omitempty"`
	// Consumers counts the live consumers through this proxy; ConsumedBy names their processes (at most 32).
	Consumers  int             `json:"consumers"`
	ConsumedBy []QueueConsumer `json:"consumed_by"`
}

// QueueConsumer is one process consuming a queue.
type QueueConsumer struct {
	Endpoint
	Consumers int `json:"consumers"`
	// Prefetch is the Basic.Qos prefetch_count of the channel it subscribed on; 0 is unlimited (oslo's default)
	// or no Basic.Qos seen.
	Prefetch int `json:"prefetch"`
}

// BindingView is one binding of a queue to an exchange.
type BindingView struct {
	Exchange string `json:"exchange"`
	Key      string `json:"key"`
	Queue    string `json:"queue"`
}

// PrivateObjects counts one service's private queues and exchanges: a queue or exchange named reply_<...> (oslo's
// reply queue, one per caller process) or named by a call's msg_id (a legacy caller's per-call reply queue and
// direct exchange). A queue counts for the service consuming it, else for the one that declared it.
type PrivateObjects struct {
	Service   string `json:"service"`
	Queues    int    `json:"queues"`
	Exchanges int    `json:"exchanges"`
	Consumers int    `json:"consumers"`
	Bindings  int    `json:"bindings"`
}

// maxTopologyList bounds each list of the view over all vhosts, and maxTopologyVhosts the vhosts listed.
const (
	maxTopologyList   = 2000
	maxTopologyVhosts = 100
)

type topologyReq struct {
	limit int
	resp  chan Topology
}

// Topology returns the routing learned from the wire, with at most limit exchanges, queues and bindings over all
// vhosts (limit ≤ 0 or above 2000: 2000), and at most 100 vhosts. Like InFlight it asks the correlator goroutine
// and waits for its next tick; it returns an empty view when ctx ends first or the correlator is not running.
func (c *Correlator) Topology(ctx context.Context, limit int) Topology {
	if limit <= 0 || limit > maxTopologyList {
		limit = maxTopologyList
	}
	req := topologyReq{limit: limit, resp: make(chan Topology, 1)}
	select {
	case c.topoReqs <- req:
	case <-ctx.Done():
		return Topology{Vhosts: []VhostTopology{}}
	case <-c.stopped:
		return Topology{Vhosts: []VhostTopology{}}
	}
	select {
	case v := <-req.resp:
		return v
	case <-ctx.Done():
		return Topology{Vhosts: []VhostTopology{}}
	}
}

// privateName says whether a queue or exchange belongs to one process or one call: oslo's reply_<id>, or a bare
// msg_id (32 hex digits, or a UUID with dashes) as legacy callers named their per-call reply queue and exchange.
func privateName(name string) bool {
	if strings.HasPrefix(name, "reply_") {
		return true
	}
	if len(name) != 32 && len(name) != 36 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case b >= '0' && b <= '9', b >= 'a' && b <= 'f':
		case b == '-' && len(name) == 36 && (i == 8 || i == 13 || i == 18 || i == 23):
		default:
			return false
		}
	}
	return true
}

// answerTopology answers on the Run goroutine; a panic costs the request (its caller waits for its context).
func (c *Correlator) answerTopology(req topologyReq) {
	defer c.panics.Recover(nil)
	req.resp <- c.topologyView(req.limit)
}

// topologyView copies every vhost's topology, within the bounds.
func (c *Correlator) topologyView(limit int) Topology {
	v := Topology{At: c.clock(), Vhosts: []VhostTopology{}}
	vhosts := make([]string, 0, len(c.topos))
	for name := range c.topos {
		vhosts = append(vhosts, name)
	}
	slices.Sort(vhosts)
	if len(vhosts) > maxTopologyVhosts {
		v.Omitted += len(vhosts) - maxTopologyVhosts
		vhosts = vhosts[:maxTopologyVhosts]
	}
	budget := [3]int{limit, limit, limit} // exchanges, queues, bindings left over all vhosts
	for _, name := range vhosts {
		vt, omitted := c.topos[name].view(&budget)
		vt.Vhost = CleanString(name, maxIDLen)
		v.Vhosts = append(v.Vhosts, vt)
		v.Omitted += omitted
	}
	return v
}

// view is one vhost's part of the view; budget is what the lists may still hold, shared by all vhosts.
func (t *topology) view(budget *[3]int) (VhostTopology, int) {
	v := VhostTopology{Exchanges: []ExchangeView{}, Queues: []QueueView{}, Bindings: []BindingView{},
		Private: []PrivateObjects{}}
	omitted := 0
	private := map[string]*PrivateObjects{}
	priv := func(service string) *PrivateObjects {
		service = CleanString(service, maxIDLen)
		p := private[service]
		if p == nil {
			p = &PrivateObjects{Service: service}
			private[service] = p
		}
		return p
	}
	// A private queue counts for the service consuming it; its bindings for the same one.
	queueOwner := map[string]string{}

	names := sortedKeys(t.exchanges)
	for _, name := range names {
		x := t.exchanges[name]
		if name != "" && privateName(name) {
			priv(x.owner).Exchanges++
			continue
		}
		if budget[0] == 0 {
			omitted++
			continue
		}
		budget[0]--
		v.Exchanges = append(v.Exchanges, ExchangeView{Name: CleanString(name, maxIDLen), Type: CleanString(x.typ, maxIDLen),
			Declared: x.declared, Durable: x.durable, AutoDelete: x.autoDelete, Internal: x.internal,
			DeclaredBy: CleanString(x.owner, maxIDLen)})
	}

	for _, name := range sortedKeys(t.queues) {
		qi := t.queues[name]
		if privateName(name) {
			owner := qi.owner
			for who := range qi.by {
				owner = who.Service // one process consumes its own reply queue
				break
			}
			p := priv(owner)
			p.Queues++
			p.Consumers += qi.consumers
			queueOwner[name] = owner
			continue
		}
		if budget[1] == 0 {
			omitted++
			continue
		}
		budget[1]--
		q := QueueView{Name: CleanString(name, maxIDLen), Declared: qi.declared, Durable: qi.durable,
			AutoDelete: qi.autoDelete, Exclusive: qi.exclusive, MessageTTLMS: qi.ttl.Milliseconds(),
			ExpiresMS: qi.expiresAfter.Milliseconds(), MaxLength: qi.maxLength, QueueType: CleanString(qi.queueType, maxArgLen),
			HAPolicy: CleanString(qi.haPolicy, maxArgLen), DeadLetterExchange: CleanString(qi.deadLetter, maxArgLen),
			DeclaredBy: CleanString(qi.owner, maxIDLen), Consumers: qi.consumers, ConsumedBy: []QueueConsumer{}}
		for who, cc := range qi.by {
			ep := Endpoint{Service: CleanString(who.Service, maxIDLen), PID: who.PID, Host: CleanString(who.Host, maxIDLen)}
			q.ConsumedBy = append(q.ConsumedBy, QueueConsumer{Endpoint: ep, Consumers: cc.n, Prefetch: cc.prefetch})
		}
		slices.SortFunc(q.ConsumedBy, func(a, b QueueConsumer) int {
			return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Host, b.Host), cmp.Compare(a.PID, b.PID))
		})
		v.Queues = append(v.Queues, q)
	}

	for _, ex := range sortedKeys(t.bindings) {
		keys := t.bindings[ex]
		for _, key := range sortedKeys(keys) {
			for _, q := range keys[key] {
				if owner, ok := queueOwner[q]; ok || privateName(q) {
					priv(owner).Bindings++
					continue
				}
				if budget[2] == 0 {
					omitted++
					continue
				}
				budget[2]--
				v.Bindings = append(v.Bindings, BindingView{Exchange: CleanString(ex, maxIDLen),
					Key: CleanString(key, maxIDLen), Queue: CleanString(q, maxIDLen)})
			}
		}
	}
	for _, p := range private {
		v.Private = append(v.Private, *p)
	}
	slices.SortFunc(v.Private, func(a, b PrivateObjects) int { return cmp.Compare(a.Service, b.Service) })
	if len(v.Private) > maxTopologyList {
		omitted += len(v.Private) - maxTopologyList
		v.Private = v.Private[:maxTopologyList]
	}
	return v, omitted
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
