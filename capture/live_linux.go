package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/gopacket/gopacket/afpacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

// LiveConfig configures Live.
type LiveConfig struct {
	// Interface to capture on; "any" or empty: every interface.
	Interface string
	// Ports are filtered in the kernel (BPF): only TCP segments from or to them reach user space.
	Ports []uint16
	// RingBlocks and BlockSize size the TPACKET_V3 ring (defaults 64 × 1 MiB: 64 MiB of kernel memory).
	RingBlocks, BlockSize int
	// Ready, when set, is called once the socket is open and filtered: packets from then on are captured.
	Ready func()
}

// Live captures packets on an interface until ctx ends, handing them to c, and then ends c's connections
// (Close). The kernel's counters (PACKET_STATISTICS) go into c's Stats as they are read, about every second and
// at the end.
func Live(ctx context.Context, cfg LiveConfig, c *Capture) error {
	iface := cfg.Interface
	if iface == "any" {
		iface = ""
	}
	var loIndex int
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if i.Flags&net.FlagLoopback != 0 {
				loIndex = i.Index
				break
			}
		}
	}
	blocks, bsize := cfg.RingBlocks, cfg.BlockSize
	if blocks <= 0 {
		blocks = 64
	}
	if bsize <= 0 {
		bsize = 1 << 20
	}
	tp, err := afpacket.NewTPacket(afpacket.OptInterface(iface), afpacket.SocketDgram, afpacket.TPacketVersion3,
		afpacket.OptBlockSize(bsize), afpacket.OptNumBlocks(blocks), afpacket.OptFrameSize(1<<16),
		afpacket.OptPollTimeout(200*time.Millisecond), afpacket.OptBlockTimeout(10*time.Millisecond))
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return ErrNoCapability
		}
		if cfg.Interface != "" && cfg.Interface != "any" {
			return fmt.Errorf("capture on %s: %w", cfg.Interface, err)
		}
		return fmt.Errorf("capture: %w", err)
	}
	defer tp.Close()
	prog, err := Filter(cfg.Ports, loIndex)
	if err != nil {
		return err
	}
	if err := tp.SetBPF(prog); err != nil {
		return fmt.Errorf("capture: attaching the port filter: %w", err)
	}
	// Packets that passed before the filter was attached may be of any kind; Packet passes over those.
	if cfg.Ready != nil {
		cfg.Ready()
	}
	readStats := func() {
		_, s3, err := tp.SocketStats()
		if err == nil {
			c.ctr.kPackets.Store(uint64(s3.Packets()))
			c.ctr.kDrops.Store(uint64(s3.Drops()))
			c.ctr.kFreezes.Store(uint64(s3.QueueFreezes()))
		}
	}
	defer func() {
		readStats()
		c.Close()
	}()
	lastStats := time.Now()
	for ctx.Err() == nil {
		data, ci, err := tp.ZeroCopyReadPacketData()
		switch {
		case err == nil:
			// SOCK_DGRAM gives the network layer; the kernel's own capture time stamps it.
			_ = c.Packet(layers.LinkTypeRaw, data, ci.Length, ci.Timestamp)
		case errors.Is(err, afpacket.ErrTimeout):
			c.Tick(time.Now())
		case errors.Is(err, syscall.EINTR):
		default:
			return fmt.Errorf("capture: reading packets: %w", err)
		}
		if time.Since(lastStats) >= time.Second {
			readStats()
			lastStats = time.Now()
		}
	}
	return nil
}

// Filter returns the classic BPF program Live attaches: IPv4 (unfragmented or first fragment) or IPv6 TCP with
// a source or destination port in ports, applied to the network layer (SOCK_DGRAM). On the loopback interface
// (loIndex, 0 when unknown) every packet passes twice, once leaving and once arriving: the leaving copy is
// rejected, as libpcap does.
func Filter(ports []uint16, loIndex int) ([]bpf.RawInstruction, error) {
	if len(ports) == 0 {
		return nil, errors.New("capture: no port to filter on")
	}
	var a asm
	if loIndex > 0 {
		a.ins(bpf.LoadExtension{Num: bpf.ExtInterfaceIndex})
		a.jump(bpf.JumpEqual, uint32(loIndex), "lo", "ip")
		a.label("lo")
		a.ins(bpf.LoadExtension{Num: bpf.ExtType})
		a.jump(bpf.JumpEqual, 4, "reject", "ip") // PACKET_OUTGOING
	}
	a.label("ip")
	a.ins(bpf.LoadAbsolute{Off: 0, Size: 1})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.jump(bpf.JumpEqual, 0x40, "v4", "not4")
	a.label("not4")
	a.jump(bpf.JumpEqual, 0x60, "v6", "reject")

	a.label("v4")
	a.ins(bpf.LoadAbsolute{Off: 9, Size: 1})
	a.jump(bpf.JumpEqual, 6, "v4tcp", "reject")
	a.label("v4tcp")
	a.ins(bpf.LoadAbsolute{Off: 6, Size: 2})
	a.jump(bpf.JumpBitsSet, 0x1fff, "reject", "v4ports")
	a.label("v4ports")
	a.ins(bpf.LoadMemShift{Off: 0})
	a.ins(bpf.LoadIndirect{Off: 0, Size: 2})
	a.ports(ports, "accept", "v4dst")
	a.label("v4dst")
	a.ins(bpf.LoadIndirect{Off: 2, Size: 2})
	a.ports(ports, "accept", "reject")

	a.label("v6")
	a.ins(bpf.LoadAbsolute{Off: 6, Size: 1})
	a.jump(bpf.JumpEqual, 6, "v6ports", "reject")
	a.label("v6ports")
	a.ins(bpf.LoadAbsolute{Off: 40, Size: 2})
	a.ports(ports, "accept", "v6dst")
	a.label("v6dst")
	a.ins(bpf.LoadAbsolute{Off: 42, Size: 2})
	a.ports(ports, "accept", "reject")

	a.label("accept")
	a.ins(bpf.RetConstant{Val: 1 << 18})
	a.label("reject")
	a.ins(bpf.RetConstant{Val: 0})
	return a.assemble()
}

// asm is a tiny assembler for classic BPF with named jump targets.
type asm struct {
	prog   []bpf.Instruction
	jumps  map[int][2]string
	labels map[string]int
}

func (a *asm) ins(i bpf.Instruction) { a.prog = append(a.prog, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) jump(cond bpf.JumpTest, val uint32, yes, no string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.prog)] = [2]string{yes, no}
	a.ins(bpf.JumpIf{Cond: cond, Val: val})
}

// ports compares the accumulator with each port: equal → yes; none equal → no.
func (a *asm) ports(ports []uint16, yes, no string) {
	for i, p := range ports {
		next := no
		if i < len(ports)-1 {
			next = fmt.Sprintf("port%d_%d", len(a.prog), i)
		}
		a.jump(bpf.JumpEqual, uint32(p), yes, next)
		if next != no {
			a.label(next)
		}
	}
}

func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	for at, targets := range a.jumps {
		j := a.prog[at].(bpf.JumpIf)
		var skips [2]int
		for k, name := range targets {
			to, ok := a.labels[name]
			if !ok {
				return nil, fmt.Errorf("capture: bpf label %q", name)
			}
			skips[k] = to - at - 1
			if skips[k] < 0 || skips[k] > 255 {
				return nil, fmt.Errorf("capture: bpf jump to %q out of range (%d ports are too many)", name, len(a.jumps))
			}
		}
		j.SkipTrue, j.SkipFalse = uint8(skips[0]), uint8(skips[1])
		a.prog[at] = j
	}
	return bpf.Assemble(a.prog)
}
