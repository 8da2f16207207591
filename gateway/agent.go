package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/vlan"
)

// DataPlane is what the agent needs of package vlan.
type DataPlane interface {
	Reconcile(ctx context.Context, desired []vlan.Segment) (vlan.Result, error)
	// ActivatedIPs lists the endpoint IPs that have host routes in the
	// kernel: activated by a previous run of the agent.
	ActivatedIPs() ([]netip.Addr, error)
}

// Speaker is what the agent needs of package bgp.
type Speaker interface {
	Apply(ctx context.Context, d bgp.Desired) (bgp.ApplyReport, error)
	Status(ctx context.Context) (bgp.Status, error)
	GracefulShutdown(ctx context.Context, wait time.Duration) error
	Stop(ctx context.Context) error
}

// Source gives a consistent snapshot of the inputs (API cache or file).
type Source interface {
	Inputs(ctx context.Context) (Inputs, error)
}

// Leadership is the per-segment election (nil: standalone, always active).
type Leadership interface {
	Sync(ctx context.Context, keys []SegmentKey)
	Leading(k SegmentKey) bool
	// ValidFor is how long this gateway may still act as the segment's
	// active gateway without another renewal (0 when not leading).
	ValidFor(k SegmentKey) time.Duration
	Release(ctx context.Context)
	APIReachable() bool
}

// Fence is the kernel dead-man switch on the VLAN side (vlan.Fence): a
// guarded port bridges only while it is kept alive.
type Fence interface {
	Guard(guarded []string, alive map[string]time.Duration) error
	TTL() time.Duration
}

// StatusSink receives a report after every reconcile (BridgeGateway
// writer, or the log in standalone mode). It should write only changes.
type StatusSink interface {
	Publish(ctx context.Context, r Report) error
}

// Options configure an Agent.
type Options struct {
	NodeName  string
	Role      Role
	LocalVTEP netip.Addr
	// Resync re-runs the reconcile with nothing changed (drift, retries).
	Resync time.Duration
}

// Agent is the reconcile loop of one host.
type Agent struct {
	opts     Options
	dp       DataPlane
	speaker  Speaker // nil on node-role hosts
	source   Source
	election Leadership
	gate     *Gate
	reach    *Reachability
	sink     StatusSink
	metrics  *Metrics
	log      *zap.Logger

	trigger chan struct{}

	fence      Fence
	fenceMu    sync.Mutex
	fencePorts map[SegmentKey]fencedPort
	fenceErr   bool

	mu         sync.Mutex // one reconcile at a time
	attached   map[SegmentKey]bool
	advertised map[netip.Prefix]bool
	last       Report
	draining   bool
}

// NewAgent wires an agent. speaker and election may be nil.
func NewAgent(o Options, dp DataPlane, speaker Speaker, source Source, election Leadership, gate *Gate, reach *Reachability, sink StatusSink, m *Metrics, log *zap.Logger) *Agent {
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	return &Agent{opts: o, dp: dp, speaker: speaker, source: source, election: election, gate: gate, reach: reach,
		sink: sink, metrics: m, log: log, trigger: make(chan struct{}, 1),
		attached: map[SegmentKey]bool{}, advertised: map[netip.Prefix]bool{}}
}

// fencedPort is the VLAN-side port of an attached segment.
type fencedPort struct {
	port string
	// alone: no standby candidate, so the port stays alive even when the
	// lease cannot be renewed (fail static).
	alone bool
}

// SetFence makes the agent keep its attached VLAN ports alive in the
// kernel fence (gateway role in Kubernetes mode). Call before Run.
func (a *Agent) SetFence(f Fence) {
	a.fence = f
}

// keepAlive refreshes the fence: every attached port of a segment that has
// a standby is guarded, and alive for as long as this gateway's lease stays
// valid without another renewal — so a dead or wedged agent's VLAN port
// stops bridging exactly when a live agent would have fenced itself. A
// segment without a standby is not guarded: there is nobody to loop with,
// and fail static keeps it attached. Runs on its own ticker too.
func (a *Agent) keepAlive() {
	if a.fence == nil || a.election == nil {
		return
	}
	a.fenceMu.Lock()
	defer a.fenceMu.Unlock()
	var guarded []string
	alive := map[string]time.Duration{}
	for k, p := range a.fencePorts {
		if p.alone {
			continue
		}
		guarded = append(guarded, p.port)
		if d := a.election.ValidFor(k); d > 0 {
			alive[p.port] = d
		}
	}
	sort.Strings(guarded)
	err := a.fence.Guard(guarded, alive)
	if ce := a.log.Check(zap.DebugLevel, "fence refreshed"); ce != nil {
		ce.Write(zap.Strings("guarded", guarded), zap.Any("alive", alive), zap.Error(err))
	}
	if err != nil && !a.fenceErr {
		a.log.Error("fence keep-alive failed: the kernel will cut the VLAN side when the lease runs out",
			zap.String("event", "fenceFailed"), zap.Error(err))
	}
	if err == nil && a.fenceErr {
		a.log.Info("fence keep-alive works again", zap.String("event", "fenceRecovered"))
	}
	a.fenceErr = err != nil
}

