package vlan

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// TestLearnedMACs: legacy hosts send real frames into a bridge's VLAN
// port; LearnedMACs lists exactly their MACs, not a static entry on the
// same port, not what was learned on another port, not the bridge's or the
// port's own addresses.
func TestLearnedMACs(t *testing.T) {
	gw := netnstest.New(t, "nb-lm")
	legacy := netnstest.New(t, "nb-lml")
	other := netnstest.New(t, "nb-lmo")
	for _, ns := range []*netnstest.NS{gw, legacy, other} {
		ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	netnstest.Veth(t, gw, "up0", legacy, "eth0")
	netnstest.Veth(t, gw, "tap0", other, "eth0")
	gw.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	gw.Run(t, "ip", "link", "set", "br0", "up")
	gw.Run(t, "ip", "link", "set", "up0", "master", "br0")
	gw.Run(t, "ip", "link", "set", "tap0", "master", "br0")
	dp := New(gw.Handle, zaptest.NewLogger(t))

	if macs, err := dp.LearnedMACs("up0"); err != nil || len(macs) != 0 {
		t.Fatalf("before any frame: %v, %v; want none", macs, err)
	}
	hosts := []net.HardwareAddr{{0x02, 0x10, 0, 0, 0, 1}, {0x02, 0x10, 0, 0, 0, 2}, {0x02, 0x10, 0, 0, 0, 3}}
	sendFrom(t, legacy, "eth0", hosts...)
	sendFrom(t, other, "eth0", net.HardwareAddr{0x02, 0x20, 0, 0, 0, 1})
	static := net.HardwareAddr{0x02, 0x30, 0, 0, 0, 1}
	up0, err := gw.Handle.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Handle.NeighAppend(&netlink.Neigh{LinkIndex: up0.Attrs().Index, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_MASTER, State: netlink.NUD_NOARP, HardwareAddr: static}); err != nil {
		t.Fatalf("static entry: %v", err)
	}
	t.Logf("fdb:\n%s", gw.Run(t, "bridge", "fdb", "show", "br", "br0"))

	var got []string
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		macs, err := dp.LearnedMACs("up0")
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, m := range macs {
			got = append(got, m.String())
		}
		slices.Sort(got)
		if len(got) >= len(hosts) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := []string{hosts[0].String(), hosts[1].String(), hosts[2].String()}
	if !slices.Equal(got, want) {
		t.Errorf("LearnedMACs(up0) = %v, want %v", got, want)
	}

	gw.Run(t, "ip", "link", "set", "up0", "nomaster")
	if _, err := dp.LearnedMACs("up0"); err == nil || !strings.Contains(err.Error(), "up0: not a bridge port") {
		t.Errorf("detached port: error %v, want one saying up0 is not a bridge port", err)
	}
	if _, err := dp.LearnedMACs("nope0"); err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("missing port: error %v, want one naming nope0", err)
	}
}

// sendFrom sends one broadcast frame (an unused EtherType) from each MAC
// out of iface in ns, as legacy hosts behind a switch would.
func sendFrom(t *testing.T, ns *netnstest.NS, iface string, macs ...net.HardwareAddr) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, m := range macs {
			buf := gopacket.NewSerializeBuffer()
			eth := &layers.Ethernet{SrcMAC: m, DstMAC: layers.EthernetBroadcast, EthernetType: wireEtherType}
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, gopacket.Payload("legacy host")); err != nil {
				return err
			}
			if _, err := c.WriteTo(buf.Bytes(), &packet.Addr{HardwareAddr: layers.EthernetBroadcast}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s in %s: %v", iface, ns.Name, err)
	}
}
