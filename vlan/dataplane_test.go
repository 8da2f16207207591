package vlan

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// stretch is a legacy host, a gateway and a node with one VM, wired as in
// production: legacy host -- access uplink -- gateway == VXLAN == node -- VM.
type stretch struct {
	legacy, gw, node, vm *netnstest.NS
	gwDP, nodeDP         *DataPlane
	vmMAC                net.HardwareAddr
}

var (
	gwVTEP   = netip.MustParseAddr("192.0.2.1")
	nodeVTEP = netip.MustParseAddr("192.0.2.2")
	vmIP     = netip.MustParseAddr("10.20.0.50")
	vmIP6    = netip.MustParseAddr("2001:db8:20::50")
)

const testVNI = 1020

func newStretch(t *testing.T) *stretch {
	t.Helper()
	s := &stretch{
		legacy: netnstest.New(t, "nb-leg"),
		gw:     netnstest.New(t, "nb-gw"),
		node:   netnstest.New(t, "nb-node"),
		vm:     netnstest.New(t, "nb-vm"),
		vmMAC:  net.HardwareAddr{0x02, 0, 0, 0, 0, 0x50},
	}
	netnstest.Veth(t, s.legacy, "eth0", s.gw, "up0")
	netnstest.Veth(t, s.gw, "ul0", s.node, "ul0")
	netnstest.Veth(t, s.node, "vm0", s.vm, "eth0")
	s.gw.Run(t, "ip", "addr", "add", gwVTEP.String()+"/24", "dev", "ul0")
	s.node.Run(t, "ip", "addr", "add", nodeVTEP.String()+"/24", "dev", "ul0")
	s.legacy.Run(t, "ip", "addr", "add", "10.20.0.1/24", "dev", "eth0")
	s.vm.Run(t, "ip", "link", "set", "eth0", "address", s.vmMAC.String())
	s.vm.Run(t, "ip", "addr", "add", vmIP.String()+"/24", "dev", "eth0")
	s.gwDP = New(s.gw.Handle, zaptest.NewLogger(t).Named("gw"))
	s.nodeDP = New(s.node.Handle, zaptest.NewLogger(t).Named("node"))
	return s
}

func (s *stretch) gwSegment() Segment {
	return Segment{
		Name: "legacy-a", VNI: testVNI, Role: RoleGateway, Uplink: "up0", Access: true, MTU: 1450,
		LocalVTEP: gwVTEP, FloodVTEPs: []netip.Addr{nodeVTEP},
		Endpoints: []Endpoint{{MAC: s.vmMAC, IPs: []netip.Addr{vmIP, vmIP6}, VTEP: nodeVTEP}},
	}
}

func (s *stretch) nodeSegment() Segment {
	return Segment{
		Name: "legacy-a", VNI: testVNI, Role: RoleNode, MTU: 1450,
		LocalVTEP: nodeVTEP, FloodVTEPs: []netip.Addr{gwVTEP},
		Endpoints: []Endpoint{{MAC: s.vmMAC, IPs: []netip.Addr{vmIP}, VTEP: nodeVTEP}},
	}
}

func reconcile(t *testing.T, d *DataPlane, segs ...Segment) Result {
	t.Helper()
	res, err := d.Reconcile(context.Background(), segs)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: want a line with %q in:\n%s", what, w, out)
		}
	}
}

