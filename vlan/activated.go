package vlan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
)

// ActivatedIPs returns, sorted, the endpoint IPs that have a host route of
// RouteProtocol through a bridge this package owns: what a previous run
// (or this one) activated. The gateway calls it on restart to adopt those
// endpoints instead of re-probing and re-announcing them. Routes of other
// protocols, and our protocol's routes through links we do not own, are
// not ours and are not reported.
func (d *DataPlane) ActivatedIPs() ([]netip.Addr, error) {
	var ops opCount
	links, err := retryDump(&ops, "links", d.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("activated ips: %w", err)
	}
	bridges := map[int]bool{}
	for _, l := range links {
		a := l.Attrs()
		if kind, _, ok := segmentLink(a.Name); ok && kind == bridgePrefix && strings.HasPrefix(a.Alias, aliasPrefix) {
			bridges[a.Index] = true
		}
	}
	routes, err := retryDump(&ops, "routes", func() ([]netlink.Route, error) {
		return d.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("activated ips: %w", err)
	}
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, r := range routes {
		if !bridges[r.LinkIndex] || r.Dst == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		// Only host routes are per endpoint; anything wider is not an
		// activation (we install none, but a person might).
		if ones, _ := r.Dst.Mask.Size(); ones != ip.BitLen() || seen[ip] {
			continue
		}
		seen[ip] = true
		out = append(out, ip)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out, nil
}
