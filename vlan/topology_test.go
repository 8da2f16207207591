package vlan

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// TestUnicastGoesToTheHostingNodeOnly: with two nodes (two VTEPs, both
// flood targets of the gateway), unicast from a legacy host to a VM
// follows the endpoint's static FDB entry to the node hosting the VM; the
// other node's underlay sees none of it (only the few broadcasts of ARP
// resolution, which happen before the burst).
func TestUnicastGoesToTheHostingNodeOnly(t *testing.T) {
	var (
		node1VTEP = netip.MustParseAddr("192.0.2.2")
		node2VTEP = netip.MustParseAddr("192.0.2.3")
	)
	legacy := netnstest.New(t, "nb-leg")
	gw := netnstest.New(t, "nb-gw")
	node1 := netnstest.New(t, "nb-n1")
	node2 := netnstest.New(t, "nb-n2")
	vm := netnstest.New(t, "nb-vm")
	underlay := netnstest.New(t, "nb-ul")
	vmMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x50}

	// The underlay is a switch (a plain bridge in its own namespace): it
	// learns the VTEPs' MACs, so a unicast VXLAN packet reaches one node.
	underlay.Run(t, "ip", "link", "add", "sw0", "type", "bridge")
	underlay.Run(t, "ip", "link", "set", "sw0", "up")
	for _, p := range []struct {
		ns   *netnstest.NS
		port string
		vtep netip.Addr
	}{{gw, "p-gw", gwVTEP}, {node1, "p-n1", node1VTEP}, {node2, "p-n2", node2VTEP}} {
		netnstest.Veth(t, p.ns, "ul0", underlay, p.port)
		underlay.Run(t, "ip", "link", "set", p.port, "master", "sw0")
		p.ns.Run(t, "ip", "addr", "add", p.vtep.String()+"/24", "dev", "ul0")
	}
	netnstest.Veth(t, legacy, "eth0", gw, "up0")
	netnstest.Veth(t, node1, "vm0", vm, "eth0")
	legacy.Run(t, "ip", "addr", "add", "10.20.0.1/24", "dev", "eth0")
	vm.Run(t, "ip", "link", "set", "eth0", "address", vmMAC.String())
	vm.Run(t, "ip", "addr", "add", vmIP.String()+"/24", "dev", "eth0")

	ep := Endpoint{MAC: vmMAC, IPs: []netip.Addr{vmIP}, VTEP: node1VTEP}
	gwSeg := Segment{Name: "legacy-a", VNI: testVNI, Role: RoleGateway, Uplink: "up0", Access: true, MTU: 1450,
		LocalVTEP: gwVTEP, FloodVTEPs: []netip.Addr{node1VTEP, node2VTEP}, Endpoints: []Endpoint{ep}}
	n1Seg := Segment{Name: "legacy-a", VNI: testVNI, Role: RoleNode, MTU: 1450,
		LocalVTEP: node1VTEP, FloodVTEPs: []netip.Addr{gwVTEP, node2VTEP}, Endpoints: []Endpoint{ep}}
	n2Seg := Segment{Name: "legacy-a", VNI: testVNI, Role: RoleNode, MTU: 1450,
		LocalVTEP: node2VTEP, FloodVTEPs: []netip.Addr{gwVTEP, node1VTEP}, Endpoints: []Endpoint{ep}}
	reconcile(t, New(node1.Handle, zaptest.NewLogger(t).Named("node1")), n1Seg)
	reconcile(t, New(node2.Handle, zaptest.NewLogger(t).Named("node2")), n2Seg)
	node1.Run(t, "ip", "link", "set", "vm0", "master", BridgeName(testVNI))
	reconcile(t, New(gw.Handle, zaptest.NewLogger(t).Named("gw")), gwSeg)

	mustContain(t, "gateway's endpoint entry points at node1 only",
		gw.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI)),
		"02:00:00:00:00:50 dst 192.0.2.2 self permanent")
	if fdb := gw.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI)); strings.Contains(fdb, "02:00:00:00:00:50 dst 192.0.2.3") {
		t.Errorf("gateway has an entry for the VM toward node2:\n%s", fdb)
	}

	// Warm-up: ARP resolves (broadcasts reach node2, as they must) and
	// the underlay switch learns where each VTEP is.
	mustContain(t, "warm-up", legacy.Run(t, "ping", "-c2", "-W2", vmIP.String()), "2 received")

	rx := func(ns *netnstest.NS) uint64 {
		t.Helper()
		l, err := ns.Handle.LinkByName("ul0")
		if err != nil {
			t.Fatalf("ul0 in %s: %v", ns.Name, err)
		}
		return l.Attrs().Statistics.RxPackets
	}
	// Counters alone cannot tell a leak from the namespaces' own IPv6
	// chatter (DAD, router solicitations, MLD: flooded to every VTEP), so
	// both underlays are also captured and the VXLAN frames decoded.
	n1Cap := captureVXLAN(t, node1, "ul0", vmMAC)
	n2Cap := captureVXLAN(t, node2, "ul0", vmMAC)
	n1Before, n2Before := rx(node1), rx(node2)
	const burst = 50
	mustContain(t, "burst", legacy.Run(t, "ping", "-q", "-c50", "-i0.01", "-W2", vmIP.String()), "50 received")
	n1Delta, n2Delta := rx(node1)-n1Before, rx(node2)-n2Before
	n1, n2 := n1Cap(), n2Cap()
	t.Logf("during %d pings: node1 underlay rx %d packets, %d VXLAN frames to the VM (%d other VXLAN); node2 underlay rx %d packets, %d VXLAN frames to the VM (%d other VXLAN)",
		burst, n1Delta, n1.toVM, n1.other, n2Delta, n2.toVM, n2.other)
	if n1.toVM < burst {
		t.Errorf("node1 got %d VXLAN frames for the VM, want at least the %d echo requests", n1.toVM, burst)
	}
	if n2.toVM != 0 {
		t.Errorf("node2 got %d VXLAN frames whose inner destination is the VM: unicast leaked to a non-hosting VTEP", n2.toVM)
	}
	// Everything else node2 saw is broadcast or multicast (flooding, as
	// it must): a few per second, far below one per echo request.
	if n2.other >= burst {
		t.Errorf("node2 got %d other VXLAN frames during the burst", n2.other)
	}
}

