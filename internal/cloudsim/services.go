package cloudsim

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"
)

// services is the simulated deployment: processes and the RPC servers they run.
type services struct {
	api, conductor, scheduler       *process
	computes                        []*process
	neutron                         *process
	agents                          []*process
	cinderAPI, cinderSched, cinderV *process
	telemetry                       *process

	servers  []*rpcServer
	notifier *notificationListener

	novaEx, neutronEx, cinderEx string
}

// boot is one instance boot in flight: every cast of its chain adds to chain before publishing and the handler
// that receives it marks it done, so the API side knows when the whole chain (fanout deliveries included) ended.
type boot struct {
	chain    tracker
	instance string
	host     string // set by the conductor once the scheduler chose; guarded by Cloud.mu
}

func (b *boot) add(n int) {
	if b != nil && n > 0 {
		b.chain.add(n)
	}
}

func (b *boot) done(n int) {
	for ; b != nil && n > 0; n-- {
		b.chain.done()
	}
}

func (c *Cloud) bootOf(requestID string) *boot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.boots[requestID]
}

const volumeHost = "storage1@lvm"

func (c *Cloud) newProcess(program, host string) *process {
	pid := 1000 + c.intn(60000) // fake, stable for a seed
	return &process{c: c, program: program, pid: pid, host: host,
		log: c.log.With("program", program, "pid", pid, "host", host)}
}

// build creates the processes and RPC servers (not connected yet).
func (c *Cloud) build() *services {
	s := &services{novaEx: c.cfg.exchange("nova"), neutronEx: c.cfg.exchange("neutron"), cinderEx: c.cfg.exchange("openstack")}
	pre := c.cfg.Prefix
	s.api = c.newProcess("nova-api", "controller")
	s.conductor = c.newProcess("nova-conductor", "controller")
	s.scheduler = c.newProcess("nova-scheduler", "controller")
	for i := range c.cfg.computes() {
		s.computes = append(s.computes, c.newProcess("nova-compute", "compute"+strconv.Itoa(i+1)))
	}
	s.neutron = c.newProcess("neutron-server", "controller")
	for i := range c.cfg.agents() {
		host := "network" + strconv.Itoa(i+1-c.cfg.computes())
		if i < c.cfg.computes() {
			host = "compute" + strconv.Itoa(i+1)
		}
		s.agents = append(s.agents, c.newProcess("neutron-openvswitch-agent", host))
	}
	s.cinderAPI = c.newProcess("cinder-api", "controller")
	s.cinderSched = c.newProcess("cinder-scheduler", "controller")
	s.cinderV = c.newProcess("cinder-volume", volumeHost)
	s.telemetry = c.newProcess("ceilometer-agent-notification", "controller")

	srv := func(p *process, ex, topic string, m map[string]handler) {
		s.servers = append(s.servers, &rpcServer{p: p, exchange: ex, topic: pre + topic, server: p.host, methods: m})
	}
	srv(s.conductor, s.novaEx, "conductor", map[string]handler{
		"build_instances": func(_ context.Context, r *request) (any, *remoteError) { return c.buildInstances(s, r) },
		"object_action":   objectAction,
	})
	srv(s.scheduler, s.novaEx, "scheduler", map[string]handler{
		"select_destinations": func(_ context.Context, r *request) (any, *remoteError) { return c.selectDestinations(s, r) },
	})
	for _, p := range s.computes {
		srv(p, s.novaEx, "compute", map[string]handler{
			"build_and_run_instance": func(_ context.Context, r *request) (any, *remoteError) { return c.buildAndRun(s, p, r) },
			"get_console_output":     func(context.Context, *request) (any, *remoteError) { return "Linux version 6.1.0 ... login:", nil },
		})
	}
	srv(s.neutron, s.neutronEx, "q-plugin", map[string]handler{
		"get_devices_details_list": getDevicesDetails,
		"update_device_up":         func(context.Context, *request) (any, *remoteError) { return nil, nil },
		"tunnel_sync": func(context.Context, *request) (any, *remoteError) {
			return object{{"tunnels", []any{}}}, nil
		},
	})
	srv(s.neutron, s.neutronEx, "q-reports-plugin", map[string]handler{
		"report_state": func(context.Context, *request) (any, *remoteError) { return "alive", nil },
	})
	for _, p := range s.agents {
		srv(p, s.neutronEx, "q-agent-notifier-port-update", map[string]handler{
			"port_update": func(_ context.Context, r *request) (any, *remoteError) { return c.portUpdate(s, p, r) },
		})
	}
	srv(s.cinderSched, s.cinderEx, "cinder-scheduler", map[string]handler{
		"create_volume": func(_ context.Context, r *request) (any, *remoteError) {
			rc := r.context()
			b := c.bootOf(rc.RequestID)
			b.add(1)
			if s.cinderSched.cast(rc, target{s.cinderEx, pre + "cinder-volume", volumeHost},
				rpcRequest{Method: "create_volume", Version: "3.17", Args: volumeArgs(r)}, false) != nil {
				b.done(1)
			}
			return nil, nil
		},
	})
	srv(s.cinderV, s.cinderEx, "cinder-volume", map[string]handler{
		"create_volume": func(context.Context, *request) (any, *remoteError) { return nil, nil },
		"initialize_connection": func(context.Context, *request) (any, *remoteError) {
			return object{{"driver_volume_type", "iscsi"}, {"data", object{
				{"target_discovered", false}, {"target_iqn", "iqn.2010-10.org.openstack:volume-" + dashedID()},
				{"target_portal", "192.0.2.30:3260"}, {"target_lun", 1}, {"auth_method", "CHAP"},
				{"auth_username", "cinder"}, {"auth_password", "fake-chap-secret-" + hexID()[:12]}}}}, nil
		},
	})
	s.notifier = &notificationListener{p: s.telemetry, exchange: s.novaEx, topic: pre + "notifications"}
	return s
}

