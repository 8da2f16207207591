package vlan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Port sends and receives raw frames on one interface: ARP and IPv6 DAD
// probes for duplicate addresses, gratuitous ARP and unsolicited Neighbor
// Advertisements for VM IPs on the VLAN side, and
// RARP-style MAC announcements into the VXLAN side. It works in the network
// namespace of the thread that opened it.
//
// Bridge ports (the VLAN sub-interface, the VXLAN device) hand received
// frames to the bridge before protocol-specific sockets see them, so Port
// listens to every EtherType and picks ARP and NDP itself; it ignores frames the
// host sends out of the port, or a VM's own ARP flooded out of the VLAN
// side would look like a duplicate.
type Port struct {
	ifi  *net.Interface
	conn *packet.Conn
}

// OpenPort opens a raw socket on iface.
func OpenPort(iface string) (*Port, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("open port %s: %w", iface, err)
	}
	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
	if err != nil {
		return nil, fmt.Errorf("open port %s: raw socket: %w", iface, err)
	}
	p := &Port{ifi: ifi, conn: conn}
	if err := p.ignoreOutgoing(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("open port %s: %w", iface, err)
	}
	return p, nil
}

func (p *Port) ignoreOutgoing() error { return ignoreOutgoing(p.conn) }

// Close closes the socket.
func (p *Port) Close() error { return p.conn.Close() }

// ProbeOptions tune duplicate-address probes. Zero values take defaults
// shorter than RFC 5227's (3 probes 1-2 s apart, 2 s wait) and RFC 4862's
// (1 probe, 1 s wait): a cutover wave probes many addresses, and a live
// source VM answers in milliseconds.
type ProbeOptions struct {
	Probes   int           // probes per address (default 3)
	Interval time.Duration // between probes (default 100ms)
	Wait     time.Duration // listening after the last probe (default 500ms)
}

// ProbeBound is the longest a Probe with these options takes (plus a
// read slice of scheduling slack): what a caller budgets per cutover wave.
func ProbeBound(opts ProbeOptions) time.Duration {
	o := opts.withDefaults()
	return time.Duration(o.Probes-1)*o.Interval + o.Wait
}

