// Command guest is /init of the trunk guest (e2e/trunk): a Debian kernel
// with 8021q runs the real netbridge-gateway (/bin/netbridge-gateway, file
// mode) with two tagged segments on one 802.1Q trunk, and this program
// checks by frames what crosses it. Topology, one network namespace each:
//
//	hA (VLAN 100) ─┐
//	hB (VLAN 200) ─┼─ sw: vlan-filtering bridge ── trunk ══ gw: eth1 (tagged 100, 200)
//	hU (VLAN 300) ─┘   (300: no segment uses it)          gw: ul0 ── VXLAN ── node: ul0
//	                                                       node: nb-br-1100 ── vmA
//	                                                       node: nb-br-1200 ── vmB
//
// It prints "PASS name" / "FAIL name: reason" per check, "TIME k=v"
// figures, "DONE", and powers the guest off.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
	"github.com/netbridge-io/netbridge/internal/qemuguest/inguest"
	"github.com/netbridge-io/netbridge/vlan"
)

const (
	gatewayBin = "/bin/netbridge-gateway"
	gwConfig   = "/tmp/gw.yaml"
	gwLog      = "/tmp/gw.log"
	vidA       = 100
	vidB       = 200
	vidUnused  = 300
	vniA       = 1100
	vniB       = 1200
)

var (
	gwVTEP   = netip.MustParseAddr("192.0.2.1")
	nodeVTEP = netip.MustParseAddr("192.0.2.2")
)

// host is one interface (eth0) with a fixed MAC in the namespace of its
// name.
type host struct {
	name string
	mac  string
	ips  []string // CIDR
}

func (h host) hw() net.HardwareAddr { m, _ := net.ParseMAC(h.mac); return m }

// The legacy hosts and the VMs. hB also holds 10.0.100.2 (an address of
// segment a's subnet, on the wrong VLAN) and 10.0.200.77, the address of
// endpoint vmdup: the duplicate the gate must catch. hU holds addresses of
// both subnets on the unused VLAN.
var (
	hA   = host{name: "hA", mac: "02:00:00:00:a1:01", ips: []string{"10.0.100.1/24"}}
	hB   = host{name: "hB", mac: "02:00:00:00:b2:01", ips: []string{"10.0.200.1/24", "10.0.100.2/24", "10.0.200.77/24"}}
	hU   = host{name: "hU", mac: "02:00:00:00:c3:01", ips: []string{"10.0.100.9/24", "10.0.200.9/24"}}
	vmA  = host{name: "vmA", mac: "02:00:00:01:00:50", ips: []string{"10.0.100.50/24"}}
	vmB  = host{name: "vmB", mac: "02:00:00:02:00:50", ips: []string{"10.0.200.50/24"}}
	vmUp = "02:00:00:02:00:77" // vmdup's MAC: never attached, its IP is hB's
)

func main() {
	// The host puts haDir into the initramfs for the HA run (ha.go).
	if _, err := os.Stat(haDir); err == nil {
		inguest.PowerOff(runHA())
		return
	}
	inguest.PowerOff(run())
}

