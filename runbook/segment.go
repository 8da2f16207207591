package runbook

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Segment transition directions.
const (
	SegmentAdvance  = "advance"
	SegmentRollback = "rollback"
)

// Pending is a check that cannot be decided yet (a fresh sweep is awaited):
// `segment advance` waits for it, `segment plan` reports it.
const Pending = "pending"

// Segment preflight check names (stable: scripts and the e2e tests match on
// them).
const (
	CheckTransition     = "transition"
	CheckGatewaysPhase  = "gateways-in-phase"
	CheckAllSessions    = "bgp-established-everywhere"
	CheckNoRefused      = "no-refused-endpoint"
	CheckVMsVerified    = "vms-active-verified"
	CheckGatewayAddress = "gateway-address"
	CheckAggregate      = "aggregate-advertise"
	CheckLegacyEmpty    = "legacy-side-empty"
)

// SegmentPlan is what `segment plan` prints and `segment advance|rollback`
// checks before changing the phase: the transition, what it does, and the
// preflight checks.
type SegmentPlan struct {
	Segment   string            `json:"segment"`
	Phase     nbv1.SegmentPhase `json:"phase"`
	Direction string            `json:"direction"`
	Next      nbv1.SegmentPhase `json:"next,omitempty"`
	Gateway   string            `json:"gateway,omitempty"`
	Steps     []string          `json:"steps"`
	Checks    []Check           `json:"checks"`
	// Ready: no check failed or is pending.
	Ready bool `json:"ready"`
}

// Failed lists the failed checks.
func (p SegmentPlan) Failed() []Check { return checksWith(p.Checks, Fail) }

// Pending lists the checks still undecided.
func (p SegmentPlan) Pending() []Check { return checksWith(p.Checks, Pending) }

func checksWith(checks []Check, result string) []Check {
	var out []Check
	for _, c := range checks {
		if c.Result == result {
			out = append(out, c)
		}
	}
	return out
}

// NextPhase is where a segment goes from phase in a direction: Extended →
// Routed → Completed forward, the reverse back.
func NextPhase(phase nbv1.SegmentPhase, direction string) (nbv1.SegmentPhase, error) {
	if phase == "" {
		phase = nbv1.PhaseExtended
	}
	order := []nbv1.SegmentPhase{nbv1.PhaseExtended, nbv1.PhaseRouted, nbv1.PhaseCompleted}
	i := -1
	for j, p := range order {
		if p == phase {
			i = j
		}
	}
	if i < 0 {
		return "", fmt.Errorf("phase %q is not one of Extended, Routed, Completed", phase)
	}
	switch direction {
	case SegmentAdvance:
		if i == len(order)-1 {
			return "", fmt.Errorf("segment is already %s: nothing to advance to (roll back with `netbridgectl segment rollback`)", phase)
		}
		return order[i+1], nil
	case SegmentRollback:
		if i == 0 {
			return "", fmt.Errorf("segment is already %s: nothing to roll back to", phase)
		}
		return order[i-1], nil
	}
	return "", fmt.Errorf("direction %q: want %s or %s", direction, SegmentAdvance, SegmentRollback)
}

