package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Parse validates a BridgeConfig spec named name with the default limits.
// On any error the result is nil: a config is used whole or not at all.
func Parse(name string, spec nbv1.BridgeConfigSpec) (*BridgeConfig, field.ErrorList) {
	return ParseWithLimits(name, spec, DefaultLimits())
}

// ParseWithLimits is Parse with site bounds (zero fields take the defaults).
func ParseWithLimits(name string, spec nbv1.BridgeConfigSpec, lim Limits) (*BridgeConfig, field.ErrorList) {
	lim = lim.orDefault()
	root := field.NewPath("spec")
	var errs field.ErrorList
	out := &BridgeConfig{Name: name}

	out.GatewaySelector, errs = appendSelector(errs, &spec.GatewaySelector, root.Child("gatewaySelector"))
	var uerrs field.ErrorList
	out.Uplink, uerrs = parseUplink(spec.Uplink, root.Child("uplink"))
	errs = append(errs, uerrs...)

	segPath := root.Child("segments")
	if len(spec.Segments) == 0 {
		errs = append(errs, field.Required(segPath, "at least one segment"))
	}
	names := map[string]int{}
	vlans := map[int32]int{}
	vnis := map[int32]int{}
	type owned struct {
		p    netip.Prefix
		path *field.Path
	}
	var subnets []owned
	for i, s := range spec.Segments {
		p := segPath.Index(i)
		seg, serrs := ParseSegment(name, s, out.Uplink, lim, p)
		errs = append(errs, serrs...)
		if j, dup := names[s.Name]; dup {
			errs = append(errs, field.Duplicate(p.Child("name"), fmt.Sprintf("%s (also segments[%d])", s.Name, j)))
		}
		names[s.Name] = i
		if j, dup := vlans[s.VLANID]; dup {
			errs = append(errs, field.Duplicate(p.Child("vlanID"), fmt.Sprintf("%d (also segments[%d])", s.VLANID, j)))
		}
		vlans[s.VLANID] = i
		if j, dup := vnis[s.VNI]; dup {
			errs = append(errs, field.Duplicate(p.Child("vni"), fmt.Sprintf("%d (also segments[%d])", s.VNI, j)))
		}
		vnis[s.VNI] = i
		// Overlap across segments: one address would belong to two VLANs.
		for k, sp := range seg.Subnets {
			for _, o := range subnets {
				if o.p.Overlaps(sp) {
					errs = append(errs, field.Invalid(p.Child("subnets").Index(k), sp.String(),
						fmt.Sprintf("overlaps %s (%s)", o.p, o.path)))
				}
			}
		}
		for k, sp := range seg.Subnets {
			subnets = append(subnets, owned{sp, p.Child("subnets").Index(k)})
		}
		out.Segments = append(out.Segments, seg)
	}

	if spec.BGP != nil {
		b, berrs := parseBGP(*spec.BGP, root.Child("bgp"))
		errs = append(errs, berrs...)
		out.BGP = b
	}
	adv, aerrs := parseAdvertise(spec.Advertise, root.Child("advertise"))
	errs = append(errs, aerrs...)
	out.Advertise = adv
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// ParseSegment validates one segment of BridgeConfig bridgeConfig on its
// own (the checks across segments are Parse's). defaultUplink is the
// BridgeConfig's uplink, used when the segment has none.
func ParseSegment(bridgeConfig string, s nbv1.Segment, defaultUplink Uplink, lim Limits, p *field.Path) (Segment, field.ErrorList) {
	lim = lim.orDefault()
	var errs field.ErrorList
	seg := Segment{Key: nbv1.SegmentKey{BridgeConfig: bridgeConfig, Segment: s.Name}, Access: s.Access,
		AutoActivate: s.AutoActivate, Uplink: defaultUplink}
	if err := seg.Key.Validate(); err != nil {
		errs = append(errs, field.Invalid(p.Child("name"), s.Name, err.Error()))
	}
	switch {
	case (s.VLANID < 1 || s.VLANID > 4094) && s.Access:
		// Required on access segments too: it names the legacy VLAN the
		// port is in, so that two segments can never bridge one VLAN twice.
		errs = append(errs, field.Invalid(p.Child("vlanID"), s.VLANID, "must be between 1 and 4094: on an access segment (access: true) "+
			"no tag is sent, but vlanID names the legacy VLAN the access port belongs to on the switch; netbridge needs it to refuse "+
			"a second segment bridging the same VLAN (an L2 loop)"))
	case s.VLANID < 1 || s.VLANID > 4094:
		errs = append(errs, field.Invalid(p.Child("vlanID"), s.VLANID, "must be between 1 and 4094 (the 802.1Q tag on the trunk)"))
	}
	seg.VLANID = uint16(s.VLANID)
	if s.VNI < 1 || s.VNI > 1<<24-1 {
		errs = append(errs, field.Invalid(p.Child("vni"), s.VNI, "must be between 1 and 16777215"))
	}
	seg.VNI = uint32(s.VNI)
	if len(s.Subnets) == 0 {
		errs = append(errs, field.Required(p.Child("subnets"), "at least one subnet"))
	}
	for i, c := range s.Subnets {
		sp := p.Child("subnets").Index(i)
		pfx, err := parseSubnet(c, lim)
		if err != nil {
			errs = append(errs, field.Invalid(sp, c, err.Error()))
			continue
		}
		for j, o := range seg.Subnets {
			if o.Overlaps(pfx) {
				errs = append(errs, field.Invalid(sp, c, fmt.Sprintf("overlaps %s (subnets[%d])", o, j)))
			}
		}
		seg.Subnets = append(seg.Subnets, pfx)
	}
	if s.Uplink != nil {
		up, uerrs := parseUplink(*s.Uplink, p.Child("uplink"))
		errs = append(errs, uerrs...)
		seg.Uplink = up
	}
	if s.GatewayAddress != "" {
		gw, err := parseGatewayAddress(s.GatewayAddress, seg.Subnets)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("gatewayAddress"), s.GatewayAddress, err.Error()))
		}
		seg.GatewayAddress = gw
	}
	if s.MTU != 0 && (s.MTU < 1280 || s.MTU > 9000) {
		errs = append(errs, field.Invalid(p.Child("mtu"), s.MTU, "must be between 1280 and 9000"))
	}
	seg.MTU = int(s.MTU)
	seg.NamespaceSelector = labels.Everything()
	if s.NamespaceSelector != nil {
		seg.NamespaceSelector, errs = appendSelector(errs, s.NamespaceSelector, p.Child("namespaceSelector"))
	}
	for i, c := range s.Communities {
		v, err := parseCommunity(c)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("communities").Index(i), c, err.Error()))
		}
		seg.Communities = append(seg.Communities, v)
	}
	seg.Phase, errs = appendEnum(errs, s.Phase, p.Child("phase"), nbv1.PhaseExtended, nbv1.PhaseRouted, nbv1.PhaseCompleted)
	seg.Egress, errs = appendEnum(errs, s.Egress, p.Child("egress"), nbv1.EgressLegacy, nbv1.EgressLocal)
	if seg.Egress == nbv1.EgressLocal && (!seg.GatewayAddress.IsValid() || !seg.GatewayAddress.Addr().Is4()) {
		errs = append(errs, field.Invalid(p.Child("egress"), s.Egress, "egress Local needs an IPv4 segments[].gatewayAddress (the legacy default gateway the VMs use)"))
	}
	return seg, errs
}