func run() bool {
	c := &inguest.Checker{}
	if !c.Check("boot", inguest.Boot()) {
		return true
	}
	ns := map[string]*netnstest.NS{}
	for _, n := range []string{"sw", "gw", "node", "hA", "hB", "hU", "vmA", "vmB"} {
		var err error
		if ns[n], err = inguest.NewNS(n); !c.Check("netns-"+n, err) {
			return true
		}
	}
	if !c.Check("topology", topology(ns)) {
		return true
	}
	if !c.Check("node-vxlan", nodeSide(ns, gwVTEP)) {
		return true
	}
	start := time.Now()
	gw, err := startGateway(ns["gw"])
	if !c.Check("gateway-start", err) {
		return true
	}
	defer func() { _ = gw.Process.Kill() }()
	err = waitGateway(ns["gw"], 90*time.Second)
	fmt.Printf("TIME gateway_up_ms=%d\n", time.Since(start).Milliseconds())
	if !c.Check("gateway-tagged-segments-up", err) {
		dumpLog()
		return true
	}
	c.Check("gateway-bfd-guard-nftables", logLacks("bfdGuardUnavailable"))
	c.Check("gateway-tag-guard-nftables", logLacks("tagGuardUnavailable"))

	// (a) two segments on one trunk.
	c.Check("seg-vmA-reaches-vlan100-host", expectHolder(ns, vmA, "10.0.100.1", hA.hw()))
	c.Check("seg-vmB-reaches-vlan200-host", expectHolder(ns, vmB, "10.0.200.1", hB.hw()))
	c.Check("seg-vmA-not-vlan200-host", expectHolder(ns, vmA, "10.0.100.2", nil))
	c.Check("seg-vmA-not-unused-vlan-host", expectHolder(ns, vmA, "10.0.100.9", nil))
	c.Check("seg-vmB-not-unused-vlan-host", expectHolder(ns, vmB, "10.0.200.9", nil))
	caps, err := captures(ns)
	if !c.Check("captures", err) {
		return true
	}
	defer func() {
		for _, cp := range caps {
			cp.close()
		}
	}()
	window := 1500 * time.Millisecond
	c.Check("seg-broadcast-vlan100-only-in-segment-a", expectFrames("nb-bcast-100",
		func() error { return send(ns["hA"], "eth0", broadcastFrame(hA.hw(), "nb-bcast-100"), 3) },
		map[*capture]int{caps["vmA"]: 1, caps["vmB"]: 0, caps["hB"]: 0, caps["hU"]: 0}, window))
	if !c.Check("seg-broadcast-vlan200-only-in-segment-b", expectFrames("nb-bcast-200",
		func() error { return send(ns["hB"], "eth0", broadcastFrame(hB.hw(), "nb-bcast-200"), 3) },
		map[*capture]int{caps["vmB"]: 1, caps["vmA"]: 0, caps["hA"]: 0, caps["hU"]: 0}, window)) {
		trace(ns, hB, vniB, "nb-trace-200")
	}
	c.Check("seg-unused-vlan-never-enters", expectFrames("nb-bcast-300",
		func() error { return send(ns["hU"], "eth0", broadcastFrame(hU.hw(), "nb-bcast-300"), 3) },
		map[*capture]int{caps["vmA"]: 0, caps["vmB"]: 0, caps["hA"]: 0, caps["hB"]: 0}, window))
	if !c.Check("seg-vm-broadcast-only-on-own-vlan", expectFrames("nb-bcast-vmA",
		func() error { return send(ns["vmA"], "eth0", broadcastFrame(vmA.hw(), "nb-bcast-vmA"), 3) },
		map[*capture]int{caps["hA"]: 1, caps["hB"]: 0, caps["hU"]: 0, caps["vmB"]: 0}, window)) {
		trace(ns, vmA, vniA, "nb-trace-vmA")
	}

	// (b) frames injected on the trunk itself (the switch's trunk port).
	src := hA.hw()
	inject := func(marker string, tags ...tag) func() error {
		return func() error { return send(ns["sw"], "trunk", broadcastFrame(src, marker, tags...), 3) }
	}
	none := map[*capture]int{caps["vmA"]: 0, caps["vmB"]: 0}
	c.Check("qinq-88a8-outer-100-not-bridged", expectFrames("nb-qinq-ad",
		inject("nb-qinq-ad", tag{0x88a8, vidA}, tag{0x8100, vidA}), none, window))
	c.Check("qinq-88a8-outer-200-not-bridged", expectFrames("nb-qinq-ad2",
		inject("nb-qinq-ad2", tag{0x88a8, vidB}, tag{0x8100, vidB}), none, window))
	c.Check("qinq-8100-in-8100-not-bridged", expectFrames("nb-qinq-qq",
		inject("nb-qinq-qq", tag{0x8100, vidA}, tag{0x8100, vidA}), none, window))
	c.Check("qinq-8100-outer-88a8-inner-not-bridged", expectFrames("nb-qinq-qad",
		inject("nb-qinq-qad", tag{0x8100, vidA}, tag{0x88a8, vidA}), none, window))
	c.Check("pcp-5-vlan100-bridged", expectFrames("nb-pcp-5",
		inject("nb-pcp-5", tag{0x8100, 5<<13 | vidA}), map[*capture]int{caps["vmA"]: 1, caps["vmB"]: 0}, window))
	c.Check("pcp-7-dei-vlan200-bridged", expectFrames("nb-pcp-7",
		inject("nb-pcp-7", tag{0x8100, 7<<13 | 1<<12 | vidB}), map[*capture]int{caps["vmB"]: 1, caps["vmA"]: 0}, window))

	// (c) the duplicate-address gate on tagged VLAN 200: hB holds vmdup's IP.
	c.Check("dup-gate-log-duplicateAddress", waitLog(60*time.Second, `"event":"duplicateAddress"`, `"ip":"10.0.200.77"`))
	c.Check("dup-gate-probes-from-vlan200-subinterface", waitLog(5*time.Second, `"event":"duplicateAddress"`, `"iface":"`+vlan.VLANName(vniB)+`"`))
	c.Check("dup-gate-metrics", expectMetrics(ns["gw"], "netbridge_gateway_duplicate_address_total 1",
		`netbridge_gateway_endpoints{state="refused"} 1`))
	c.Check("dup-gate-clears-free-address", waitLog(30*time.Second, `"event":"addressFree"`, `"ip":"10.0.200.50"`))

	// The kernel fence on a tagged sub-interface, judged by frames. File
	// mode has no fence (it needs the Lease); the test drives one on the
	// gateway's nb-vl-1100 as the HA agent would.
	fenceChecks(c, ns, caps, window)
	if c.Failed {
		dumpLog()
	}
	return c.Failed
}

