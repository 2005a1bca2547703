package correlate

import (
	"hash/maphash"
	"sync"
)

// Every oslo message crosses the proxy at least twice with the same body: the publish, then each delivery (one per
// fanout consumer). Parsing a body (decoding the double-encoded oslo.message, scanning it, redacting its arguments)
// is most of what observation costs per message, so a delivery whose body is byte for byte a publish's seen a
// moment ago reuses that publish's parse instead of doing it again. The result of a parse depends only on the body
// bytes, its compression and the parser's policy, which is the same for every connection of a correlator.
//
// The cache is direct-mapped and never evicts on purpose: a slot holds the newest publish that hashed to it. In
// flight between a publish and its deliveries there are typically a handful of messages, so a few hundred slots
// catch nearly all of them; a delivery from a backlogged queue, whose publish was overwritten long ago, or whose
// publish did not go through the proxy, is parsed as before. Assemblers of different connections (and event loops)
// use it at once, so each slot has its own lock, held for a struct copy.
//
// Bodies are matched by a 64-bit seeded hash and their length. The seed is random per process and never leaves
// it, so a client cannot make one body pass for another; an accidental collision is a 2^-64 event per lookup.

// bodyCacheSlots is the number of remembered publishes. A slot costs about 300 bytes.
const bodyCacheSlots = 512

type bodyCache struct {
	seed  maphash.Seed
	slots [bodyCacheSlots]bodySlot
}

type bodySlot struct {
	mu     sync.Mutex
	key    bodyKey
	failed bool // the body looked like JSON and did not parse (counted per message)
	info   bodyInfo
}

// bodyKey identifies a body: its hash, length and compression (the same bytes parse differently when the
// properties say they are compressed).
type bodyKey struct {
	hash uint64
	size int
	comp compression
}

func newBodyCache() *bodyCache { return &bodyCache{seed: maphash.MakeSeed()} }

func (bc *bodyCache) key(body []byte, comp compression) bodyKey {
	return bodyKey{hash: maphash.Bytes(bc.seed, body), size: len(body), comp: comp}
}

func (bc *bodyCache) slot(k bodyKey) *bodySlot { return &bc.slots[k.hash%bodyCacheSlots] }

// store remembers the parse of a published body.
func (bc *bodyCache) store(k bodyKey, info *bodyInfo, failed bool) {
	s := bc.slot(k)
	s.mu.Lock()
	s.key, s.info, s.failed = k, *info, failed
	s.mu.Unlock()
}

// load copies the remembered parse of the body k into out and reports whether there was one, and whether that
// parse failed. The copy shares the strings and payload slices of the stored parse: nothing writes to those after
// a parse.
func (bc *bodyCache) load(k bodyKey, out *bodyInfo) (failed, ok bool) {
	s := bc.slot(k)
	s.mu.Lock()
	ok = s.key == k && k.size > 0
	if ok {
		*out, failed = s.info, s.failed
	}
	s.mu.Unlock()
	return failed, ok
}
