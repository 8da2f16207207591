// Package vlan is netbridge's data plane: per segment, the legacy VLAN on
// the uplink (an 802.1Q sub-interface, or an untagged access interface), a
// Linux bridge, and a VXLAN device carrying the segment's VNI to the nodes;
// static FDB and neighbour entries for the endpoints (migrated VMs); ARP
// probes and gratuitous announcements.
//
// It takes plain Go values and knows nothing of Kubernetes. The entry point
// is DataPlane.Reconcile: desired segments in, minimal netlink changes out.
// Everything it creates is named "nb-..." and carries an alias starting
// with "netbridge:"; it never changes a link it did not create (an access
// uplink is enslaved and released, never reconfigured) and never removes
// FDB or neighbour entries it did not add (learned entries stay).
package vlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Role says which side of the stretch a host plays for a segment.
type Role string

const (
	// RoleGateway: an edge node that bridges the legacy VLAN to the VNI.
	// VXLAN learning is off: VM MACs come from the API, as static entries.
	RoleGateway Role = "gateway"
	// RoleNode: a node hosting VMs on the segment. VXLAN learning is on so
	// that replies from legacy hosts teach the node that a legacy MAC sits
	// behind the active gateway.
	RoleNode Role = "node"
)

// Segment is the desired data plane of one legacy VLAN stretched to one VNI.
type Segment struct {
	// Name is used in logs and in the owned links' alias.
	Name string
	// VNI identifies the segment on this host: link names derive from it.
	VNI uint32
	// Role selects learning and whether a VLAN side may exist.
	Role Role
	// Uplink is the trunk (or access) interface of the legacy VLAN. Empty
	// means "VXLAN side only": a node, a standby gateway, or a gateway that
	// fenced itself. Only RoleGateway may set it.
	Uplink string
	// VLANID is the 802.1Q tag on the trunk (1-4094); ignored when Access.
	VLANID uint16
	// Access enslaves Uplink itself (untagged) instead of Uplink.VLANID.
	Access bool
	// MTU of the bridge, the VXLAN device and the VLAN sub-interface; 0
	// leaves the kernel default (1500). The device holding LocalVTEP must
	// carry MTU+50 (IPv4 underlay) or MTU+70 (IPv6).
	MTU int
	// LocalVTEP is this host's tunnel source address. Required.
	LocalVTEP netip.Addr
	// FloodVTEPs receive broadcast, unknown unicast and multicast
	// (head-end replication), one all-zeros FDB entry each.
	FloodVTEPs []netip.Addr
	// Endpoints are the VMs on the segment. An endpoint whose VTEP is
	// LocalVTEP is local: the bridge learns it from its port, no entry.
	Endpoints []Endpoint
	// HostRoutes installs a /32 (/128) per endpoint IP through the bridge,
	// so traffic routed to the gateway (Routed phase) reaches the VM.
	HostRoutes bool
	// GatewayAddress, when valid, is assigned to the bridge (Completed
	// phase: netbridge answers for the legacy default gateway).
	GatewayAddress netip.Prefix
}

// Endpoint is one VM interface on a segment.
type Endpoint struct {
	MAC net.HardwareAddr
	// IPs get a permanent neighbour entry (IP -> MAC) on the bridge.
	IPs []netip.Addr
	// VTEP is the node hosting the VM.
	VTEP netip.Addr
}

// Link names. Interface names are at most 15 bytes: "nb-vx-" plus the
// eight digits of the largest VNI is 14. Names derive from the VNI alone, so
// a restarted agent finds its links again without any saved state.
const (
	ownedPrefix  = "nb-"
	bridgePrefix = "nb-br-"
	vxlanPrefix  = "nb-vx-"
	vlanPrefix   = "nb-vl-"
	// aliasPrefix marks a link as ours: a same-named link without it was
	// made by someone else and is never touched.
	aliasPrefix = "netbridge:"
	// accessTag in a bridge alias records the foreign uplink we enslaved,
	// so that it is released later and other ports (KubeVirt taps) are not.
	accessTag = " access="
)

// BridgeName is the bridge of the segment with this VNI ("nb-br-VNI"); the
// gateway and KubeVirt attachments refer to it.
func BridgeName(vni uint32) string { return fmt.Sprintf("%s%d", bridgePrefix, vni) }

// VXLANName is the VXLAN device of the segment ("nb-vx-VNI").
func VXLANName(vni uint32) string { return fmt.Sprintf("%s%d", vxlanPrefix, vni) }

// VLANName is the 802.1Q sub-interface of the segment ("nb-vl-VNI"). It is
// named by VNI, not by uplink and tag, because "eth1.100" does not fit 15
// bytes for long uplink names and would not be recognisably ours.
func VLANName(vni uint32) string { return fmt.Sprintf("%s%d", vlanPrefix, vni) }

// VLANSide is the interface that carries the segment on the legacy side
// (the sub-interface, or the access uplink): where duplicate-address probes
// and gratuitous ARP go out. Empty when the segment has no VLAN side.
func (s Segment) VLANSide() string {
	switch {
	case s.Uplink == "":
		return ""
	case s.Access:
		return s.Uplink
	default:
		return VLANName(s.VNI)
	}
}