// fenceChecks: while the agent vouches for the sub-interface, a legacy
// broadcast crosses once; once the vouching lapses (no refresh within the
// TTL: a hung agent), nothing crosses it, while the unguarded VLAN 200
// sub-interface keeps bridging.
func fenceChecks(c *inguest.Checker, ns map[string]*netnstest.NS, caps map[string]*capture, window time.Duration) {
	const ttl = 800 * time.Millisecond
	port := vlan.VLANName(vniA)
	f, err := vlan.NewFenceIn(ns["gw"].NsHandle, ttl)
	if !c.Check("fence-install-on-subinterface", err) {
		return
	}
	defer func() { _ = f.Remove(); _ = f.Close() }()
	err = f.Guard([]string{port}, map[string]time.Duration{port: ttl})
	if err == nil {
		err = expectFrames("nb-fence-alive", func() error { return send(ns["hA"], "eth0", broadcastFrame(hA.hw(), "nb-fence-alive"), 1) },
			map[*capture]int{caps["vmA"]: 1}, 300*time.Millisecond)
	}
	if err == nil {
		if n := caps["vmA"].count("nb-fence-alive", time.Now()); n != 0 {
			err = fmt.Errorf("vmA saw the one broadcast %d more times", n)
		}
	}
	c.Check("fence-alive-subinterface-bridges-once", err)
	time.Sleep(ttl + 400*time.Millisecond)
	c.Check("fence-lapsed-subinterface-drops", expectFrames("nb-fence-lapsed",
		func() error { return send(ns["hA"], "eth0", broadcastFrame(hA.hw(), "nb-fence-lapsed"), 3) },
		map[*capture]int{caps["vmA"]: 0}, window))
	c.Check("fence-unguarded-subinterface-bridges", expectFrames("nb-fence-other",
		func() error { return send(ns["hB"], "eth0", broadcastFrame(hB.hw(), "nb-fence-other"), 3) },
		map[*capture]int{caps["vmB"]: 1}, window))
}

func topology(ns map[string]*netnstest.NS) error {
	if err := veth(ns["gw"], "ul0", ns["node"], "ul0", ""); err != nil {
		return err
	}
	if err := addAddrs(ns["gw"], "ul0", gwVTEP.String()+"/24"); err != nil {
		return err
	}
	if err := addAddrs(ns["node"], "ul0", nodeVTEP.String()+"/24"); err != nil {
		return err
	}
	return legacySwitch(ns, map[string]string{"trunk": "gw"})
}

