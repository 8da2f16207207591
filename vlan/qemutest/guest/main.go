// Command guest is /init of the QEMU guest that tests 802.1Q trunks: the
// host kernel has no 8021q, so vlan/qemutest boots a Debian kernel with
// this program as its only userland. It loads the modules, builds
// legacy host -- 802.1Q trunk -- gateway == VXLAN == node inside the guest,
// drives vlan.DataPlane, prints one "PASS name" or "FAIL name: reason" line
// per check and "DONE", and powers the guest off.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
	"github.com/netbridge-io/netbridge/internal/qemuguest/inguest"
	"github.com/netbridge-io/netbridge/vlan"
)

const (
	vni     = 1100
	vid     = 100
	otherID = 200
)

var (
	gwVTEP   = netip.MustParseAddr("192.0.2.1")
	nodeVTEP = netip.MustParseAddr("192.0.2.2")
	vmIP     = netip.MustParseAddr("10.0.100.50")
)

func main() {
	inguest.PowerOff(run())
}

func run() bool {
	c := &inguest.Checker{}
	if !c.Check("boot", inguest.Boot()) {
		return true
	}
	log := zap.NewNop()
	root, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if !c.Check("netlink", err) {
		return true
	}
	gw := vlan.New(root, log)
	caps, err := gw.Probe()
	if err == nil && !caps.VLAN {
		err = fmt.Errorf("probe says no 802.1Q: %+v", caps)
	}
	if !c.Check("probe-8021q", err) {
		return true
	}

	legacy, err := inguest.NewNS("legacy")
	if !c.Check("netns-legacy", err) {
		return true
	}
	node, err := inguest.NewNS("node")
	if !c.Check("netns-node", err) {
		return true
	}
	rootNS := &netnstest.NS{Name: "root", Handle: root, NsHandle: mustCurrentNS()}
	if !c.Check("topology", topology(rootNS, legacy, node)) {
		return true
	}

	nodeDP := vlan.New(node.Handle, log)
	nodeSeg := vlan.Segment{Name: "legacy-100", VNI: vni, Role: vlan.RoleNode, MTU: 1450,
		LocalVTEP: nodeVTEP, FloodVTEPs: []netip.Addr{gwVTEP}}
	_, err = nodeDP.Reconcile(context.Background(), []vlan.Segment{nodeSeg})
	if !c.Check("reconcile-node", err) {
		return true
	}
	// The node's bridge plays the VM: it holds the VM's address and MAC.
	var vmMAC net.HardwareAddr
	err = func() error {
		br, err := node.Handle.LinkByName(vlan.BridgeName(vni))
		if err != nil {
			return err
		}
		vmMAC = br.Attrs().HardwareAddr
		return node.Handle.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: vmIP.AsSlice(), Mask: net.CIDRMask(24, 32)}})
	}()
	if !c.Check("vm-address", err) {
		return true
	}

	gwSeg := vlan.Segment{Name: "legacy-100", VNI: vni, Role: vlan.RoleGateway, Uplink: "trunka", VLANID: vid, MTU: 1450,
		LocalVTEP: gwVTEP, FloodVTEPs: []netip.Addr{nodeVTEP},
		Endpoints: []vlan.Endpoint{{MAC: vmMAC, IPs: []netip.Addr{vmIP}, VTEP: nodeVTEP}}}
	res, err := gw.Reconcile(context.Background(), []vlan.Segment{gwSeg})
	if err == nil && res.Changes == 0 {
		err = errors.New("first reconcile changed nothing")
	}
	if !c.Check("reconcile-gateway-tagged", err) {
		return true
	}
	c.Check("vlan-device", checkVLANDevice(root))
	c.Check("tagged-arp-reaches-vm", expectHolder(legacy, "trunkb.100", vmIP, vmMAC))
	c.Check("udp-roundtrip-over-tag", udpRoundTrip(legacy, node))
	c.Check("other-tag-isolated", expectHolder(legacy, "trunkb.200", vmIP, nil))
	ipv6Checks(c, legacy)

	res, err = gw.Reconcile(context.Background(), []vlan.Segment{gwSeg})
	if err == nil && res.Changes != 0 {
		err = fmt.Errorf("re-run changed %d things", res.Changes)
	}
	c.Check("idempotent", err)
	res, err = vlan.New(root, log).Reconcile(context.Background(), []vlan.Segment{gwSeg})
	if err == nil && res.Changes != 0 {
		err = fmt.Errorf("restarted agent changed %d things", res.Changes)
	}
	c.Check("restart-adopts", err)

	standby := gwSeg
	standby.Uplink = ""
	_, err = gw.Reconcile(context.Background(), []vlan.Segment{standby})
	if err == nil {
		if _, lerr := root.LinkByName(vlan.VLANName(vni)); lerr == nil {
			err = errors.New("VLAN sub-interface still there")
		}
	}
	if c.Check("standby-detaches-vlan", err) {
		c.Check("detached-vlan-unreachable", expectHolder(legacy, "trunkb.100", vmIP, nil))
	}
	_, err = gw.Reconcile(context.Background(), nil)
	if err == nil {
		err = noOwnedLinks(root)
	}
	c.Check("remove-segment", err)
	return c.Failed
}