// Errors each method can raise, as real services do.
func noValidHost() *remoteError {
	return &remoteError{Class: "NoValidHost", Module: "nova.exception",
		Message: "No valid host was found. There are not enough hosts available.",
		Kwargs:  object{{"reason", "There are not enough hosts available."}, {"code", 500}}}
}

func instanceNotFound(uuid string) *remoteError {
	return &remoteError{Class: "InstanceNotFound", Module: "nova.exception",
		Message: "Instance " + uuid + " could not be found.",
		Kwargs:  object{{"instance_id", uuid}, {"code", 404}}}
}

func portNotFound() *remoteError {
	id := dashedID()
	return &remoteError{Class: "PortNotFound", Module: "neutron_lib.exceptions",
		Message: "Port " + id + " could not be found.", Kwargs: object{{"port_id", id}}}
}

func volumeBackendError() *remoteError {
	return &remoteError{Class: "VolumeBackendAPIException", Module: "cinder.exception",
		Message: "Bad or unexpected response from the storage volume backend API: target busy",
		Kwargs:  object{{"data", "target busy"}, {"code", 500}}}
}

func instanceObject(uuid, host, vmState, taskState string) object {
	return object{
		{"nova_object.name", "Instance"}, {"nova_object.namespace", "nova"}, {"nova_object.version", "2.7"},
		{"nova_object.data", object{
			{"uuid", uuid}, {"display_name", "vm-" + uuid[:8]}, {"host", nullable(host)}, {"node", nullable(host)},
			{"vm_state", vmState}, {"task_state", nullable(taskState)}, {"power_state", 0},
			{"instance_type_id", 1}, {"memory_mb", 512}, {"vcpus", 1}, {"root_gb", 1},
			{"image_ref", "0b3e5f6a-7c1d-4e2f-9a8b-1c2d3e4f5a6b"}, {"availability_zone", "nova"},
		}},
		{"nova_object.changes", []string{"task_state", "vm_state"}},
	}
}

