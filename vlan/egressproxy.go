package vlan

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
)

// The egress guard drops every ARP frame with the gateway address as
// sender arriving on the VLAN port (a VM seeing one would re-learn the
// legacy router's MAC for its gateway), so the legacy router's requests
// for the VMs never reach them; the bridge answers them instead: proxy_arp
// on the VLAN port. br_do_proxy_suppress_arp replies in
// br_handle_frame_finish, before the forward hook drops the request, from
// the bridge device's valid neighbour entry for the address whose MAC is
// in the bridge's FDB — the data plane's permanent neighbour entries for
// the Active VMs' cleared IPs and their FDB entries, so only VMs the
// gateway activated are answered for.

// SetProxy makes proxy_arp on exactly ports (the VLAN ports of Set's
// rules, once the data plane created them): on for each, off for the ports
// a previous SetProxy turned on. Ports already in that state cost nothing.
func (g *EgressGuard) SetProxy(ports []string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	on, off := planProxyPorts(ports, g.proxied)
	for _, p := range on {
		if err := g.proxyARP(p, true); err != nil {
			return err
		}
	}
	for _, p := range off {
		if err := g.proxyARP(p, false); err != nil {
			return err
		}
	}
	g.proxied = sortedPorts(ports)
	return nil
}

// planProxyPorts: the ports to turn proxy_arp on and off.
func planProxyPorts(want, prev []string) (on, off []string) {
	want, prev = sortedPorts(want), sortedPorts(prev)
	for _, p := range want {
		if !slices.Contains(prev, p) {
			on = append(on, p)
		}
	}
	for _, p := range prev {
		if !slices.Contains(want, p) {
			off = append(off, p)
		}
	}
	return on, off
}

func sortedPorts(ports []string) []string {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

func (g *EgressGuard) proxyARP(port string, on bool) error {
	l, err := g.h.LinkByName(port)
	if err != nil {
		if !on && errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil // gone with its segment
		}
		return fmt.Errorf("egress proxy: port %s: %w", port, err)
	}
	if err := g.h.LinkSetBrProxyArp(l, on); err != nil {
		return fmt.Errorf("egress proxy: proxy_arp %v on %s: %w", on, port, err)
	}
	return nil
}
