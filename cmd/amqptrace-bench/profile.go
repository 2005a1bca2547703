package main

import (
	"fmt"
	"strings"
)

// profile is the concurrency the rpc and throughput workloads run at.
type profile struct {
	name string
	// rpcClients caller processes, each with its own sender connection and reply listener, making
	// rpcCallersPerClient calls at once.
	rpcClients, rpcCallersPerClient int
	tputPrefetch                    int // each throughput consumer's Basic.Qos prefetch
}

// profiles: "default" is the bench's own mix; "concurrent" is what an independent benchmark ran against us (eight
// oslo-style callers in parallel, each with its own send and reply connections; four publisher/consumer pairs with
// 256-message confirm windows and prefetch 256), where the observation cost showed in the tail and in CPU per call.
var profiles = []profile{
	{name: "default", rpcClients: 2, rpcCallersPerClient: 4, tputPrefetch: 512},
	{name: "concurrent", rpcClients: 8, rpcCallersPerClient: 1, tputPrefetch: 256},
}

func profileNamed(name string) (profile, error) {
	var names []string
	for _, p := range profiles {
		if p.name == name {
			return p, nil
		}
		names = append(names, p.name)
	}
	return profile{}, fmt.Errorf("--profile: unknown profile %q (known: %s)", name, strings.Join(names, ", "))
}