func (a *Agent) setFencePorts(d Desired, attached map[SegmentKey]bool, segErr map[SegmentKey]string) {
	if a.fence == nil {
		return
	}
	ports := map[SegmentKey]fencedPort{}
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; bad || !attached[s.Key] || s.Phase == PhaseCompleted {
			continue
		}
		ports[s.Key] = fencedPort{port: probeIface(s), alone: len(s.Candidates) <= 1}
	}
	a.fenceMu.Lock()
	a.fencePorts = ports
	a.fenceMu.Unlock()
	a.keepAlive()
}

// Trigger asks for a reconcile soon; calls coalesce. Never blocks.
func (a *Agent) Trigger() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Adopt reads what a previous run activated, so a restart neither probes
// nor flaps those IPs.
func (a *Agent) Adopt() error {
	ips, err := a.dp.ActivatedIPs()
	if err != nil {
		return fmt.Errorf("adopt activated IPs: %w", err)
	}
	a.gate.Adopt(ips)
	if len(ips) > 0 {
		a.log.Info("adopted activated endpoint IPs", zap.Int("count", len(ips)))
	}
	return nil
}

// Run reconciles on every trigger and every Resync until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(a.opts.Resync)
	defer t.Stop()
	if a.fence != nil {
		go func() {
			tick := time.NewTicker(a.fence.TTL() / 4)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					a.keepAlive()
				}
			}
		}()
	}
	a.Trigger()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.trigger:
		case <-t.C:
		}
		if err := a.Reconcile(ctx); err != nil {
			a.log.Error("reconcile", zap.String("event", "reconcileFailed"), zap.Error(err))
		}
	}
}

// LastReport is the report of the last reconcile.
func (a *Agent) LastReport() Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Reconcile runs one pass: inputs → plan → data plane → BGP → GARP → status.
func (a *Agent) Reconcile(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Now()
	err := a.reconcileLocked(ctx)
	a.metrics.observeReconcile(time.Since(start), err)
	return err
}

