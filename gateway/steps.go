package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/vlan"
)

// A reconcile pass runs these steps in order; each has one job and the
// same shape: read what earlier steps decided, plan with a pure function
// (decide.go), apply the minimum, record its outcome in the pass.
//
//	election → plan → data plane → activation gate → BGP → announcer → kernel fence → loop probe → peer claims → status report
//
// The order is the safety argument: a lost lease detaches the VLAN before
// anything is withdrawn, a won lease attaches before anything is
// advertised, and nothing is advertised for a segment the data plane could
// not program.
type step interface {
	name() string
	run(ctx context.Context, p *pass)
}

// pass is one reconcile's working state, filled in step by step.
type pass struct {
	d        Desired
	problems []string
	vtep     netip.Addr

	prevAttached map[SegmentKey]bool
	attached     map[SegmentKey]bool
	plan         hostPlan

	res    vlan.Result
	dpErr  error
	segErr map[SegmentKey]string
	// segWarn: programmed segments degraded by a runtime change (an MTU
	// that dropped under them); reported, never torn down.
	segWarn map[SegmentKey]string

	// peerAddrs are the peer channel's peers (HA only).
	peerAddrs map[string]netip.AddrPort
	// ha are the HA decisions of the guarded segments (HA only).
	ha map[SegmentKey]haDecision

	bgpErr error
	// advertised after this pass; nil when the host speaks no BGP.
	advertised map[netip.Prefix]bool
	prevAdv    map[netip.Prefix]bool
}

func (p *pass) err() error {
	if p.dpErr == nil && p.bgpErr == nil {
		return nil
	}
	var errs []error
	if p.dpErr != nil {
		errs = append(errs, fmt.Errorf("data plane: %w", p.dpErr))
	}
	if p.bgpErr != nil {
		errs = append(errs, p.bgpErr)
	}
	return fmt.Errorf("apply: %w", errors.Join(errs...))
}

// electionStep runs one election per programmable segment and decides
// which segments this host bridges.
type electionStep struct {
	role     Role
	election Leadership // nil: standalone, every segment attached
	ha       *haRunner  // nil: the Lease alone decides
	// holdLoops keeps segments yielded to a second bridge detached.
	holdLoops func(p *pass)
}

func (electionStep) name() string { return "election" }

func (s electionStep) run(ctx context.Context, p *pass) {
	leading := map[SegmentKey]bool{}
	if s.role == RoleGateway && s.election != nil {
		keys := electedSegments(p.d)
		if se, ok := s.election.(spreadElection); ok {
			se.SetCandidates(segmentCandidates(p.d))
		}
		s.election.Sync(ctx, keys)
		for _, k := range keys {
			leading[k] = s.election.Leading(k)
		}
	}
	p.attached = attachments(s.role, p.d, s.election != nil, leading, p.prevAttached)
	if s.ha != nil && s.election != nil {
		// Guarded segments: the state machine decides, and claims holding
		// before the data plane attaches.
		s.ha.elect(p)
	}
	if s.holdLoops != nil {
		s.holdLoops(p)
	}
}

// planStep computes the data-plane and BGP plan (pure).
type planStep struct {
	role  Role
	gate  *Gate
	moves *moveHints
}

func (planStep) name() string { return "plan" }

func (s planStep) run(_ context.Context, p *pass) {
	v := planView(p.d, s.role, p.vtep, p.attached, s.gate.Verdicts())
	v.Moved = s.moves.view()
	v.Advertised = p.prevAdv
	p.plan = buildPlan(p.d, v)
	s.moves.observe(p.d, p.plan)
}

// dataPlaneStep programs the kernel.
type dataPlaneStep struct {
	dp     DataPlane
	egress EgressGuard
}

func (dataPlaneStep) name() string { return "dataPlane" }

