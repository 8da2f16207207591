package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/vlan"
)

// Options configure an Agent.
type Options struct {
	NodeName  string
	Role      Role
	LocalVTEP netip.Addr
	// Resync re-runs the reconcile with nothing changed (drift, retries).
	Resync time.Duration
	// HA enables the peer rule (docs/ha.md); needs Deps.Peers and an
	// Election that is a LeaseControl.
	HA HAOptions
	// Loop tunes the reaction to a second bridge (needs Deps.LoopProbe).
	Loop LoopOptions
}

// Deps are the agent's collaborators. Speaker, Election, Fence, Reach,
// Announcer and Sink may be nil (node role, standalone mode).
type Deps struct {
	DataPlane DataPlane
	Links     Links
	Speaker   Speaker
	Source    Source
	Election  Leadership
	Fence     Fence
	// Egress guards local-egress segments (nil: local egress refused).
	Egress EgressGuard
	Gate   *Gate
	Reach  *Reachability
	// Sweep sweeps Routed segments' legacy side (nil: not swept).
	Sweep     *Sweeper
	Announcer Announcer
	Sink      StatusSink
	Metrics   *Metrics
	Trigger   *Trigger
	Log       *zap.Logger
	// Peers is the peer channel (nil: the Lease alone decides).
	Peers PeerChannel
	// LoopProbe, LoopInbox (its OnDetect) and Release enable the loop
	// probe on a gateway (loop.go); nil: no loop probe.
	LoopProbe LoopProber
	LoopInbox *LoopInbox
	Release   PortReleaser
}

// Trigger asks the agent for a reconcile soon. It exists before the agent
// so that everything built earlier (gate, informers, election) can hold it.
type Trigger struct{ ch chan struct{} }

// NewTrigger returns a trigger with one pending slot (requests coalesce).
func NewTrigger() *Trigger { return &Trigger{ch: make(chan struct{}, 1)} }

// Fire asks for a reconcile; never blocks.
func (t *Trigger) Fire() {
	select {
	case t.ch <- struct{}{}:
	default:
	}
}

// Agent is the reconcile loop of one host.
type Agent struct {
	opts  Options
	deps  Deps
	log   *zap.Logger
	steps []step

	fenceMu    sync.Mutex
	fencePorts map[SegmentKey]fencedPort
	fenceErr   bool
	// fenceUntil: when each alive element written last runs out (to see
	// the kernel cut a port because the agent came back too late).
	fenceUntil map[string]time.Time
	// haGuards are the guarded segments the fence refresh grants G to.
	haGuards map[SegmentKey]haGuard

	ha   *haRunner  // nil: HA off
	loop *loopGuard // nil: no loop probe
	// moves are VMs seen announcing themselves from another node.
	moves *moveHints
	// pub writes the reports while Run runs (nil: in the pass).
	pub *publisher

	mu         sync.Mutex // one reconcile at a time; guards what follows
	validCfgs  map[string]nbv1.BridgeConfig
	attached   map[SegmentKey]bool
	advertised map[netip.Prefix]bool
	last       Report
	notices    notices
	// bridged: the segments last logged attached (see logAttachments).
	bridged   map[SegmentKey]bool
	draining  bool
	apiOutage apiOutages
}

// NewAgent wires an agent.
func NewAgent(o Options, deps Deps) *Agent {
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	if deps.Trigger == nil {
		deps.Trigger = NewTrigger()
	}
	if deps.Log == nil {
		deps.Log = zap.NewNop()
	}
	a := &Agent{opts: o, deps: deps, log: deps.Log, moves: newMoveHints(deps.Trigger.Fire, deps.Log),
		attached: map[SegmentKey]bool{}, advertised: map[netip.Prefix]bool{}}
	if lc, ok := deps.Election.(LeaseControl); ok && o.HA.enabled() && deps.Peers != nil && o.Role == RoleGateway {
		a.ha = &haRunner{opt: o.HA.withDefaults(), self: o.NodeName, peers: deps.Peers, lease: lc,
			log: deps.Log, segs: map[SegmentKey]haSegment{}, trigger: deps.Trigger.Fire}
	}
	if deps.LoopProbe != nil && deps.LoopInbox != nil && o.Role == RoleGateway {
		a.loop = newLoopGuard(o.NodeName, o.Loop, deps.LoopProbe, deps.Release, deps.LoopInbox, deps.Log)
	}
	a.steps = []step{
		electionStep{role: o.Role, election: deps.Election, ha: a.ha, holdLoops: a.holdLoops},
		planStep{role: o.Role, gate: deps.Gate, moves: a.moves},
		dataPlaneStep{dp: deps.DataPlane, egress: deps.Egress},
		gateStep{gate: deps.Gate},
		bgpStep{speaker: deps.Speaker, log: deps.Log, trigger: deps.Trigger},
		announceStep{role: o.Role, announcer: deps.Announcer},
		fenceStep{a: a},
		loopStep{a: a},
		claimStep{ha: a.ha},
		reportStep{a: a},
	}
	return a
}

