package correlate

import (
	"slices"
	"testing"
	"time"
)

// The parent rule without frames: one open message of the request in the process is the parent; two are not
// guessed between; a call closes at its reply.
func TestHandlingParentIsNeverAGuess(t *testing.T) {
	h := newHandling(100)
	t0 := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	k := handKey{"nova-conductor:4242@10.0.0.5", reqID}
	h.add(k, "u-build-instances", at(0), at(60000)) // a cast: open until DefaultTimeout
	if p, c := h.parent(k, at(10), "m-select", "u-select"); p != "u-build-instances" || c != nil {
		t.Errorf("one open: parent %q candidates %v", p, c)
	}
	h.add(k, "m-object-action", at(20), at(60020)) // a call of the same request, handled meanwhile
	p, c := h.parent(k, at(30), "", "u-cast")
	if p != "" || !slices.Equal(c, []string{"u-build-instances", "m-object-action"}) {
		t.Errorf("two open: parent %q candidates %v, want none and both", p, c)
	}
	h.done(k, "m-object-action") // its reply was published
	if p, c := h.parent(k, at(40), "", "u-cast2"); p != "u-build-instances" || c != nil {
		t.Errorf("after the call's reply: parent %q candidates %v", p, c)
	}
	if p, _ := h.parent(k, at(70000), "", "u-late"); p != "" {
		t.Errorf("after the cast's window: parent %q", p)
	}
	if p, _ := h.parent(handKey{"nova-compute:1@10.0.0.7", reqID}, at(10), "", "x"); p != "" {
		t.Errorf("another process: parent %q", p)
	}
	if p, _ := h.parent(k, at(10), "", "u-build-instances"); p != "" {
		t.Errorf("a message is not its own parent: %q", p)
	}
}

// The case on the wire: one nova-conductor handles build_instances (a cast) and then object_action (a
// call) of the same request; a cast it publishes while both are open gets no parent and both candidates, and one
// it publishes after object_action's reply is build_instances' child.
func TestParentNotGuessedWhenTwoAreOpen(t *testing.T) {
	h := newHarness(t, Config{})
	api := h.conn("nova-api", 7, "10.0.0.9")
	compute := h.conn("nova-compute", 99, "10.0.0.20")
	condListen := h.conn("nova-conductor", 4242, "10.0.0.5")
	condListen.rpcServer("conductor", "c1")
	condSend := h.conn("nova-conductor", 4242, "10.0.0.5")

	build := castBody("build_instances", "u-build", reqID, nil)
	api.publish("nova", "conductor", false, osloProps, build)
	condListen.deliver("1", 1, "nova", "conductor", osloProps, build)
	h.step(time.Millisecond)
	obj := callBody("object_action", "m-obj", "u-obj", reqID, nil)
	compute.publish("nova", "conductor", false, callProps(60000), obj)
	condListen.deliver("1", 2, "nova", "conductor", callProps(60000), obj)
	h.step(time.Millisecond)
	condSend.publish("nova", "compute.cmp1", false, osloProps, castBody("ambiguous", "u-amb", reqID, nil))
	h.step(time.Millisecond)
	condSend.publish("", replyQ, false, osloProps, replyBody("m-obj", "u-obj-r", nil, nil, true))
	h.step(time.Millisecond)
	condSend.publish("nova", "compute.cmp1", false, osloProps, castBody("build_and_run_instance", "u-bari", reqID, nil))
	h.advance(2 * time.Minute)

	by := map[string]*Record{}
	for _, r := range h.records() {
		by[r.Method] = r
	}
	if r := by["ambiguous"]; r == nil || r.ParentID != "" || !slices.Equal(r.ParentCandidates, []string{"u-build", "m-obj"}) {
		t.Errorf("the cast made while two were open: %s", dump(h.records()))
	}
	if r := by["build_and_run_instance"]; r == nil || r.ParentID != "u-build" || r.ParentCandidates != nil {
		t.Errorf("the cast made after object_action's reply: %s", dump(h.records()))
	}
	if r := by["object_action"]; r == nil || r.ParentID != "" {
		t.Errorf("object_action was published by nova-compute, which handled nothing: %s", dump(h.records()))
	}
}