func (s dataPlaneStep) run(ctx context.Context, p *pass) {
	// The egress guard covers a gateway address before it is put on a
	// bridge and until it is gone: old and new rules before, new after.
	var applied []vlan.EgressRule
	if s.egress != nil {
		applied = s.egress.Rules()
	}
	if len(p.plan.Egress) > 0 || len(applied) > 0 {
		if err := s.guardEgress(append(slices.Clone(p.plan.Egress), applied...)); err != nil {
			p.problems = append(p.problems, err.Error())
			p.plan.Segments, p.plan.Egress = withoutEgress(p.plan.Segments, p.plan.Egress), nil
		}
	}
	p.res, p.dpErr = s.dp.Reconcile(ctx, p.plan.Segments)
	if s.egress != nil && p.dpErr == nil {
		if err := s.egress.Set(p.plan.Egress); err != nil {
			p.problems = append(p.problems, fmt.Sprintf("egress guard: %v", err))
		}
		// After the data plane: the VLAN ports exist, and the bridge holds
		// the VMs' neighbour and FDB entries it answers from.
		ports := make([]string, 0, len(p.plan.Egress))
		for _, r := range p.plan.Egress {
			ports = append(ports, r.Port)
		}
		if err := s.egress.SetProxy(ports); err != nil {
			p.problems = append(p.problems, fmt.Sprintf("egress guard: %v", err))
		}
	}
	p.segErr = segmentErrors(p.d, p.plan, p.res, p.dpErr)
	p.segWarn = segmentWarnings(p.d, p.res, p.segErr)
}

func (s dataPlaneStep) guardEgress(rules []vlan.EgressRule) error {
	if s.egress == nil {
		return fmt.Errorf("local egress refused: this agent has no egress guard (nftables bridge family)")
	}
	if err := s.egress.Set(rules); err != nil {
		return fmt.Errorf("local egress refused: %w", err)
	}
	return nil
}

// withoutEgress takes the gateway address off the bridges of local-egress
// segments: unguarded, the bridge would answer the legacy side.
func withoutEgress(segs []vlan.Segment, rules []vlan.EgressRule) []vlan.Segment {
	ports := map[string]bool{}
	for _, r := range rules {
		ports[r.Port] = true
	}
	out := make([]vlan.Segment, len(segs))
	for i, vs := range segs {
		if vs.Uplink != "" && ports[vs.VLANSide()] {
			vs.GatewayAddress = netip.Prefix{}
		}
		out[i] = vs
	}
	return out
}

// gateStep asks for the duplicate-address probes the plan needs; their
// verdicts are read by a later pass (the gate triggers it).
type gateStep struct{ gate *Gate }

func (gateStep) name() string { return "activationGate" }

func (s gateStep) run(ctx context.Context, p *pass) {
	want, owners := activeIPs(p.d)
	s.gate.Retain(want)
	for _, r := range probeRequests(p.d, p.plan, p.segErr) {
		s.gate.Request(ctx, r.Iface, r.IPs, owners)
	}
}

// bgpStep advertises what the data plane can forward.
type bgpStep struct {
	speaker Speaker // nil: no BGP on this host
	log     *zap.Logger
	trigger *Trigger // nil: no re-plan after a handover (tests)
}

func (bgpStep) name() string { return "bgp" }

func (s bgpStep) run(ctx context.Context, p *pass) {
	if s.speaker == nil || p.plan.BGP == nil {
		return
	}
	desired := *p.plan.BGP
	desired.Routes = allowedRoutes(p.d, desired.Routes, p.segErr)
	rep, err := s.speaker.Apply(ctx, desired)
	if err != nil {
		p.bgpErr = fmt.Errorf("bgp apply: %w", err)
	}
	if rep.Changed() {
		s.log.Info("bgp applied", zap.String("event", "bgpApplied"), zap.Int("added", len(rep.RoutesAdded)),
			zap.Int("updated", len(rep.RoutesUpdated)), zap.Int("withdrawn", len(rep.RoutesWithdrawn)),
			zap.Int("peersAdded", len(rep.PeersAdded)), zap.Int("peersRemoved", len(rep.PeersRemoved)))
	}
	p.advertised = advertisedAfter(desired.Routes, rep, err, p.prevAdv)
	if p.plan.Handover && err == nil && s.trigger != nil && !maps.Equal(p.advertised, p.prevAdv) {
		// The replacement routes went out in this pass: plan again to
		// withdraw what they replace, after the updates have left. (No
		// change, e.g. a segment in error: no re-plan loop.)
		time.AfterFunc(handoverDelay, s.trigger.Fire)
	}
}