func (o ProbeOptions) withDefaults() ProbeOptions {
	if o.Probes <= 0 {
		o.Probes = 3
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Wait <= 0 {
		o.Wait = 500 * time.Millisecond
	}
	return o
}

// Probe asks the link who holds each address and returns the addresses
// some other host claimed, with that host's MAC. An empty map means nobody
// on the link holds any of them. Only one Probe may run on a Port at a time.
//
// IPv4 addresses get RFC 5227 ARP probes (sender IP 0.0.0.0, so no host
// updates its cache); IPv6 addresses get RFC 4862 duplicate address
// detection probes (a Neighbor Solicitation from ::, to the target's
// solicited-node group, hop limit 255): a Neighbor Advertisement for the
// target, or another node's probe for it, claims it. Both families share
// the schedule below and one listening loop.
//
// The wait is bounded: Probe returns at the latest ProbeBound(opts) after
// it starts (the last probe goes out (Probes-1)*Interval in, then Wait
// for late answers), earlier once every address was claimed or ctx ends.
// "Free" is therefore reported within that bound, with the defaults
// 700 ms, whatever the number of addresses (they are probed together).
func (p *Port) Probe(ctx context.Context, ips []netip.Addr, opts ProbeOptions) (map[netip.Addr]net.HardwareAddr, error) {
	opts = opts.withDefaults()
	want := map[netip.Addr]bool{}
	v6 := false
	for _, ip := range ips {
		if !ip.IsValid() || ip.Is4In6() {
			return nil, fmt.Errorf("probe %s: not an IPv4 or IPv6 address", ip)
		}
		want[ip] = true
		v6 = v6 || ip.Is6()
	}
	found := map[netip.Addr]net.HardwareAddr{}
	if len(want) == 0 {
		return found, nil
	}
	if v6 {
		if err := p.joinNDPGroups(want); err != nil {
			return nil, fmt.Errorf("probe on %s: %w", p.ifi.Name, err)
		}
	}
	frames := make([][]byte, 0, len(ips))
	for ip := range want {
		var f []byte
		var err error
		if ip.Is4() {
			f, err = arpFrame(arp.OperationRequest, p.ifi.HardwareAddr, netip.IPv4Unspecified(), ethernet.Broadcast, ip, p.ifi.HardwareAddr)
		} else {
			f, err = dadFrame(p.ifi.HardwareAddr, ip)
		}
		if err != nil {
			return nil, fmt.Errorf("probe %s: %w", ip, err)
		}
		frames = append(frames, f)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sendErr := make(chan error, 1)
	go func() {
		defer close(sendErr)
		for i := 0; i < opts.Probes; i++ {
			for _, f := range frames {
				if err := p.send(f); err != nil {
					sendErr <- err
					return
				}
			}
			if i < opts.Probes-1 {
				select {
				case <-time.After(opts.Interval):
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	deadline := time.Now().Add(ProbeBound(opts))
	buf := make([]byte, 1600)
	for len(found) < len(want) && time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return found, err
		}
		// Short read slices: a cancelled ctx does not wake a blocked read.
		rd := time.Now().Add(100 * time.Millisecond)
		if deadline.Before(rd) {
			rd = deadline
		}
		if err := p.conn.SetReadDeadline(rd); err != nil {
			return nil, fmt.Errorf("probe on %s: %w", p.ifi.Name, err)
		}
		n, _, err := p.conn.ReadFrom(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("probe on %s: read: %w", p.ifi.Name, err)
		}
		// Any ARP whose sender is one of our addresses claims it: a reply
		// to our probe, or that host's own request or announcement.
		if pkt, ok := parseARP(buf[:n]); ok && want[pkt.SenderIP] {
			found[pkt.SenderIP] = append(net.HardwareAddr(nil), pkt.SenderHardwareAddr...)
		} else if ip, mac, ok := ndpClaim(buf[:n], want); ok {
			found[ip] = mac
		}
	}
	cancel() // stop the sender if every address was claimed early
	if err := <-sendErr; err != nil {
		return found, fmt.Errorf("probe on %s: %w", p.ifi.Name, err)
	}
	return found, nil
}

// GratuitousARP announces that ip is at mac: a broadcast ARP request with
// sender and target both ip, sent from mac. Out of the VLAN side it moves
// the legacy switches' MAC table and the legacy hosts' ARP caches to the
// gateway's trunk port. A nil mac is the port's own.
func (p *Port) GratuitousARP(ip netip.Addr, mac net.HardwareAddr) error {
	if mac == nil {
		mac = p.ifi.HardwareAddr // the port's own address (a bridge's)
	}
	f, err := arpFrame(arp.OperationRequest, mac, ip, ethernet.Broadcast, ip, mac)
	if err != nil {
		return fmt.Errorf("gratuitous arp %s at %s: %w", ip, mac, err)
	}
	if err := p.send(f); err != nil {
		return fmt.Errorf("gratuitous arp %s at %s on %s: %w", ip, mac, p.ifi.Name, err)
	}
	return nil
}

// etherTypeRARP is the Reverse ARP EtherType (RFC 903).
const etherTypeRARP ethernet.EtherType = 0x8035

// AnnounceMAC broadcasts a RARP request from mac, as hypervisors do after
// a live migration. Sent into the VXLAN side after a gateway failover it
// makes the nodes learn that a legacy MAC now sits behind this gateway.
func (p *Port) AnnounceMAC(mac net.HardwareAddr) error {
	// RARP shares ARP's layout; opcode 3 is "request reverse".
	pkt, err := arp.NewPacket(arp.Operation(3), mac, netip.IPv4Unspecified(), mac, netip.IPv4Unspecified())
	if err != nil {
		return fmt.Errorf("announce %s: %w", mac, err)
	}
	payload, err := pkt.MarshalBinary()
	if err != nil {
		return fmt.Errorf("announce %s: %w", mac, err)
	}
	f, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: mac, EtherType: etherTypeRARP, Payload: payload}).MarshalBinary()
	if err != nil {
		return fmt.Errorf("announce %s: %w", mac, err)
	}
	if err := p.send(f); err != nil {
		return fmt.Errorf("announce %s on %s: %w", mac, p.ifi.Name, err)
	}
	return nil
}

func (p *Port) send(frame []byte) error {
	_, err := p.conn.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast})
	return err
}

func arpFrame(op arp.Operation, srcHW net.HardwareAddr, srcIP netip.Addr, dstHW net.HardwareAddr, dstIP netip.Addr, ethSrc net.HardwareAddr) ([]byte, error) {
	// The target hardware address of a request is unknown: zeros.
	tha := make(net.HardwareAddr, 6)
	if op == arp.OperationReply {
		tha = dstHW
	}
	pkt, err := arp.NewPacket(op, srcHW, srcIP, tha, dstIP)
	if err != nil {
		return nil, err
	}
	payload, err := pkt.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return (&ethernet.Frame{Destination: dstHW, Source: ethSrc, EtherType: ethernet.EtherTypeARP, Payload: payload}).MarshalBinary()
}

func parseARP(b []byte) (*arp.Packet, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return nil, false
	}
	var pkt arp.Packet
	if err := pkt.UnmarshalBinary(f.Payload); err != nil {
		return nil, false
	}
	return &pkt, true
}
