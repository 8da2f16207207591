package vlan

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// TestMoveWatcherSeesAnnouncements: a "node" sends a GARP and a RARP (what
// a VM's guest and QEMU's announce-self send after a live migration) into
// its VXLAN device; the watcher in the "gateway" namespace reports each
// with the node's VTEP, the VNI and the VM's MAC, and reports nothing for
// ordinary VXLAN traffic or for its own outgoing announcements.
func TestMoveWatcherSeesAnnouncements(t *testing.T) {
	gw, node := netnstest.New(t, "nb-mvg"), netnstest.New(t, "nb-mvn")
	const vmMAC = "02:aa:bb:00:00:07"
	vxlanOver(t, gw, node, "up0", "vx0", "10.77.0", "4242", vmMAC)
	node.Run(t, "ip", "addr", "add", "172.20.9.7/24", "dev", "vx0")
	gw.Run(t, "ip", "addr", "add", "172.20.9.1/24", "dev", "vx0")

	got := make(chan Sighting, 16)
	w, err := NewMoveWatcherIn(&gw.NsHandle, netip.MustParseAddr("10.77.0.1"), DefaultVXLANPort, func(s Sighting) { got <- s })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })

	want := Sighting{VNI: 4242, MAC: mustMAC(t, vmMAC), VTEP: netip.MustParseAddr("10.77.0.2")}
	expect := func(what string) {
		t.Helper()
		select {
		case s := <-got:
			if s.VNI != want.VNI || s.MAC.String() != want.MAC.String() || s.VTEP != want.VTEP {
				t.Fatalf("%s: sighting %+v, want %+v", what, s, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: no sighting within 3 s", what)
		}
	}
	none := func(what string) {
		t.Helper()
		select {
		case s := <-got:
			t.Fatalf("%s: unexpected sighting %+v", what, s)
		case <-time.After(500 * time.Millisecond):
		}
	}

	// Ordinary traffic across the VXLAN (ICMP, and the ARP request and
	// reply it needs from the gateway side) is not a move of the node.
	gw.Run(t, "ping", "-c", "2", "-i", "0.2", "-W", "1", "172.20.9.7")
	for len(got) > 0 {
		if s := <-got; s.VTEP != want.VTEP || s.MAC.String() != vmMAC {
			t.Fatalf("ping: sighting %+v is not the node's own ARP", s)
		}
	}
	none("after ping")

	// arping exits 1 when nobody answers a gratuitous ARP: expected.
	_, _ = node.Exec(t.Context(), "arping", "-U", "-c", "1", "-i", "vx0", "-S", "172.20.9.7", "172.20.9.7")
	expect("GARP")

	var port *Port
	if err := node.Do(func() (err error) { port, err = OpenPort("vx0"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = port.Close() })
	if err := port.AnnounceMAC(mustMAC(t, vmMAC)); err != nil {
		t.Fatal(err)
	}
	expect("RARP")

	// The gateway's own announcement goes out, not in: never a sighting.
	_, _ = gw.Exec(t.Context(), "arping", "-U", "-c", "1", "-i", "vx0", "-S", "172.20.9.1", "172.20.9.1")
	none("own GARP")

	// The watcher reads the interface holding its VTEP only: the same
	// announcement over VXLAN on another interface is not read.
	vxlanOver(t, gw, node, "up1", "vx1", "10.78.0", "4243", vmMAC)
	node.Run(t, "ip", "addr", "add", "172.20.10.7/24", "dev", "vx1")
	_, _ = node.Exec(t.Context(), "arping", "-U", "-c", "1", "-i", "vx1", "-S", "172.20.10.7", "172.20.10.7")
	none("GARP over another interface")
}

// vxlanOver links gw (prefix.1) and node (prefix.2) by a veth up and a VXLAN
// device vx with id across it; the node's vx has the VM's MAC.
func vxlanOver(t *testing.T, gw, node *netnstest.NS, up, vx, prefix, id, vmMAC string) {
	t.Helper()
	netnstest.Veth(t, gw, up, node, up)
	for _, h := range []struct {
		ns            *netnstest.NS
		local, remote string
	}{{gw, prefix + ".1", prefix + ".2"}, {node, prefix + ".2", prefix + ".1"}} {
		h.ns.Run(t, "ip", "addr", "add", h.local+"/24", "dev", up)
		h.ns.Run(t, "ip", "link", "add", vx, "type", "vxlan", "id", id, "local", h.local, "remote", h.remote, "dstport", "4789", "nolearning")
		h.ns.Run(t, "ip", "link", "set", vx, "up")
	}
	node.Run(t, "ip", "link", "set", vx, "address", vmMAC)
}

// TestMoveWatcherUnderlay: the interface the watcher binds is the one
// holding the VTEP; a VTEP on the loopback (routed underlay) and no VTEP
// mean every interface; an address no link holds is an error. (This
// kernel has no dummy links to test that case with.)
func TestMoveWatcherUnderlay(t *testing.T) {
	ns := netnstest.New(t, "nb-mvu")
	ns.Run(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
	ns.Run(t, "ip", "addr", "add", "10.79.0.1/24", "dev", "up0")
	ns.Run(t, "ip", "link", "set", "lo", "up")
	ns.Run(t, "ip", "addr", "add", "10.79.2.1/32", "dev", "lo")
	var up0 int
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("up0")
		up0 = ifi.Index
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		vtep    string
		want    int
		wantErr bool
	}{{"10.79.0.1", up0, false}, {"10.79.2.1", 0, false}, {"", 0, false}, {"10.79.9.9", 0, true}} {
		var vtep netip.Addr
		if c.vtep != "" {
			vtep = netip.MustParseAddr(c.vtep)
		}
		var got int
		err := ns.Do(func() (err error) { got, err = underlayIndex(vtep); return err })
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("underlayIndex(%q) = %d, %v; want %d, error %v", c.vtep, got, err, c.want, c.wantErr)
		}
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