// handoverDelay separates a phase change's new routes from the withdrawal
// of the routes they replace.
const handoverDelay = 200 * time.Millisecond

// announceStep hands the announcements to the announcer (desired state:
// it sends and repeats new ones itself, and forgets removed ones).
type announceStep struct {
	role      Role
	announcer Announcer // nil: nothing announced (node role)
}

func (announceStep) name() string { return "announcer" }

func (s announceStep) run(_ context.Context, p *pass) {
	if s.announcer == nil {
		return
	}
	s.announcer.Set(announcements(s.role, p.d, p.plan, p.attached, p.segErr))
}

// fenceStep tells the kernel fence which VLAN ports bridge, and for how
// long (see Agent.keepAlive).
type fenceStep struct{ a *Agent }

func (fenceStep) name() string { return "kernelFence" }

func (s fenceStep) run(_ context.Context, p *pass) {
	ports := fencedPorts(p.d, p.attached, p.segErr)
	var guards map[SegmentKey]haGuard
	if s.a.ha != nil {
		guards = s.a.ha.guards(p, ports)
	}
	s.a.setFencePorts(ports, guards)
}

// loopStep gives the loop probe this pass's segments: probes go out of
// the bridged ones, carrying the Lease facts the yield rule compares.
type loopStep struct{ a *Agent }

func (loopStep) name() string { return "loopProbe" }

func (s loopStep) run(_ context.Context, p *pass) {
	if s.a.loop == nil {
		return
	}
	s.a.loop.update(p.d, fencedPorts(p.d, p.attached, p.segErr), p.segErr, s.a.loopViews(p))
}

// claimStep tells the peers what this gateway holds once the data plane
// and the fence are done: a yielded segment is claimed !holding only
// after its VLAN is detached and its fence element gone.
type claimStep struct{ ha *haRunner }

func (claimStep) name() string { return "peerClaims" }

func (s claimStep) run(_ context.Context, p *pass) {
	if s.ha == nil {
		return
	}
	s.ha.publish(p, false)
}

// reportStep asks for reachability checks, logs role changes, and
// publishes the report (BridgeGateway status or log) and the metrics.
type reportStep struct{ a *Agent }

func (reportStep) name() string { return "statusReport" }

func (s reportStep) run(ctx context.Context, p *pass) {
	a := s.a
	for k := range p.prevAttached {
		if !p.attached[k] {
			a.deps.Metrics.LeaseTransition(k.String())
		}
	}
	for k := range p.attached {
		if !p.prevAttached[k] {
			a.deps.Metrics.LeaseTransition(k.String())
		}
	}
	a.logAttachments(p)
	if reach := a.deps.Reach; reach != nil {
		_, owners := activeIPs(p.d)
		for _, r := range reachRequests(p.d, a.opts.Role, p.segErr) {
			reach.Request(ctx, r.Iface, r.IPs, owners)
		}
	}
	if sw := a.deps.Sweep; sw != nil {
		keep := map[SegmentKey]bool{}
		for _, r := range sweepRequests(p.d, a.opts.Role, p.attached, p.segErr) {
			keep[r.Key] = true
			sw.Request(ctx, r)
		}
		sw.Retain(keep)
	}
	report := a.buildReport(ctx, p)
	a.last = report
	a.notices.log(a.log, report)
	a.deps.Metrics.observeReport(report)
	switch {
	case a.pub != nil:
		a.pub.offer(report)
	case a.deps.Sink != nil:
		// Not running (a pass called directly): write it in the pass.
		if err := a.deps.Sink.Publish(ctx, report); err != nil {
			a.log.Warn("publish status", zap.String("event", "statusPublishFailed"), zap.Error(err))
		}
	}
}

// spreadElection is an election that spreads the active roles over the
// healthy gateways (rule 9, docs/ha.md "Spread"): it needs every
// segment's candidates.
type spreadElection interface {
	SetCandidates(map[SegmentKey][]string)
}

// segmentCandidates are the candidates of the elected segments.
func segmentCandidates(d Desired) map[SegmentKey][]string {
	out := map[SegmentKey][]string{}
	for _, s := range d.Segments {
		if s.Error == "" {
			out[s.Key] = s.Candidates
		}
	}
	return out
}
