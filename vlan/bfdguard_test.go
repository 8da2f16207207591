package vlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/frrtest"
	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// bfdPacket is a real BFD control packet (GoBGP's codec), state Down.
func bfdPacket(t *testing.T) []byte {
	t.Helper()
	h := &bfd.BFDHeader{Version: 1, State: bfd.StateDown, DetectTimeMultiplier: 3, MyDiscriminator: 7,
		DesiredMinTxInterval: 1000000, RequiredMinRxInterval: 1000000}
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendTTL sends one UDP datagram from namespace ns with the given TTL (hop
// limit for IPv6).
func sendTTL(t *testing.T, ns *netnstest.NS, dst netip.AddrPort, ttl int, payload []byte) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			if dst.Addr().Is4() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
			}
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set TTL %d: %w", ttl, serr)
		}
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatalf("send to %s with TTL %d: %v", dst, ttl, err)
	}
}

// received reports whether c gets a datagram within d.
func received(t *testing.T, c *net.UDPConn, d time.Duration) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 128)
	_, err := c.Read(buf)
	if err == nil {
		return true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	t.Fatalf("read: %v", err)
	return false
}

// TestBFDGuardTTL: with the guard, a BFD control packet sent with TTL (hop
// limit) 254 is dropped and counted, one with 255 arrives, other UDP ports
// are not touched; re-installing (agent restart) keeps the check, Remove
// lifts it.
func TestBFDGuardTTL(t *testing.T) {
	tx := netnstest.New(t, "bgtx")
	rx := netnstest.New(t, "bgrx")
	netnstest.Veth(t, tx, "eth0", rx, "eth0")
	tx.Run(t, "ip", "addr", "add", "10.77.0.1/24", "dev", "eth0")
	rx.Run(t, "ip", "addr", "add", "10.77.0.2/24", "dev", "eth0")
	tx.Run(t, "ip", "-6", "addr", "add", "fd77::1/64", "dev", "eth0", "nodad")
	rx.Run(t, "ip", "-6", "addr", "add", "fd77::2/64", "dev", "eth0", "nodad")

	listen := func(network, addr string) *net.UDPConn {
		var c *net.UDPConn
		if err := rx.Do(func() error {
			a, err := net.ResolveUDPAddr(network, addr)
			if err != nil {
				return err
			}
			c, err = net.ListenUDP(network, a)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	v4, v6 := listen("udp4", "10.77.0.2:3784"), listen("udp6", "[fd77::2]:3784")
	other := listen("udp4", "10.77.0.2:3785")
	dst4, dst6 := netip.MustParseAddrPort("10.77.0.2:3784"), netip.MustParseAddrPort("[fd77::2]:3784")
	pkt := bfdPacket(t)

	// Without the guard the kernel delivers any TTL (GoBGP would accept it).
	sendTTL(t, tx, dst4, 254, pkt)
	if !received(t, v4, time.Second) {
		t.Fatal("no delivery without the guard: the test setup is broken")
	}

	g, err := NewBFDGuardIn(rx.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	check := func(g *BFDGuard, phase string, wantDropped uint64) {
		t.Helper()
		for _, c := range []struct {
			dst  netip.AddrPort
			conn *net.UDPConn
		}{{dst4, v4}, {dst6, v6}} {
			sendTTL(t, tx, c.dst, 254, pkt)
			if received(t, c.conn, 300*time.Millisecond) {
				t.Errorf("%s: BFD packet to %s with TTL 254 was delivered", phase, c.dst)
			}
			sendTTL(t, tx, c.dst, 255, pkt)
			if !received(t, c.conn, time.Second) {
				t.Errorf("%s: BFD packet to %s with TTL 255 was dropped", phase, c.dst)
			}
		}
		sendTTL(t, tx, netip.MustParseAddrPort("10.77.0.2:3785"), 1, pkt)
		if !received(t, other, time.Second) {
			t.Errorf("%s: a packet to UDP 3785 was dropped: the guard must only touch 3784", phase)
		}
		n, err := g.Dropped()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: dropped=%d", phase, n)
		if n != wantDropped {
			t.Errorf("%s: guard counted %d drops, want %d", phase, n, wantDropped)
		}
	}
	check(g, "installed", 2)

	// A restarted agent replaces the table atomically.
	g2, err := NewBFDGuardIn(rx.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g2.Close() })
	check(g2, "re-installed", 2)

	if err := g2.Remove(); err != nil {
		t.Fatal(err)
	}
	sendTTL(t, tx, dst4, 254, pkt)
	if !received(t, v4, time.Second) {
		t.Error("after Remove a TTL 254 packet is still dropped")
	}
}

// TestBFDGuardFRR: real BFD with the guard installed: two FRR 8.4 routers
// (bgpd + bfdd) at 100 ms × 3, the guard in one router's namespace; BFD
// stays up and the guard drops nothing (FRR sends TTL 255, as GoBGP does).
func TestBFDGuardFRR(t *testing.T) {
	a := netnstest.New(t, "bga")
	b := netnstest.New(t, "bgb")
	netnstest.Veth(t, a, "eth0", b, "eth0")
	a.Run(t, "ip", "addr", "add", "10.78.0.1/24", "dev", "eth0")
	b.Run(t, "ip", "addr", "add", "10.78.0.2/24", "dev", "eth0")
	g, err := NewBFDGuardIn(a.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	conf := func(self, peer string, asn, peerASN int) string {
		return "frr defaults datacenter\n!\n" + frrtest.BFDPeerConfig(netip.MustParseAddr(peer), 100, 100, 3) +
			fmt.Sprintf("router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n neighbor %s remote-as %d\n neighbor %s bfd\n!\n", asn, self, peer, peerASN, peer)
	}
	ra := frrtest.Start(t, a.Name, frrtest.Config{Text: conf("10.78.0.1", "10.78.0.2", 65010, 65011), BFD: true})
	rb := frrtest.Start(t, b.Name, frrtest.Config{Text: conf("10.78.0.2", "10.78.0.1", 65011, 65010), BFD: true})
	up := func(r *frrtest.Router, peer string) error {
		ps, err := r.BFDPeers()
		if err != nil {
			return err
		}
		if s := ps[peer].Status; s != "up" {
			return fmt.Errorf("%s: BFD peer %s status %q", r.Name, peer, s)
		}
		return nil
	}
	frrtest.Eventually(t, 30*time.Second, func() error {
		return errors.Join(up(ra, "10.78.0.2"), up(rb, "10.78.0.1"))
	})
	before, err := ra.BFDPeerCounters()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	after, err := ra.BFDPeerCounters()
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(up(ra, "10.78.0.2"), up(rb, "10.78.0.1")); err != nil {
		t.Fatalf("BFD went down with the guard installed: %v", err)
	}
	in := after["10.78.0.2"].ControlIn - before["10.78.0.2"].ControlIn
	downs := after["10.78.0.2"].SessionDown - before["10.78.0.2"].SessionDown
	n, err := g.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guarded router: control_in=%d in 3s, session_down=%d, dropped=%d", in, downs, n)
	if in < 20 || downs != 0 || n != 0 {
		t.Errorf("guarded router received %d BFD packets in 3 s (want ≥ 20), %d downs, guard dropped %d (want 0)", in, downs, n)
	}
}
