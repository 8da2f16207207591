package labnet

import (
	"fmt"
	"strings"
)

// The lab's IPv6 plane (EnableIPv6): the same topology, dual-stack.
const (
	Subnet6         = "2001:db8:100::/64"
	LegacyRouterIP6 = "2001:db8:100::1"
	LegacyHostIP6   = "2001:db8:100::11"
	ClientIP6       = "2001:db8:51::10"
	// DCFabricIP6 is dc's IPv6 address on the fabric, where the gateways'
	// IPv6 BGP sessions (the ones that carry /128s) go.
	DCFabricIP6 = "2001:db8:30::1"
)

// FabricIP6 is a gateway's or node's IPv6 fabric address (the last byte of
// its IPv4 one: 172.30.0.11 → 2001:db8:30::11).
func FabricIP6(h Host) string {
	return "2001:db8:30::" + h.FabricIP[strings.LastIndex(h.FabricIP, ".")+1:]
}

// VMIP6 is a VM's preserved IPv6 address (vm1 10.20.100.50 → 2001:db8:100::50).
func VMIP6(v VM) string {
	return "2001:db8:100::" + v.IP[strings.LastIndex(v.IP, ".")+1:]
}

// EnableIPv6 makes a running lab dual-stack: IPv6 addresses beside every
// IPv4 one (nodad: nothing else on these links holds them), forwarding on
// the routers and gateways, the legacy route to Subnet6 through lrouter
// (the old way in), and one IPv6 BGP neighbour per gateway on dc
// (ipv6-unicast only, no BFD). The VMs get their VMIP6 and a default route
// through the legacy router. Call it after Up, before the agents start.
func (l *Lab) EnableIPv6() error {
	type a struct{ role, dev, cidr string }
	addrs := []a{{"dc", "eth0", DCFabricIP6 + "/64"}, {"dc", "eth1", "2001:db8:31::1/64"}, {"dc", "eth2", "2001:db8:51::1/64"},
		{"lrouter", "eth1", "2001:db8:31::2/64"}, {"lrouter", "eth0", LegacyRouterIP6 + "/64"},
		{"host1", "eth0", LegacyHostIP6 + "/64"}, {"client", "eth0", ClientIP6 + "/64"}}
	for _, h := range append(append([]Host{}, Gateways...), Nodes...) {
		addrs = append(addrs, a{h.Name, "eth0", FabricIP6(h) + "/64"})
	}
	for _, v := range VMs {
		addrs = append(addrs, a{v.Name, "eth0", VMIP6(v) + "/64"})
	}
	for _, x := range addrs {
		if err := l.exec(x.role, "ip", "-6", "addr", "add", x.cidr, "dev", x.dev, "nodad"); err != nil {
			return err
		}
	}
	for _, r := range []string{"dc", "lrouter", "gw1", "gw2"} {
		if err := l.exec(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"); err != nil {
			return err
		}
	}
	routes := [][]string{{"dc", Subnet6, "via", "2001:db8:31::2"}, {"lrouter", "default", "via", "2001:db8:31::1"},
		{"host1", "default", "via", LegacyRouterIP6}, {"client", "default", "via", "2001:db8:51::1"}}
	for _, v := range VMs {
		routes = append(routes, []string{v.Name, "default", "via", LegacyRouterIP6})
	}
	for _, r := range routes {
		if err := l.exec(r[0], "ip", append([]string{"-6", "route", "add"}, r[1:]...)...); err != nil {
			return err
		}
	}
	cmds := []string{"configure terminal", fmt.Sprintf("router bgp %d", DCASN)}
	for _, g := range Gateways {
		cmds = append(cmds, fmt.Sprintf("neighbor %s remote-as %d", FabricIP6(g), GatewayASN),
			fmt.Sprintf("neighbor %s timers connect 1", FabricIP6(g)))
	}
	cmds = append(cmds, "address-family ipv6 unicast")
	for _, g := range Gateways {
		cmds = append(cmds, fmt.Sprintf("neighbor %s activate", FabricIP6(g)))
	}
	if out, err := l.Vtysh(cmds...); err != nil {
		return fmt.Errorf("dc: IPv6 neighbours: %w: %s", err, out)
	}
	return nil
}

// HasRoute6 is HasRoute for IPv6: whether dc's kernel table has a route to
// prefix and through which next hop.
func (l *Lab) HasRoute6(prefix string) (bool, string) { return l.hasRoute("-6", prefix) }
