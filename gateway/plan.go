package gateway

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/internal/config"
	"github.com/netbridge-io/netbridge/vlan"
)

// probeVerdict is the activation gate's answer for one IP.
type probeVerdict int

const (
	// VerdictPending: not probed yet (or the probe port is not there).
	verdictPending probeVerdict = iota
	// VerdictClear: nobody else answered; the IP may be advertised.
	verdictClear
	// VerdictDuplicate: another MAC answered on the VLAN side.
	verdictDuplicate
)

// runtimeView is the agent's runtime knowledge that is not in Desired.
type runtimeView struct {
	Role      Role
	LocalVTEP netip.Addr
	// Attached: this gateway bridges the segment's VLAN (it leads, or it
	// is the only candidate and keeps the VLAN while the API is away).
	Attached map[SegmentKey]bool
	// Gate holds the probe verdict per IP.
	Gate map[netip.Addr]probeVerdict
	// IPv6Peers is true when some BGP peer is IPv6, so /128s can carry an
	// IPv6 next hop.
	IPv6Peers bool
	// Moved are VMs that announced themselves from another node than
	// their endpoint says (moves.go).
	Moved map[moveKey]netip.Addr
	// Advertised is what the speaker advertised after the last pass:
	// phase changes replace routes make-before-break against it.
	Advertised map[netip.Prefix]bool
}

// hostPlan is what the agent will ask of the data plane and the speaker.
type hostPlan struct {
	Segments []vlan.Segment
	// BGP is nil when the host speaks no BGP.
	BGP *bgp.Desired
	// Probes are the IPs to probe on each segment's VLAN side.
	Probes map[SegmentKey][]netip.Addr
	// Advertised maps each endpoint ID to the host routes it gets.
	Advertised map[string][]netip.Prefix
	// Refused are endpoint IPs never advertised, and why.
	Refused []refusal
	// Handover: routes kept only until their replacements are
	// advertised (a phase change between host routes and the aggregate);
	// the agent plans again soon after applying.
	Handover bool
	// SegmentErrors are segments refused before reaching the kernel.
	SegmentErrors map[SegmentKey]string
	// Unadvertised are cleared IPs of Active endpoints that get no host
	// route, and why (e.g. an IPv6 address with only IPv4 peers): not
	// refusals, the VM works on L2, but the user must be told.
	Unadvertised []refusal
	// Egress are the segments whose gateway address this host answers for
	// on the VXLAN side (local egress), guarded on their VLAN port.
	Egress []vlan.EgressRule
}

// Reasons an IP is programmed but not advertised.
const (
	reasonNoIPv6Peer    = "NoIPv6Peer"
	reasonPhaseExtended = "PhaseExtended"
)

// refusal is one endpoint IP the gateway will not advertise.
type refusal struct {
	Endpoint string
	IP       netip.Addr
	Reason   string
	Message  string
}

// buildPlan computes the desired data plane and BGP state. Pure.
func buildPlan(d Desired, v runtimeView) hostPlan {
	p := hostPlan{Probes: map[SegmentKey][]netip.Addr{}, Advertised: map[string][]netip.Prefix{}, SegmentErrors: map[SegmentKey]string{}}
	bySeg := map[SegmentKey][]Endpoint{}
	for _, e := range d.Endpoints {
		bySeg[e.Segment] = append(bySeg[e.Segment], e)
	}
	var allowed []netip.Prefix
	var routes []bgp.Route
	for _, s := range d.Segments {
		if s.Error != "" {
			p.SegmentErrors[s.Key] = s.Error
			continue
		}
		allowed = append(allowed, s.Subnets...)
		var vs vlan.Segment
		if v.Role == RoleNode {
			vs = planNodeSegment(s, bySeg[s.Key], v)
		} else {
			var rs []bgp.Route
			vs, rs = p.planGatewaySegment(d, s, bySeg[s.Key], v)
			routes = append(routes, rs...)
		}
		p.Segments = append(p.Segments, vs)
	}
	if v.Role == RoleGateway && d.BGP != nil {
		p.BGP = d.speakerDesired(allowed, routes)
	}
	for k := range p.Probes {
		slices.SortFunc(p.Probes[k], func(a, b netip.Addr) int { return a.Compare(b) })
	}
	return p
}

// planNodeSegment: a VM node floods to the active gateway and to the other
// nodes with VMs on the segment, and knows every VM's MAC.
func planNodeSegment(s Segment, eps []Endpoint, v runtimeView) vlan.Segment {
	vs := vlan.Segment{Name: s.Key.String(), VNI: s.VNI, MTU: s.MTU, LocalVTEP: v.LocalVTEP, Role: vlan.RoleNode}
	flood := map[netip.Addr]bool{}
	if s.ActiveGatewayVTEP.IsValid() && s.ActiveGatewayVTEP != v.LocalVTEP {
		flood[s.ActiveGatewayVTEP] = true
	}
	for _, e := range eps {
		if e.State == StateWithdrawn || e.MAC == nil || !e.VTEP.IsValid() {
			continue
		}
		vtep := movedVTEP(v, s.VNI, e)
		if vtep != v.LocalVTEP {
			flood[vtep] = true
		}
		vs.Endpoints = append(vs.Endpoints, vlan.Endpoint{MAC: e.MAC, IPs: inSubnets(e.IPs, s.Subnets), VTEP: vtep})
	}
	vs.FloodVTEPs = sortedAddrs(flood)
	return vs
}