func TestStretchAccessSegment(t *testing.T) {
	s := newStretch(t)
	if res := reconcile(t, s.nodeDP, s.nodeSegment()); res.Changes == 0 {
		t.Fatalf("node: first reconcile changed nothing")
	}
	// KubeVirt's part: the VM's interface joins the segment bridge.
	s.node.Run(t, "ip", "link", "set", "vm0", "master", BridgeName(testVNI))
	res := reconcile(t, s.gwDP, s.gwSegment())
	if res.Changes == 0 || res.Segments[testVNI] != nil {
		t.Fatalf("gateway: first reconcile: %+v", res)
	}

	out := s.legacy.Run(t, "ping", "-c2", "-W2", vmIP.String())
	mustContain(t, "legacy host pings the VM across the stretch", out, "2 received")

	fdb := s.gw.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI))
	mustContain(t, "gateway fdb", fdb,
		"00:00:00:00:00:00 dst 192.0.2.2 self permanent",
		"02:00:00:00:00:50 dst 192.0.2.2 self permanent",
		"02:00:00:00:00:50 master nb-br-1020 static")
	neigh := s.gw.Run(t, "ip", "neigh", "show", "dev", BridgeName(testVNI))
	mustContain(t, "gateway neighbours", neigh, "10.20.0.50 lladdr 02:00:00:00:00:50 PERMANENT",
		"2001:db8:20::50 lladdr 02:00:00:00:00:50 PERMANENT")
	links := s.gw.Run(t, "ip", "-d", "link", "show", VXLANName(testVNI))
	mustContain(t, "gateway vxlan", links, "vxlan id 1020 local 192.0.2.1", "dstport 4789", "nolearning", "mtu 1450", "alias netbridge:legacy-a")
	mustContain(t, "uplink enslaved", s.gw.Run(t, "ip", "link", "show", "up0"), "master nb-br-1020")
	// The node learned the legacy host's MAC behind the gateway.
	nodeFDB := s.node.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI))
	legacyMAC := strings.Fields(s.legacy.Run(t, "cat", "/sys/class/net/eth0/address"))[0]
	mustContain(t, "node learned the legacy MAC", nodeFDB, legacyMAC+" dst 192.0.2.1 self")

	t.Run("idempotent", func(t *testing.T) {
		if res := reconcile(t, s.gwDP, s.gwSegment()); res.Changes != 0 {
			t.Errorf("gateway: re-run changed %d things", res.Changes)
		}
		if res := reconcile(t, s.nodeDP, s.nodeSegment()); res.Changes != 0 {
			t.Errorf("node: re-run changed %d things (learned entries must be left alone)", res.Changes)
		}
		mustContain(t, "learned entry kept", s.node.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI)), legacyMAC)
	})
	t.Run("restart adopts", func(t *testing.T) {
		fresh := New(s.gw.Handle, zaptest.NewLogger(t))
		if res := reconcile(t, fresh, s.gwSegment()); res.Changes != 0 {
			t.Errorf("a restarted agent changed %d things", res.Changes)
		}
	})
	t.Run("routed and completed phases", func(t *testing.T) {
		seg := s.gwSegment()
		seg.HostRoutes = true
		seg.GatewayAddress = netip.MustParsePrefix("10.20.0.254/24")
		reconcile(t, s.gwDP, seg)
		mustContain(t, "host route", s.gw.Run(t, "ip", "route", "show", "proto", "78"), "10.20.0.50 dev nb-br-1020 scope link")
		mustContain(t, "host route v6", s.gw.Run(t, "ip", "-6", "route", "show", "proto", "78"), "2001:db8:20::50 dev nb-br-1020")
		mustContain(t, "gateway address", s.gw.Run(t, "ip", "addr", "show", "dev", BridgeName(testVNI)), "inet 10.20.0.254/24")
		mustContain(t, "gateway reaches the VM", s.gw.Run(t, "ping", "-c1", "-W2", vmIP.String()), "1 received")
		if res := reconcile(t, s.gwDP, seg); res.Changes != 0 {
			t.Errorf("re-run changed %d things", res.Changes)
		}
		res := reconcile(t, s.gwDP, s.gwSegment())
		if res.Changes != 3 {
			t.Errorf("back to Extended: want 3 changes (2 routes, address), got %d", res.Changes)
		}
		if out := s.gw.Run(t, "ip", "route", "show", "proto", "78"); strings.TrimSpace(out) != "" {
			t.Errorf("host route left: %s", out)
		}
	})
	t.Run("endpoint moves and goes", func(t *testing.T) {
		seg := s.gwSegment()
		seg.Endpoints[0].VTEP = netip.MustParseAddr("192.0.2.3")
		seg.FloodVTEPs = append(seg.FloodVTEPs, netip.MustParseAddr("192.0.2.3"))
		reconcile(t, s.gwDP, seg)
		mustContain(t, "moved", s.gw.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI)),
			"02:00:00:00:00:50 dst 192.0.2.3 self permanent", "00:00:00:00:00:00 dst 192.0.2.3 self permanent",
			"00:00:00:00:00:00 dst 192.0.2.2 self permanent")
		seg.Endpoints = nil
		reconcile(t, s.gwDP, seg)
		fdb := s.gw.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI))
		if strings.Contains(fdb, "02:00:00:00:00:50") {
			t.Errorf("endpoint's entries left behind:\n%s", fdb)
		}
		if n := s.gw.Run(t, "ip", "neigh", "show", "dev", BridgeName(testVNI), "nud", "permanent"); strings.TrimSpace(n) != "" {
			t.Errorf("neighbour left behind: %s", n)
		}
	})
	t.Run("segment removed", func(t *testing.T) {
		res := reconcile(t, s.gwDP)
		if !slices.Equal(res.Removed, []uint32{testVNI}) {
			t.Errorf("Removed = %v", res.Removed)
		}
		if out := s.gw.Run(t, "ip", "-o", "link", "show"); strings.Contains(out, ": nb-") {
			t.Errorf("owned links left:\n%s", out)
		}
		if out := s.gw.Run(t, "ip", "link", "show", "up0"); strings.Contains(out, "master") {
			t.Errorf("uplink still enslaved: %s", out)
		}
	})
}

