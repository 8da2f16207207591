package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
	"github.com/netbridge-io/netbridge/internal/qemuguest/inguest"
	"github.com/netbridge-io/netbridge/vlan"
)

// The IPv6 checks run on Debian 12's kernel (6.1), the legacy side of a
// tagged trunk: the DAD probe finds a legacy IPv6 address across the tag,
// and the kernel's neighbour table takes our unsolicited NA as the host
// kernel does (vlan.TestUnsolicitedNA): an existing entry is overridden,
// no entry is created on a host even with accept_untracked_na=1, a STALE
// one on a router (forwarding=1) with it.
var (
	legacyIP6 = netip.MustParseAddr("2001:db8:100::1")
	movedIP6  = netip.MustParseAddr("2001:db8:100::50")
	newIP6    = netip.MustParseAddr("2001:db8:100::60")
	newMAC    = net.HardwareAddr{0x52, 0x54, 0, 0, 1, 0x50}
	oldMAC    = net.HardwareAddr{0x52, 0x54, 0, 0, 9, 0x99}
)

const legacyVLAN = "trunkb.100"

func ipv6Checks(c *inguest.Checker, legacy *netnstest.NS) {
	l, err := legacy.Handle.LinkByName(legacyVLAN)
	if err == nil {
		err = legacy.Handle.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: legacyIP6.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD})
	}
	if !c.Check("ipv6-legacy-address", err) {
		return
	}
	c.Check("tagged-dad-finds-legacy-ipv6", func() error {
		p, err := vlan.OpenPort(vlan.VLANName(vni))
		if err != nil {
			return err
		}
		defer p.Close()
		found, err := p.Probe(context.Background(), []netip.Addr{legacyIP6, movedIP6}, vlan.ProbeOptions{})
		if err != nil {
			return err
		}
		if got := found[legacyIP6]; got.String() != l.Attrs().HardwareAddr.String() {
			return fmt.Errorf("%s: held by %q, want %s", legacyIP6, got, l.Attrs().HardwareAddr)
		}
		if got, ok := found[movedIP6]; ok {
			return fmt.Errorf("free %s reported held by %s", movedIP6, got)
		}
		return nil
	}())
	c.Check("tagged-na-overrides-stale-entry", func() error {
		if err := legacy.Handle.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET6, State: netlink.NUD_STALE,
			IP: movedIP6.AsSlice(), HardwareAddr: oldMAC}); err != nil {
			return err
		}
		return announceAndWait(legacy, l.Attrs().Index, movedIP6, true)
	}())
	c.Check("untracked-na-ignored-by-host", func() error {
		if err := sysctl(legacy, "net/ipv6/conf/"+legacyVLAN+"/accept_untracked_na", "1"); err != nil {
			return err
		}
		return announceAndWait(legacy, l.Attrs().Index, newIP6, false)
	}())
	c.Check("untracked-na-creates-stale-on-router", func() error {
		if err := sysctl(legacy, "net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
		return announceAndWait(legacy, l.Attrs().Index, newIP6, true)
	}())
}

// announceAndWait sends an unsolicited NA for ip at newMAC out of the
// gateway's VLAN side and waits up to 1 s for the legacy neighbour entry
// (want) or checks that none appears (!want).
func announceAndWait(legacy *netnstest.NS, ifindex int, ip netip.Addr, want bool) error {
	p, err := vlan.OpenPort(vlan.VLANName(vni))
	if err != nil {
		return err
	}
	err = p.UnsolicitedNA(ip, newMAC)
	p.Close()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Second)
	for {
		ns, err := legacy.Handle.NeighList(ifindex, unix.AF_INET6)
		if err != nil {
			return err
		}
		var entry *netlink.Neigh
		for i := range ns {
			if ns[i].IP.Equal(ip.AsSlice()) {
				entry = &ns[i]
			}
		}
		switch {
		case want && entry != nil && entry.HardwareAddr.String() == newMAC.String():
			if entry.State != netlink.NUD_STALE {
				return fmt.Errorf("entry for %s at %s in state %#x, want STALE", ip, newMAC, entry.State)
			}
			return nil
		case !want && entry != nil:
			return fmt.Errorf("an entry for %s appeared: %s state %#x", ip, entry.HardwareAddr, entry.State)
		case time.Now().After(deadline):
			if want {
				return fmt.Errorf("entry for %s not at %s after 1 s: %+v", ip, newMAC, entry)
			}
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sysctl writes /proc/sys/<key> inside ns (the file belongs to the
// namespace of the thread that opens it).
func sysctl(ns *netnstest.NS, key, value string) error {
	return ns.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) })
}