type vxlanCount struct{ toVM, other int }

// captureVXLAN counts, on iface in ns, the VXLAN frames whose inner
// destination is mac, and the other VXLAN frames, until the returned func
// is called (which returns the counts).
func captureVXLAN(t *testing.T, ns *netnstest.NS, iface string, mac net.HardwareAddr) func() vxlanCount {
	t.Helper()
	var conn *packet.Conn
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", iface, ns.Name, err)
	}
	stop := make(chan struct{})
	result := make(chan vxlanCount, 1)
	go func() {
		var c vxlanCount
		buf := make([]byte, 9000)
		for {
			select {
			case <-stop:
				result <- c
				return
			default:
			}
			_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				continue // deadline: look at stop again
			}
			pkt := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
			vx, ok := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if !ok {
				continue
			}
			inner := gopacket.NewPacket(vx.Payload, layers.LayerTypeEthernet, gopacket.Default)
			if eth, ok := inner.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); ok && eth.DstMAC.String() == mac.String() {
				c.toVM++
			} else {
				c.other++
			}
		}
	}()
	var once sync.Once
	var got vxlanCount
	done := func() vxlanCount {
		once.Do(func() {
			close(stop)
			got = <-result
			conn.Close()
		})
		return got
	}
	t.Cleanup(func() { done() })
	return done
}