func (a *Agent) reconcileLocked(ctx context.Context) error {
	if a.draining {
		return nil
	}
	in, err := a.source.Inputs(ctx)
	if err != nil {
		// Fail static: without inputs nothing is changed.
		return fmt.Errorf("read inputs: %w", err)
	}
	in.NodeName, in.Role = a.opts.NodeName, a.opts.Role
	if a.opts.LocalVTEP.IsValid() {
		in.LocalVTEP = a.opts.LocalVTEP
	}
	if !in.LocalVTEP.IsValid() {
		// Without a VTEP no segment can be built; change nothing.
		return fmt.Errorf("no local VTEP for node %s: set --vtep, the node annotation %s or an InternalIP", a.opts.NodeName, "netbridge.io/vtep")
	}
	d, problems := Translate(in)
	if a.opts.Role == RoleGateway {
		// A standby must be able to take over: a missing uplink fails the
		// segment on every gateway, not only on the one attaching it.
		for i := range d.Segments {
			s := &d.Segments[i]
			if s.Error == "" && s.Uplink != "" && s.Phase != PhaseCompleted {
				if _, err := net.InterfaceByName(s.Uplink); err != nil {
					s.Error = fmt.Sprintf("segment %s: uplink %s: no such interface on node %s", s.Key, s.Uplink, a.opts.NodeName)
				}
			}
		}
	}

	if a.opts.Role == RoleGateway && a.election != nil {
		var keys []SegmentKey
		for _, s := range d.Segments {
			if s.Error == "" {
				keys = append(keys, s.Key)
			}
		}
		a.election.Sync(ctx, keys)
	}
	attached := map[SegmentKey]bool{}
	for _, s := range d.Segments {
		switch {
		case a.opts.Role != RoleGateway:
		case a.election == nil:
			attached[s.Key] = true
		case a.election.Leading(s.Key):
			attached[s.Key] = true
		case len(s.Candidates) <= 1 && a.attached[s.Key]:
			// No standby could take over: stay attached (fail static).
			attached[s.Key] = true
		}
	}
	view := View{Role: a.opts.Role, LocalVTEP: in.LocalVTEP, Attached: attached, Gate: a.gate.Verdicts()}
	if d.BGP != nil {
		for _, p := range d.BGP.Peers {
			if p.Address.Is6() {
				view.IPv6Peers = true
			}
		}
	}
	plan := BuildPlan(d, view)

	// Data plane first: a lost lease detaches before anything is
	// withdrawn, a won lease attaches before anything is advertised.
	res, dpErr := a.dp.Reconcile(ctx, plan.Segments)
	segErr := map[SegmentKey]string{}
	for k, msg := range plan.SegmentErrors {
		segErr[k] = msg
	}
	for _, s := range d.Segments {
		if e := res.Segments[s.VNI]; e != nil {
			segErr[s.Key] = e.Error()
		} else if _, ok := res.Segments[s.VNI]; !ok && s.Error == "" && dpErr != nil {
			segErr[s.Key] = dpErr.Error()
		}
	}

	// Probes for IPs not yet cleared, on each segment's VLAN side.
	want := map[netip.Addr]bool{}
	owners := map[netip.Addr]net.HardwareAddr{}
	for _, e := range d.Endpoints {
		if e.State != StateActive {
			continue
		}
		for _, ip := range e.IPs {
			want[ip] = true
			owners[ip] = e.MAC
		}
	}
	a.gate.Retain(want)
	segByKey := map[SegmentKey]Segment{}
	for _, s := range d.Segments {
		segByKey[s.Key] = s
	}
	for k, ips := range plan.Probes {
		if _, bad := segErr[k]; bad {
			continue
		}
		a.gate.Request(ctx, probeIface(segByKey[k]), ips, owners)
	}

	// BGP: never advertise a segment whose data plane is not programmed.
	var bgpErr error
	var advertisedNow map[netip.Prefix]bool
	if a.speaker != nil && plan.BGP != nil {
		blocked := map[netip.Prefix]bool{}
		for _, s := range d.Segments {
			if _, bad := segErr[s.Key]; bad {
				for _, e := range d.Endpoints {
					if e.Segment == s.Key {
						for _, ip := range e.IPs {
							blocked[netip.PrefixFrom(ip, ip.BitLen())] = true
						}
					}
				}
				for _, sub := range s.Subnets {
					blocked[sub] = true
				}
			}
		}
		routes := plan.BGP.Routes[:0:0]
		for _, r := range plan.BGP.Routes {
			if !blocked[r.Prefix] {
				routes = append(routes, r)
			}
		}
		plan.BGP.Routes = routes
		rep, err := a.speaker.Apply(ctx, *plan.BGP)
		if err != nil {
			bgpErr = fmt.Errorf("bgp apply: %w", err)
		}
		if rep.Changed() {
			a.log.Info("bgp applied", zap.Int("added", len(rep.RoutesAdded)), zap.Int("updated", len(rep.RoutesUpdated)),
				zap.Int("withdrawn", len(rep.RoutesWithdrawn)), zap.Int("peersAdded", len(rep.PeersAdded)),
				zap.Int("peersRemoved", len(rep.PeersRemoved)))
		}
		refused := map[netip.Prefix]bool{}
		for _, r := range rep.Refused {
			refused[r.Prefix] = true
		}
		advertisedNow = map[netip.Prefix]bool{}
		for _, r := range routes {
			if !refused[r.Prefix] && (bgpErr == nil || a.advertised[r.Prefix]) {
				advertisedNow[r.Prefix] = true
			}
		}
	}

	// GARP on the VLAN side for IPs newly active here (takeover: all).
	a.announce(d, plan, attached, segErr)
	for k := range a.attached {
		if !attached[k] {
			a.log.Info("segment detached", zap.String("event", "segmentDetached"), zap.String("segment", k.String()))
			a.metrics.LeaseTransition(k.String())
		}
	}
	for k := range attached {
		if !a.attached[k] {
			a.log.Info("segment attached", zap.String("event", "segmentAttached"), zap.String("segment", k.String()))
			a.metrics.LeaseTransition(k.String())
		}
	}
	a.attached = attached
	a.setFencePorts(d, attached, segErr)
	if advertisedNow != nil {
		a.advertised = advertisedNow
	}

	// Reachability of active VMs across the segment (background).
	if a.reach != nil {
		for _, s := range d.Segments {
			if _, bad := segErr[s.Key]; bad || a.opts.Role != RoleGateway {
				continue
			}
			var ips []netip.Addr
			for _, e := range d.Endpoints {
				if e.Segment == s.Key && e.State == StateActive {
					ips = append(ips, e.IPs...)
				}
			}
			a.reach.Request(ctx, vlan.VXLANName(s.VNI), ips, owners)
		}
	}

	report := a.buildReport(ctx, d, plan, attached, segErr, problems, res, dpErr, bgpErr)
	a.last = report
	a.metrics.observeReport(report)
	if a.sink != nil {
		if err := a.sink.Publish(ctx, report); err != nil {
			a.log.Warn("publish status", zap.Error(err))
		}
	}
	if dpErr != nil || bgpErr != nil {
		return fmt.Errorf("apply: data plane: %v; bgp: %v", dpErr, bgpErr)
	}
	return nil
}