// appendEnum defaults an empty value to the first allowed one (the CRD's
// default, which the standalone file does not get) and refuses the rest.
func appendEnum[T ~string](errs field.ErrorList, v T, p *field.Path, allowed ...T) (T, field.ErrorList) {
	if v == "" {
		return allowed[0], errs
	}
	for _, a := range allowed {
		if v == a {
			return v, errs
		}
	}
	return v, append(errs, field.NotSupported(p, v, allowed))
}

// appendSelector parses a label selector the way the API machinery does,
// naming the requirement that is wrong.
func appendSelector(errs field.ErrorList, s *metav1.LabelSelector, p *field.Path) (labels.Selector, field.ErrorList) {
	if verrs := metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, p); len(verrs) > 0 {
		return labels.Nothing(), append(errs, verrs...)
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return labels.Nothing(), append(errs, field.Invalid(p, s.String(), err.Error()))
	}
	return sel, errs
}

// parseUplink: exactly one way of naming the interface.
func parseUplink(u nbv1.UplinkSpec, p *field.Path) (Uplink, field.ErrorList) {
	var errs field.ErrorList
	var out Uplink
	switch {
	case u.Interface == "" && u.Address == "":
		errs = append(errs, field.Required(p, "set interface or address"))
	case u.Interface != "" && u.Address != "":
		errs = append(errs, field.Invalid(p.Child("address"), u.Address, "set interface or address, not both"))
	}
	if u.Interface != "" {
		if err := checkInterfaceName(u.Interface); err != nil {
			errs = append(errs, field.Invalid(p.Child("interface"), u.Interface, err.Error()))
		}
		out.Interface = u.Interface
	}
	if u.Address != "" {
		pfx, err := parsePrefix(u.Address)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("address"), u.Address, err.Error()))
		}
		out.Address = pfx
	}
	return out, errs
}