// legacySwitch builds the legacy switch in sw: a VLAN-aware bridge, one
// trunk port per gateway (switch port name → gateway namespace, whose end
// is eth1) tagged with all three VLANs, one access port per host.
func legacySwitch(ns map[string]*netnstest.NS, trunks map[string]string) error {
	sw := ns["sw"].Handle
	vf := true
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "sw0"}, VlanFiltering: &vf}
	if err := sw.LinkAdd(br); err != nil {
		return fmt.Errorf("switch bridge: %w", err)
	}
	for port, gw := range trunks {
		if err := veth(ns["sw"], port, ns[gw], "eth1", ""); err != nil {
			return err
		}
		trunk, err := sw.LinkByName(port)
		if err != nil {
			return err
		}
		if err := sw.LinkSetMaster(trunk, br); err != nil {
			return err
		}
		if err := sw.BridgeVlanDel(trunk, 1, true, true, false, true); err != nil {
			return fmt.Errorf("%s: remove default VLAN 1: %w", port, err)
		}
		for _, vid := range []uint16{vidA, vidB, vidUnused} {
			if err := sw.BridgeVlanAdd(trunk, vid, false, false, false, true); err != nil {
				return fmt.Errorf("%s: tag VLAN %d: %w", port, vid, err)
			}
		}
	}
	for _, p := range []struct {
		h   host
		vid uint16
	}{{hA, vidA}, {hB, vidB}, {hU, vidUnused}} {
		port := "p-" + p.h.name
		if err := veth(ns["sw"], port, ns[p.h.name], "eth0", p.h.mac); err != nil {
			return err
		}
		l, err := sw.LinkByName(port)
		if err != nil {
			return err
		}
		if err := sw.LinkSetMaster(l, br); err != nil {
			return err
		}
		if err := sw.BridgeVlanDel(l, 1, true, true, false, true); err != nil {
			return err
		}
		if err := sw.BridgeVlanAdd(l, p.vid, true, true, false, true); err != nil {
			return fmt.Errorf("access port %s VLAN %d: %w", port, p.vid, err)
		}
		if err := addAddrs(ns[p.h.name], "eth0", p.h.ips...); err != nil {
			return err
		}
	}
	return up(sw, "sw0")
}

// nodeSide builds the VMs' node by hand (vlan.DataPlane, role node): one
// VXLAN segment per VNI flooding to the gateway, each VM a veth on its
// segment bridge.
func nodeSide(ns map[string]*netnstest.NS, gateways ...netip.Addr) error {
	node := ns["node"]
	dp := vlan.New(node.Handle, zap.NewNop())
	var segs []vlan.Segment
	for _, vni := range []uint32{vniA, vniB} {
		segs = append(segs, vlan.Segment{Name: fmt.Sprint(vni), VNI: vni, Role: vlan.RoleNode, MTU: 1450,
			LocalVTEP: nodeVTEP, FloodVTEPs: gateways})
	}
	if _, err := dp.Reconcile(context.Background(), segs); err != nil {
		return fmt.Errorf("node reconcile: %w", err)
	}
	for _, v := range []struct {
		h   host
		vni uint32
	}{{vmA, vniA}, {vmB, vniB}} {
		port := "p-" + v.h.name
		if err := veth(node, port, ns[v.h.name], "eth0", v.h.mac); err != nil {
			return err
		}
		br, err := node.Handle.LinkByName(vlan.BridgeName(v.vni))
		if err != nil {
			return err
		}
		l, err := node.Handle.LinkByName(port)
		if err != nil {
			return err
		}
		if err := node.Handle.LinkSetMTU(l, 1450); err != nil {
			return err
		}
		if err := node.Handle.LinkSetMaster(l, br); err != nil {
			return err
		}
		if err := addAddrs(ns[v.h.name], "eth0", v.h.ips...); err != nil {
			return err
		}
	}
	return nil
}

// gatewayConfig is the standalone file: two tagged segments on trunk eth1.
func gatewayConfig() string {
	return fmt.Sprintf(`name: trunk
spec:
  gatewaySelector: {}
  uplink: {interface: eth1}
  segments:
  - {name: a, vlanID: %d, vni: %d, subnets: ["10.0.100.0/24"], mtu: 1450}
  - {name: b, vlanID: %d, vni: %d, subnets: ["10.0.200.0/24"], mtu: 1450}
endpoints:
- {name: vma, segment: a, ips: ["10.0.100.50"], mac: %q, vtep: %q, state: Active}
- {name: vmb, segment: b, ips: ["10.0.200.50"], mac: %q, vtep: %q, state: Active}
- {name: vmdup, segment: b, ips: ["10.0.200.77"], mac: %q, vtep: %q, state: Active}
`, vidA, vniA, vidB, vniB, vmA.mac, nodeVTEP, vmB.mac, nodeVTEP, vmUp, nodeVTEP)
}

