//go:build !linux

package capture

import (
	"context"
	"errors"
)

// LiveConfig configures Live (see the Linux build).
type LiveConfig struct {
	Interface             string
	Ports                 []uint16
	RingBlocks, BlockSize int
	Ready                 func()
}

// Live needs Linux's AF_PACKET sockets.
func Live(context.Context, LiveConfig, *Capture) error {
	return errors.New("live capture needs Linux (AF_PACKET); replay a pcap file instead")
}

// DefaultInterface is "any" where live capture is not supported.
func DefaultInterface([]uint16) string { return "any" }