// checkInterfaceName refuses what Linux's dev_valid_name refuses: empty,
// longer than IFNAMSIZ-1 (15), "." or "..", or holding '/', ':' or
// whitespace.
func checkInterfaceName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("empty interface name")
	case len(n) > 15:
		return fmt.Errorf("%d characters, Linux interface names hold at most 15", len(n))
	case n == "." || n == "..":
		return fmt.Errorf("Linux refuses %q as an interface name", n)
	case strings.ContainsAny(n, "/: \t\n\v\f\r"):
		return fmt.Errorf("Linux interface names cannot hold '/', ':' or whitespace")
	}
	return nil
}

// parsePrefix parses a CIDR whose host bits are clear, in its one spelling.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR: %w", err)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("an IPv4-mapped IPv6 prefix is a second spelling of an IPv4 one: write it as IPv4")
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("host bits set: the subnet is %s", m)
	}
	return p, nil
}

// parseSubnet is a segment subnet: a masked prefix, neither a default route
// nor broader than the limits (the export guard trusts these).
func parseSubnet(s string, lim Limits) (netip.Prefix, error) {
	p, err := parsePrefix(s)
	if err != nil {
		return p, err
	}
	broadest := lim.BroadestIPv4
	if p.Addr().Is6() {
		broadest = lim.BroadestIPv6
	}
	switch {
	case p.Bits() == 0:
		return netip.Prefix{}, fmt.Errorf("a default route is never a segment")
	case p.Bits() < broadest:
		return netip.Prefix{}, fmt.Errorf("broader than /%d, the broadest segment subnet allowed", broadest)
	}
	return p, nil
}

// parseGatewayAddress: a host address inside one of the subnets, with that
// subnet's prefix length, that hosts can use (not its network or IPv4
// broadcast address).
func parseGatewayAddress(s string, subnets []netip.Prefix) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an address with prefix length: %w", err)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("an IPv4-mapped IPv6 address is a second spelling of an IPv4 one: write it as IPv4")
	}
	for _, sub := range subnets {
		if !sub.Contains(p.Addr()) {
			continue
		}
		if sub.Bits() != p.Bits() {
			return netip.Prefix{}, fmt.Errorf("prefix length /%d differs from its subnet %s", p.Bits(), sub)
		}
		if r := hostRule(sub, p.Addr()); r != "" {
			return netip.Prefix{}, fmt.Errorf("is the %s of %s", r, sub)
		}
		return p, nil
	}
	return netip.Prefix{}, fmt.Errorf("outside the segment's subnets %v", subnets)
}

// parseCommunity parses "ASN:value" (each 0-65535) as ASN<<16 | value.
func parseCommunity(s string) (Community, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("want ASN:value, e.g. 65000:100")
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("want ASN:value with both parts between 0 and 65535")
	}
	return Community(hi<<16 | lo), nil
}

// String is the "ASN:value" form.
func (c Community) String() string { return fmt.Sprintf("%d:%d", c>>16, c&0xffff) }

// parseLargeCommunity parses "global:local1:local2" (each 0-4294967295).
func parseLargeCommunity(s string) (LargeCommunity, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return LargeCommunity{}, fmt.Errorf("want global:local1:local2, e.g. 65000:1:2")
	}
	var v [3]uint32
	for i, part := range parts {
		n, err := strconv.ParseUint(part, 10, 32)
		if err != nil {
			return LargeCommunity{}, fmt.Errorf("want global:local1:local2 with each part between 0 and 4294967295")
		}
		v[i] = uint32(n)
	}
	return LargeCommunity{Global: v[0], Local1: v[1], Local2: v[2]}, nil
}

