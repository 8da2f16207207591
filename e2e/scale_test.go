package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/labnet"
)

// Failover at scale (issue 19): 1,000 Active VMs on the lab segment.
//
// The VMs are real on the wire but cheap: one veth on node1 joins the
// segment bridge, and a responder on its other end answers ARP and ICMP
// echo for 1,000 (MAC, IP) pairs, each from its own MAC — to the bridges,
// the VXLAN and the legacy switch they are 1,000 hosts, at the cost of one
// link and one goroutine (1,000 namespaces or macvlans would cost minutes
// of setup and a kernel ARP/route per VM that the test does not measure).
// Their addresses are in a second subnet of the segment, scaleSubnet: the
// lab's /24 has room for 254. host1, the legacy host, gets an address in
// it and probes every VM with raw echo requests to its MAC (a legacy host
// whose ARP cache is warm), which also counts the GARPs it sees.

const (
	scaleVMs    = 1000
	scaleSubnet = "10.21.0.0/22"
	scaleHostIP = "10.21.3.250"
	// scaleProbeEvery is how often each VM is probed from host1: 10 k
	// echo requests a second for 1,000 VMs, enough resolution for a 2 s goal.
	scaleProbeEvery = 100 * time.Millisecond
)

// scaleVM is the i-th VM of the scale scenario.
func scaleVM(i int) labnet.VM {
	a := netip.MustParseAddr("10.21.0.10").As4()
	n := binary.BigEndian.Uint32(a[:]) + uint32(i)
	binary.BigEndian.PutUint32(a[:], n)
	return labnet.VM{Name: fmt.Sprintf("svm%04d", i), Node: "node1", IP: netip.AddrFrom4(a).String(),
		MAC: fmt.Sprintf("52:54:01:00:%02x:%02x", i>>8, i&0xff)}
}

// rawSocket opens an AF_PACKET socket on dev in a lab namespace (the
// socket keeps its namespace for life, whichever thread uses it).
func rawSocket(ns, dev string) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return -1, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return -1, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return -1, err
	}
	defer func() { _ = netns.Set(orig) }()
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return -1, err
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	// Reads wake every 100 ms so that a closed quit channel is seen.
	tv := unix.Timeval{Usec: 100000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	_ = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...)
	return buf.Bytes()
}

// runFrames reads frames from fd until quit, calling on for each
// outgoing=false frame.
func runFrames(fd int, quit <-chan struct{}, on func(f []byte, at time.Time)) {
	buf := make([]byte, 2048)
	for {
		select {
		case <-quit:
			return
		default:
		}
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		on(buf[:n], time.Now())
	}
}

// startResponder answers ARP and ICMP echo for vms on dev in ns, each
// from its own MAC.
func startResponder(t *testing.T, ns, dev string, vms []labnet.VM) {
	t.Helper()
	fd, err := rawSocket(ns, dev)
	if err != nil {
		t.Fatalf("responder socket on %s in %s: %v", dev, ns, err)
	}
	macOf := map[netip.Addr]net.HardwareAddr{}
	for _, v := range vms {
		macOf[netip.MustParseAddr(v.IP)] = labnet.ParseMAC(v.MAC)
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runFrames(fd, quit, func(f []byte, _ time.Time) {
			p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.NoCopy)
			eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if eth == nil {
				return
			}
			var out []byte
			if arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok && arp.Operation == layers.ARPRequest {
				ip, _ := netip.AddrFromSlice(arp.DstProtAddress)
				mac, mine := macOf[ip]
				if !mine {
					return
				}
				out = serialize(&layers.Ethernet{SrcMAC: mac, DstMAC: eth.SrcMAC, EthernetType: layers.EthernetTypeARP},
					&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
						Operation: layers.ARPReply, SourceHwAddress: mac, SourceProtAddress: arp.DstProtAddress,
						DstHwAddress: arp.SourceHwAddress, DstProtAddress: arp.SourceProtAddress})
			} else if ip4, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
				icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				dst, _ := netip.AddrFromSlice(ip4.DstIP)
				mac, mine := macOf[dst]
				if !ok || !mine || icmp.TypeCode.Type() != layers.ICMPv4TypeEchoRequest {
					return
				}
				out = serialize(&layers.Ethernet{SrcMAC: mac, DstMAC: eth.SrcMAC, EthernetType: layers.EthernetTypeIPv4},
					&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip4.DstIP, DstIP: ip4.SrcIP},
					&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0), Id: icmp.Id, Seq: icmp.Seq},
					gopacket.Payload(icmp.Payload))
			}
			if out != nil {
				_, _ = unix.Write(fd, out)
			}
		})
	}()
	t.Cleanup(func() {
		close(quit)
		<-done
		unix.Close(fd)
	})
}

