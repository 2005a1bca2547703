package frames

import (
	"flag"
	"testing"
)

var dump = flag.Bool("dump", false, "TestDump: log every decoded method of the captures")

func TestDump(t *testing.T) {
	if !*dump {
		t.Skip("-dump not set")
	}
	for _, dir := range []string{"amqp091", "oslo"} {
		for _, c := range loadCaptures(t, dir) {
			r, conn := decodeCapture(t, c, whole(c.c2s), whole(c.s2c))
			t.Logf("== %s err=%v stats=%+v", c.name, conn.Err(), conn.Stats())
			for d := range r.events {
				for _, e := range r.events[d] {
					switch e.Type {
					case TypeMethod:
						m, err := DecodeMethod(e.Payload)
						t.Logf("%v ch%d %#v %v", e.Dir, e.Channel, m, err)
					case TypeHeader:
						var h ContentHeader
						err := DecodeContentHeader(e.Payload, &h)
						t.Logf("%v ch%d header %+v %v", e.Dir, e.Channel, h, err)
					}
				}
			}
		}
	}
}
