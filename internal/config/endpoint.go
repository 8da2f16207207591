package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Endpoint is a validated BridgeEndpoint spec.
type Endpoint struct {
	Namespace, Name string
	Segment         nbv1.SegmentKey
	VMI, Interface  string
	// IPs in their one spelling (IPv4-mapped IPv6 is IPv4), no repeats.
	IPs []netip.Addr
	// MAC is nil until known.
	MAC      net.HardwareAddr
	NodeName string
	// VTEP is zero until the node has one.
	VTEP netip.Addr
	// State is defaulted to Staged.
	State nbv1.CutoverState
}

// ParseEndpoint validates a BridgeEndpoint spec (from the API server or the
// standalone file); errors name the field and the value. Whether the IPs
// fit the segment is CheckEndpoint's.
func ParseEndpoint(namespace, name string, spec nbv1.BridgeEndpointSpec) (Endpoint, field.ErrorList) {
	p := field.NewPath("spec")
	var errs field.ErrorList
	ep := Endpoint{Namespace: namespace, Name: name, Segment: nbv1.SegmentKey{BridgeConfig: spec.BridgeConfig, Segment: spec.Segment},
		VMI: spec.VMI, Interface: spec.Interface, NodeName: spec.NodeName, State: spec.State}
	if err := ep.Segment.Validate(); err != nil {
		errs = append(errs, field.Invalid(p.Child("segment"), ep.Segment.String(), err.Error()))
	}
	seen := map[netip.Addr]int{}
	for i, s := range spec.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("ips").Index(i), s, "not an IP address"))
			continue
		}
		a = a.Unmap()
		if j, dup := seen[a]; dup {
			errs = append(errs, field.Duplicate(p.Child("ips").Index(i), fmt.Sprintf("%s (the same address as ips[%d])", s, j)))
			continue
		}
		seen[a] = i
		ep.IPs = append(ep.IPs, a)
	}
	if spec.MAC != "" {
		mac, err := net.ParseMAC(spec.MAC)
		switch {
		case err != nil || len(mac) != 6:
			errs = append(errs, field.Invalid(p.Child("mac"), spec.MAC, "not a 48-bit MAC address"))
		case mac[0]&1 == 1:
			errs = append(errs, field.Invalid(p.Child("mac"), spec.MAC, "a multicast MAC cannot be a VM's"))
		case mac.String() == "00:00:00:00:00:00":
			errs = append(errs, field.Invalid(p.Child("mac"), spec.MAC, "the all-zero MAC is the flood entry's"))
		default:
			ep.MAC = mac
		}
	}
	if spec.VTEP != "" {
		v, err := netip.ParseAddr(spec.VTEP)
		v = v.Unmap()
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(p.Child("vtep"), spec.VTEP, "not an IP address"))
		// The same rule as nbv1.NodeVTEP, which wrote it.
		case v.IsUnspecified() || v.IsMulticast() || v.IsLoopback() || v == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			errs = append(errs, field.Invalid(p.Child("vtep"), spec.VTEP, "not a unicast address another node can reach"))
		default:
			ep.VTEP = v
		}
	}
	ep.State, errs = appendEnum(errs, spec.State, p.Child("state"), nbv1.StateStaged, nbv1.StateActive, nbv1.StateWithdrawn)
	return ep, errs
}

// Refusal is why one endpoint IP is never advertised.
type Refusal struct {
	IP     string
	Reason nbv1.RefusalReason
	// Message names the rule and the values it compared.
	Message string
}

func (r Refusal) Error() string { return r.Message }

// CheckEndpoint checks every IP of an endpoint against its segment and
// returns the refusals, in the order of ips. An IP that parses is checked
// in its one spelling (IPv4-mapped IPv6 is the IPv4 address).
func CheckEndpoint(seg *Segment, ips []string) []Refusal {
	var out []Refusal
	for _, s := range ips {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			out = append(out, Refusal{IP: s, Reason: nbv1.ReasonInvalidAddress, Message: fmt.Sprintf("%q is not an IP address (segment %s)", s, seg.Key)})
			continue
		}
		if r := CheckEndpointIP(seg, a.Unmap()); r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// CheckEndpointIP refuses an IP outside the segment's subnets, a subnet's
// network address, an IPv4 subnet's broadcast address and the segment's
// gateway address: none of them can be one VM's, and advertising one as a
// /32 steals it from the legacy side.
func CheckEndpointIP(seg *Segment, a netip.Addr) *Refusal {
	refuse := func(reason nbv1.RefusalReason, format string, args ...any) *Refusal {
		return &Refusal{IP: a.String(), Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	if seg.GatewayAddress.IsValid() && seg.GatewayAddress.Addr() == a {
		return refuse(nbv1.ReasonGatewayAddress, "IP %s is the gateway address %s of segment %s", a, seg.GatewayAddress, seg.Key)
	}
	for _, sub := range seg.Subnets {
		if !sub.Contains(a) {
			continue
		}
		switch hostRule(sub, a) {
		case ruleNetwork:
			return refuse(nbv1.ReasonNetworkAddress, "IP %s is the network address of subnet %s of segment %s", a, sub, seg.Key)
		case ruleBroadcast:
			return refuse(nbv1.ReasonBroadcastAddress, "IP %s is the broadcast address of subnet %s of segment %s", a, sub, seg.Key)
		}
		return nil
	}
	subs := make([]string, len(seg.Subnets))
	for i, s := range seg.Subnets {
		subs[i] = s.String()
	}
	return refuse(nbv1.ReasonOutsideSubnet, "IP %s is outside the subnets %s of segment %s", a, strings.Join(subs, ","), seg.Key)
}

const (
	ruleNetwork   = "network address"
	ruleBroadcast = "broadcast address"
)

// hostRule says whether a (inside sub) is an address no host may take: the
// network address (all host bits 0; IPv6's subnet-router anycast) and the
// IPv4 broadcast address (all host bits 1). Point-to-point prefixes (/31,
// RFC 3021; /127, RFC 6164) and single addresses have neither.
func hostRule(sub netip.Prefix, a netip.Addr) string {
	hostBits := a.BitLen() - sub.Bits()
	if hostBits <= 1 {
		return ""
	}
	if a == sub.Masked().Addr() {
		return ruleNetwork
	}
	if a.Is4() && a == lastAddr(sub) {
		return ruleBroadcast
	}
	return ""
}

// lastAddr is the highest address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
