package correlate

import (
	"testing"
	"time"
)

// TestPendingTableAlone checks the table without a correlator: insertion order survives removal from the middle,
// unlink clears every index that points at the record and only those, due hands out records by expiry (then by
// insertion for equal times) and never one not yet due, and the byte count returns to zero.
func TestPendingTableAlone(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	tb := newPendingTable()
	mk := func(id string) *pending {
		p := &pending{msgKey: id + "-key", uniqueKey: id + "-unique"}
		p.rec.MsgID = id
		p.rec.Args = []byte(`{"a":1}`)
		tb.link(p)
		tb.charge(p)
		tb.byMsg[p.msgKey], tb.byUnique[p.uniqueKey], tb.byMsgID[id] = p, p, p
		return p
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	tb.byMsgID["b"] = c // a newer call (c) reused b's _msg_id: unlinking b must leave c's entry alone
	tb.schedule(c, base.Add(1), 1)
	tb.schedule(a, base.Add(2), 2)
	tb.schedule(b, base.Add(2), 2)
	if tb.n != 3 || tb.bytes != a.size+b.size+c.size || a.size <= pendingBase {
		t.Fatalf("n %d bytes %d, sizes %d %d %d", tb.n, tb.bytes, a.size, b.size, c.size)
	}
	if p := tb.due(base); p != nil {
		t.Fatalf("due before any expiry: %s", p.rec.MsgID)
	}
	if p := tb.due(base.Add(1)); p != c {
		t.Fatalf("due(1) = %v, want c", p)
	}
	tb.unlink(c)
	if tb.oldest != a || a.next != b || tb.newest != b || b.prev != a {
		t.Fatal("insertion order broken by unlinking the newest")
	}
	if tb.byMsgID["c"] != nil || tb.byMsg["c-key"] != nil || tb.byUnique["c-unique"] != nil {
		t.Fatal("unlink(c) left one of c's own index entries")
	}
	tb.byMsgID["b"] = c
	if p := tb.due(base.Add(5)); p != a {
		t.Fatalf("equal expiry: due = %v, want a (inserted first)", p)
	}
	tb.unlink(a)
	tb.unlink(b)
	if tb.byMsgID["b"] != c {
		t.Fatal("unlink(b) removed the entry of the newer call that reused its _msg_id")
	}
	delete(tb.byMsgID, "b")
	if tb.n != 0 || tb.bytes != 0 || tb.oldest != nil || tb.newest != nil || len(tb.expiry) != 0 ||
		len(tb.byMsg)+len(tb.byUnique)+len(tb.byMsgID) != 0 {
		t.Fatalf("table not empty: n %d bytes %d indexes %d/%d/%d heap %d", tb.n, tb.bytes, len(tb.byMsg),
			len(tb.byUnique), len(tb.byMsgID), len(tb.expiry))
	}
}