// TestStaleSegmentCleanup: a segment dropped from the desired state loses
// its owned links; its foreign ports are released, not deleted; links we
// do not own (plain names, our prefix without our alias, our prefix
// outside the segment name space) and the other segment stay untouched.
func TestStaleSegmentCleanup(t *testing.T) {
	ns := netnstest.New(t, "nb-st")
	peer := netnstest.New(t, "nb-stp")
	netnstest.Veth(t, ns, "ul0", peer, "ul0")
	netnstest.Veth(t, ns, "up1", peer, "up1")
	netnstest.Veth(t, ns, "up2", peer, "up2")
	netnstest.Veth(t, ns, "tap0", peer, "tap0")
	ns.Run(t, "ip", "addr", "add", gwVTEP.String()+"/24", "dev", "ul0")
	d := New(ns.Handle, zaptest.NewLogger(t))
	segA := Segment{Name: "keep", VNI: 101, Role: RoleGateway, Uplink: "up1", Access: true, MTU: 1450,
		LocalVTEP: gwVTEP, FloodVTEPs: []netip.Addr{nodeVTEP}}
	segB := Segment{Name: "stale", VNI: 102, Role: RoleGateway, Uplink: "up2", Access: true, MTU: 1450,
		LocalVTEP: gwVTEP, FloodVTEPs: []netip.Addr{nodeVTEP},
		Endpoints:  []Endpoint{{MAC: net.HardwareAddr{2, 0, 0, 0, 1, 2}, IPs: []netip.Addr{netip.MustParseAddr("10.2.0.5")}, VTEP: nodeVTEP}},
		HostRoutes: true}
	reconcile(t, d, segA, segB)

	// Things that are not ours, beside and inside the stale segment.
	ns.Run(t, "ip", "link", "add", "br-legacy", "type", "bridge")
	ns.Run(t, "ip", "link", "add", "nb-legacy0", "type", "bridge")
	ns.Run(t, "ip", "link", "add", "nb-br-999", "type", "bridge")     // our pattern, no alias
	ns.Run(t, "ip", "link", "set", "tap0", "master", BridgeName(102)) // a VM's port
	before := ns.Run(t, "ip", "-o", "link", "show", "br-legacy")

	res := reconcile(t, d, segA)
	if !slices.Equal(res.Removed, []uint32{102}) {
		t.Errorf("Removed = %v, want [102]", res.Removed)
	}
	if res.Changes != 2 {
		t.Errorf("want 2 changes (delete the VXLAN device and the bridge), got %d", res.Changes)
	}
	for _, gone := range []string{BridgeName(102), VXLANName(102)} {
		if _, err := ns.Handle.LinkByName(gone); err == nil {
			t.Errorf("%s still exists", gone)
		}
	}
	for _, kept := range []string{"br-legacy", "nb-legacy0", "nb-br-999", "up2", "tap0", BridgeName(101), VXLANName(101)} {
		if _, err := ns.Handle.LinkByName(kept); err != nil {
			t.Errorf("%s was removed: %v", kept, err)
		}
	}
	for _, released := range []string{"up2", "tap0"} {
		if out := ns.Run(t, "ip", "link", "show", released); strings.Contains(out, "master") {
			t.Errorf("%s still enslaved: %s", released, out)
		}
	}
	mustContain(t, "kept segment's uplink", ns.Run(t, "ip", "link", "show", "up1"), "master nb-br-101")
	if after := ns.Run(t, "ip", "-o", "link", "show", "br-legacy"); after != before {
		t.Errorf("br-legacy changed:\nbefore %s\nafter  %s", before, after)
	}
	if out := ns.Run(t, "ip", "route", "show", "proto", "78"); strings.TrimSpace(out) != "" {
		t.Errorf("stale segment's host route left: %s", out)
	}
	if res := reconcile(t, d, segA); res.Changes != 0 || res.Writes != 0 {
		t.Errorf("converged re-run: %d changes, %d writes", res.Changes, res.Writes)
	}
}