// bootInstance runs one boot from nova-api: the cast to the conductor, waiting for the chain it starts, then a
// console call to the chosen host (to compute.host-gone when that call is meant to time out).
func (c *Cloud) bootInstance(s *services) {
	rc := newUserContext("192.0.2.10", time.Now())
	b := &boot{instance: dashedID()}
	c.mu.Lock()
	c.boots[rc.RequestID] = b
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.boots, rc.RequestID)
		c.mu.Unlock()
	}()
	b.add(1)
	err := s.api.cast(rc, target{s.novaEx, c.cfg.Prefix + "conductor", ""}, rpcRequest{
		Method: "build_instances", Namespace: "compute_task", Version: "1.17",
		Args: object{
			{"instances", []object{instanceObject(b.instance, "", "building", "scheduling")}},
			{"image", object{{"id", "0b3e5f6a-7c1d-4e2f-9a8b-1c2d3e4f5a6b"}, {"name", "cirros-0.6.2"}}},
			{"filter_properties", object{{"retry", object{{"num_attempts", 1}, {"hosts", []any{}}}}}},
			// nova-api really sends the admin password in build_instances: a secret amqptrace must redact.
			{"admin_password", "Sup3r-Secret-" + hexID()[:10]},
			{"injected_files", []any{}},
			{"requested_networks", object{{"objects", []object{{{"network_id", "auto"}}}}}},
			{"security_groups", []string{"default"}},
			{"block_device_mapping", []any{}},
			{"legacy_bdm", false},
		},
	}, false)
	if err != nil {
		b.done(1)
		return
	}
	if !b.chain.wait(c.runCtx) {
		return
	}
	c.mu.Lock()
	host := b.host
	c.mu.Unlock()
	if host != "" {
		f := c.drawFate(instanceNotFound(b.instance), true)
		_, _, _ = s.api.call(rc, target{s.novaEx, c.cfg.Prefix + "compute", host}, rpcRequest{
			Method: "get_console_output", Version: "6.0",
			Args: object{{"instance", instanceObject(b.instance, host, "active", "")}, {"tail_length", 50}},
		}, f)
	}
	if c.runCtx.Err() == nil {
		c.mu.Lock()
		c.counts.Boots++
		c.mu.Unlock()
	}
}

// buildInstances is the conductor's compute_task build_instances: ask the scheduler, then cast to the host.
func (c *Cloud) buildInstances(s *services, r *request) (any, *remoteError) {
	rc := r.context()
	b := c.bootOf(rc.RequestID)
	instance := dashedID()
	if b != nil {
		instance = b.instance
	}
	res, rerr, err := s.conductor.call(rc, target{s.novaEx, c.cfg.Prefix + "scheduler", ""}, rpcRequest{
		Method: "select_destinations", Version: "4.5", Monitor: monitorSecs,
		Args: object{
			{"spec_obj", object{{"nova_object.name", "RequestSpec"}, {"nova_object.namespace", "nova"},
				{"nova_object.version", "1.14"}, {"nova_object.data", object{{"instance_uuid", instance}, {"num_instances", 1}}}}},
			{"instance_uuids", []string{instance}}, {"return_objects", true}, {"return_alternates", true},
		},
	}, c.drawFate(noValidHost(), false))
	var host string
	if err == nil && rerr == nil {
		var sel [][]struct {
			Data struct {
				Host string `json:"service_host"`
			} `json:"nova_object.data"`
		}
		if json.Unmarshal(res, &sel) == nil && len(sel) > 0 && len(sel[0]) > 0 {
			host = sel[0][0].Data.Host
		}
	}
	if host == "" {
		if !errors.Is(err, errAborted) && c.runCtx.Err() == nil {
			s.conductor.notifyEvent(rc, "compute_task.build_instances", "ERROR", object{
				{"instance_id", instance}, {"state", "error"}, {"method", "build_instances"},
				{"reason", reasonOf(rerr, err)}})
		}
		return nil, nil
	}
	c.mu.Lock()
	if b != nil {
		b.host = host
	}
	c.mu.Unlock()
	b.add(1)
	if s.conductor.cast(rc, target{s.novaEx, c.cfg.Prefix + "compute", host}, rpcRequest{
		Method: "build_and_run_instance", Version: "6.0",
		Args: object{{"instance", instanceObject(instance, host, "building", "scheduling")}, {"node", host},
			{"limits", nil}, {"request_spec", nil}, {"filter_properties", object{}}, {"accel_uuids", []any{}}},
	}, false) != nil {
		b.done(1)
	}
	return nil, nil
}

func reasonOf(rerr *remoteError, err error) string {
	if rerr != nil {
		return rerr.Message
	}
	if err != nil {
		return err.Error()
	}
	return "no host selected"
}

