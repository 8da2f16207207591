package vlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/internal/benchreport"
	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// dpPath is one legacy host → VM path under test: iperf3 runs from
// host to the VM's address.
type dpPath struct {
	host, vm *netnstest.NS
	vmIP     string
	fence    *Fence // ours only
}

var (
	dpVMMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x60}
	dpGW    = netip.MustParseAddr("192.0.2.1")
	dpNode  = netip.MustParseAddr("192.0.2.2")
)

const dpVNI = 600

// dpTopology builds legacy host — gateway — (VXLAN over a veth underlay)
// — node — VM. build programs the gateway and node namespaces.
func dpTopology(b *testing.B, build func(gw, node *netnstest.NS)) *dpPath {
	b.Helper()
	host, gw, node, vm := netnstest.New(b, "nb-dph"), netnstest.New(b, "nb-dpg"), netnstest.New(b, "nb-dpn"), netnstest.New(b, "nb-dpv")
	netnstest.Veth(b, host, "eth0", gw, "up0")
	netnstest.Veth(b, gw, "ul0", node, "ul0")
	netnstest.Veth(b, node, "vm0", vm, "eth0")
	gw.Run(b, "ip", "addr", "add", dpGW.String()+"/24", "dev", "ul0")
	node.Run(b, "ip", "addr", "add", dpNode.String()+"/24", "dev", "ul0")
	for _, ns := range []*netnstest.NS{host, vm} {
		ns.Run(b, "ip", "link", "set", "eth0", "mtu", "1450")
	}
	vm.Run(b, "ip", "link", "set", "eth0", "address", dpVMMAC.String())
	host.Run(b, "ip", "addr", "add", "10.60.0.1/24", "dev", "eth0")
	vm.Run(b, "ip", "addr", "add", "10.60.0.2/24", "dev", "eth0")
	build(gw, node)
	host.Run(b, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.60.0.2")
	return &dpPath{host: host, vm: vm, vmIP: "10.60.0.2"}
}

// dpOurs: the path netbridge programs — vlan.DataPlane on both sides and
// (withFence) the kernel fence on the gateway with the uplink port alive.
// Without the fence it isolates what the fence costs.
func dpOurs(b *testing.B, withFence bool, ampCopies int) *dpPath {
	var fence *Fence
	p := dpTopology(b, func(gw, node *netnstest.NS) {
		ep := Endpoint{MAC: dpVMMAC, IPs: []netip.Addr{netip.MustParseAddr("10.60.0.2")}, VTEP: dpNode}
		gwSeg := Segment{Name: "dp", VNI: dpVNI, Role: RoleGateway, Uplink: "up0", Access: true, MTU: 1450,
			LocalVTEP: dpGW, FloodVTEPs: []netip.Addr{dpNode}, Endpoints: []Endpoint{ep}}
		nodeSeg := Segment{Name: "dp", VNI: dpVNI, Role: RoleNode, MTU: 1450,
			LocalVTEP: dpNode, FloodVTEPs: []netip.Addr{dpGW}, Endpoints: []Endpoint{ep}}
		for _, p := range []struct {
			ns  *netnstest.NS
			seg Segment
		}{{gw, gwSeg}, {node, nodeSeg}} {
			if _, err := New(p.ns.Handle, zap.NewNop()).Reconcile(context.Background(), []Segment{p.seg}); err != nil {
				b.Fatal(err)
			}
		}
		node.Run(b, "ip", "link", "set", "vm0", "master", BridgeName(dpVNI))
		if !withFence {
			return
		}
		const ttl = 10 * time.Minute // alive for the whole run
		f, err := NewFenceIn(gw.NsHandle, ttl)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = f.Close() })
		if err := f.Guard([]string{"up0"}, map[string]time.Duration{"up0": ttl}); err != nil {
			b.Fatal(err)
		}
		fence = f
		if ampCopies > 0 {
			amplifyFence(b, gw, ampCopies, ttl)
		}
	})
	p.fence = fence
	return p
}

// amplifyFence adds a second bridge table whose forward chain holds copies
// copies of the fence's two rules, matching the same way (guarded and
// alive sets holding up0): every frame then pays copies+1 fences, so the
// cost of one fence shows above the machine's noise.
func amplifyFence(b *testing.B, gw *netnstest.NS, copies int, ttl time.Duration) {
	b.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(int(gw.NsHandle)))
	if err != nil {
		b.Fatal(err)
	}
	t := conn.AddTable(&nftables.Table{Name: "nb_fence_amp", Family: nftables.TableFamilyBridge})
	guarded := &nftables.Set{Table: t, Name: "guarded", KeyType: nftables.TypeIFName}
	alive := &nftables.Set{Table: t, Name: "alive", KeyType: nftables.TypeIFName, HasTimeout: true}
	if err := conn.AddSet(guarded, []nftables.SetElement{{Key: ifname("up0")}}); err != nil {
		b.Fatal(err)
	}
	if err := conn.AddSet(alive, []nftables.SetElement{{Key: ifname("up0"), Timeout: ttl}}); err != nil {
		b.Fatal(err)
	}
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	for i := 0; i < copies; i++ {
		for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
			conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
				&expr.Meta{Key: key, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: guarded.Name, SetID: guarded.ID},
				&expr.Lookup{SourceRegister: 1, SetName: alive.Name, SetID: alive.ID, Invert: true},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
	}
	if err := conn.Flush(); err != nil {
		b.Fatalf("amplified fence: %v", err)
	}
}

