package gateway

import (
	"net"
	"net/netip"
	"sort"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/vlan"
)

// The decisions of a reconcile pass, as pure functions of (desired state,
// plan, data-plane result, election view). The steps call them and only
// then touch a socket or the kernel; the table tests call them directly.

// missingUplinks refuses, on a gateway, every segment whose uplink does
// not exist here: a standby must be able to take over, so a missing uplink
// fails the segment on every gateway, not only on the one attaching it.
func missingUplinks(d *Desired, node string, exists func(string) bool) {
	for i := range d.Segments {
		s := &d.Segments[i]
		if s.Error == "" && s.Uplink != "" && s.Phase != PhaseCompleted && !exists(s.Uplink) {
			s.Error = "segment " + s.Key.String() + ": uplink " + s.Uplink + ": no such interface on node " + node
		}
	}
}

// electedSegments are the segments this gateway runs an election for.
func electedSegments(d Desired) []SegmentKey {
	var keys []SegmentKey
	for _, s := range d.Segments {
		if s.Error == "" {
			keys = append(keys, s.Key)
		}
	}
	return keys
}

// attachments decides which segments this host bridges: every segment in
// standalone mode (no election), the led ones otherwise, and a segment
// without a standby candidate stays attached when its lease is lost (fail
// static: there is nobody to loop with).
func attachments(role Role, d Desired, elected bool, leading map[SegmentKey]bool, prev map[SegmentKey]bool) map[SegmentKey]bool {
	attached := map[SegmentKey]bool{}
	if role != RoleGateway {
		return attached
	}
	for _, s := range d.Segments {
		switch {
		case s.Error != "":
			// A refused segment is never bridged: reporting it attached
			// (standalone mode) told the user it worked.
		case !elected:
			attached[s.Key] = true
		case leading[s.Key]:
			attached[s.Key] = true
		case len(s.Candidates) <= 1 && prev[s.Key]:
			attached[s.Key] = true
		}
	}
	return attached
}

// planView is the runtime knowledge buildPlan needs beside Desired.
func planView(d Desired, role Role, vtep netip.Addr, attached map[SegmentKey]bool, gate map[netip.Addr]probeVerdict) runtimeView {
	v := runtimeView{Role: role, LocalVTEP: vtep, Attached: attached, Gate: gate}
	if d.BGP != nil {
		for _, p := range d.BGP.Peers {
			if p.Address.Is6() {
				v.IPv6Peers = true
			}
		}
	}
	return v
}

// segmentErrors merges the segments refused by the plan with those the
// data plane could not program. A segment missing from the result of a
// failed reconcile counts as failed too: nothing is known to be in place.
func segmentErrors(d Desired, plan hostPlan, res vlan.Result, dpErr error) map[SegmentKey]string {
	segErr := map[SegmentKey]string{}
	for k, msg := range plan.SegmentErrors {
		segErr[k] = msg
	}
	for _, s := range d.Segments {
		e, ok := res.Segments[s.VNI]
		switch {
		case e != nil:
			segErr[s.Key] = e.Error()
		case !ok && s.Error == "" && dpErr != nil:
			segErr[s.Key] = dpErr.Error()
		}
	}
	return segErr
}

// segmentWarnings are the data plane's warnings of programmed segments.
func segmentWarnings(d Desired, res vlan.Result, segErr map[SegmentKey]string) map[SegmentKey]string {
	out := map[SegmentKey]string{}
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; bad {
			continue
		}
		if w, ok := res.Warnings[s.VNI]; ok {
			out[s.Key] = w
		}
	}
	return out
}

// activeIPs are the IPs of Active endpoints and each IP's own MAC (its
// answer to a probe is no duplicate).
func activeIPs(d Desired) (map[netip.Addr]bool, map[netip.Addr]net.HardwareAddr) {
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
	return want, owners
}

// probeRequest is a set of IPs to probe on one interface.
type probeRequest struct {
	Iface string
	IPs   []netip.Addr
}