func topology(root, legacy, node *netnstest.NS) error {
	veth := func(a *netnstest.NS, an string, b *netnstest.NS, bn string) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = an
		if err := a.Handle.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: bn, PeerNamespace: netlink.NsFd(b.NsHandle)}); err != nil {
			return fmt.Errorf("veth %s-%s: %w", an, bn, err)
		}
		return errors.Join(up(a.Handle, an), up(b.Handle, bn))
	}
	if err := veth(root, "trunka", legacy, "trunkb"); err != nil {
		return err
	}
	if err := veth(root, "ul0", node, "ul0"); err != nil {
		return err
	}
	if err := addAddr(root.Handle, "ul0", gwVTEP, 24); err != nil {
		return err
	}
	if err := addAddr(node.Handle, "ul0", nodeVTEP, 24); err != nil {
		return err
	}
	// The legacy host: the segment on tag 100, another subnet's host with
	// an address of the same range on tag 200 (must never see the VM).
	for _, v := range []struct {
		id int
		ip string
	}{{vid, "10.0.100.1"}, {otherID, "10.0.100.2"}} {
		parent, err := legacy.Handle.LinkByName("trunkb")
		if err != nil {
			return err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = fmt.Sprintf("trunkb.%d", v.id)
		attrs.ParentIndex = parent.Attrs().Index
		attrs.MTU = 1450
		if err := legacy.Handle.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: v.id}); err != nil {
			return fmt.Errorf("legacy vlan %d: %w", v.id, err)
		}
		if err := up(legacy.Handle, attrs.Name); err != nil {
			return err
		}
		if err := addAddr(legacy.Handle, attrs.Name, netip.MustParseAddr(v.ip), 24); err != nil {
			return err
		}
	}
	return nil
}

func mustCurrentNS() netns.NsHandle {
	h, err := netns.Get()
	if err != nil {
		panic(err)
	}
	return h
}

func up(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

func addAddr(h *netlink.Handle, name string, ip netip.Addr, bits int) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, 32)}})
}

func checkVLANDevice(h *netlink.Handle) error {
	l, err := h.LinkByName(vlan.VLANName(vni))
	if err != nil {
		return err
	}
	v, ok := l.(*netlink.Vlan)
	if !ok {
		return fmt.Errorf("%s is a %s, not a vlan", l.Attrs().Name, l.Type())
	}
	trunk, err := h.LinkByName("trunka")
	if err != nil {
		return err
	}
	br, err := h.LinkByName(vlan.BridgeName(vni))
	if err != nil {
		return err
	}
	if v.VlanId != vid || v.ParentIndex != trunk.Attrs().Index || v.MasterIndex != br.Attrs().Index || v.MTU != 1450 {
		return fmt.Errorf("vlan device: id %d parent %d master %d mtu %d; want id %d parent %d master %d mtu 1450",
			v.VlanId, v.ParentIndex, v.MasterIndex, v.MTU, vid, trunk.Attrs().Index, br.Attrs().Index)
	}
	return nil
}

// expectHolder ARP-probes ip from the legacy side; want nil means nobody
// may answer.
func expectHolder(legacy *netnstest.NS, iface string, ip netip.Addr, want net.HardwareAddr) error {
	var found map[netip.Addr]net.HardwareAddr
	err := legacy.Do(func() error {
		p, err := vlan.OpenPort(iface)
		if err != nil {
			return err
		}
		defer p.Close()
		found, err = p.Probe(context.Background(), []netip.Addr{ip}, vlan.ProbeOptions{Wait: time.Second})
		return err
	})
	if err != nil {
		return err
	}
	got := found[ip]
	if want == nil && got != nil {
		return fmt.Errorf("%s answered on %s by %s, want silence", ip, iface, got)
	}
	if want != nil && got.String() != want.String() {
		return fmt.Errorf("%s on %s: held by %q, want %s", ip, iface, got, want)
	}
	return nil
}

func udpRoundTrip(legacy, node *netnstest.NS) error {
	var srv *net.UDPConn
	err := node.Do(func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: vmIP.AsSlice(), Port: 7777})
		return err
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteToUDP(buf[:n], from)
		}
	}()
	var cli *net.UDPConn
	err = legacy.Do(func() (err error) {
		cli, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: vmIP.AsSlice(), Port: 7777})
		return err
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	// 1400 bytes: near the segment MTU, so a VXLAN MTU mistake would show.
	msg := []byte(strings.Repeat("netbridge", 1400/9))
	buf := make([]byte, 2048)
	for i := 0; i < 5; i++ {
		if _, err := cli.Write(msg); err != nil {
			return err
		}
		_ = cli.SetReadDeadline(time.Now().Add(time.Second))
		n, err := cli.Read(buf)
		if err == nil && string(buf[:n]) == string(msg) {
			return nil
		}
	}
	return errors.New("no echo from the VM across the tagged trunk")
}

func noOwnedLinks(h *netlink.Handle) error {
	links, err := h.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "nb-") {
			return fmt.Errorf("link %s left behind", l.Attrs().Name)
		}
	}
	return nil
}