// VMSighted takes an announcement read from the underlay
// (vlan.MoveWatcher): a managed VM seen behind another node is sent there
// at once (moves.go). Never blocks.
func (a *Agent) VMSighted(s vlan.Sighting) { a.moves.sighted(s) }

// Trigger asks for a reconcile soon; calls coalesce. Never blocks.
func (a *Agent) Trigger() { a.deps.Trigger.Fire() }

// Adopt reads what a previous run activated, so a restart neither probes
// nor flaps those IPs.
func (a *Agent) Adopt() error {
	ips, err := a.deps.DataPlane.ActivatedIPs()
	if err != nil {
		return fmt.Errorf("adopt activated IPs: %w", err)
	}
	a.deps.Gate.Adopt(ips)
	if len(ips) > 0 {
		a.log.Info("adopted activated endpoint IPs", zap.String("event", "adopted"), zap.Int("count", len(ips)))
	}
	return nil
}

// Run reconciles on every trigger and every Resync until ctx ends, and
// refreshes the kernel fence on its own ticker.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(a.opts.Resync)
	defer t.Stop()
	if a.deps.Fence != nil {
		go a.refreshFence(ctx)
	}
	if a.loop != nil {
		go a.watchLoops(ctx.Done())
	}
	if a.deps.Sink != nil {
		pub := newPublisher(a.deps.Sink, a.log)
		go pub.run(ctx)
		a.mu.Lock()
		a.pub = pub
		a.mu.Unlock()
	}
	a.Trigger()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.deps.Trigger.ch:
		case <-t.C:
		}
		if err := a.Reconcile(ctx); err != nil {
			a.log.Error("reconcile", zap.String("event", "reconcileFailed"), zap.Error(err))
		}
	}
}

// refreshFence keeps the fence's alive elements fresh between passes: a
// reconcile may take longer than the fence's TTL.
func (a *Agent) refreshFence(ctx context.Context) {
	every := a.deps.Fence.TTL() / 4
	if a.ha != nil {
		// G moves with every ack: refresh every heartbeat.
		every = a.ha.opt.Heartbeat
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			a.keepAlive()
		}
	}
}

// LastReport is the report of the last reconcile.
func (a *Agent) LastReport() Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Reconcile runs one pass: the steps in order (steps.go).
func (a *Agent) Reconcile(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Now()
	err := a.reconcileLocked(ctx)
	a.deps.Metrics.observeReconcile(time.Since(start), err)
	return err
}

func (a *Agent) reconcileLocked(ctx context.Context) error {
	if a.draining {
		return nil
	}
	p, err := a.newPass(ctx)
	if err != nil {
		// Fail static: without inputs nothing is changed.
		return err
	}
	for _, s := range a.steps {
		if ce := a.log.Check(zap.DebugLevel, "step"); ce != nil {
			ce.Write(zap.String("step", s.name()))
		}
		s.run(ctx, p)
	}
	a.attached = p.attached
	if p.advertised != nil {
		a.advertised = p.advertised
	}
	return p.err()
}

// newPass reads the desired state: inputs, translation, and the host's
// own facts (which uplinks exist).
func (a *Agent) newPass(ctx context.Context) (*pass, error) {
	in, err := a.deps.Source.Inputs(ctx)
	if err != nil {
		return nil, fmt.Errorf("read inputs: %w", err)
	}
	in.NodeName, in.Role = a.opts.NodeName, a.opts.Role
	if a.opts.LocalVTEP.IsValid() {
		in.LocalVTEP = a.opts.LocalVTEP
	}
	if !in.LocalVTEP.IsValid() {
		// Without a VTEP no segment can be built; change nothing.
		return nil, fmt.Errorf("no local VTEP for node %s: set --vtep, the node annotation %s or an InternalIP",
			a.opts.NodeName, nbv1.AnnotationVTEP)
	}
	// A bad edit of a BridgeConfig that works keeps the version in force.
	var kept []string
	in.Configs, a.validCfgs, kept = keepLastValid(in.Configs, a.validCfgs)
	in.Problems = append(in.Problems, kept...)
	d, problems := translate(in)
	if a.opts.Role == RoleGateway && a.deps.Links != nil {
		missingUplinks(&d, a.opts.NodeName, a.deps.Links.Exists)
	}
	p := &pass{d: d, problems: problems, vtep: in.LocalVTEP, prevAttached: a.attached, prevAdv: a.advertised}
	if a.ha != nil {
		p.peerAddrs = peerAddrs(in, d, a.opts.NodeName, a.ha.opt.PeerPort)
	}
	return p, nil
}