func (c *Cloud) selectDestinations(s *services, _ *request) (any, *remoteError) {
	host := s.computes[c.intn(len(s.computes))].host
	return [][]object{{{
		{"nova_object.name", "Selection"}, {"nova_object.namespace", "nova"}, {"nova_object.version", "1.1"},
		{"nova_object.data", object{
			{"service_host", host}, {"nodename", host + ".localdomain"}, {"compute_node_uuid", dashedID()},
			{"cell_uuid", dashedID()}, {"limits", nil},
			{"allocation_request", `{"allocations": {"` + dashedID() + `": {"resources": {"VCPU": 1, "MEMORY_MB": 512}}}}`},
			{"allocation_request_version", "1.36"},
		}},
	}}}, nil
}

func objectAction(_ context.Context, r *request) (any, *remoteError) {
	var a struct {
		Objinst json.RawMessage `json:"objinst"`
	}
	_ = json.Unmarshal(r.Args, &a)
	// (updates, result): the conductor returns the changed fields and the method's result.
	return []any{object{{"updated_at", time.Now().UTC().Format("2006-01-02T15:04:05Z")}}, nil}, nil
}

func getDevicesDetails(_ context.Context, r *request) (any, *remoteError) {
	var a struct {
		Devices []string `json:"devices"`
		Host    string   `json:"host"`
	}
	_ = json.Unmarshal(r.Args, &a)
	var out []object
	for _, d := range a.Devices {
		out = append(out, object{{"device", d}, {"port_id", d}, {"network_id", "5d3c0f5e-0a8e-4a51-9f3e-2b2e6c9e1f10"},
			{"admin_state_up", true}, {"network_type", "vxlan"}, {"segmentation_id", 1042}, {"fixed_ips", []object{
				{{"subnet_id", "8f1f9c5e-1c61-4c7e-9d2e-6f0b8d8a2c11"}, {"ip_address", "10.0.0.17"}}}},
			{"device_owner", "compute:nova"}, {"profile", object{}}})
	}
	return out, nil
}

// buildAndRun is nova-compute's build_and_run_instance: notifications, instance saves through the conductor,
// the port binding (neutron-server's port_update fanout, then the agent's device calls) and a volume attach.
func (c *Cloud) buildAndRun(s *services, p *process, r *request) (any, *remoteError) {
	rc := r.context()
	b := c.bootOf(rc.RequestID)
	instance := dashedID()
	if b != nil {
		instance = b.instance
	}
	payload := func(state string) object {
		return object{{"nova_object.name", "InstanceCreatePayload"}, {"nova_object.namespace", "nova"},
			{"nova_object.version", "1.12"}, {"nova_object.data", object{
				{"uuid", instance}, {"host", p.host}, {"state", state}, {"flavor", object{{"name", "m1.tiny"}}}}}}
	}
	p.notifyEvent(rc, "instance.create.start", "INFO", payload("building"))
	save := func(vm, task string) bool {
		_, rerr, err := p.call(rc, target{s.novaEx, c.cfg.Prefix + "conductor", ""}, rpcRequest{
			Method: "object_action", Version: "3.0",
			Args: object{{"objinst", instanceObject(instance, p.host, vm, task)}, {"objmethod", "save"},
				{"args", []any{}}, {"kwargs", object{{"expected_task_state", []string{"scheduling"}}}}},
		}, c.drawFate(instanceNotFound(instance), false))
		if rerr != nil || err != nil {
			if !errors.Is(err, errAborted) && c.runCtx.Err() == nil {
				p.notifyEvent(rc, "instance.create.error", "ERROR", payload("error"))
			}
			return false
		}
		return true
	}
	if !save("building", "spawning") {
		return nil, nil
	}
	// Nova asks neutron (over REST, not simulated) to bind the port; neutron-server tells the agents.
	port := dashedID()
	b.add(len(s.agents))
	if s.neutron.cast(rc, target{s.neutronEx, c.cfg.Prefix + "q-agent-notifier-port-update", ""}, rpcRequest{
		Method: "port_update", Version: "1.7",
		Args: object{{"port", object{{"id", port}, {"device_id", instance}, {"binding:host_id", p.host},
			{"network_id", "5d3c0f5e-0a8e-4a51-9f3e-2b2e6c9e1f10"}, {"admin_state_up", true}}},
			{"network_type", "vxlan"}, {"segmentation_id", 1042}, {"physical_network", nil}},
	}, true) != nil {
		b.done(len(s.agents))
	}
	c.attachVolume(s, rc, b, p.host)
	if !save("active", "") {
		return nil, nil
	}
	p.notifyEvent(rc, "instance.create.end", "INFO", payload("active"))
	return nil, nil
}