// probeRequests are the duplicate-address probes of the plan, on each
// programmed segment's VLAN side.
func probeRequests(d Desired, plan hostPlan, segErr map[SegmentKey]string) []probeRequest {
	var out []probeRequest
	for _, s := range d.Segments {
		ips := plan.Probes[s.Key]
		if _, bad := segErr[s.Key]; bad || len(ips) == 0 {
			continue
		}
		out = append(out, probeRequest{Iface: vlanSide(s), IPs: ips})
	}
	return out
}

// reachRequests are the reachability checks of Active VMs, across each
// programmed segment's VXLAN side (gateways only).
func reachRequests(d Desired, role Role, segErr map[SegmentKey]string) []probeRequest {
	if role != RoleGateway {
		return nil
	}
	var out []probeRequest
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; bad {
			continue
		}
		var ips []netip.Addr
		for _, e := range d.Endpoints {
			if e.Segment == s.Key && e.State == StateActive {
				ips = append(ips, e.IPs...)
			}
		}
		out = append(out, probeRequest{Iface: vlan.VXLANName(s.VNI), IPs: ips})
	}
	return out
}

// allowedRoutes drops the routes of segments whose data plane is not
// programmed: nothing is advertised that the kernel cannot forward.
func allowedRoutes(d Desired, routes []bgp.Route, segErr map[SegmentKey]string) []bgp.Route {
	blocked := map[netip.Prefix]bool{}
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; !bad {
			continue
		}
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
	out := routes[:0:0]
	for _, r := range routes {
		if !blocked[r.Prefix] {
			out = append(out, r)
		}
	}
	return out
}

// advertisedAfter is what the routers were sent after an Apply: the routes
// asked for minus those the export guard refused; when Apply failed, only
// those that were already out before.
func advertisedAfter(routes []bgp.Route, rep bgp.ApplyReport, applyErr error, before map[netip.Prefix]bool) map[netip.Prefix]bool {
	refused := map[netip.Prefix]bool{}
	for _, r := range rep.Refused {
		refused[r.Prefix] = true
	}
	now := map[netip.Prefix]bool{}
	for _, r := range routes {
		if !refused[r.Prefix] && (applyErr == nil || before[r.Prefix]) {
			now[r.Prefix] = true
		}
	}
	return now
}

// Announcements are what the active gateway keeps announcing on its
// attached segments (the announcer repeats new ones on a schedule).
type Announcements struct {
	// Addresses: per advertised Active VM address, out of the VLAN side,
	// a gratuitous ARP (IPv4) or an unsolicited Neighbor Advertisement
	// (IPv6), so legacy switches and hosts move the VM to this trunk port.
	Addresses []AddressAnnouncement
	// MACs: the legacy MACs learned on the VLAN port, announced (RARP)
	// into the VXLAN side, so the nodes relearn them behind this gateway.
	MACs []MACRefresh
}

// AddressAnnouncement is one VM address to announce (GARP or NA by family).
type AddressAnnouncement struct {
	Segment SegmentKey
	Iface   string
	IP      netip.Addr
	MAC     net.HardwareAddr
}

// MACRefresh is one attached segment's legacy-MAC refresh.
type MACRefresh struct {
	Segment SegmentKey
	// VLANPort is where the legacy MACs are learned; VXLANDevice is where
	// their announcements go out.
	VLANPort    string
	VXLANDevice string
}