// setFencePorts records the ports the fence must know (and, with HA, the
// segments granted by G) and refreshes it.
func (a *Agent) setFencePorts(ports map[SegmentKey]fencedPort, guards map[SegmentKey]haGuard) {
	if a.deps.Fence == nil {
		return
	}
	a.fenceMu.Lock()
	a.fencePorts = ports
	a.haGuards = guards
	a.fenceMu.Unlock()
	a.keepAlive()
}

// keepAlive refreshes the fence (fenceState says what it holds), so a dead
// or wedged agent's VLAN port stops bridging exactly when a live agent
// would have fenced itself.
func (a *Agent) keepAlive() {
	if a.deps.Fence == nil || a.deps.Election == nil {
		return
	}
	a.fenceMu.Lock()
	defer a.fenceMu.Unlock()
	validFor := a.deps.Election.ValidFor
	var fencedOff []SegmentKey
	if a.ha != nil {
		validFor = func(k SegmentKey) time.Duration {
			g, ok := a.haGuards[k]
			if !ok {
				return 0
			}
			left, higher := a.ha.grantLeft(k, g, a.Trigger)
			if higher && !slices.Contains(fencedOff, k) {
				fencedOff = append(fencedOff, k)
			}
			return left
		}
	}
	state := func() ([]string, map[string]time.Duration) {
		guarded, alive := fenceState(a.fencePorts, validFor)
		if a.loop != nil {
			// Ports cut for a second bridge: guarded, never alive.
			guarded, alive = a.loop.applyCuts(guarded, alive, time.Now())
		}
		return guarded, alive
	}
	start := time.Now()
	guarded, alive := state()
	err := a.deps.Fence.Guard(guarded, alive)
	if a.ha != nil && err == nil && time.Since(start) > a.ha.opt.Margin/2 {
		// nftables timeouts count from the insertion: a write delayed by
		// a stop would extend the grant by the stop. Write again at once.
		guarded, alive = state()
		err = a.deps.Fence.Guard(guarded, alive)
	}
	if err == nil {
		for port, late := range fenceLapses(a.fenceUntil, alive, start) {
			a.log.Warn("the fence element ran out before it was refreshed: the kernel stopped bridging the port meanwhile (agent starved or stopped)",
				zap.String("event", "fenceLapsed"), zap.String("port", port), zap.Duration("late", late))
		}
		a.fenceUntil = fenceDeadlines(alive, time.Now())
	}
	if a.ha != nil && err == nil {
		a.ha.yieldFenced(fencedOff)
	}
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

// Drain is the planned shutdown of a gateway: graceful BGP shutdown
// (RFC 8326), then the leases are handed over and the VLANs detached.
func (a *Agent) Drain(ctx context.Context, wait time.Duration) error {
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
	var errs []error
	if a.deps.Speaker != nil {
		if err := a.deps.Speaker.GracefulShutdown(ctx, wait); err != nil {
			errs = append(errs, fmt.Errorf("bgp graceful shutdown: %w", err))
		}
	}
	if a.deps.Election != nil {
		// Detach before the lease is visible as free: never two attached.
		a.mu.Lock()
		err := a.detachAllLocked(ctx)
		a.mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
		a.deps.Election.Release(ctx)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

func (a *Agent) detachAllLocked(ctx context.Context) error {
	p, err := a.newPass(ctx)
	if err != nil {
		return fmt.Errorf("detach VLANs: %w", err)
	}
	p.attached = map[SegmentKey]bool{}
	planStep{role: a.opts.Role, gate: a.deps.Gate, moves: a.moves}.run(ctx, p)
	if _, err := a.deps.DataPlane.Reconcile(ctx, p.plan.Segments); err != nil {
		return fmt.Errorf("detach VLANs: %w", err)
	}
	if a.deps.Announcer != nil {
		a.deps.Announcer.Set(Announcements{})
	}
	a.attached = p.attached
	a.setFencePorts(nil, nil)
	if a.ha != nil {
		a.ha.dropAll()
	}
	return nil
}