// dpHand: the same segment built by hand with iproute2, no fence.
func dpHand(b *testing.B) *dpPath {
	return dpTopology(b, func(gw, node *netnstest.NS) {
		for _, side := range []struct {
			ns           *netnstest.NS
			local, peer  netip.Addr
			port, extras string
		}{{gw, dpGW, dpNode, "up0", "nolearning"}, {node, dpNode, dpGW, "vm0", "learning"}} {
			ns := side.ns
			ns.Run(b, "ip", "link", "add", "hbr", "mtu", "1450", "type", "bridge")
			ns.Run(b, "ip", "link", "add", "hvx", "mtu", "1450", "type", "vxlan", "id", fmt.Sprint(dpVNI),
				"local", side.local.String(), "dstport", "4789", side.extras)
			ns.Run(b, "ip", "link", "set", "hvx", "master", "hbr")
			ns.Run(b, "ip", "link", "set", side.port, "master", "hbr")
			ns.Run(b, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "hvx", "dst", side.peer.String(), "self", "permanent")
			for _, l := range []string{"hvx", "hbr", side.port} {
				ns.Run(b, "ip", "link", "set", l, "up")
			}
		}
		gw.Run(b, "bridge", "fdb", "replace", dpVMMAC.String(), "dev", "hvx", "dst", dpNode.String(), "self", "permanent")
		gw.Run(b, "bridge", "fdb", "replace", dpVMMAC.String(), "dev", "hvx", "master", "static")
	})
}

// dpVeth: the ceiling, one veth pair between host and VM.
func dpVeth(b *testing.B) *dpPath {
	b.Helper()
	host, vm := netnstest.New(b, "nb-dvh"), netnstest.New(b, "nb-dvv")
	netnstest.Veth(b, host, "eth0", vm, "eth0")
	for _, ns := range []*netnstest.NS{host, vm} {
		ns.Run(b, "ip", "link", "set", "eth0", "mtu", "1450")
	}
	host.Run(b, "ip", "addr", "add", "10.60.0.1/24", "dev", "eth0")
	vm.Run(b, "ip", "addr", "add", "10.60.0.2/24", "dev", "eth0")
	return &dpPath{host: host, vm: vm, vmIP: "10.60.0.2"}
}

type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct {
			Seconds     float64 `json:"seconds"`
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
		} `json:"sum"`
	} `json:"end"`
}

// iperf runs one iperf3 measurement host → VM (reverse: VM → host) and
// returns TCP bits/s or UDP packets/s received.
func (p *dpPath) iperf(b *testing.B, udp, reverse bool, secs int) float64 {
	b.Helper()
	srv := p.vm.Start(b, "iperf3", "-s", "-1", "-J")
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	args := []string{"-c", p.vmIP, "-t", fmt.Sprint(secs), "-J"}
	if udp {
		args = append(args, "-u", "-b", "0", "-l", "64")
	}
	if reverse {
		args = append(args, "-R")
	}
	// The server needs a moment to listen, and a client can race the
	// previous server's exit: retry on an iperf3 error.
	var r iperfResult
	var out []byte
	var err error
	for i := 0; i < 50; i++ {
		out, err = exec.Command("ip", append([]string{"netns", "exec", p.host.Name, "iperf3"}, args...)...).Output()
		r = iperfResult{}
		if jerr := json.Unmarshal(out, &r); jerr != nil && err == nil {
			err = jerr
		}
		if err == nil && r.Error != "" {
			err = fmt.Errorf("iperf3: %s", r.Error)
		}
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3 %v: %v: %s", args, err, out)
	}
	if udp {
		if r.End.Sum.Seconds == 0 {
			b.Fatalf("iperf3 udp: no duration in %s", out)
		}
		return (r.End.Sum.Packets - r.End.Sum.LostPackets) / r.End.Sum.Seconds
	}
	return r.End.SumReceived.BitsPerSecond
}