// portUpdate is the agent's port_update fanout handler: only the agent on the port's host acts on it.
func (c *Cloud) portUpdate(s *services, p *process, r *request) (any, *remoteError) {
	var a struct {
		Port struct {
			ID   string `json:"id"`
			Host string `json:"binding:host_id"`
		} `json:"port"`
	}
	if json.Unmarshal(r.Args, &a) != nil || a.Port.Host != p.host {
		return nil, nil
	}
	rc := r.context()
	t := target{s.neutronEx, c.cfg.Prefix + "q-plugin", ""}
	args := object{{"devices", []string{a.Port.ID}}, {"agent_id", "ovs-agent-" + p.host}, {"host", p.host}}
	_, rerr, err := p.call(rc, t, rpcRequest{Method: "get_devices_details_list", Version: "1.5", Args: args},
		c.drawFate(portNotFound(), false))
	if rerr != nil || err != nil {
		return nil, nil
	}
	_, _, _ = p.call(rc, t, rpcRequest{Method: "update_device_up", Version: "1.5",
		Args: object{{"device", a.Port.ID}, {"agent_id", "ovs-agent-" + p.host}, {"host", p.host}}},
		c.drawFate(portNotFound(), false))
	return nil, nil
}

// attachVolume is the cinder side of a boot-from-volume attach (nova reaches cinder-api over REST, not
// simulated): create_volume through the cinder scheduler to the volume host, then initialize_connection.
func (c *Cloud) attachVolume(s *services, rc *reqContext, b *boot, host string) {
	volume := dashedID()
	b.add(1)
	if s.cinderAPI.cast(rc, target{s.cinderEx, c.cfg.Prefix + "cinder-scheduler", ""}, rpcRequest{
		Method: "create_volume", Version: "3.12",
		Args: object{{"volume_id", volume}, {"volume", object{{"id", volume}, {"size", 1}}},
			{"request_spec", object{{"volume_id", volume}}}, {"filter_properties", object{}}},
	}, false) != nil {
		b.done(1)
	}
	_, _, _ = s.cinderAPI.call(rc, target{s.cinderEx, c.cfg.Prefix + "cinder-volume", volumeHost}, rpcRequest{
		Method: "initialize_connection", Version: "3.17",
		Args: object{{"volume", object{{"id", volume}}}, {"connector", object{
			{"host", host}, {"ip", "192.0.2.21"}, {"initiator", "iqn.2004-10.com.ubuntu:01:" + hexID()[:12]},
			{"multipath", false}, {"platform", "x86_64"}, {"os_type", "linux"}}}},
	}, c.drawFate(volumeBackendError(), false))
}

func volumeArgs(r *request) object {
	var a struct {
		VolumeID string `json:"volume_id"`
	}
	_ = json.Unmarshal(r.Args, &a)
	return object{{"volume_id", a.VolumeID}, {"request_spec", object{{"volume_id", a.VolumeID}}},
		{"filter_properties", object{}}, {"allow_reschedule", true}}
}