// String is the "global:local1:local2" form.
func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2) }

func parseBGP(b nbv1.BGPSpec, p *field.Path) (*BGP, field.ErrorList) {
	var errs field.ErrorList
	out := &BGP{}
	if b.LocalASN < 1 || b.LocalASN > math.MaxUint32 {
		errs = append(errs, field.Invalid(p.Child("localASN"), b.LocalASN, "must be between 1 and 4294967295"))
	}
	out.LocalASN = uint32(b.LocalASN)
	if b.RouterID != "" {
		a, err := parseRouterID(b.RouterID)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("routerID"), b.RouterID, err.Error()))
		}
		out.RouterID = a
	}
	if b.StandbyPrepend < 0 || b.StandbyPrepend > 10 {
		errs = append(errs, field.Invalid(p.Child("standbyPrepend"), b.StandbyPrepend, "must be between 0 and 10"))
	}
	out.StandbyPrepend = uint8(b.StandbyPrepend)
	seen := map[netip.Addr]int{}
	for i, peer := range b.Peers {
		pp := p.Child("peers").Index(i)
		pr, perrs := parsePeer(peer, pp)
		errs = append(errs, perrs...)
		if pr.Address.IsValid() {
			if j, dup := seen[pr.Address]; dup {
				errs = append(errs, field.Duplicate(pp.Child("address"), fmt.Sprintf("%s (the same router as peers[%d])", peer.Address, j)))
			}
			seen[pr.Address] = i
		}
		out.Peers = append(out.Peers, pr)
	}
	return out, errs
}

// parseRouterID: an IPv4 unicast address (RFC 6286 forbids 0; loopback,
// link-local, multicast and broadcast identify no router).
func parseRouterID(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("not an IP address")
	case !a.Is4():
		return netip.Addr{}, fmt.Errorf("a router ID is an IPv4 address")
	case !a.IsGlobalUnicast():
		return netip.Addr{}, fmt.Errorf("not a unicast address: a router ID cannot be unspecified, loopback, link-local, multicast or broadcast")
	}
	return a, nil
}

// parsePeerAddress: an address a router can have, in its one spelling.
func parsePeerAddress(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("not an IP address")
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("zoned (link-local) addresses are not supported")
	case a.Is4In6():
		return netip.Addr{}, fmt.Errorf("an IPv4-mapped IPv6 address is a second spelling of %s: write it as IPv4", a.Unmap())
	case !a.IsGlobalUnicast():
		return netip.Addr{}, fmt.Errorf("no router can have it: not unspecified, loopback, link-local, multicast or broadcast")
	}
	return a, nil
}