// planGatewaySegment: the VLAN side only when attached (and not Completed),
// the Active VMs whose IPs passed the gate, and their routes (prepended on
// a standby). Refusals and probes are recorded in p.
func (p *hostPlan) planGatewaySegment(d Desired, s Segment, eps []Endpoint, v runtimeView) (vlan.Segment, []bgp.Route) {
	vs := vlan.Segment{Name: s.Key.String(), VNI: s.VNI, MTU: s.MTU, LocalVTEP: v.LocalVTEP, Role: vlan.RoleGateway, HostRoutes: true}
	attached := v.Attached[s.Key]
	// Completed: the VLAN is released; the bridge answers for the legacy
	// gateway address instead.
	if attached && s.Phase != PhaseCompleted {
		vs.Uplink, vs.VLANID, vs.Access = s.Uplink, s.VLANID, s.Access
	}
	if attached && s.Phase == PhaseCompleted {
		vs.GatewayAddress = s.GatewayAddress
	}
	// Local egress: the bridging gateway alone (a standby must not answer)
	// holds the gateway address while the VLAN is still bridged; the
	// egress guard keeps it off the VLAN side.
	if localEgress(s, attached) {
		vs.GatewayAddress = s.GatewayAddress
		p.Egress = append(p.Egress, vlan.EgressRule{Port: vs.VLANSide(), Gateway: s.GatewayAddress.Addr()})
	}
	prepend := uint8(0)
	if !attached {
		prepend = d.bgpPrepend()
	}
	var routes []bgp.Route
	// The aggregate replaces the host routes in Completed and is replaced
	// by them in Routed, make-before-break: Completed keeps the host
	// routes until the speaker advertises the aggregate; Routed keeps an
	// advertised aggregate until every host route is advertised. (BGP
	// updates on one session arrive in order, so the router has the
	// replacement in its table before the withdrawal.)
	aggregates := d.aggregates(s, v)
	hostRoutes := s.Phase == PhaseRouted
	if s.Phase == PhaseCompleted && len(aggregates) > 0 && !v.allAdvertised(aggregates) {
		hostRoutes, p.Handover = true, true
	}
	var hostPfx []netip.Prefix
	flood := map[netip.Addr]bool{}
	for _, e := range eps {
		if e.State != StateActive || e.MAC == nil || !e.VTEP.IsValid() {
			continue
		}
		vtep := movedVTEP(v, s.VNI, e)
		if vtep != v.LocalVTEP {
			flood[vtep] = true
		}
		cleared := p.gateIPs(s, e, v)
		// Only cleared IPs get neighbour entries and host routes, so the
		// kernel records what was activated: a restarted agent adopts
		// them without probing again.
		vs.Endpoints = append(vs.Endpoints, vlan.Endpoint{MAC: e.MAC, IPs: cleared, VTEP: vtep})
		// Host routes belong to the Routed phase: in Extended the legacy
		// router still routes the subnet, and drawing the VMs' traffic to
		// the gateway is the runbook's next, deliberate step.
		if d.BGP != nil && d.BGP.HostRoutes && s.Phase == PhaseExtended {
			for _, ip := range cleared {
				p.Unadvertised = append(p.Unadvertised, refusal{Endpoint: e.ID(), IP: ip, Reason: reasonPhaseExtended,
					Message: fmt.Sprintf("%s is bridged, not advertised: segment %s is in phase Extended, host routes are advertised from phase Routed on", ip, s.Key)})
			}
		}
		if d.BGP != nil && d.BGP.HostRoutes && hostRoutes {
			for _, ip := range cleared {
				if ip.Is6() && !v.IPv6Peers {
					p.Unadvertised = append(p.Unadvertised, refusal{Endpoint: e.ID(), IP: ip, Reason: reasonNoIPv6Peer,
						Message: fmt.Sprintf("%s is not advertised: every BGP peer is IPv4 and a /128 needs an IPv6 next hop; add an IPv6 peer (bgp.peers) to advertise it", ip)})
					continue
				}
				pfx := netip.PrefixFrom(ip, ip.BitLen())
				routes = append(routes, d.route(s, pfx, false, prepend))
				p.Advertised[e.ID()] = append(p.Advertised[e.ID()], pfx)
				hostPfx = append(hostPfx, pfx)
			}
		}
	}
	keepAggregate := s.Phase == PhaseRouted && v.anyAdvertised(aggregates) && !v.allAdvertised(hostPfx)
	if keepAggregate {
		p.Handover = true
	}
	if s.Phase == PhaseCompleted || keepAggregate {
		for _, sub := range aggregates {
			routes = append(routes, d.route(s, sub, true, prepend))
		}
	}
	vs.FloodVTEPs = sortedAddrs(flood)
	return vs, routes
}