// agentLoop is a neutron-openvswitch-agent's periodic work: tunnel_sync at start, then report_state every
// period. It stops after the current iteration when stop closes.
func (c *Cloud) agentLoop(s *services, p *process, stop <-chan struct{}) {
	plugin := target{s.neutronEx, c.cfg.Prefix + "q-plugin", ""}
	reports := target{s.neutronEx, c.cfg.Prefix + "q-reports-plugin", ""}
	_, _, _ = p.call(newAdminContext(time.Now()), plugin, rpcRequest{Method: "tunnel_sync", Version: "1.3",
		Args: object{{"tunnel_ip", "192.0.2." + strconv.Itoa(40+c.intn(200))}, {"tunnel_type", "vxlan"}, {"host", p.host}}},
		c.drawFate(nil, false))
	period := max(time.Duration(float64(5*time.Second)/c.cfg.rate()), 200*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	start := true
	for {
		select {
		case <-stop:
			return
		case <-c.runCtx.Done():
			return
		case <-t.C:
		}
		_, _, _ = p.call(newAdminContext(time.Now()), reports, rpcRequest{Method: "report_state", Version: "1.2",
			Args: object{{"agent_state", object{{"agent_state", object{
				{"binary", "neutron-openvswitch-agent"}, {"host", p.host}, {"topic", "N/A"},
				{"configurations", object{{"tunnel_types", []string{"vxlan"}}, {"bridge_mappings", object{}}}},
				{"agent_type", "Open vSwitch agent"}, {"start_flag", start}}}}},
				{"time", time.Now().UTC().Format("2006-01-02T15:04:05.000000")}}},
			c.drawFate(nil, false))
		start = false
	}
}

// maxBootsInFlight bounds concurrent boots: when the broker or the proxy is slow, ticks are skipped (and
// counted) instead of piling up goroutines.
const maxBootsInFlight = 64

// bootLoop starts boots at cfg.Rate until stop closes or MaxBoots have been started, then waits for them.
func (c *Cloud) bootLoop(s *services, stop <-chan struct{}) {
	var boots sync.WaitGroup
	defer boots.Wait()
	interval := time.Duration(float64(time.Second) / c.cfg.rate())
	t := time.NewTicker(interval)
	defer t.Stop()
	inFlight := make(chan struct{}, maxBootsInFlight)
	for started := 0; c.cfg.MaxBoots <= 0 || started < c.cfg.MaxBoots; {
		select {
		case inFlight <- struct{}{}:
			started++
			boots.Go(func() {
				defer func() { <-inFlight }()
				c.bootInstance(s)
			})
		default:
			c.mu.Lock()
			c.counts.BootsSkipped++
			c.mu.Unlock()
		}
		select {
		case <-stop:
			return
		case <-c.runCtx.Done():
			return
		case <-t.C:
		}
	}
}

// Run connects every service, closes Ready, runs the flows until ctx ends (or MaxBoots boots are done), then
// shuts down like oslo services do: listeners delete their fanout queues and every connection is closed. It
// returns once every goroutine it started has returned. A Cloud runs once.
func (c *Cloud) Run(ctx context.Context) error {
	if c.cfg.URL == "" {
		return errors.New("cloudsim: Config.URL is empty")
	}
	c.mu.Lock()
	again := c.ran
	c.ran = true
	c.mu.Unlock()
	if again {
		return errors.New("cloudsim: a Cloud runs once")
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.runCtx = runCtx
	s := c.build()
	c.svc = s
	defer c.teardown(s, cancel)

	for _, srv := range s.servers {
		if err := srv.start(); err != nil {
			return err
		}
	}
	if err := s.notifier.start(); err != nil {
		return err
	}
	c.log.Info("cloud ready", "servers", len(s.servers), "computes", len(s.computes), "agents", len(s.agents),
		"rate", c.cfg.rate(), "max_boots", c.cfg.MaxBoots)
	close(c.ready)

	stop := make(chan struct{})
	bootsDone := make(chan struct{})
	var flows sync.WaitGroup
	flows.Go(func() {
		c.bootLoop(s, stop)
		close(bootsDone)
	})
	for _, p := range s.agents {
		flows.Go(func() { c.agentLoop(s, p, stop) })
	}
	select {
	case <-ctx.Done():
	case <-bootsDone:
	}
	close(stop)
	flows.Wait()
	// Let servers finish what they are doing, and late replies reach their callers, before closing anything.
	c.inflight.wait(runCtx)
	c.lateWait.wait(runCtx)
	return nil
}

// teardown stops listeners first (as oslo does: Queue.Delete of the fanout queue, then close), then the
// senders and reply listeners, and waits for every consume loop.
func (c *Cloud) teardown(s *services, cancel context.CancelFunc) {
	cancel()
	for _, srv := range s.servers {
		if srv.conn != nil {
			srv.stop()
		}
	}
	if s.notifier.conn != nil {
		s.notifier.stop()
	}
	c.mu.Lock()
	closers := c.closers
	c.closers = nil
	c.mu.Unlock()
	for _, f := range closers {
		f()
	}
	c.pumps.Wait()
	n := c.Counts()
	sent := 0
	for _, v := range n.Sent {
		sent += v
	}
	// Totals only: the per-method maps are for tests, and a log line stays key=value.
	c.log.Info("cloud stopped", "sent", sent, "mismatched", n.Mismatched, "replies", n.Replies,
		"heartbeats", n.Heartbeats, "late_replies", n.LateReplies, "returned", n.Returned, "bad", n.Bad,
		"boots", n.Boots, "boots_skipped", n.BootsSkipped)
}