// BuildSegmentPlan evaluates the segment's next transition in direction.
// A legacy-side sweep counts only when it finished at or after sweptAfter
// (zero: any sweep); an older one makes that check Pending.
func BuildSegmentPlan(s *Snapshot, ref SegmentRef, direction string, sweptAfter time.Time) SegmentPlan {
	p := SegmentPlan{Segment: ref.String(), Direction: direction, Steps: []string{}, Checks: []Check{}}
	check := func(name, result, msg string) {
		p.Checks = append(p.Checks, Check{Name: name, Subject: p.Segment, Result: result, Message: msg})
	}
	base := segmentChecks(s, ref)
	p.Checks = append(p.Checks, base...)
	bc, seg, _ := s.Segment(ref)
	if seg == nil {
		p.Ready = false
		return p
	}
	p.Phase = segmentPhase(s, ref)
	next, err := NextPhase(p.Phase, direction)
	if err != nil {
		check(CheckTransition, Fail, err.Error())
		p.Ready = false
		return p
	}
	p.Next = next
	p.Gateway = s.ActiveGateway(ref)
	check(CheckTransition, Pass, fmt.Sprintf("%s → %s", p.Phase, next))
	// A transition starts from a settled phase: every gateway of the
	// segment has programmed the current one.
	p.Checks = append(p.Checks, gatewaysInPhase(s, ref, p.Phase))

	hosts := segmentHostPrefixes(s, ref)
	aggregate := bc.Spec.Advertise != nil && bc.Spec.Advertise.Aggregate
	gw := orNone(p.Gateway)
	switch {
	case p.Phase == nbv1.PhaseExtended && next == nbv1.PhaseRouted:
		p.Steps = append(p.Steps,
			fmt.Sprintf("keep bridging VLAN %d ⇄ VNI %d on %s", seg.VLANID, seg.VNI, gw),
			fmt.Sprintf("advertise the active VMs' host routes from %s (standbys prepended): %s", gw, list(hosts)))
		p.Checks = append(p.Checks, allSessions(s, ref), noRefused(s, ref))
	case p.Phase == nbv1.PhaseRouted && next == nbv1.PhaseCompleted:
		if aggregate {
			p.Steps = append(p.Steps, fmt.Sprintf("advertise the aggregate %s from %s", strings.Join(seg.Subnets, ","), gw),
				fmt.Sprintf("then withdraw the host routes %s (only once the aggregate is advertised)", list(hosts)))
		} else {
			p.Steps = append(p.Steps, fmt.Sprintf("withdraw the host routes %s (advertise.aggregate is off: no route replaces them)", list(hosts)))
		}
		p.Steps = append(p.Steps, fmt.Sprintf("release VLAN %d on %s (the bridge keeps VNI %d)", seg.VLANID, gw, seg.VNI),
			fmt.Sprintf("put the gateway address %s on the bridge on %s", dash(seg.GatewayAddress), gw))
		p.Checks = append(p.Checks, allSessions(s, ref), noRefused(s, ref), vmsVerified(s, ref))
		if seg.GatewayAddress == "" {
			check(CheckGatewayAddress, Fail, "spec.segments[].gatewayAddress is not set: Completed takes over the legacy gateway address, the VMs would lose their default gateway")
		} else {
			check(CheckGatewayAddress, Pass, seg.GatewayAddress+" moves to the bridge")
		}
		if aggregate {
			check(CheckAggregate, Pass, "advertise.aggregate is on: the subnets replace the host routes")
		} else {
			check(CheckAggregate, Warn, "advertise.aggregate is off: after Completed nothing is advertised for the segment; the routers need another route to it")
		}
		p.Checks = append(p.Checks, legacyEmpty(s, ref, sweptAfter))
	case p.Phase == nbv1.PhaseCompleted && next == nbv1.PhaseRouted:
		p.Steps = append(p.Steps,
			fmt.Sprintf("re-extend first: attach VLAN %d on %s again and remove %s from the bridge (bring the legacy router's gateway back afterwards)", seg.VLANID, gw, dash(seg.GatewayAddress)),
			fmt.Sprintf("advertise the host routes %s from %s", list(hosts), gw))
		if aggregate {
			p.Steps = append(p.Steps, fmt.Sprintf("withdraw the aggregate %s last", strings.Join(seg.Subnets, ",")))
		}
		p.Checks = append(p.Checks, allSessions(s, ref))
	case p.Phase == nbv1.PhaseRouted && next == nbv1.PhaseExtended:
		p.Steps = append(p.Steps,
			fmt.Sprintf("withdraw the host routes %s from every gateway", list(hosts)),
			fmt.Sprintf("keep bridging VLAN %d ⇄ VNI %d: traffic to the VMs returns over the legacy router", seg.VLANID, seg.VNI))
	}
	p.Ready = len(p.Failed()) == 0 && len(p.Pending()) == 0
	return p
}

// segmentGateways are the gateways of a segment: those the controller
// names and those that list it in their status as Active or Standby (node
// agents list it too, with role Node: they speak no BGP and program no
// phase).
func segmentGateways(s *Snapshot, ref SegmentRef) []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	add(s.ActiveGateway(ref))
	for _, n := range s.StandbyGateways(ref) {
		add(n)
	}
	for i := range s.Gateways {
		if gs := gatewaySegment(&s.Gateways[i], ref); gs != nil && nbv1.SegmentRole(gs.Role) != nbv1.SegmentRoleNode {
			add(s.Gateways[i].Name)
		}
	}
	return out
}