// localEgress: the segment's gateway address is answered for by this host
// on the VXLAN side — an attached (bridging) gateway of a Routed segment
// with egress Local and an IPv4 gateway address.
func localEgress(s Segment, attached bool) bool {
	return attached && s.Phase == PhaseRouted && s.LocalEgress && s.GatewayAddress.IsValid() && s.GatewayAddress.Addr().Is4()
}

// gateIPs returns the endpoint's IPs that may be activated: those the
// address rules accept and the duplicate-address probe cleared. The others
// are refused or probed (recorded in p).
func (p *hostPlan) gateIPs(s Segment, e Endpoint, v runtimeView) []netip.Addr {
	rules := config.Segment{Key: s.Key, Subnets: s.Subnets, GatewayAddress: s.GatewayAddress}
	var cleared []netip.Addr
	for _, ip := range e.IPs {
		// The one rule set (internal/config): outside the subnets, a
		// network or broadcast address, the segment's gateway address.
		if r := config.CheckEndpointIP(&rules, ip); r != nil {
			p.Refused = append(p.Refused, refusal{Endpoint: e.ID(), IP: ip, Reason: string(r.Reason), Message: r.Message})
			continue
		}
		// IPv4 and IPv6 alike: a /128 whose source VM still answers is
		// the same split brain as a /32.
		switch {
		case v.Gate[ip] == verdictClear:
			cleared = append(cleared, ip)
		case v.Gate[ip] == verdictDuplicate:
			p.Refused = append(p.Refused, refusal{Endpoint: e.ID(), IP: ip, Reason: string(nbv1.ReasonDuplicateAddress)})
			p.Probes[s.Key] = append(p.Probes[s.Key], ip)
		default:
			p.Probes[s.Key] = append(p.Probes[s.Key], ip)
		}
	}
	return cleared
}

// speakerDesired is the speaker's desired state: outbound sessions only
// (never listening on 179), the export guard's allowed prefixes, routes.
func (d Desired) speakerDesired(allowed []netip.Prefix, routes []bgp.Route) *bgp.Desired {
	out := &bgp.Desired{
		Global:          bgp.Global{ASN: d.BGP.LocalASN, RouterID: d.BGP.RouterID, ListenPort: -1},
		AllowedPrefixes: allowed,
		Routes:          routes,
	}
	for _, peer := range d.BGP.Peers {
		out.Peers = append(out.Peers, bgp.Peer{Address: peer.Address, ASN: peer.ASN, Port: peer.Port,
			Password: peer.Password, Description: peer.Description, HoldTime: peer.HoldTime, Keepalive: peer.Keepalive,
			EBGPMultihopTTL: peer.EBGPMultihop, GracefulRestart: peer.GracefulRestart, RestartTime: peer.RestartTime,
			BFD: peer.BFD})
	}
	return out
}

func (d Desired) bgpPrepend() uint8 {
	if d.BGP == nil {
		return 0
	}
	return d.BGP.StandbyPrepend
}

func (d Desired) route(s Segment, pfx netip.Prefix, aggregate bool, prepend uint8) bgp.Route {
	return bgp.Route{Prefix: pfx, Aggregate: aggregate, ASPathPrepend: prepend, MED: d.BGP.MED,
		Communities:      append(slices.Clone(d.BGP.Communities), s.Communities...),
		LargeCommunities: slices.Clone(d.BGP.LargeCommunities)}
}

func inAny(ip netip.Addr, subnets []netip.Prefix) bool {
	for _, s := range subnets {
		if s.Contains(ip) {
			return true
		}
	}
	return false
}

func inSubnets(ips []netip.Addr, subnets []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if inAny(ip, subnets) {
			out = append(out, ip)
		}
	}
	return out
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// aggregates are the segment subnets advertised in Completed (with
// advertise.aggregate; an IPv6 subnet needs an IPv6 peer).
func (d Desired) aggregates(s Segment, v runtimeView) []netip.Prefix {
	if d.BGP == nil || !d.BGP.Aggregate {
		return nil
	}
	var out []netip.Prefix
	for _, sub := range s.Subnets {
		if sub.Addr().Is6() && !v.IPv6Peers {
			continue
		}
		out = append(out, sub)
	}
	return out
}

func (v runtimeView) allAdvertised(ps []netip.Prefix) bool {
	for _, p := range ps {
		if !v.Advertised[p] {
			return false
		}
	}
	return true
}

func (v runtimeView) anyAdvertised(ps []netip.Prefix) bool {
	for _, p := range ps {
		if v.Advertised[p] {
			return true
		}
	}
	return false
}
