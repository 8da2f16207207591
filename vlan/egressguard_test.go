package vlan

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// TestEgressGuard: a segment bridge holding the legacy gateway address
// answers the VMs (VXLAN side) and never the legacy side; the legacy hosts
// keep the legacy router; traffic inside the subnet (both ways, the router resolving a VM too)
// still works. Real kernel, real ARP stacks.
func TestEgressGuard(t *testing.T) {
	gw := netip.MustParseAddr("10.20.100.1")
	sw := netnstest.New(t, "egsw")     // the gateway: br0 = segment bridge
	lsw := netnstest.New(t, "eglsw")   // the legacy switch
	router := netnstest.New(t, "egrt") // the legacy router, 10.20.100.1
	host := netnstest.New(t, "eghs")   // a legacy host, 10.20.100.11
	vm := netnstest.New(t, "egvm")     // a migrated VM, 10.20.100.50
	port := vlanPrefix + "7"
	sw.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.Run(t, "ip", "link", "set", "br0", "up")
	lsw.Run(t, "ip", "link", "add", "lbr", "type", "bridge")
	lsw.Run(t, "ip", "link", "set", "lbr", "up")
	netnstest.Veth(t, sw, port, lsw, "up0")
	netnstest.Veth(t, sw, "vx0", vm, "eth0")
	netnstest.Veth(t, lsw, "rt0", router, "eth0")
	netnstest.Veth(t, lsw, "hs0", host, "eth0")
	sw.Run(t, "ip", "link", "set", port, "master", "br0")
	sw.Run(t, "ip", "link", "set", "vx0", "master", "br0")
	for _, p := range []string{"up0", "rt0", "hs0"} {
		lsw.Run(t, "ip", "link", "set", p, "master", "lbr")
	}
	router.Run(t, "ip", "addr", "add", "10.20.100.1/24", "dev", "eth0")
	host.Run(t, "ip", "addr", "add", "10.20.100.11/24", "dev", "eth0")
	vm.Run(t, "ip", "addr", "add", "10.20.100.50/24", "dev", "eth0")
	vm.Run(t, "ip", "route", "add", "default", "via", "10.20.100.1")
	// The DC side: the router's other subnets (10.99.0.1) reach the gateway
	// over a routed link, the path of local egress.
	netnstest.Veth(t, sw, "dc0", router, "dc")
	sw.Run(t, "ip", "addr", "add", "192.0.2.1/30", "dev", "dc0")
	router.Run(t, "ip", "addr", "add", "192.0.2.2/30", "dev", "dc")
	router.Run(t, "ip", "addr", "add", "10.99.0.1/32", "dev", "lo")
	sw.Run(t, "ip", "route", "add", "10.99.0.0/24", "via", "192.0.2.2")
	sw.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// The router asks with its subnet address as sender, as a router does.
	router.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2")

	g, err := NewEgressGuardIn(sw.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// Guard first, address second: the order the gateway applies them in.
	if err := g.Set([]EgressRule{{Port: port, Gateway: gw}}); err != nil {
		t.Fatal(err)
	}
	sw.Run(t, "ip", "addr", "add", "10.20.100.1/24", "dev", "br0")
	brMAC := macOf(t, sw, "br0")
	routerMAC := macOf(t, router, "eth0")
	vmMAC := macOf(t, vm, "eth0")
	// The data plane's entry for an Active VM's cleared IP (actSetNeigh),
	// which the bridge answers the legacy router from.
	sw.Run(t, "ip", "neigh", "replace", "10.20.100.50", "lladdr", vmMAC, "dev", "br0", "nud", "permanent")
	if err := g.SetProxy([]string{port}); err != nil {
		t.Fatal(err)
	}

	neigh := func(ns *netnstest.NS, ip string) string {
		return ns.Run(t, "ip", "neigh", "show", ip)
	}
	ping := func(ns *netnstest.NS, ip string) error {
		_, err := ns.Exec(t.Context(), "ping", "-c1", "-W1", ip)
		return err
	}

	t.Run("vm resolves the gateway to the bridge", func(t *testing.T) {
		if err := ping(vm, "10.20.100.1"); err != nil {
			t.Fatalf("vm → gateway: %v", err)
		}
		if got := neigh(vm, "10.20.100.1"); !strings.Contains(got, brMAC) {
			t.Errorf("vm's entry for the gateway %q, want the bridge's MAC %s", got, brMAC)
		}
		// The VM's request never reached the legacy router (it would have
		// cached the VM from it).
		if got := neigh(router, "10.20.100.50"); strings.Contains(got, "lladdr") {
			t.Errorf("legacy router heard the VM's request for the gateway: %q", got)
		}
	})
	t.Run("legacy host keeps the legacy router", func(t *testing.T) {
		for range 3 {
			host.Run(t, "ip", "neigh", "flush", "dev", "eth0")
			if err := ping(host, "10.20.100.1"); err != nil {
				t.Fatalf("legacy host → legacy router: %v", err)
			}
			if got := neigh(host, "10.20.100.1"); !strings.Contains(got, routerMAC) {
				t.Fatalf("legacy host's entry for the gateway %q, want the legacy router's MAC %s", got, routerMAC)
			}
		}
		// With the router silent, nobody answers the legacy side.
		router.Run(t, "ip", "link", "set", "eth0", "down")
		host.Run(t, "ip", "neigh", "flush", "dev", "eth0")
		if err := ping(host, "10.20.100.1"); err == nil {
			t.Errorf("the bridge answered the legacy side for the gateway address: %s", neigh(host, "10.20.100.1"))
		}
		router.Run(t, "ip", "link", "set", "eth0", "up")
	})
	t.Run("inside the subnet", func(t *testing.T) {
		if err := ping(host, "10.20.100.50"); err != nil {
			t.Errorf("legacy host → vm: %v", err)
		}
		if err := ping(vm, "10.20.100.11"); err != nil {
			t.Errorf("vm → legacy host: %v", err)
		}
	})
	t.Run("legacy router's requests stay off the VXLAN side", func(t *testing.T) {
		if err := ping(vm, "10.20.100.1"); err != nil {
			t.Fatalf("vm → gateway: %v", err)
		}
		// The router keeps asking, broadcast, for a legacy host and for
		// the VM, with the gateway address as sender.
		for _, target := range []string{"10.20.100.11", "10.20.100.50"} {
			router.Start(t, "arping", "-q", "-i", "eth0", "-S", "10.20.100.1", "-W", "0.05", "-c", "100", target)
		}
		samples := 0
		for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			samples++
			if got := neigh(vm, "10.20.100.1"); !strings.Contains(got, brMAC) {
				t.Fatalf("sample %d: vm's entry for the gateway %q, want the bridge's MAC %s (legacy router %s)", samples, got, brMAC, routerMAC)
			}
		}
		t.Logf("vm_gateway_samples=%d all=%s", samples, brMAC)
		if got := proxyARP(t, sw, port); got != "1" {
			t.Errorf("proxy_arp on %s: %q, want 1", port, got)
		}
		// Legacy routing into the subnet: the router resolves the VM (the
		// bridge answers for it) and a DC source reaches it; the VM's reply
		// leaves through the gateway (local egress).
		router.Run(t, "ip", "neigh", "flush", "dev", "eth0")
		if _, err := router.Exec(t.Context(), "ping", "-c3", "-i0.2", "-W1", "-I", "10.99.0.1", "10.20.100.50"); err != nil {
			t.Errorf("DC source on the legacy router → vm: %v", err)
		}
		if got := neigh(router, "10.20.100.50"); !strings.Contains(got, vmMAC) {
			t.Errorf("legacy router's entry for the vm %q, want the vm's MAC %s", got, vmMAC)
		}
		host.Run(t, "ip", "neigh", "flush", "dev", "eth0")
		if err := ping(host, "10.20.100.1"); err != nil {
			t.Errorf("legacy host → legacy router: %v", err)
		}
		if got := neigh(host, "10.20.100.1"); !strings.Contains(got, routerMAC) {
			t.Errorf("legacy host's entry for the gateway %q, want the legacy router's MAC %s", got, routerMAC)
		}
		if got := neigh(vm, "10.20.100.1"); !strings.Contains(got, brMAC) {
			t.Errorf("after: vm's entry for the gateway %q, want the bridge's MAC %s", got, brMAC)
		}
	})
	t.Run("proxy removed", func(t *testing.T) {
		if err := g.SetProxy(nil); err != nil {
			t.Fatal(err)
		}
		if got := proxyARP(t, sw, port); got != "0" {
			t.Errorf("proxy_arp left on %s: %q", port, got)
		}
	})
	t.Run("no rules, no table", func(t *testing.T) {
		if err := g.Set(nil); err != nil {
			t.Fatal(err)
		}
		conn, err := nftables.New(nftables.WithNetNSFd(int(sw.NsHandle)))
		if err != nil {
			t.Fatal(err)
		}
		tables, err := conn.ListTablesOfFamily(nftables.TableFamilyBridge)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name == EgressGuardTable {
				t.Errorf("table %s left without rules", EgressGuardTable)
			}
		}
	})
	if err := g.Set([]EgressRule{{Port: port, Gateway: netip.MustParseAddr("2001:db8::1")}}); err == nil {
		t.Errorf("an IPv6 gateway address was accepted")
	}
}

func macOf(t *testing.T, ns *netnstest.NS, iface string) string {
	t.Helper()
	l, err := ns.Handle.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr.String()
}

func proxyARP(t *testing.T, ns *netnstest.NS, port string) string {
	t.Helper()
	return strings.TrimSpace(ns.Run(t, "cat", "/sys/class/net/"+port+"/brport/proxyarp"))
}