// scaleProber probes every VM from host1 and records, per VM, the times
// of its replies; it counts the gratuitous ARPs it sees for the VMs.
type scaleProber struct {
	fd   int
	vms  []labnet.VM
	quit chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	replies [][]time.Time // per VM
	garps   []time.Time
}

func startProber(t *testing.T, env *Env, vms []labnet.VM) *scaleProber {
	t.Helper()
	fd, err := rawSocket(env.Lab.NS("host1"), "eth0")
	if err != nil {
		t.Fatalf("prober socket in host1: %v", err)
	}
	p := &scaleProber{fd: fd, vms: vms, quit: make(chan struct{}), replies: make([][]time.Time, len(vms))}
	idx := map[netip.Addr]int{}
	for i, v := range vms {
		idx[netip.MustParseAddr(v.IP)] = i
	}
	src := labnet.ParseMAC(labnet.LegacyHostMAC)
	srcIP := net.ParseIP(scaleHostIP).To4()
	frames := make([][]byte, len(vms))
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(scaleProbeEvery)
		defer tick.Stop()
		for seq := uint16(1); ; seq++ {
			for i, v := range vms {
				frames[i] = serialize(&layers.Ethernet{SrcMAC: src, DstMAC: labnet.ParseMAC(v.MAC), EthernetType: layers.EthernetTypeIPv4},
					&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: srcIP, DstIP: net.ParseIP(v.IP).To4()},
					&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0x5ca1, Seq: seq})
				_, _ = unix.Write(fd, frames[i])
			}
			select {
			case <-p.quit:
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		runFrames(fd, p.quit, func(f []byte, at time.Time) {
			pk := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.NoCopy)
			if arp, ok := pk.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
				s, _ := netip.AddrFromSlice(arp.SourceProtAddress)
				d, _ := netip.AddrFromSlice(arp.DstProtAddress)
				if _, vm := idx[s]; vm && s == d {
					p.mu.Lock()
					p.garps = append(p.garps, at)
					p.mu.Unlock()
				}
				return
			}
			ip4, ok := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			icmp, ok2 := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if !ok || !ok2 || icmp.TypeCode.Type() != layers.ICMPv4TypeEchoReply || icmp.Id != 0x5ca1 {
				return
			}
			s, _ := netip.AddrFromSlice(ip4.SrcIP)
			if i, vm := idx[s]; vm {
				p.mu.Lock()
				p.replies[i] = append(p.replies[i], at)
				p.mu.Unlock()
			}
		})
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *scaleProber) stop() {
	select {
	case <-p.quit:
		return
	default:
	}
	close(p.quit)
	p.wg.Wait()
	unix.Close(p.fd)
}

// answering counts the VMs with a reply after since.
func (p *scaleProber) answering(since time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.replies {
		if len(r) > 0 && r[len(r)-1].After(since) {
			n++
		}
	}
	return n
}

// afterFault returns, per VM, how long after the fault its first reply
// came (-1: none), and its longest gap between replies around the fault.
func (p *scaleProber) afterFault(fault time.Time) (first, gap []time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.replies {
		f, g := time.Duration(-1), time.Duration(0)
		last := time.Time{}
		for _, at := range r {
			if !last.IsZero() && at.After(fault) && at.Sub(last) > g {
				g = at.Sub(last)
			}
			if f < 0 && at.After(fault) {
				f = at.Sub(fault)
			}
			last = at
		}
		first, gap = append(first, f), append(gap, g)
	}
	return first, gap
}