func TestRefusals(t *testing.T) {
	ns := netnstest.New(t, "nb-ref")
	peer := netnstest.New(t, "nb-refp")
	netnstest.Veth(t, ns, "ul0", peer, "ul0")
	netnstest.Veth(t, ns, "trunk0", peer, "trunk0")
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
	d := New(ns.Handle, zaptest.NewLogger(t))
	base := Segment{Name: "s", Role: RoleGateway, LocalVTEP: gwVTEP}

	t.Run("foreign link with our name", func(t *testing.T) {
		ns.Run(t, "ip", "link", "add", "nb-br-77", "type", "bridge")
		seg := base
		seg.VNI = 77
		_, err := d.Reconcile(context.Background(), []Segment{seg})
		if err == nil || !strings.Contains(err.Error(), "not created by netbridge") {
			t.Fatalf("want a clash error, got %v", err)
		}
		if _, err := d.Reconcile(context.Background(), nil); err != nil {
			t.Fatalf("empty reconcile: %v", err)
		}
		if _, err := ns.Handle.LinkByName("nb-br-77"); err != nil {
			t.Errorf("foreign nb-br-77 was deleted: %v", err)
		}
		ns.Run(t, "ip", "link", "del", "nb-br-77")
	})
	t.Run("mtu does not fit the underlay", func(t *testing.T) {
		seg := base
		seg.VNI, seg.MTU = 78, 1500
		_, err := d.Reconcile(context.Background(), []Segment{seg})
		if err == nil || !strings.Contains(err.Error(), "VXLAN needs 1550") {
			t.Fatalf("want an MTU refusal, got %v", err)
		}
		assertNoOwnedLinks(t, ns)
	})
	t.Run("tagged trunk", func(t *testing.T) {
		caps, err := d.Probe()
		if err != nil {
			t.Fatalf("Probe: %v", err)
		}
		if !caps.Bridge || !caps.VXLAN {
			t.Fatalf("Probe: %+v: the host kernel needs bridge and vxlan", caps)
		}
		seg := base
		seg.VNI, seg.Uplink, seg.VLANID, seg.MTU = 79, "trunk0", 100, 1450
		_, err = d.Reconcile(context.Background(), []Segment{seg})
		if caps.VLAN {
			// A kernel with 8021q (CI may have one): the trunk works.
			if err != nil {
				t.Fatalf("Reconcile with 8021q: %v", err)
			}
			mustContain(t, "vlan", ns.Run(t, "ip", "-d", "link", "show", VLANName(79)), "vlan protocol 802.1Q id 100", "master nb-br-79")
			reconcile(t, d)
			return
		}
		var mf *MissingFeatureError
		if !errors.As(err, &mf) || mf.Module != "8021q" {
			t.Fatalf("want a MissingFeatureError naming 8021q, got %v", err)
		}
		if caps.Missing([]Segment{seg}) == nil {
			t.Errorf("Capabilities.Missing: nil for a tagged segment without 8021q")
		}
		t.Logf("as expected on this kernel: %v", err)
		assertNoOwnedLinks(t, ns) // nothing half-way
		if out := ns.Run(t, "ip", "-o", "link", "show"); strings.Contains(out, ": nb-p") {
			t.Errorf("probe links left:\n%s", out)
		}
	})
}