func startGateway(gw *netnstest.NS) (*exec.Cmd, error) {
	if err := os.WriteFile(gwConfig, []byte(gatewayConfig()), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(gwLog)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(gatewayBin, "--role=gateway", "--node-name=gw1", "--config="+gwConfig, "--vtep="+gwVTEP.String(),
		"--metrics-bind-address=127.0.0.1:9650", "--health-probe-bind-address=",
		// A long probe wait: under TCG on a loaded host an ARP answer can
		// take longer than the 500 ms default.
		"--probe-wait=1500ms", "--duplicate-backoff-min=500ms", "--duplicate-backoff-max=2s",
		"--reachability-interval=2s", "--graceful-shutdown-wait=1s", "--log-level=info")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Started from a thread inside gw's namespace: the child inherits it.
	err = gw.Do(cmd.Start)
	return cmd, err
}

// waitGateway waits until both tagged sub-interfaces exist on eth1 and are
// ports of their segment bridges.
func waitGateway(gw *netnstest.NS, d time.Duration) error {
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = segmentsUp(gw); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

func segmentsUp(gw *netnstest.NS) error {
	trunk, err := gw.Handle.LinkByName("eth1")
	if err != nil {
		return err
	}
	for _, s := range []struct {
		vni uint32
		vid int
	}{{vniA, vidA}, {vniB, vidB}} {
		l, err := gw.Handle.LinkByName(vlan.VLANName(s.vni))
		if err != nil {
			return fmt.Errorf("segment %d: %w", s.vni, err)
		}
		v, ok := l.(*netlink.Vlan)
		if !ok {
			return fmt.Errorf("%s is a %s, not a vlan", l.Attrs().Name, l.Type())
		}
		br, err := gw.Handle.LinkByName(vlan.BridgeName(s.vni))
		if err != nil {
			return err
		}
		if v.VlanId != s.vid || v.ParentIndex != trunk.Attrs().Index || v.MasterIndex != br.Attrs().Index {
			return fmt.Errorf("%s: id %d parent %d master %d, want id %d on eth1 in %s", l.Attrs().Name,
				v.VlanId, v.ParentIndex, v.MasterIndex, s.vid, br.Attrs().Name)
		}
	}
	return nil
}

// trace resends a broadcast from h and prints where along the path to the
// VM it was seen (a diagnosis for a failed check, not a check).
func trace(ns map[string]*netnstest.NS, h host, vni uint32, marker string) {
	places := []struct{ ns, iface string }{{"gw", vlan.VLANName(vni)}, {"gw", vlan.VXLANName(vni)}, {"gw", "ul0"},
		{"node", "ul0"}, {"node", vlan.VXLANName(vni)}, {"node", "p-" + h.name}}
	var caps []*capture
	for _, p := range places {
		c, err := openCapture(ns[p.ns], p.iface)
		if err != nil {
			fmt.Printf("INFO trace %s/%s: %v\n", p.ns, p.iface, err)
			continue
		}
		defer c.close()
		c.outgoing = true
		caps = append(caps, c)
	}
	_ = send(ns[h.name], "eth0", broadcastFrame(h.hw(), marker), 3)
	until := time.Now().Add(time.Second)
	fmt.Printf("INFO trace %s: 3 frames sent, counts include frames sent by each interface\n", marker)
	for _, c := range caps {
		fmt.Printf("INFO trace %s from %s: %s saw %d\n", marker, h.name, c.where, c.count(marker, until))
	}
	for _, p := range []struct{ ns, dev string }{{"gw", vlan.VXLANName(vni)}, {"node", vlan.VXLANName(vni)}, {"gw", vlan.BridgeName(vni)}, {"node", vlan.BridgeName(vni)}} {
		n := ns[p.ns]
		l, err := n.Handle.LinkByName(p.dev)
		if err != nil {
			continue
		}
		neighs, _ := n.Handle.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		for _, e := range neighs {
			fmt.Printf("INFO fdb %s/%s: mac %s dst %s state %#x flags %#x master %d link %d\n", p.ns, p.dev, e.HardwareAddr, e.IP, e.State, e.Flags, e.MasterIndex, e.LinkIndex)
		}
	}
	for _, p := range []struct{ ns, dev string }{{"gw", vlan.VLANName(vni)}, {"gw", vlan.VXLANName(vni)}, {"gw", "ul0"}, {"node", "ul0"},
		{"node", vlan.VXLANName(vni)}, {"node", "p-vmA"}, {"node", "p-vmB"}, {"vmA", "eth0"}, {"vmB", "eth0"}} {
		if l, err := ns[p.ns].Handle.LinkByName(p.dev); err == nil && l.Attrs().Statistics != nil {
			st := l.Attrs().Statistics
			fmt.Printf("INFO stats %s/%s: rx %d tx %d rx_dropped %d tx_dropped %d\n", p.ns, p.dev, st.RxPackets, st.TxPackets, st.RxDropped, st.TxDropped)
		}
	}
	for _, n := range []string{"gw", "node"} {
		l, err := ns[n].Handle.LinkByName("ul0")
		if err != nil {
			continue
		}
		neighs, _ := ns[n].Handle.NeighList(l.Attrs().Index, unix.AF_INET)
		for _, e := range neighs {
			fmt.Printf("INFO neigh %s/ul0: %s %s state %#x\n", n, e.IP, e.HardwareAddr, e.State)
		}
	}
}

func captures(ns map[string]*netnstest.NS) (map[string]*capture, error) {
	caps := map[string]*capture{}
	for _, n := range []string{"vmA", "vmB", "hA", "hB", "hU"} {
		c, err := openCapture(ns[n], "eth0")
		if err != nil {
			return nil, err
		}
		caps[n] = c
	}
	return caps, nil
}

// expectHolder ARP-probes ip from h; want nil means nobody may answer.
func expectHolder(ns map[string]*netnstest.NS, h host, ip string, want net.HardwareAddr) error {
	addr := netip.MustParseAddr(ip)
	var found map[netip.Addr]net.HardwareAddr
	// A few tries: the first ARP crosses a cold path (VXLAN flood, learning).
	for i := 0; i < 3; i++ {
		err := ns[h.name].Do(func() error {
			p, err := vlan.OpenPort("eth0")
			if err != nil {
				return err
			}
			defer p.Close()
			found, err = p.Probe(context.Background(), []netip.Addr{addr}, vlan.ProbeOptions{Wait: time.Second})
			return err
		})
		if err != nil {
			return err
		}
		if want == nil || found[addr] != nil {
			break
		}
	}
	got := found[addr]
	if want == nil && got != nil {
		return fmt.Errorf("%s answered to %s by %s, want silence", ip, h.name, got)
	}
	if want != nil && got.String() != want.String() {
		return fmt.Errorf("%s from %s: held by %q, want %s", ip, h.name, got, want)
	}
	return nil
}

func logLacks(s string) error {
	raw, err := os.ReadFile(gwLog)
	if err != nil {
		return err
	}
	if strings.Contains(string(raw), s) {
		return fmt.Errorf("gateway log has %s", s)
	}
	return nil
}

// waitLog waits for one gateway log line holding every part.
func waitLog(d time.Duration, parts ...string) error { return waitLogIn(gwLog, d, parts...) }

// waitLogIn waits for one line of the log file path holding every part.
func waitLogIn(path string, d time.Duration, parts ...string) error {
	deadline := time.Now().Add(d)
	for {
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(raw), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no line with %q in %s after %s", parts, path, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// expectMetrics reads the gateway's /metrics inside its namespace (the
// socket is made on the namespace's thread; http.Transport would dial
// from another one).
func expectMetrics(gw *netnstest.NS, want ...string) error {
	var body string
	err := gw.Do(func() error {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:9650", 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: gw\r\n\r\n"); err != nil {
			return err
		}
		raw, err := io.ReadAll(conn)
		body = string(raw)
		return err
	})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var missing []string
	for _, w := range want {
		if !strings.Contains(body, w) {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		var have []string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "netbridge_gateway_duplicate") || strings.HasPrefix(l, "netbridge_gateway_endpoints") {
				have = append(have, l)
			}
		}
		return fmt.Errorf("metrics lack %q; have %q", missing, have)
	}
	return nil
}

// dumpLog prints the gateway's warnings and errors, then its last lines.
func dumpLog() { dumpLogOf(gwLog) }

func dumpLogOf(path string) {
	raw, _ := os.ReadFile(path)
	fmt.Printf("==== %s: warnings and errors\n", path)
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) {
			fmt.Println(l)
		}
	}
	if len(raw) > 4000 {
		raw = raw[len(raw)-4000:]
	}
	fmt.Printf("==== %s (tail)\n%s\n====\n", path, raw)
}

func veth(a *netnstest.NS, an string, b *netnstest.NS, bn, bmac string) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = an
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: bn, PeerNamespace: netlink.NsFd(b.NsHandle)}
	if bmac != "" {
		v.PeerHardwareAddr, _ = net.ParseMAC(bmac)
	}
	if err := a.Handle.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s-%s/%s: %w", a.Name, an, b.Name, bn, err)
	}
	return errors.Join(up(a.Handle, an), up(b.Handle, bn))
}

func up(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

func addAddrs(ns *netnstest.NS, name string, cidrs ...string) error {
	l, err := ns.Handle.LinkByName(name)
	if err != nil {
		return err
	}
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			return err
		}
		if err := ns.Handle.AddrAdd(l, a); err != nil {
			return fmt.Errorf("%s/%s %s: %w", ns.Name, name, c, err)
		}
	}
	return nil
}