// gatewaysInPhase: every gateway of the segment reports it programmed for
// phase (a Pass says so, a Fail names who does not).
func gatewaysInPhase(s *Snapshot, ref SegmentRef, phase nbv1.SegmentPhase) Check {
	c := Check{Name: CheckGatewaysPhase, Subject: ref.String()}
	var ok, off []string
	for _, name := range segmentGateways(s, ref) {
		gw := s.Gateway(name)
		var gs *nbv1.GatewaySegmentStatus
		if gw != nil {
			gs = gatewaySegment(gw, ref)
		}
		switch {
		case gs == nil:
			off = append(off, name+" has not reported the segment")
		case !gs.Programmed || gs.Error != "":
			off = append(off, fmt.Sprintf("%s: not programmed (%s)", name, dash(gs.Error)))
		case nbv1.SegmentPhase(gs.Phase) != phase:
			off = append(off, fmt.Sprintf("%s programmed phase %s", name, dash(gs.Phase)))
		default:
			ok = append(ok, name)
		}
	}
	switch {
	case len(off) > 0:
		c.Result, c.Message = Fail, fmt.Sprintf("not every gateway has programmed phase %s: %s", phase, strings.Join(off, "; "))
	case len(ok) == 0:
		c.Result, c.Message = Fail, "no gateway reports the segment"
	default:
		c.Result, c.Message = Pass, fmt.Sprintf("phase %s programmed on %s", phase, strings.Join(ok, ", "))
	}
	return c
}

// allSessions: every BGP session of every gateway of the segment is
// Established (a transition that moves routes needs all routers told).
func allSessions(s *Snapshot, ref SegmentRef) Check {
	c := Check{Name: CheckAllSessions, Subject: ref.String()}
	var down, up []string
	for _, name := range segmentGateways(s, ref) {
		gw := s.Gateway(name)
		if gw == nil {
			down = append(down, name+" has not reported")
			continue
		}
		if len(gw.Status.Peers) == 0 {
			down = append(down, name+" has no BGP peers")
		}
		for _, peer := range gw.Status.Peers {
			if peer.State == PeerStateEstablished {
				up = append(up, fmt.Sprintf("%s→%s", name, peer.Address))
				continue
			}
			d := fmt.Sprintf("%s→%s %s", name, peer.Address, peer.State)
			if peer.LastError != "" {
				d += " (" + peer.LastError + ")"
			}
			down = append(down, d)
		}
	}
	if len(down) > 0 {
		c.Result, c.Message = Fail, "not Established: "+strings.Join(down, ", ")
	} else {
		c.Result, c.Message = Pass, "Established: "+strings.Join(up, ", ")
	}
	return c
}

// noRefused: no endpoint of the segment is refused by a gateway or the
// controller.
func noRefused(s *Snapshot, ref SegmentRef) Check {
	c := Check{Name: CheckNoRefused, Subject: ref.String()}
	var refused []string
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		if endpointSegment(ep) != ref {
			continue
		}
		for _, typ := range []string{nbv1.ConditionConflict, nbv1.ConditionRejected} {
			if cond, ok := conditionTrue(ep.Status.Conditions, typ); ok {
				refused = append(refused, ep.Namespace+"/"+ep.Name+": "+conditionText(typ, cond))
			}
		}
		for _, r := range s.Refusals(ep.Namespace, ep.Name) {
			refused = append(refused, fmt.Sprintf("%s/%s: %s (on %s)", ep.Namespace, ep.Name, r, r.Gateway))
		}
	}
	if len(refused) > 0 {
		c.Result, c.Message = Fail, strings.Join(refused, "; ")
	} else {
		c.Result, c.Message = Pass, "no endpoint of the segment is refused"
	}
	return c
}

