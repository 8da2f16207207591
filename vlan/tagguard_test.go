package vlan

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// TestTagGuardDropsStackedTags: a frame that still carries an 802.1Q or
// 802.1ad tag when it crosses a sub-interface port ("nb-vl-*") of a bridge
// is dropped in both directions; an untagged one, and a tagged one on a
// port that is not a sub-interface, pass.
func TestTagGuardDropsStackedTags(t *testing.T) {
	sw := netnstest.New(t, "tgsw")
	legacy := netnstest.New(t, "tglg")
	vm := netnstest.New(t, "tgvm")
	sw.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.Run(t, "ip", "link", "set", "br0", "up")
	for _, p := range []struct {
		ns   *netnstest.NS
		port string
	}{{legacy, vlanPrefix + "7"}, {vm, "vx0"}} {
		netnstest.Veth(t, sw, p.port, p.ns, "eth0")
		sw.Run(t, "ip", "link", "set", p.port, "master", "br0", "up")
		p.ns.Run(t, "ip", "link", "set", "eth0", "up")
	}
	g, err := NewTagGuardIn(sw.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	cases := []struct {
		name     string
		from, to *netnstest.NS
		tpid     uint16 // 0: untagged
		want     bool
	}{
		{"untagged in", legacy, vm, 0, true},
		{"8021q in", legacy, vm, 0x8100, false},
		{"8021ad in", legacy, vm, 0x88a8, false},
		{"untagged out", vm, legacy, 0, true},
		{"8021q out", vm, legacy, 0x8100, false},
	}
	for i, c := range cases {
		marker := []byte{0xfe, 0xed, byte(i), 0x42, 0x42, 0x42}
		frame := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, byte(i + 1)}
		if c.tpid != 0 {
			frame = append(frame, byte(c.tpid>>8), byte(c.tpid), 0, 7)
		}
		frame = append(frame, 0x88, 0xb5)
		frame = append(frame, marker...)
		frame = append(frame, make([]byte, 46)...)
		rx := tagTestSock(t, c.to)
		tx := tagTestSock(t, c.from)
		if err := unix.Sendto(tx.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: tx.ifindex, Halen: 6}); err != nil {
			t.Fatal(err)
		}
		got := false
		buf := make([]byte, 2048)
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) && !got {
			n, _, err := unix.Recvfrom(rx.fd, buf, 0)
			got = err == nil && bytes.Contains(buf[:n], marker)
		}
		if got != c.want {
			t.Errorf("%s: crossed %t, want %t", c.name, got, c.want)
		}
	}
}

type tagTestSocket struct{ fd, ifindex int }

func tagTestSock(t *testing.T, ns *netnstest.NS) tagTestSocket {
	t.Helper()
	var s tagTestSocket
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		s.ifindex = ifi.Index
		const all = unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, all)
		if err != nil {
			return err
		}
		if err := unix.Bind(s.fd, &unix.SockaddrLinklayer{Protocol: all, Ifindex: s.ifindex}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}