func assertNoOwnedLinks(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	if out := ns.Run(t, "ip", "-o", "link", "show"); strings.Contains(out, ": nb-") {
		t.Errorf("owned links exist after a refusal:\n%s", out)
	}
}

// TestMTURuntimeChange: an underlay or access-uplink MTU that drops under
// a programmed segment is a runtime change, not bad input: the segment
// stays programmed (nothing is deleted), the result names the device and
// both MTUs, and the drift watch notices the change within milliseconds.
func TestMTURuntimeChange(t *testing.T) {
	ns := netnstest.New(t, "nb-mtu")
	peer := netnstest.New(t, "nb-mtup")
	netnstest.Veth(t, ns, "ul0", peer, "ul0")
	netnstest.Veth(t, ns, "acc0", peer, "acc0")
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
	d, err := NewAt(ns.NsHandle, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("NewAt: %v", err)
	}
	t.Cleanup(d.Close)
	seg := Segment{Name: "s", Role: RoleGateway, LocalVTEP: gwVTEP, VNI: 91, MTU: 1450, Uplink: "acc0", Access: true}
	res := reconcile(t, d, seg)
	if len(res.Warnings) != 0 {
		t.Fatalf("warnings on a segment that fits: %v", res.Warnings)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drift := make(chan time.Time, 16)
	go func() { _ = d.WatchDrift(ctx, func() { drift <- time.Now() }) }()
	select { // the watch's first call says it is live
	case <-drift:
	case <-time.After(5 * time.Second):
		t.Fatal("drift watch not live")
	}

	changed := time.Now()
	ns.Run(t, "ip", "link", "set", "dev", "ul0", "mtu", "1400")
	select {
	case at := <-drift:
		t.Logf("underlay MTU change noticed in %s", at.Sub(changed).Round(time.Millisecond))
		if at.Sub(changed) > time.Second {
			t.Fatalf("MTU change noticed after %s", at.Sub(changed))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drift watch did not notice the underlay MTU change")
	}
	res, err = d.Reconcile(context.Background(), []Segment{seg})
	if err != nil {
		t.Fatalf("a programmed segment must not be refused for a runtime MTU change: %v", err)
	}
	w := res.Warnings[91]
	for _, want := range []string{"192.0.2.1", "MTU 1400", "1450", "needs 1500"} {
		if !strings.Contains(w, want) {
			t.Fatalf("warning %q does not name %q", w, want)
		}
	}
	for _, l := range []string{BridgeName(91), VXLANName(91)} {
		if _, err := ns.Handle.LinkByName(l); err != nil {
			t.Fatalf("%s was torn down: %v", l, err)
		}
	}
	if out := ns.Run(t, "ip", "link", "show", "acc0"); !strings.Contains(out, "master "+BridgeName(91)) {
		t.Fatalf("access uplink released: %s", out)
	}

	ns.Run(t, "ip", "link", "set", "dev", "ul0", "mtu", "1500")
	ns.Run(t, "ip", "link", "set", "dev", "acc0", "mtu", "1400")
	res, err = d.Reconcile(context.Background(), []Segment{seg})
	if err != nil {
		t.Fatal(err)
	}
	if w := res.Warnings[91]; !strings.Contains(w, "access uplink acc0 has MTU 1400, below the segment MTU 1450") {
		t.Fatalf("access uplink MTU: warning %q", w)
	}

	// A new segment that does not fit is still refused at its first
	// programming, with the fix named.
	ns.Run(t, "ip", "link", "set", "dev", "ul0", "mtu", "1400")
	fresh := Segment{Name: "t", Role: RoleGateway, LocalVTEP: gwVTEP, VNI: 92, MTU: 1450}
	_, err = d.Reconcile(context.Background(), []Segment{seg, fresh})
	if err == nil || !strings.Contains(err.Error(), "set the segment mtu to 1350 or less") {
		t.Fatalf("want a refusal naming the fix, got %v", err)
	}
}