// vmsVerified: every managed VM of the segment is Active and passes
// `verify` (route, FDB, ARP from the active gateway).
func vmsVerified(s *Snapshot, ref SegmentRef) Check {
	c := Check{Name: CheckVMsVerified, Subject: ref.String()}
	vms := s.VMsOfSegment(ref)
	targets := make([]Target, 0, len(vms))
	for i := range vms {
		targets = append(targets, Target{VM: &vms[i]})
	}
	rep := Verify(s, targets)
	var bad, good []string
	for _, row := range rep.Rows {
		if row.OK {
			good = append(good, row.VM)
		} else {
			bad = append(bad, row.VM+": "+strings.Join(row.Problems, ", "))
		}
	}
	switch {
	case len(bad) > 0:
		c.Result, c.Message = Fail, strings.Join(bad, "; ")
	case len(good) == 0:
		c.Result, c.Message = Pass, "no managed VM on the segment"
	default:
		c.Result, c.Message = Pass, "Active and verified: "+strings.Join(uniq(good), ", ")
	}
	return c
}

// legacyEmpty reads the active gateway's last sweep of the VLAN side:
// every address that answered and is not a migrated VM (IP and MAC of an
// Active endpoint) is named.
func legacyEmpty(s *Snapshot, ref SegmentRef, after time.Time) Check {
	c := Check{Name: CheckLegacyEmpty, Subject: ref.String()}
	name := s.ActiveGateway(ref)
	gw := s.Gateway(name)
	var gs *nbv1.GatewaySegmentStatus
	if gw != nil {
		gs = gatewaySegment(gw, ref)
	}
	// metav1.Time is serialised to the second: a sweep stamped in the
	// command's first second may have started before it, so only a later
	// second counts.
	after = after.Truncate(time.Second)
	switch {
	case gs == nil:
		c.Result, c.Message = Fail, fmt.Sprintf("active gateway %s does not report the segment", orNone(name))
		return c
	case gs.LegacySweep == nil:
		c.Result, c.Message = Pending, fmt.Sprintf("%s has not swept the VLAN side yet (a Routed segment is swept every reachability interval)", name)
		return c
	case !after.IsZero() && !gs.LegacySweep.At.Time.After(after):
		c.Result, c.Message = Pending, fmt.Sprintf("waiting for a sweep by %s newer than %s (last %s)", name,
			after.UTC().Format(time.TimeOnly), gs.LegacySweep.At.UTC().Format(time.TimeOnly))
		return c
	case gs.LegacySweep.Error != "":
		c.Result, c.Message = Fail, fmt.Sprintf("%s could not sweep the VLAN side: %s", name, gs.LegacySweep.Error)
		return c
	}
	vmMAC := map[string]string{}
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		if endpointSegment(ep) != ref || ep.Spec.State != nbv1.StateActive {
			continue
		}
		for _, ip := range ep.Spec.IPs {
			if a, err := HostPrefix(ip); err == nil {
				vmMAC[a.Addr().String()] = strings.ToLower(ep.Spec.MAC)
			}
		}
	}
	_, seg, _ := s.Segment(ref)
	gwAddr := ""
	if seg != nil {
		if p, err := netip.ParsePrefix(seg.GatewayAddress); err == nil {
			gwAddr = p.Addr().String()
		}
	}
	var legacy, vms []string
	for _, a := range gs.LegacySweep.Answered {
		if mac, ok := vmMAC[a.IP]; ok && mac != "" && mac == strings.ToLower(a.MAC) {
			vms = append(vms, a.IP)
			continue
		}
		d := fmt.Sprintf("%s answered by %s", a.IP, a.MAC)
		if a.IP == gwAddr {
			d += " (the legacy gateway address: shut the legacy router's interface first)"
		}
		legacy = append(legacy, d)
	}
	at := gs.LegacySweep.At.UTC().Format(time.TimeOnly)
	if len(legacy) > 0 {
		c.Result, c.Message = Fail, fmt.Sprintf("legacy side not empty (%s swept %d addresses at %s): %s", name, gs.LegacySweep.Addresses, at, strings.Join(legacy, ", "))
		return c
	}
	c.Result, c.Message = Pass, fmt.Sprintf("nobody but migrated VMs answered (%s swept %d addresses at %s)", name, gs.LegacySweep.Addresses, at)
	if len(vms) > 0 {
		c.Message += "; VMs: " + strings.Join(vms, ", ")
	}
	return c
}

// segmentHostPrefixes are the host routes of the segment's Active endpoints.
func segmentHostPrefixes(s *Snapshot, ref SegmentRef) []string {
	var out []string
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		if endpointSegment(ep) == ref && ep.Spec.State == nbv1.StateActive {
			p, _ := hostPrefixes(ep.Spec.IPs)
			out = append(out, p...)
		}
	}
	return uniq(out)
}