// createScaleVMIs creates the VMIs Active through the API server, 8 at a time.
func createScaleVMIs(ctx context.Context, env *Env, vms []labnet.VM) error {
	work := make(chan labnet.VM)
	errs := make(chan error, len(vms))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range work {
				errs <- env.CreateVMI(ctx, v, map[string]string{nbv1.AnnotationCutover: nbv1.CutoverActive})
			}
		}()
	}
	for _, v := range vms {
		work <- v
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestHA_ScaleNodeLoss: 1,000 Active VMs; node loss of the active gateway
// (agent stopped, every link down at once, as TestHA_NodeLossActive):
// vm1, the sampled VM, is out ≤ 1 s on both paths (asserted ≤ 2 s), every
// VM answers host1 within 2 s (slowest asserted ≤ 4 s), and the GARPs of
// the two-sided refresh stay under the announcer's rate limit.
func TestHA_ScaleNodeLoss(t *testing.T) {
	t0 := time.Now()
	// The product's Lease timings: the lab's 1 s Lease with a 0.5 s renew
	// deadline made both gateways flap while the API server took 2,000
	// writes for the VMIs on this 2-core machine (renewals 2.4 s late);
	// node loss is taken over early through the peer channel either way.
	env := newEnvWith(t, Options{GatewayFlags: productLeaseFlags})
	labUp := time.Since(t0)
	bc := &nbv1.BridgeConfig{}
	if err := env.Client.Get(ctx(t), client.ObjectKey{Name: ConfigName}, bc); err != nil {
		t.Fatal(err)
	}
	bc.Spec.Segments[0].Subnets = append(bc.Spec.Segments[0].Subnets, scaleSubnet)
	if err := env.Client.Update(ctx(t), bc); err != nil {
		t.Fatalf("add %s to the segment: %v", scaleSubnet, err)
	}
	if _, err := env.Lab.Exec("host1", "ip", "addr", "add", scaleHostIP+"/22", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	node1 := env.Lab.NS("node1")
	if _, err := env.Lab.Exec("node1", "ip", "link", "add", "vm-scale", "mtu", "1450", "type", "veth", "peer", "name", "scale0", "mtu", "1450"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{{"link", "set", "scale0", "up"}, {"link", "set", "vm-scale", "master", Bridge, "up"}} {
		if _, err := env.Lab.Exec("node1", "ip", c...); err != nil {
			t.Fatalf("ip %v in node1: %v", c, err)
		}
	}
	vms := make([]labnet.VM, scaleVMs)
	for i := range vms {
		vms[i] = scaleVM(i)
	}
	startResponder(t, node1, "scale0", vms)
	gw := activate(t, env, vm1)
	t1 := time.Now()
	if err := createScaleVMIs(ctx(t), env, vms); err != nil {
		t.Fatal(err)
	}
	created := time.Since(t1)
	// Every /32 in FRR via the active gateway: the lab is ready.
	last := vms[len(vms)-1].IP + "/32"
	waitRoute(t, env, last, fabricIP(gw), 120*time.Second)
	if err := WaitFor(120*time.Second, 200*time.Millisecond, func() bool {
		out, err := env.Lab.Vtysh("show ip route bgp json")
		return err == nil && countRoutesVia(out, fabricIP(gw)) >= scaleVMs
	}); err != nil {
		t.Fatalf("FRR never had %d /32s via %s: %v", scaleVMs, gw, err)
	}
	routed := time.Since(t1)
	pr := startProber(t, env, vms)
	probeStart := time.Now()
	if err := WaitFor(30*time.Second, 100*time.Millisecond, func() bool { return pr.answering(probeStart) == scaleVMs }); err != nil {
		t.Fatalf("only %d of %d VMs answer host1 before the fault", pr.answering(probeStart), scaleVMs)
	}
	ready := time.Since(t0)
	t.Logf("scenario=scale_node_loss lab_up_ms=%d vmis_created_ms=%d routes_in_frr_ms=%d all_answer_ms=%d setup_total_ms=%d vms=%d",
		labUp.Milliseconds(), created.Milliseconds(), routed.Milliseconds(), time.Since(probeStart).Milliseconds(), ready.Milliseconds(), scaleVMs)

	p := startPaths(t, env)
	time.Sleep(time.Second)
	fault := time.Now()
	if err := env.Signal(gw, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := env.Lab.LinksDown(gw); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	p.finish(t, "scale_node_loss", 2*time.Second, 2*time.Second, false)
	pr.stop()

	// A VM's outage is its longest gap between replies after the fault
	// (the fault's links-down can take a while on a loaded host, so the
	// first reply after the fault says little).
	first, gap := pr.afterFault(fault)
	slowestVM, none, maxGap := "", 0, time.Duration(0)
	for i, f := range first {
		if f < 0 {
			none++
			continue
		}
		if gap[i] > maxGap {
			maxGap, slowestVM = gap[i], vms[i].Name
		}
	}
	sorted := append([]time.Duration(nil), gap...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	t.Logf("scenario=scale_node_loss vms=%d answered=%d slowest_ms=%d slowest_vm=%s p50_outage_ms=%d p99_outage_ms=%d",
		scaleVMs, scaleVMs-none, maxGap.Milliseconds(), slowestVM, sorted[len(sorted)/2].Milliseconds(),
		sorted[len(sorted)*99/100].Milliseconds())
	if none > 0 {
		t.Errorf("scenario=scale_node_loss: %d VMs never answered host1 after the fault", none)
	}
	if maxGap > 4*time.Second {
		t.Errorf("scenario=scale_node_loss: slowest VM out %s, want ≤ 4 s (goal 2 s)", maxGap)
	}

	pr.mu.Lock()
	garps := append([]time.Time(nil), pr.garps...)
	pr.mu.Unlock()
	var after []time.Time
	for _, g := range garps {
		if g.After(fault) {
			after = append(after, g)
		}
	}
	// Frames in the busiest window of w after the takeover.
	peakIn := func(w time.Duration) int {
		peak := 0
		for i := range after {
			j := sort.Search(len(after), func(k int) bool { return !after[k].Before(after[i].Add(w)) })
			peak = max(peak, j-i)
		}
		return peak
	}
	span := time.Duration(0)
	if len(after) > 1 {
		span = after[len(after)-1].Sub(after[0])
	}
	peak100, peak1s := peakIn(100*time.Millisecond), peakIn(time.Second)
	t.Logf("scenario=scale_node_loss garps=%d garp_span_ms=%d garp_peak_per_100ms=%d garp_peak_per_s=%d garp_mean_per_s=%.0f",
		len(after), span.Milliseconds(), peak100, peak1s, float64(len(after))/max(span.Seconds(), 0.001))
	if len(after) < scaleVMs {
		t.Errorf("scenario=scale_node_loss: %d GARPs for %d VMs after the takeover: not every VM was announced", len(after), scaleVMs)
	}
	// The announcer's token bucket (gateway.AnnouncerOptions: 1,000
	// frames/s, burst 100) lets through at most 100 + 1,000 frames in any
	// second; 10 % over that for capture timestamps on a loaded host.
	if limit := (100 + 1000) * 11 / 10; peak1s > limit {
		t.Errorf("scenario=scale_node_loss: %d GARPs in one second: the refresh storms the VLAN (limit 1000/s, burst 100)", peak1s)
	}
}

// countRoutesVia counts the routes of vtysh's `show ip route bgp json`
// that are selected with next hop nh.
func countRoutesVia(out []byte, nh string) int {
	var routes map[string][]struct {
		Selected bool `json:"selected"`
		Nexthops []struct {
			IP string `json:"ip"`
		} `json:"nexthops"`
	}
	if json.Unmarshal(out, &routes) != nil {
		return 0
	}
	n := 0
	for _, rs := range routes {
		for _, r := range rs {
			if r.Selected && len(r.Nexthops) > 0 && r.Nexthops[0].IP == nh {
				n++
			}
		}
	}
	return n
}