// TestBadInputOnTheKernel: one Reconcile with a good access segment and
// several bad ones. Each bad one gets a clear error naming it and the
// field or value; none of them leaves anything behind; the good one is
// fully programmed and carries traffic.
func TestBadInputOnTheKernel(t *testing.T) {
	s := newStretch(t)
	netnstest.Veth(t, s.gw, "trunk0", s.legacy, "trunk0")
	reconcile(t, s.nodeDP, s.nodeSegment())
	s.node.Run(t, "ip", "link", "set", "vm0", "master", BridgeName(testVNI))
	caps, err := s.gwDP.Probe()
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}

	base := Segment{Role: RoleGateway, LocalVTEP: gwVTEP, MTU: 1450, FloodVTEPs: []netip.Addr{nodeVTEP}}
	with := func(name string, vni uint32, f func(*Segment)) Segment {
		s := base
		s.Name, s.VNI = name, vni
		if f != nil {
			f(&s)
		}
		return s
	}
	good := s.gwSegment()
	segs := []Segment{
		good,
		with("vlan-zero", 2001, func(s *Segment) { s.Uplink, s.VLANID = "trunk0", 0 }),
		with("dup-a", 2002, nil),
		with("dup-b", 2002, nil),
		with("no-uplink", 2003, func(s *Segment) { s.Uplink, s.Access = "nope0", true }),
		with("mtu-big", 2004, func(s *Segment) { s.MTU = 9000 }),
		with("tagged", 2005, func(s *Segment) { s.Uplink, s.VLANID = "trunk0", 100 }),
	}
	res, err := s.gwDP.Reconcile(context.Background(), segs)
	if err == nil {
		t.Fatal("Reconcile: no error for bad segments")
	}
	t.Logf("Reconcile error:\n%v", err)

	wantErr := map[uint32][]string{
		2001: {`segment "vlan-zero"`, "vlanID 0", "1-4094"},
		2002: {`segment "dup-b"`, "vni 2002", `segment "dup-a"`},
		2003: {`segment "no-uplink"`, "uplink nope0 not found"},
		2004: {`segment "mtu-big"`, "mtu 9000", "MTU 1500", "VXLAN needs 9050"},
		2005: {`segment "tagged"`, "8021q"},
	}
	if caps.VLAN {
		delete(wantErr, 2005) // a kernel with 8021q programs the trunk
	}
	if res.Segments[testVNI] != nil {
		t.Errorf("good segment: %v", res.Segments[testVNI])
	}
	for vni, wants := range wantErr {
		e := res.Segments[vni]
		if e == nil {
			t.Errorf("vni %d: no error", vni)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(e.Error(), w) {
				t.Errorf("vni %d: error %q does not mention %q", vni, e, w)
			}
		}
		for _, name := range []string{BridgeName(vni), VXLANName(vni), VLANName(vni)} {
			if _, err := s.gw.Handle.LinkByName(name); err == nil {
				t.Errorf("vni %d: %s exists: half-programmed", vni, name)
			}
		}
	}
	if !caps.VLAN {
		var mf *MissingFeatureError
		if !errors.As(res.Segments[2005], &mf) || mf.Module != "8021q" {
			t.Errorf("tagged segment: want a MissingFeatureError for 8021q, got %v", res.Segments[2005])
		}
	}

	mustContain(t, "good segment programmed", s.gw.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI)),
		"00:00:00:00:00:00 dst 192.0.2.2 self permanent", "02:00:00:00:00:50 dst 192.0.2.2 self permanent")
	mustContain(t, "good segment carries traffic", s.legacy.Run(t, "ping", "-c2", "-W2", vmIP.String()), "2 received")
	// Only the good segment remains after the bad ones are dropped.
	if res := reconcile(t, s.gwDP, good); res.Changes != 0 && !caps.VLAN {
		t.Errorf("dropping the refused segments changed %d things (they had nothing)", res.Changes)
	}
}