// EvaluateSegmentPhase says whether a segment has reached phase: every
// gateway has programmed it and the routes are those of the phase (the
// Active VMs' host routes in Routed only, the aggregate in Completed only
// when advertise.aggregate).
func EvaluateSegmentPhase(s *Snapshot, ref SegmentRef, phase nbv1.SegmentPhase) Progress {
	p := Progress{VM: ref.String()}
	if c := gatewaysInPhase(s, ref, phase); c.Result != Pass {
		p.Message = c.Message
		return p
	}
	bc, seg, _ := s.Segment(ref)
	if seg == nil {
		p.Failed, p.Message = true, "segment is gone"
		return p
	}
	active := s.ActiveGateway(ref)
	aggregate := bc.Spec.Advertise != nil && bc.Spec.Advertise.Aggregate
	hosts := segmentHostPrefixes(s, ref)
	var waiting, done []string
	// Host routes: advertised by the active gateway in Routed (those it
	// advertises at all: an IPv6 IP without IPv6 peers is not), gone from
	// every gateway otherwise.
	if phase == nbv1.PhaseRouted {
		gw := s.Gateway(active)
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			if endpointSegment(ep) != ref || ep.Spec.State != nbv1.StateActive {
				continue
			}
			if gep := gatewayEndpoint(gw, ep.Namespace, ep.Name); gep == nil || !gep.Advertised {
				waiting = append(waiting, fmt.Sprintf("%s/%s not yet advertised by %s", ep.Namespace, ep.Name, active))
			}
		}
		if len(waiting) == 0 {
			done = append(done, fmt.Sprintf("host routes %s advertised from %s", list(hosts), active))
		}
	} else if still := advertisedBy(s, hosts); len(still) > 0 {
		waiting = append(waiting, "host routes still advertised: "+strings.Join(still, "; "))
	} else if len(hosts) > 0 {
		done = append(done, "host routes "+strings.Join(hosts, ",")+" withdrawn")
	}
	subnets := normPrefixes(seg.Subnets)
	if phase == nbv1.PhaseCompleted && aggregate {
		set := advertisedSet(s.Gateway(active))
		var missing []string
		for _, sub := range subnets {
			if !set[sub] && (strings.Contains(sub, ".") || hasIPv6Peer(s.Gateway(active))) {
				missing = append(missing, sub)
			}
		}
		if len(missing) > 0 {
			waiting = append(waiting, fmt.Sprintf("aggregate %s not yet advertised by %s", strings.Join(missing, ","), active))
		} else {
			done = append(done, fmt.Sprintf("aggregate %s advertised from %s", strings.Join(seg.Subnets, ","), active))
		}
	} else if still := advertisedBy(s, subnets); len(still) > 0 {
		waiting = append(waiting, "aggregate still advertised: "+strings.Join(still, "; "))
	}
	if len(waiting) > 0 {
		p.Message = strings.Join(waiting, "; ")
		return p
	}
	p.Done = true
	p.Message = fmt.Sprintf("phase %s programmed on every gateway", phase)
	if len(done) > 0 {
		p.Message += "; " + strings.Join(done, "; ")
	}
	return p
}

// advertisedBy names the gateways that still advertise any of prefixes.
func advertisedBy(s *Snapshot, prefixes []string) []string {
	var out []string
	for i := range s.Gateways {
		set := advertisedSet(&s.Gateways[i])
		var on []string
		for _, p := range prefixes {
			if set[p] {
				on = append(on, p)
			}
		}
		if len(on) > 0 {
			out = append(out, fmt.Sprintf("%s by %s", strings.Join(on, ","), s.Gateways[i].Name))
		}
	}
	return out
}

func normPrefixes(in []string) []string {
	var out []string
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked().String())
		}
	}
	return out
}

func hasIPv6Peer(gw *nbv1.BridgeGateway) bool {
	if gw == nil {
		return false
	}
	for _, p := range gw.Status.Peers {
		if a, err := netip.ParseAddr(p.Address); err == nil && a.Is6() && !a.Is4In6() {
			return true
		}
	}
	return false
}