// probeIface is the VLAN side of a segment on a gateway.
func probeIface(s Segment) string {
	if s.Access {
		return s.Uplink
	}
	return vlan.VLANName(s.VNI)
}

func (a *Agent) announce(d Desired, plan Plan, attached map[SegmentKey]bool, segErr map[SegmentKey]string) {
	if a.opts.Role != RoleGateway {
		return
	}
	for _, s := range d.Segments {
		if !attached[s.Key] || s.Phase == PhaseCompleted {
			continue
		}
		if _, bad := segErr[s.Key]; bad {
			continue
		}
		takeover := !a.attached[s.Key]
		type garp struct {
			ip  netip.Addr
			mac net.HardwareAddr
		}
		var todo []garp
		for _, e := range d.Endpoints {
			if e.Segment != s.Key || e.State != StateActive {
				continue
			}
			for _, pfx := range plan.Advertised[e.ID()] {
				if !pfx.Addr().Is4() {
					continue
				}
				if takeover || !a.advertised[pfx] {
					todo = append(todo, garp{pfx.Addr(), e.MAC})
				}
			}
		}
		if len(todo) == 0 {
			continue
		}
		iface := probeIface(s)
		port, err := vlan.OpenPort(iface)
		if err != nil {
			a.log.Warn("gratuitous ARP", zap.String("iface", iface), zap.Error(err))
			continue
		}
		for _, g := range todo {
			if err := port.GratuitousARP(g.ip, g.mac); err != nil {
				a.log.Warn("gratuitous ARP", zap.String("ip", g.ip.String()), zap.Error(err))
				continue
			}
			a.log.Info("endpoint activated", zap.String("event", "garpSent"), zap.String("segment", s.Key.String()),
				zap.String("ip", g.ip.String()), zap.String("mac", g.mac.String()), zap.Bool("takeover", takeover))
		}
		port.Close()
	}
}

// Drain is the planned shutdown of a gateway: graceful BGP shutdown
// (RFC 8326), then the leases are handed over and the VLANs detached.
func (a *Agent) Drain(ctx context.Context, wait time.Duration) error {
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
	var errs []error
	if a.speaker != nil {
		if err := a.speaker.GracefulShutdown(ctx, wait); err != nil {
			errs = append(errs, fmt.Errorf("bgp graceful shutdown: %w", err))
		}
	}
	if a.election != nil {
		// Detach before the lease is visible as free: never two attached.
		a.mu.Lock()
		detached := a.detachAllLocked(ctx)
		a.mu.Unlock()
		if detached != nil {
			errs = append(errs, detached)
		}
		a.election.Release(ctx)
	}
	if len(errs) > 0 {
		return fmt.Errorf("drain: %v", errs)
	}
	return nil
}

func (a *Agent) detachAllLocked(ctx context.Context) error {
	in, err := a.source.Inputs(ctx)
	if err != nil {
		return err
	}
	in.NodeName, in.Role = a.opts.NodeName, a.opts.Role
	if a.opts.LocalVTEP.IsValid() {
		in.LocalVTEP = a.opts.LocalVTEP
	}
	d, _ := Translate(in)
	plan := BuildPlan(d, View{Role: a.opts.Role, LocalVTEP: in.LocalVTEP, Attached: map[SegmentKey]bool{}, Gate: a.gate.Verdicts()})
	if _, err := a.dp.Reconcile(ctx, plan.Segments); err != nil {
		return fmt.Errorf("detach VLANs: %w", err)
	}
	a.attached = map[SegmentKey]bool{}
	a.setFencePorts(d, a.attached, nil)
	return nil
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Addr().Compare(out[j].Addr()); c != 0 {
			return c < 0
		}
		return out[i].Bits() < out[j].Bits()
	})
	return out
}