func alias(s Segment) string {
	a := aliasPrefix + s.Name
	if s.Uplink != "" && s.Access {
		a += accessTag + s.Uplink
	}
	return a
}

// DefaultVXLANPort is the IANA VXLAN port; set explicitly because the
// kernel's default is the pre-standard 8472.
const DefaultVXLANPort = 4789

// Validate reports what is wrong with a segment, naming the field.
func (s Segment) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.VNI < 1 || s.VNI > 1<<24-1 {
		add("vni %d: must be 1-16777215", s.VNI)
	}
	if s.Role != RoleGateway && s.Role != RoleNode {
		add("role %q: must be %q or %q", s.Role, RoleGateway, RoleNode)
	}
	if s.Uplink != "" {
		if s.Role != RoleGateway {
			add("uplink %q: only a gateway has a VLAN side", s.Uplink)
		}
		if len(s.Uplink) > 15 || strings.ContainsAny(s.Uplink, "/ ") {
			add("uplink %q: not an interface name", s.Uplink)
		}
		if strings.HasPrefix(s.Uplink, ownedPrefix) {
			add("uplink %q: names starting with %q are netbridge's own links", s.Uplink, ownedPrefix)
		}
		if !s.Access && (s.VLANID < 1 || s.VLANID > 4094) {
			add("vlanID %d: must be 1-4094 on a tagged trunk", s.VLANID)
		}
	}
	if s.MTU != 0 && (s.MTU < 1280 || s.MTU > 9000) {
		add("mtu %d: must be 1280-9000 (or 0 for the default)", s.MTU)
	}
	if !s.LocalVTEP.IsValid() {
		add("localVTEP: required")
	}
	for _, v := range s.FloodVTEPs {
		if !v.IsValid() || v.Is4() != s.LocalVTEP.Is4() {
			add("floodVTEPs %v: must be valid and of localVTEP's family", v)
		}
	}
	macs := map[string]int{}
	ips := map[netip.Addr]int{}
	for i, e := range s.Endpoints {
		if j, dup := macs[e.MAC.String()]; dup {
			add("endpoints[%d].mac %s: also endpoints[%d]'s", i, e.MAC, j)
		}
		macs[e.MAC.String()] = i
		for _, ip := range e.IPs {
			if j, dup := ips[ip]; dup && j != i {
				add("endpoints[%d].ips %s: also endpoints[%d]'s", i, ip, j)
			}
			ips[ip] = i
		}
		if len(e.MAC) != 6 || e.MAC[0]&1 == 1 || isZeroMAC(e.MAC) {
			add("endpoints[%d].mac %q: must be a unicast Ethernet MAC", i, e.MAC)
		}
		if !e.VTEP.IsValid() || e.VTEP.Is4() != s.LocalVTEP.Is4() {
			add("endpoints[%d].vtep %v: must be valid and of localVTEP's family", i, e.VTEP)
		}
		for _, ip := range e.IPs {
			if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
				add("endpoints[%d].ips %v: must be a unicast address", i, ip)
			}
		}
	}
	if s.GatewayAddress.IsValid() && s.GatewayAddress.Addr().IsLinkLocalUnicast() {
		add("gatewayAddress %v: link-local addresses are the kernel's", s.GatewayAddress)
	}
	if len(errs) > 0 {
		return fmt.Errorf("segment %q: %w", s.Name, errors.Join(errs...))
	}
	return nil
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

// validateSet checks what a single segment cannot: two segments claiming
// one VNI, one tag on one trunk, or an access uplink also used otherwise
// (each would bridge two segments together: an L2 loop or a leak).
func validateSet(segs []Segment) map[uint32]error {
	bad := map[uint32]error{}
	byVNI := map[uint32]string{}
	type trunkTag struct {
		uplink string
		vid    uint16
	}
	byTag := map[trunkTag]string{}
	trunkUser := map[string]string{}  // uplink -> a segment tagging it
	accessUser := map[string]string{} // uplink -> the segment enslaving it
	for _, s := range segs {
		if other, ok := byVNI[s.VNI]; ok {
			bad[s.VNI] = fmt.Errorf("segment %q: vni %d already used by segment %q", s.Name, s.VNI, other)
			continue
		}
		byVNI[s.VNI] = s.Name
		if s.Uplink == "" {
			continue
		}
		if s.Access {
			if other, ok := accessUser[s.Uplink]; ok {
				bad[s.VNI] = fmt.Errorf("segment %q: access uplink %s already used by segment %q", s.Name, s.Uplink, other)
				continue
			}
			accessUser[s.Uplink] = s.Name
			continue
		}
		k := trunkTag{s.Uplink, s.VLANID}
		if other, ok := byTag[k]; ok {
			bad[s.VNI] = fmt.Errorf("segment %q: vlan %d on %s already used by segment %q", s.Name, s.VLANID, s.Uplink, other)
			continue
		}
		byTag[k] = s.Name
		trunkUser[s.Uplink] = s.Name
	}
	for _, s := range segs {
		if _, done := bad[s.VNI]; done || s.Uplink == "" || !s.Access {
			continue
		}
		if other, ok := trunkUser[s.Uplink]; ok {
			bad[s.VNI] = fmt.Errorf("segment %q: access uplink %s is also a trunk for segment %q", s.Name, s.Uplink, other)
		}
	}
	return bad
}
