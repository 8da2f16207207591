package vlan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// IPv6 neighbour discovery on a Port: the RFC 4862 duplicate address
// detection probe (the IPv6 twin of the RFC 5227 ARP probe) and the
// unsolicited Neighbor Advertisement (the twin of gratuitous ARP). The
// NDP messages are encoded by mdlayher/ndp, the IPv6 header by gopacket;
// the frames are raw because the VLAN side is a bridge port with no IPv6
// stack of its own, and an announcement must leave with the VM's MAC.

// ndpHopLimit: RFC 4861 7.1.1 / 7.1.2 — a receiver drops NDP messages
// with any other hop limit (proof they were not routed).
const ndpHopLimit = 255

// allNodes is ff02::1, where unsolicited NAs go and where a host that
// defends its address against a DAD probe answers (RFC 4861 7.2.4: the
// probe's source is ::, so the answer cannot be unicast).
var allNodes = netip.MustParseAddr("ff02::1")

// multicastMAC maps an IPv6 multicast address to its Ethernet group
// address (RFC 2464 section 7: 33:33 and the low 32 bits).
func multicastMAC(group netip.Addr) net.HardwareAddr {
	b := group.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// optNonce is the RFC 3971 Nonce option's type.
const optNonce = 14

// dadNonce is the RFC 7527 nonce of our probes for target. It is derived
// from the address, not random: every netbridge gateway probes a VM's
// address with the same nonce, so the standby's probe seen by the active
// gateway (and our own looped back by the legacy network) is not taken
// for another node's concurrent DAD. A host doing DAD has a random one.
func dadNonce(target netip.Addr) []byte {
	sum := sha256.Sum256(append([]byte("netbridge DAD probe "), target.AsSlice()...))
	return sum[:6] // the option's 8 bytes minus type and length
}

// dadFrame is a DAD probe for target: a Neighbor Solicitation from the
// unspecified address to target's solicited-node multicast group, with no
// source link-layer option (RFC 4862 5.4.2 forbids it with source ::, and
// without it no host caches anything), with dadNonce(target).
func dadFrame(srcMAC net.HardwareAddr, target netip.Addr) ([]byte, error) {
	group, err := ndp.SolicitedNodeMulticast(target)
	if err != nil {
		return nil, err
	}
	nonce := &ndp.RawOption{Type: optNonce, Length: 1, Value: dadNonce(target)}
	ns := &ndp.NeighborSolicitation{TargetAddress: target, Options: []ndp.Option{nonce}}
	return ndpFrame(srcMAC, multicastMAC(group), netip.IPv6Unspecified(), group, ns)
}

// unsolicitedNAFrame announces that ip is at mac (RFC 4861 7.2.6): a
// Neighbor Advertisement to all nodes with Override set, Solicited clear,
// the target link-layer option, sent from ip and from mac.
func unsolicitedNAFrame(ip netip.Addr, mac net.HardwareAddr) ([]byte, error) {
	na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: ip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}}}
	return ndpFrame(mac, multicastMAC(allNodes), ip, allNodes, na)
}

func ndpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, m ndp.Message) ([]byte, error) {
	icmp, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Type(), err)
	}
	buf := gopacket.NewSerializeBuffer()
	err = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6},
		&layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: ndpHopLimit,
			SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
		gopacket.Payload(icmp))
	if err != nil {
		return nil, fmt.Errorf("encode %s frame: %w", m.Type(), err)
	}
	return buf.Bytes(), nil
}

// ndpClaim reads one received frame and returns the address in want that
// it claims, and the claimant's MAC: a Neighbor Advertisement for it (a
// host defending it, or announcing it), or another node's DAD probe for
// it (RFC 4862 5.4.3: two nodes probing the same address at once are both
// duplicates). A solicitation with a real source is somebody resolving
// the address, which claims nothing; a probe carrying dadNonce is a
// netbridge gateway's (ours, or a peer's for the same VM).
func ndpClaim(b []byte, want map[netip.Addr]bool) (netip.Addr, net.HardwareAddr, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil || f.EtherType != ethernet.EtherTypeIPv6 {
		return netip.Addr{}, nil, false
	}
	var ip6 layers.IPv6
	if err := ip6.DecodeFromBytes(f.Payload, gopacket.NilDecodeFeedback); err != nil ||
		ip6.NextHeader != layers.IPProtocolICMPv6 || ip6.HopLimit != ndpHopLimit {
		return netip.Addr{}, nil, false
	}
	m, err := ndp.ParseMessage(ip6.Payload)
	if err != nil {
		return netip.Addr{}, nil, false
	}
	src := append(net.HardwareAddr(nil), f.Source...)
	switch m := m.(type) {
	case *ndp.NeighborAdvertisement:
		if !want[m.TargetAddress] {
			return netip.Addr{}, nil, false
		}
		for _, o := range m.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				return m.TargetAddress, append(net.HardwareAddr(nil), lla.Addr...), true
			}
		}
		return m.TargetAddress, src, true
	case *ndp.NeighborSolicitation:
		from, ok := netip.AddrFromSlice(ip6.SrcIP)
		if !want[m.TargetAddress] || !ok || !from.IsUnspecified() {
			return netip.Addr{}, nil, false
		}
		ours := hex.EncodeToString(dadNonce(m.TargetAddress))
		for _, o := range m.Options {
			if n, ok := o.(*ndp.Nonce); ok && n.String() == ours {
				return netip.Addr{}, nil, false
			}
		}
		return m.TargetAddress, src, true
	}
	return netip.Addr{}, nil, false
}

// UnsolicitedNA announces that the IPv6 address ip is at mac, from mac,
// to all nodes with the Override flag: out of the VLAN side it moves the
// legacy switches' MAC tables to the gateway's trunk port and updates the
// neighbour entries legacy hosts already have for ip. Linux creates no
// entry from it unless accept_untracked_na is set (the first packet then
// resolves ip normally, and the bridge answers with the VM).
func (p *Port) UnsolicitedNA(ip netip.Addr, mac net.HardwareAddr) error {
	if !ip.Is6() || ip.Is4In6() {
		return fmt.Errorf("unsolicited NA for %s: not an IPv6 address", ip)
	}
	if mac == nil {
		mac = p.ifi.HardwareAddr // the port's own address (a bridge's)
	}
	f, err := unsolicitedNAFrame(ip, mac)
	if err != nil {
		return fmt.Errorf("unsolicited NA %s at %s: %w", ip, mac, err)
	}
	if err := p.send(f); err != nil {
		return fmt.Errorf("unsolicited NA %s at %s on %s: %w", ip, mac, p.ifi.Name, err)
	}
	return nil
}

// joinNDPGroups makes the port's NIC deliver the multicast frames a DAD
// probe listens for: answers to all nodes, and other nodes' probes to the
// targets' solicited-node groups (a bridge port is promiscuous anyway; a
// standby's bare access uplink filters multicast it has not joined).
func (p *Port) joinNDPGroups(targets map[netip.Addr]bool) error {
	if err := p.conn.JoinGroup(multicastMAC(allNodes)); err != nil {
		return fmt.Errorf("join %s: %w", allNodes, err)
	}
	for ip := range targets {
		if !ip.Is6() {
			continue
		}
		g, err := ndp.SolicitedNodeMulticast(ip)
		if err != nil {
			return err
		}
		if err := p.conn.JoinGroup(multicastMAC(g)); err != nil {
			return fmt.Errorf("join %s: %w", g, err)
		}
	}
	return nil
}
