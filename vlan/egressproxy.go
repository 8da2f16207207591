package vlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EgressProxy answers, at the bridge, the legacy router's ARP requests for
// the Active VMs of a local-egress segment. The egress guard drops every
// ARP frame with the gateway address as sender arriving on the VLAN port
// (a VM seeing one would re-learn the legacy router's MAC for its
// gateway), so the router's requests never reach the VMs; the bridge
// answers them itself: proxy_arp on the VLAN port plus a static neighbour
// entry per VM on the bridge device. br_do_proxy_suppress_arp replies in
// br_handle_frame_finish, before the forward hook drops the request, and
// only when the VM's MAC is in the bridge's FDB.
type EgressProxy struct {
	mu      sync.Mutex
	h       *netlink.Handle
	applied map[egressProxyKey]struct{} // entries this proxy wrote
	ports   map[string]bool             // ports this proxy turned proxy_arp on
}

// EgressProxy4 is one segment's proxy: its bridge, its VLAN port and the
// Active VMs' addresses.
type EgressProxy4 struct {
	Bridge string
	Port   string
	Hosts  []EgressHost
}

// EgressHost is one Active VM: IPv4 address and MAC.
type EgressHost struct {
	IP  netip.Addr
	MAC string
}

type egressProxyKey struct {
	bridge string
	ip     netip.Addr
}

// NewEgressProxy works in the namespace of h.
func NewEgressProxy(h *netlink.Handle) *EgressProxy {
	return &EgressProxy{h: h, applied: map[egressProxyKey]struct{}{}, ports: map[string]bool{}}
}

// egressNeighOp is one step of an egress proxy apply.
type egressNeighOp struct {
	del    bool
	bridge string
	ip     netip.Addr
	mac    string
}

// planEgressProxy: the neighbour entries to write or remove so the bridges
// hold exactly want's hosts. actual maps (bridge, ip) to the MAC of a
// permanent entry; prev is what this proxy wrote before (only those are
// ever removed: other entries on the bridge are not ours).
func planEgressProxy(want []EgressProxy4, actual map[egressProxyKey]string, prev map[egressProxyKey]struct{}) []egressNeighOp {
	wanted := map[egressProxyKey]string{}
	for _, p := range want {
		for _, h := range p.Hosts {
			wanted[egressProxyKey{p.Bridge, h.IP}] = h.MAC
		}
	}
	var ops []egressNeighOp
	for k := range prev {
		if _, ok := wanted[k]; !ok {
			ops = append(ops, egressNeighOp{del: true, bridge: k.bridge, ip: k.ip})
		}
	}
	for k, mac := range wanted {
		if actual[k] != mac {
			ops = append(ops, egressNeighOp{bridge: k.bridge, ip: k.ip, mac: mac})
		}
	}
	slices.SortFunc(ops, func(a, b egressNeighOp) int {
		if a.bridge != b.bridge {
			if a.bridge < b.bridge {
				return -1
			}
			return 1
		}
		return a.ip.Compare(b.ip)
	})
	return ops
}

// Set makes the proxies exactly want: proxy_arp on each port, a permanent
// neighbour entry per host on each bridge; entries written before and no
// longer wanted are removed, and ports that leave want get proxy_arp off.
func (e *EgressProxy) Set(want []EgressProxy4) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range want {
		for _, h := range p.Hosts {
			if !h.IP.Is4() {
				return fmt.Errorf("egress proxy: %s on %s: IPv4 only", h.IP, p.Bridge)
			}
			if _, err := net.ParseMAC(h.MAC); err != nil {
				return fmt.Errorf("egress proxy: %s on %s: %w", h.IP, p.Bridge, err)
			}
		}
	}
	actual := map[egressProxyKey]string{}
	index := map[string]int{}
	bridges := map[string]bool{}
	for _, p := range want {
		bridges[p.Bridge] = true
	}
	for k := range e.applied {
		bridges[k.bridge] = true
	}
	for b := range bridges {
		l, err := e.h.LinkByName(b)
		if err != nil {
			if errors.As(err, new(netlink.LinkNotFoundError)) {
				continue
			}
			return fmt.Errorf("egress proxy: bridge %s: %w", b, err)
		}
		index[b] = l.Attrs().Index
		ns, err := e.h.NeighList(l.Attrs().Index, unix.AF_INET)
		if err != nil {
			return fmt.Errorf("egress proxy: neighbours of %s: %w", b, err)
		}
		for _, n := range ns {
			ip, ok := netip.AddrFromSlice(n.IP)
			if ok && n.State&netlink.NUD_PERMANENT != 0 {
				actual[egressProxyKey{b, ip.Unmap()}] = n.HardwareAddr.String()
			}
		}
	}
	for _, op := range planEgressProxy(want, actual, e.applied) {
		idx, ok := index[op.bridge]
		if !ok {
			if op.del {
				delete(e.applied, egressProxyKey{op.bridge, op.ip})
				continue
			}
			return fmt.Errorf("egress proxy: bridge %s not found", op.bridge)
		}
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: op.ip.AsSlice()}
		k := egressProxyKey{op.bridge, op.ip}
		if op.del {
			if err := e.h.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("egress proxy: remove %s on %s: %w", op.ip, op.bridge, err)
			}
			delete(e.applied, k)
			continue
		}
		n.HardwareAddr, _ = net.ParseMAC(op.mac)
		if err := e.h.NeighSet(n); err != nil {
			return fmt.Errorf("egress proxy: %s → %s on %s: %w", op.ip, op.mac, op.bridge, err)
		}
		e.applied[k] = struct{}{}
	}
	ports := map[string]bool{}
	for _, p := range want {
		ports[p.Port] = true
		if !e.ports[p.Port] {
			if err := e.proxyARP(p.Port, true); err != nil {
				return err
			}
		}
	}
	for port := range e.ports {
		if !ports[port] {
			if err := e.proxyARP(port, false); err != nil {
				return err
			}
		}
	}
	e.ports = ports
	return nil
}

func (e *EgressProxy) proxyARP(port string, on bool) error {
	l, err := e.h.LinkByName(port)
	if err != nil {
		if !on && errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		return fmt.Errorf("egress proxy: port %s: %w", port, err)
	}
	if err := e.h.LinkSetBrProxyArp(l, on); err != nil {
		return fmt.Errorf("egress proxy: proxy_arp %v on %s: %w", on, port, err)
	}
	return nil
}
