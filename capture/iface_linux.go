package capture

import (
	"bufio"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// DefaultInterface is the interface that carries the broker's port on this host: the one holding the address a
// socket listens on for one of ports (from /proc/net/tcp and tcp6), "any" when it listens on every address or
// when no listener is found (the broker is on another host whose traffic this one sees).
func DefaultInterface(ports []uint16) string {
	want := map[uint16]bool{}
	for _, p := range ports {
		want[p] = true
	}
	var addrs []netip.Addr
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		addrs = append(addrs, listeners(name, want)...)
	}
	if len(addrs) == 0 {
		return "any"
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "any"
	}
	found := ""
	for _, a := range addrs {
		if a.IsUnspecified() {
			return "any"
		}
		name := ""
		for _, i := range ifs {
			if a.IsLoopback() && i.Flags&net.FlagLoopback != 0 {
				name = i.Name
				break
			}
			ias, _ := i.Addrs()
			for _, ia := range ias {
				if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a.Unmap() {
					name = i.Name
				}
			}
		}
		if name == "" || (found != "" && found != name) {
			return "any" // on several interfaces, or one not found
		}
		found = name
	}
	return found
}

// listeners reads the local addresses of the LISTEN sockets on the wanted ports from a /proc/net/tcp file.
func listeners(name string, want map[uint16]bool) []netip.Addr {
	f, err := os.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" { // TCP_LISTEN
			continue
		}
		host, port, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(port, 16, 16)
		if err != nil || !want[uint16(p)] {
			continue
		}
		b, err := hex.DecodeString(host)
		if err != nil || (len(b) != 4 && len(b) != 16) {
			continue
		}
		// The kernel prints each 32-bit word in host (little-endian) order.
		for i := 0; i+4 <= len(b); i += 4 {
			b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
		}
		if a, ok := netip.AddrFromSlice(b); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}