// announcements lists what the gateway announces: for every attached,
// programmed segment that still bridges its VLAN (not Completed), the
// advertised host routes (/32 and /128) of its Active endpoints.
func announcements(role Role, d Desired, plan hostPlan, attached map[SegmentKey]bool, segErr map[SegmentKey]string) Announcements {
	var out Announcements
	if role != RoleGateway {
		return out
	}
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; bad || !attached[s.Key] {
			continue
		}
		if s.Phase == PhaseCompleted {
			// The gateway address moved onto the bridge: tell the VMs at
			// once (their ARP/ND entry still names the legacy router's MAC)
			// from the bridge itself, with its own MAC (MAC nil), into the
			// VXLAN side — the VLAN is released.
			if s.GatewayAddress.IsValid() {
				out.Addresses = append(out.Addresses, AddressAnnouncement{Segment: s.Key, Iface: nbv1.SegmentBridgeName(s.VNI), IP: s.GatewayAddress.Addr()})
			}
			continue
		}
		if egressGuarded(plan, s) {
			// Local egress: the VMs learn the gateway address at the
			// bridge's MAC, on activation and on takeover like a failover
			// (the egress guard keeps it off the VLAN side).
			out.Addresses = append(out.Addresses, AddressAnnouncement{Segment: s.Key, Iface: nbv1.SegmentBridgeName(s.VNI), IP: s.GatewayAddress.Addr()})
		}
		iface := vlanSide(s)
		for _, e := range d.Endpoints {
			if e.Segment != s.Key || e.State != StateActive {
				continue
			}
			for _, pfx := range plan.Advertised[e.ID()] {
				out.Addresses = append(out.Addresses, AddressAnnouncement{Segment: s.Key, Iface: iface, IP: pfx.Addr(), MAC: e.MAC})
			}
		}
		out.MACs = append(out.MACs, MACRefresh{Segment: s.Key, VLANPort: iface, VXLANDevice: vlan.VXLANName(s.VNI)})
	}
	return out
}

// fencedPort is the VLAN-side port of an attached segment.
type fencedPort struct {
	port string
	// alone: no standby candidate, so the port stays alive even when the
	// lease cannot be renewed (fail static).
	alone bool
}

// fencedPorts are the VLAN ports the kernel fence must know: those of the
// attached, programmed segments that bridge their VLAN.
func fencedPorts(d Desired, attached map[SegmentKey]bool, segErr map[SegmentKey]string) map[SegmentKey]fencedPort {
	ports := map[SegmentKey]fencedPort{}
	for _, s := range d.Segments {
		if _, bad := segErr[s.Key]; bad || !attached[s.Key] || s.Phase == PhaseCompleted {
			continue
		}
		ports[s.Key] = fencedPort{port: vlanSide(s), alone: len(s.Candidates) <= 1}
	}
	return ports
}

// fenceState is what the kernel fence is told: every port of a segment
// with a standby is guarded, and alive for as long as this gateway's lease
// stays valid without another renewal. A segment without a standby is not
// guarded: nobody can loop with it, and fail static keeps it bridging.
func fenceState(ports map[SegmentKey]fencedPort, validFor func(SegmentKey) time.Duration) ([]string, map[string]time.Duration) {
	var guarded []string
	alive := map[string]time.Duration{}
	for k, p := range ports {
		if p.alone {
			continue
		}
		guarded = append(guarded, p.port)
		if d := validFor(k); d > 0 {
			alive[p.port] = d
		}
	}
	sort.Strings(guarded)
	return guarded, alive
}

// fenceLapses: the ports to keep alive now whose last written element ran
// out before now (by how much): the kernel did not bridge them meanwhile.
func fenceLapses(until map[string]time.Time, alive map[string]time.Duration, now time.Time) map[string]time.Duration {
	out := map[string]time.Duration{}
	for port := range alive {
		if u, ok := until[port]; ok && now.After(u) {
			out[port] = now.Sub(u)
		}
	}
	return out
}

// fenceDeadlines: when the elements just written run out (their timeouts
// count from the insertion, at or before written).
func fenceDeadlines(alive map[string]time.Duration, written time.Time) map[string]time.Time {
	out := make(map[string]time.Time, len(alive))
	for port, d := range alive {
		out[port] = written.Add(d)
	}
	return out
}

// vlanSide is the VLAN side of a segment on a gateway: where probes and
// gratuitous ARP go out, and the port the kernel fence guards.
// egressGuarded: the plan (after the data plane step, which drops what it
// could not guard) answers for the segment's gateway address.
func egressGuarded(plan hostPlan, s Segment) bool {
	for _, r := range plan.Egress {
		if r.Port == vlanSide(s) && r.Gateway == s.GatewayAddress.Addr() {
			return true
		}
	}
	return false
}

func vlanSide(s Segment) string {
	return vlan.Segment{VNI: s.VNI, Uplink: s.Uplink, Access: s.Access}.VLANSide()
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