// BenchmarkDataPath: iperf3 TCP throughput and 64-byte UDP packets per
// second, legacy host → VM and back, through the path netbridge programs
// (gateway and node data planes, VXLAN between them, the kernel fence on
// with the port alive) vs the same topology built by hand with iproute2
// and a plain veth pair (the ceiling), all in the same run. The
// paths take turns (rounds) and each figure is the median over rounds, so
// the load of other jobs on the machine falls on all of them alike. A
// fourth path, ours without the fence, isolates the fence's cost
// (fence_ratio = ours / ours without fence), but on a loaded machine the
// rounds spread wider than 5%, so a fifth path carries 50 extra copies of
// the fence and fence_cost_pct is one fence's share of the path. Goal:
// ours ≥ 0.95× hand-built; the benchmark fails under half of it (2× the
// goal's allowance is not meaningful for a ratio, half the hand-built
// figure is a path that is broken, not slow).
func BenchmarkDataPath(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Fatal("iperf3 not installed: run hack/deps.sh (apt-get install -y iperf3)")
	}
	const rounds, secs = 3, 2
	order := []string{"ours", "nofence", "amp", "hand", "veth"}
	// ampCopies extra fences on one more path: (1 - amp/ours) / ampCopies
	// is one fence's share of the path's cost.
	const ampCopies = 50
	for b.Loop() {
		paths := map[string]*dpPath{"ours": dpOurs(b, true, 0), "nofence": dpOurs(b, false, 0),
			"amp": dpOurs(b, true, ampCopies), "hand": dpHand(b), "veth": dpVeth(b)}
		tests := []struct {
			name         string
			udp, reverse bool
			unit         string
			scale        float64
		}{
			{"tcp_to_vm", false, false, "gbps", 1e9},
			{"tcp_from_vm", false, true, "gbps", 1e9},
			{"udp64_to_vm", true, false, "kpps", 1e3},
			{"udp64_from_vm", true, true, "kpps", 1e3},
		}
		for _, tc := range tests {
			got := map[string][]float64{}
			for r := 0; r < rounds; r++ {
				// Each round starts with another path: no path always runs
				// right after the same neighbour.
				for i := range order {
					name := order[(i+r)%len(order)]
					got[name] = append(got[name], paths[name].iperf(b, tc.udp, tc.reverse, secs)/tc.scale)
				}
			}
			med := map[string]float64{}
			for name, v := range got {
				slices.Sort(v)
				med[name] = v[len(v)/2]
			}
			ratio := med["ours"] / med["hand"]
			benchreport.Report(b, benchreport.Figure{Name: "datapath_" + tc.name, Unit: tc.unit, Ours: med["ours"], Limit: med["hand"],
				Goal: 0.95, Dir: benchreport.AtLeast, Note: "the same topology built by hand with iproute2"})
			benchreport.Report(b, benchreport.Figure{Name: "datapath_" + tc.name + "_vs_veth", Unit: tc.unit, Ours: med["ours"], Limit: med["veth"],
				Goal: 0, Dir: benchreport.AtLeast, Note: "a plain veth pair: the ceiling, no goal"})
			b.ReportMetric(med["veth"], tc.name+"_veth_"+tc.unit)
			b.ReportMetric(med["nofence"], tc.name+"_nofence_"+tc.unit)
			b.ReportMetric(ratio, tc.name+"_ratio")
			fence := med["ours"] / med["nofence"]
			b.ReportMetric(fence, tc.name+"_fence_ratio")
			perFence := (1 - med["amp"]/med["ours"]) / ampCopies
			b.ReportMetric(perFence*100, tc.name+"_fence_cost_pct")
			b.Logf("%s fence_cost_pct=%.2f (from %d extra fences: amp_%s=%.3f vs ours %.3f) limit_pct=5",
				tc.name, perFence*100, ampCopies, tc.unit, med["amp"], med["ours"])
			if perFence > 0.10 {
				b.Errorf("%s: one fence costs %.1f%% of the path, more than twice the 5%% allowance", tc.name, perFence*100)
			}
			b.Logf("%s ours_%s=%.3f hand_%s=%.3f veth_%s=%.3f nofence_%s=%.3f ratio_to_hand=%.3f ratio_to_veth=%.3f fence_ratio=%.3f goal=0.95 (median of %d rounds of %d s; host loaded by other jobs)",
				tc.name, tc.unit, med["ours"], tc.unit, med["hand"], tc.unit, med["veth"], tc.unit, med["nofence"], ratio, med["ours"]/med["veth"], fence, rounds, secs)
			b.Logf("%s rounds ours=%.1f nofence=%.1f amp=%.1f hand=%.1f veth=%.1f", tc.name, got["ours"], got["nofence"], got["amp"], got["hand"], got["veth"])
			if ratio < 0.5 {
				b.Errorf("%s: ours %.3f %s is under half the hand-built path's %.3f", tc.name, med["ours"], tc.unit, med["hand"])
			}
		}
		// The fence was in the path all along: with the port no longer
		// alive the same path carries nothing.
		if err := paths["ours"].fence.Guard([]string{"up0"}, nil); err != nil {
			b.Fatal(err)
		}
		if out, err := paths["ours"].host.Exec(context.Background(), "ping", "-c", "2", "-i", "0.2", "-W", "1", "10.60.0.2"); err == nil {
			b.Fatalf("fence on, port not alive: the VM still answers:\n%s", out)
		}
	}
}
