package vlan

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Sighting is a VM announcing itself (a broadcast ARP or RARP with its own
// MAC as source, as QEMU's announce-self and a guest's GARP send after a
// live migration) inside VXLAN from a remote VTEP.
type Sighting struct {
	VNI  uint32
	MAC  net.HardwareAddr
	VTEP netip.Addr
}

// MoveWatcher reports Sightings read from the underlay: the encapsulated
// announcements that tell where a VM is now, before any API object says
// so. It only reports; deciding whether to believe one is the caller's
// (the agent knows which VTEPs are nodes and which MACs are VMs).
type MoveWatcher struct {
	conn *packet.Conn
	wg   sync.WaitGroup
}

// NewMoveWatcherIn starts reading VXLAN (UDP port) packets that arrive in
// ns (nil: the current namespace) on the underlay interface that holds
// vtep, the local VTEP address, and calls sighted for each announcement;
// sighted runs on the watcher's goroutine and must not block. The filter
// then runs on that interface's packets only. When vtep is on a loopback
// or dummy link (routed underlay: VXLAN arrives on whichever uplink the
// fabric picks), or vtep is the zero Addr, it reads every interface.
func NewMoveWatcherIn(ns *netns.NsHandle, vtep netip.Addr, port uint16, sighted func(Sighting)) (*MoveWatcher, error) {
	raw, err := bpf.Assemble(vxlanAnnounceFilter(port))
	if err != nil {
		return nil, fmt.Errorf("move watcher bpf: %w", err)
	}
	w := &MoveWatcher{}
	err = inNetns(ns, func() error {
		idx, err := underlayIndex(vtep)
		if err != nil {
			return err
		}
		c, err := packet.Listen(&net.Interface{Index: idx}, packet.Raw, unix.ETH_P_IP, &packet.Config{Filter: raw})
		if err != nil {
			return fmt.Errorf("move watcher socket: %w", err)
		}
		if err := ignoreOutgoing(c); err != nil {
			_ = c.Close()
			return err
		}
		w.conn = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	w.wg.Add(1)
	go w.read(sighted)
	return w, nil
}

// underlayIndex is the index of the link holding vtep in the current
// namespace, 0 (every interface) for none asked or a loopback/dummy holder.
func underlayIndex(vtep netip.Addr) (int, error) {
	if !vtep.IsValid() {
		return 0, nil
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("move watcher: list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); !ok || ip.Unmap() != vtep.Unmap() {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return 0, fmt.Errorf("move watcher: link of VTEP %s: %w", vtep, err)
		}
		if l.Attrs().Flags&net.FlagLoopback != 0 || l.Type() == "dummy" {
			return 0, nil
		}
		return a.LinkIndex, nil
	}
	return 0, fmt.Errorf("move watcher: no interface holds the VTEP address %s", vtep)
}

// Close stops the watcher and waits for its reader.
func (w *MoveWatcher) Close() error {
	err := w.conn.Close()
	w.wg.Wait()
	return err
}

func (w *MoveWatcher) read(sighted func(Sighting)) {
	defer w.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, _, err := w.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if s, ok := parseSighting(buf[:n]); ok {
			sighted(s)
		}
	}
}

// parseSighting decodes Ethernet/IPv4/UDP/VXLAN/Ethernet and accepts a
// broadcast ARP or RARP whose source MAC is the announcer's own (for ARP:
// the sender hardware address too, so a proxy's answer is not a move).
func parseSighting(frame []byte) (Sighting, bool) {
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	ip4, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	vx, _ := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
	if ip4 == nil || vx == nil {
		return Sighting{}, false
	}
	inner := gopacket.NewPacket(vx.Payload, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	eth, _ := inner.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil || !isBroadcast(eth.DstMAC) || eth.SrcMAC[0]&1 != 0 {
		return Sighting{}, false
	}
	switch eth.EthernetType {
	case layers.EthernetType(etherTypeRARP):
	case layers.EthernetTypeARP:
		arp, _ := inner.Layer(layers.LayerTypeARP).(*layers.ARP)
		if arp == nil || net.HardwareAddr(arp.SourceHwAddress).String() != eth.SrcMAC.String() {
			return Sighting{}, false
		}
	default:
		return Sighting{}, false
	}
	src, ok := netip.AddrFromSlice(ip4.SrcIP.To4())
	if !ok {
		return Sighting{}, false
	}
	return Sighting{VNI: vx.VNI, MAC: append(net.HardwareAddr(nil), eth.SrcMAC...), VTEP: src}, true
}

func isBroadcast(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0xff {
			return false
		}
	}
	return len(m) == 6
}

// vxlanAnnounceFilter keeps IPv4/UDP packets to port whose inner frame is
// ARP or RARP: announcements are rare, the VXLAN data path is not, so the
// kernel drops everything else before it reaches us.
func vxlanAnnounceFilter(port uint16) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},                                 // outer EtherType
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipFalse: 11}, // IPv4
		bpf.LoadAbsolute{Off: 23, Size: 1},                                 // IP protocol
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipFalse: 9},
		bpf.LoadAbsolute{Off: 20, Size: 2}, // flags + fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 7},
		bpf.LoadMemShift{Off: 14},              // X = IP header length
		bpf.LoadIndirect{Off: 14 + 2, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port), SkipFalse: 4},
		// inner EtherType: Ethernet 14 + UDP 8 + VXLAN 8 + inner MACs 12
		bpf.LoadIndirect{Off: 14 + 8 + 8 + 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_ARP, SkipTrue: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(etherTypeRARP), SkipFalse: 1},
		bpf.RetConstant{Val: 512},
		bpf.RetConstant{Val: 0},
	}
}