func parsePeer(b nbv1.BGPPeer, p *field.Path) (Peer, field.ErrorList) {
	var errs field.ErrorList
	out := Peer{PasswordSecretRef: b.PasswordSecretRef, Description: b.Description, Port: DefaultPort}
	a, err := parsePeerAddress(b.Address)
	if err != nil {
		errs = append(errs, field.Invalid(p.Child("address"), b.Address, err.Error()))
	}
	out.Address = a
	if b.ASN < 1 || b.ASN > math.MaxUint32 {
		errs = append(errs, field.Invalid(p.Child("asn"), b.ASN, "must be between 1 and 4294967295"))
	}
	out.ASN = uint32(b.ASN)
	switch {
	case b.Port == 0:
	case b.Port < 1 || b.Port > 65535:
		errs = append(errs, field.Invalid(p.Child("port"), b.Port, "must be between 1 and 65535"))
	default:
		out.Port = uint16(b.Port)
	}
	out.HoldTime = DefaultHoldTime
	if b.HoldTime != nil {
		h := *b.HoldTime
		if h != 0 && (h < 3 || h > 65535) {
			errs = append(errs, field.Invalid(p.Child("holdTime"), h, "must be 0 or between 3 and 65535 (RFC 4271)"))
		}
		out.HoldTime = time.Duration(h) * time.Second
	}
	out.Keepalive = out.HoldTime / 3
	if b.Keepalive != nil {
		k := time.Duration(*b.Keepalive) * time.Second
		switch {
		case out.HoldTime == 0 && k != 0:
			errs = append(errs, field.Invalid(p.Child("keepalive"), *b.Keepalive, "must be 0 when holdTime is 0"))
		case out.HoldTime != 0 && (k <= 0 || k >= out.HoldTime):
			errs = append(errs, field.Invalid(p.Child("keepalive"), *b.Keepalive, fmt.Sprintf("must be above 0 and below the hold time (%s)", out.HoldTime)))
		}
		out.Keepalive = k
	}
	if b.EBGPMultihop < 0 || b.EBGPMultihop > 255 {
		errs = append(errs, field.Invalid(p.Child("ebgpMultihop"), b.EBGPMultihop, "must be between 1 and 255 (0: directly connected)"))
	}
	out.EBGPMultihop = uint8(b.EBGPMultihop)
	if gr := b.GracefulRestart; gr != nil && gr.Enabled {
		out.GracefulRestart = true
		if gr.RestartTime != 0 && (gr.RestartTime < 1 || gr.RestartTime > 4095) {
			errs = append(errs, field.Invalid(p.Child("gracefulRestart", "restartTime"), gr.RestartTime, "must be between 1 and 4095 (RFC 4724's 12 bits)"))
		}
		out.RestartTime = time.Duration(gr.RestartTime) * time.Second
	}
	if b.BFD != nil && b.BFD.Enabled {
		bfd, berrs := parseBFD(*b.BFD, p.Child("bfd"))
		errs = append(errs, berrs...)
		if b.EBGPMultihop > 1 {
			errs = append(errs, field.Invalid(p.Child("bfd", "enabled"), true,
				fmt.Sprintf("BFD is single-hop only (RFC 5881): not with ebgpMultihop %d", b.EBGPMultihop)))
		}
		out.BFD = bfd
	}
	if b.NodeSelector != nil {
		out.NodeSelector, errs = appendSelector(errs, b.NodeSelector, p.Child("nodeSelector"))
	}
	if len(b.Description) > 80 {
		errs = append(errs, field.TooLong(p.Child("description"), b.Description, 80))
	}
	return out, errs
}

func parseBFD(b nbv1.BFD, p *field.Path) (*BFD, field.ErrorList) {
	var errs field.ErrorList
	interval := func(name string, ms int32) time.Duration {
		if ms == 0 {
			return DefaultBFDInterval
		}
		if ms < 10 || ms > 60000 {
			errs = append(errs, field.Invalid(p.Child(name), ms, "must be between 10 and 60000 (milliseconds)"))
		}
		return time.Duration(ms) * time.Millisecond
	}
	out := &BFD{MinReceive: interval("minReceiveMs", b.MinReceiveMs), MinTransmit: interval("minTransmitMs", b.MinTransmitMs),
		Multiplier: DefaultBFDMultiplier}
	if b.Multiplier != 0 {
		if b.Multiplier < 1 || b.Multiplier > 255 {
			errs = append(errs, field.Invalid(p.Child("multiplier"), b.Multiplier, "must be between 1 and 255"))
		}
		out.Multiplier = uint8(b.Multiplier)
	}
	return out, errs
}

func parseAdvertise(a *nbv1.AdvertiseSpec, p *field.Path) (Advertise, field.ErrorList) {
	out := Advertise{HostRoutes: true}
	if a == nil {
		return out, nil
	}
	var errs field.ErrorList
	out.HostRoutes, out.Aggregate = a.HostRoutes, a.Aggregate
	for i, c := range a.Communities {
		v, err := parseCommunity(c)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("communities").Index(i), c, err.Error()))
		}
		out.Communities = append(out.Communities, v)
	}
	for i, c := range a.LargeCommunities {
		v, err := parseLargeCommunity(c)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("largeCommunities").Index(i), c, err.Error()))
		}
		out.LargeCommunities = append(out.LargeCommunities, v)
	}
	if a.MED != nil {
		if *a.MED < 0 || *a.MED > math.MaxUint32 {
			errs = append(errs, field.Invalid(p.Child("med"), *a.MED, "must be between 0 and 4294967295"))
		}
		m := uint32(*a.MED)
		out.MED = &m
	}
	return out, errs
}
