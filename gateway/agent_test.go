package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/vlan"
)

// Fakes of the agent core's collaborators. Each records the calls it gets
// as short strings, so a table test can assert the exact sequence.

type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (c *callLog) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fmt.Sprintf(format, args...))
}

func (c *callLog) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = nil
	return out
}

type fakeDataPlane struct {
	log       *callLog
	failVNI   map[uint32]error
	warnVNI   map[uint32]string
	activated []netip.Addr
}

func (f *fakeDataPlane) Reconcile(_ context.Context, segs []vlan.Segment) (vlan.Result, error) {
	res := vlan.Result{Segments: map[uint32]error{}}
	var parts []string
	var failed []error
	for _, s := range segs {
		side := "vxlan-only"
		if s.Uplink != "" {
			side = "bridged:" + s.Uplink
		}
		var eps []string
		for _, e := range s.Endpoints {
			eps = append(eps, fmt.Sprintf("%s%v", e.MAC, e.IPs))
		}
		parts = append(parts, fmt.Sprintf("%d %s eps=%v gw=%v", s.VNI, side, eps, s.GatewayAddress.IsValid()))
		res.Segments[s.VNI] = f.failVNI[s.VNI]
		if e := f.failVNI[s.VNI]; e != nil {
			failed = append(failed, e)
		}
	}
	f.log.add("dp.Reconcile %s", strings.Join(parts, "; "))
	res.Warnings = f.warnVNI
	return res, errors.Join(failed...)
}

func (f *fakeDataPlane) ActivatedIPs() ([]netip.Addr, error) {
	f.log.add("dp.ActivatedIPs")
	return f.activated, nil
}

type fakeSpeaker struct{ log *callLog }

func (f *fakeSpeaker) Apply(_ context.Context, d bgp.Desired) (bgp.ApplyReport, error) {
	var routes []string
	for _, r := range d.Routes {
		routes = append(routes, fmt.Sprintf("%s+%d", r.Prefix, r.ASPathPrepend))
	}
	f.log.add("bgp.Apply routes=%v", routes)
	return bgp.ApplyReport{}, nil
}

func (f *fakeSpeaker) Status(context.Context) (bgp.Status, error) { return bgp.Status{}, nil }

func (f *fakeSpeaker) GracefulShutdown(context.Context, time.Duration) error {
	f.log.add("bgp.GracefulShutdown")
	return nil
}

type fakeElection struct {
	log     *callLog
	mu      sync.Mutex
	leading map[SegmentKey]bool
	api     bool
}

func (f *fakeElection) Sync(_ context.Context, keys []SegmentKey) {
	var s []string
	for _, k := range keys {
		s = append(s, k.String())
	}
	f.log.add("election.Sync %v", s)
}

func (f *fakeElection) Leading(k SegmentKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leading[k]
}

func (f *fakeElection) ValidFor(k SegmentKey) time.Duration {
	if f.Leading(k) {
		return time.Second
	}
	return 0
}

func (f *fakeElection) Release(context.Context) { f.log.add("election.Release") }
func (f *fakeElection) APIReachable() bool      { return f.api }
func (f *fakeElection) Fenced(SegmentKey) bool  { return false }

func (f *fakeElection) set(k SegmentKey, leading bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leading[k] = leading
}

type fakeFence struct{ log *callLog }

func (f *fakeFence) Guard(guarded []string, alive map[string]time.Duration) error {
	var a []string
	for _, g := range guarded {
		if alive[g] > 0 {
			a = append(a, g)
		}
	}
	f.log.add("fence.Guard guarded=%v alive=%v", guarded, a)
	return nil
}
func (f *fakeFence) TTL() time.Duration { return time.Second }

// fakeProber answers probes from a table: ip → MAC that answers.
type fakeProber struct {
	log     *callLog
	mu      sync.Mutex
	answers map[netip.Addr]net.HardwareAddr
	done    chan struct{}
}

func (f *fakeProber) Probe(_ context.Context, iface string, ips []netip.Addr) (map[netip.Addr]net.HardwareAddr, error) {
	f.log.add("probe %s %v", iface, ips)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[netip.Addr]net.HardwareAddr{}
	for _, ip := range ips {
		if m, ok := f.answers[ip]; ok {
			out[ip] = m
		}
	}
	return out, nil
}

type fakeAnnouncer struct{ log *callLog }

func (f *fakeAnnouncer) Set(a Announcements) {
	var arp, macs []string
	for _, x := range a.Addresses {
		arp = append(arp, x.Iface+":"+x.IP.String())
	}
	for _, m := range a.MACs {
		macs = append(macs, m.VLANPort+">"+m.VXLANDevice)
	}
	f.log.add("announce arp=%v macs=%v", arp, macs)
}

type fakeSink struct {
	mu      sync.Mutex
	reports []Report
}

func (f *fakeSink) Publish(_ context.Context, r Report) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, r)
	return nil
}

func (f *fakeSink) last() Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reports[len(f.reports)-1]
}

type fakeLinks map[string]bool

func (f fakeLinks) Exists(name string) bool { return f[name] }

type fakeSource struct {
	mu sync.Mutex
	in Inputs
}

func (f *fakeSource) Inputs(context.Context) (Inputs, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.in, nil
}

// rig is an agent wired to fakes.
type rig struct {
	agent    *Agent
	calls    *callLog
	dp       *fakeDataPlane
	election *fakeElection
	prober   *fakeProber
	source   *fakeSource
	sink     *fakeSink
	changed  chan struct{}
}

func newRig(t *testing.T, in Inputs, links fakeLinks, withElection bool) *rig {
	t.Helper()
	calls := &callLog{}
	r := &rig{calls: calls, dp: &fakeDataPlane{log: calls, failVNI: map[uint32]error{}},
		election: &fakeElection{log: calls, leading: map[SegmentKey]bool{}, api: true},
		// Probes run on the gate's goroutines: their calls go to a log of
		// their own, so the order of the agent's calls stays exact.
		prober: &fakeProber{log: &callLog{}, answers: map[netip.Addr]net.HardwareAddr{}},
		source: &fakeSource{in: in}, sink: &fakeSink{}, changed: make(chan struct{}, 16)}
	onChange := func() { r.changed <- struct{}{} }
	deps := Deps{DataPlane: r.dp, Links: links, Speaker: &fakeSpeaker{log: calls}, Source: r.source,
		Gate:      NewGate(r.prober, time.Hour, time.Hour, zapNop(), onChange),
		Announcer: &fakeAnnouncer{log: calls}, Sink: r.sink}
	if withElection {
		deps.Election = r.election
		deps.Fence = &fakeFence{log: calls}
	}
	r.agent = NewAgent(Options{NodeName: "gw1", Role: RoleGateway, LocalVTEP: gwVT}, deps)
	return r
}

// reconcile runs one pass and returns the calls it made.
func (r *rig) reconcile(t *testing.T) []string {
	t.Helper()
	_ = r.agent.Reconcile(context.Background())
	return r.calls.take()
}

// probed waits for the gate's verdict after a probe.
func (r *rig) probed(t *testing.T) {
	t.Helper()
	select {
	case <-r.changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the gate never reported a verdict")
	}
	if got := r.prober.log.take(); len(got) != 1 || !strings.HasPrefix(got[0], "probe uplink0 ") {
		t.Fatalf("probes: %q", got)
	}
}

func bridgeConfig(segs ...nbv1.Segment) nbv1.BridgeConfig {
	return nbv1.BridgeConfig{ObjectMeta: metav1.ObjectMeta{Name: "dc1"},
		Spec: nbv1.BridgeConfigSpec{
			GatewaySelector: metav1.LabelSelector{MatchLabels: map[string]string{"gw": "true"}},
			Uplink:          nbv1.UplinkSpec{Interface: "uplink0"},
			Segments:        segs,
			BGP:             &nbv1.BGPSpec{LocalASN: 65010, StandbyPrepend: 3, Peers: []nbv1.BGPPeer{{Address: "172.30.0.1", ASN: 65000}}},
		}}
}

func accessSegment(name string, vni int32, subnet string, phase nbv1.SegmentPhase) nbv1.Segment {
	return nbv1.Segment{Name: name, VLANID: 100, VNI: vni, Subnets: []string{subnet}, Access: true, Phase: phase,
		GatewayAddress: strings.Replace(subnet, ".0/24", ".1/24", 1)}
}

func endpoint(name, seg, ip, mac string) nbv1.BridgeEndpoint {
	return nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: nbv1.BridgeEndpointSpec{BridgeConfig: "dc1", Segment: seg, IPs: []string{ip}, MAC: mac, VTEP: n1VT.String(), State: nbv1.StateActive}}
}

func inputs(bc nbv1.BridgeConfig, eps ...nbv1.BridgeEndpoint) Inputs {
	gw := map[string]string{"gw": "true"}
	return Inputs{NodeLabels: gw, Configs: []nbv1.BridgeConfig{bc}, Endpoints: eps,
		Nodes: map[string]NodeInfo{"gw1": {Labels: gw, VTEP: gwVT}, "gw2": {Labels: gw, VTEP: netip.MustParseAddr("172.30.0.12")}}}
}

func wantCalls(t *testing.T, step string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: calls\n got  %q\n want %q", step, got, want)
	}
}

const (
	vm1MAC = "52:54:00:00:01:50"
	vm2MAC = "52:54:00:00:01:51"
)

// TestAgentSteps drives the agent core through the cases that matter for
// failover and asserts every call it makes, in order.
func TestAgentSteps(t *testing.T) {
	app := accessSegment("app", 10100, "10.20.100.0/24", nbv1.PhaseRouted)
	t.Run("takeover", func(t *testing.T) {
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, true)
		r.prober.answers = map[netip.Addr]net.HardwareAddr{}
		// Standby: VXLAN side only, the IP probed on the (access) uplink
		// before anything is advertised; nothing announced, no port fenced.
		wantCalls(t, "standby", r.reconcile(t), []string{
			"election.Sync [dc1.app]",
			"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[]] gw=false",
			"bgp.Apply routes=[]",
			"announce arp=[] macs=[]",
			"fence.Guard guarded=[] alive=[]",
		})
		r.probed(t)
		wantCalls(t, "standby cleared", r.reconcile(t), []string{
			"election.Sync [dc1.app]",
			"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"bgp.Apply routes=[10.20.100.50/32+3]",
			"announce arp=[] macs=[]",
			"fence.Guard guarded=[] alive=[]",
		})
		r.election.set(SegmentKey{BridgeConfig: "dc1", Segment: "app"}, true)
		// Takeover: attach first, then the route without prepend, then
		// the announcements, and the port is fenced with the lease.
		wantCalls(t, "takeover", r.reconcile(t), []string{
			"election.Sync [dc1.app]",
			"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"bgp.Apply routes=[10.20.100.50/32+0]",
			"announce arp=[uplink0:10.20.100.50] macs=[uplink0>nb-vx-10100]",
			"fence.Guard guarded=[uplink0] alive=[uplink0]",
		})
		if rep := r.sink.last(); rep.Segments[0].Role != "Active" || len(rep.Advertised) != 1 {
			t.Fatalf("report after takeover: %+v", rep)
		}
	})
	t.Run("loss of lease", func(t *testing.T) {
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, true)
		r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
		key := SegmentKey{BridgeConfig: "dc1", Segment: "app"}
		r.election.set(key, true)
		r.reconcile(t)
		r.election.set(key, false)
		// Detach before the route is prepended; announcements stop; the
		// fence forgets the port.
		wantCalls(t, "lost", r.reconcile(t), []string{
			"election.Sync [dc1.app]",
			"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"bgp.Apply routes=[10.20.100.50/32+3]",
			"announce arp=[] macs=[]",
			"fence.Guard guarded=[] alive=[]",
		})
	})
	t.Run("duplicate address", func(t *testing.T) {
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, false)
		r.prober.answers = map[netip.Addr]net.HardwareAddr{netip.MustParseAddr("10.20.100.50"): mustMAC("02:00:00:00:00:99")}
		r.reconcile(t)
		r.probed(t)
		wantCalls(t, "duplicate", r.reconcile(t), []string{
			"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[]] gw=false",
			"bgp.Apply routes=[]",
			"announce arp=[] macs=[uplink0>nb-vx-10100]",
		})
		rep := r.sink.last()
		if len(rep.Refused) != 1 || rep.Refused[0].Reason != "DuplicateAddress" || rep.Refused[0].MAC != "02:00:00:00:00:99" {
			t.Fatalf("refused: %+v", rep.Refused)
		}
	})
	t.Run("bad segment beside a good one", func(t *testing.T) {
		web := accessSegment("web", 10200, "10.20.200.0/24", nbv1.PhaseRouted)
		web.VLANID = 200
		web.Uplink = &nbv1.UplinkSpec{Interface: "missing0"}
		r := newRig(t, inputs(bridgeConfig(app, web), endpoint("vm1", "app", "10.20.100.50", vm1MAC),
			endpoint("vm2", "web", "10.20.200.50", vm2MAC)), fakeLinks{"uplink0": true}, false)
		r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50"), netip.MustParseAddr("10.20.200.50")})
		wantCalls(t, "mixed", r.reconcile(t), []string{
			"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"bgp.Apply routes=[10.20.100.50/32+0]",
			"announce arp=[uplink0:10.20.100.50] macs=[uplink0>nb-vx-10100]",
		})
		rep := r.sink.last()
		if rep.Segments[1].Programmed || !strings.Contains(rep.Segments[1].Error, "missing0") || !rep.Segments[0].Programmed {
			t.Fatalf("segments: %+v", rep.Segments)
		}
	})
	t.Run("data plane failure blocks routes", func(t *testing.T) {
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, false)
		r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
		r.dp.failVNI[10100] = errors.New("mtu 1500 does not fit the underlay")
		wantCalls(t, "failed", r.reconcile(t), []string{
			"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"bgp.Apply routes=[]",
			"announce arp=[] macs=[]",
		})
		if rep := r.sink.last(); !rep.Degraded || rep.Segments[0].Programmed {
			t.Fatalf("report: %+v", rep)
		}
	})
	t.Run("mtu dropped under a programmed segment", func(t *testing.T) {
		// A runtime change degrades, it does not refuse: the segment stays
		// attached and advertised, the report names the device and MTUs.
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, false)
		r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
		r.reconcile(t)
		r.dp.warnVNI = map[uint32]string{10100: "the underlay device holding 172.30.0.11 has MTU 1400, segment MTU 1450 needs 1500"}
		wantCalls(t, "degraded", r.reconcile(t), []string{
			"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"bgp.Apply routes=[10.20.100.50/32+0]",
			"announce arp=[uplink0:10.20.100.50] macs=[uplink0>nb-vx-10100]",
		})
		rep := r.sink.last()
		if !rep.Degraded || !strings.Contains(rep.DegradedReason, "MTU 1400") || !rep.Segments[0].Programmed {
			t.Fatalf("report: degraded %v (%s), segments %+v", rep.Degraded, rep.DegradedReason, rep.Segments)
		}
	})
	t.Run("drift", func(t *testing.T) {
		// A drift event only triggers a pass: the same desired state goes
		// to the data plane again (it repairs), nothing else changes.
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, false)
		r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
		first := r.reconcile(t)
		wantCalls(t, "drift", r.reconcile(t), first)
		if n := len(r.sink.reports); n != 2 || !equalReports(r.sink.reports[0], r.sink.reports[1]) {
			t.Fatalf("reports differ after a pass with nothing changed")
		}
	})
	t.Run("restart adoption", func(t *testing.T) {
		// IPs found activated in the kernel are not probed again: the
		// first pass after a restart advertises them at once.
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, false)
		r.dp.activated = []netip.Addr{netip.MustParseAddr("10.20.100.50")}
		if err := r.agent.Adopt(); err != nil {
			t.Fatal(err)
		}
		wantCalls(t, "adopt", r.calls.take(), []string{"dp.ActivatedIPs"})
		wantCalls(t, "first pass", r.reconcile(t), []string{
			"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"bgp.Apply routes=[10.20.100.50/32+0]",
			"announce arp=[uplink0:10.20.100.50] macs=[uplink0>nb-vx-10100]",
		})
	})
	t.Run("completed phase", func(t *testing.T) {
		done := accessSegment("app", 10100, "10.20.100.0/24", nbv1.PhaseCompleted)
		bc := bridgeConfig(done)
		bc.Spec.Advertise = &nbv1.AdvertiseSpec{HostRoutes: true, Aggregate: true}
		r := newRig(t, inputs(bc, endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{}, true)
		r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
		r.election.set(SegmentKey{BridgeConfig: "dc1", Segment: "app"}, true)
		// The VLAN is released (no uplink needed), the bridge answers for
		// the gateway address and announces it into the VXLAN side
		// (nothing goes out of a VLAN that is gone), no port is fenced. The aggregate is advertised first, the
		// host route kept until the speaker has it; the next pass
		// withdraws the host route.
		wantCalls(t, "completed", r.reconcile(t), []string{
			"election.Sync [dc1.app]",
			"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=true",
			"bgp.Apply routes=[10.20.100.50/32+0 10.20.100.0/24+0]",
			"announce arp=[nb-br-10100:10.20.100.1] macs=[]",
			"fence.Guard guarded=[] alive=[]",
		})
		wantCalls(t, "completed, aggregate advertised", r.reconcile(t), []string{
			"election.Sync [dc1.app]",
			"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=true",
			"bgp.Apply routes=[10.20.100.0/24+0]",
			"announce arp=[nb-br-10100:10.20.100.1] macs=[]",
			"fence.Guard guarded=[] alive=[]",
		})
	})
	t.Run("drain", func(t *testing.T) {
		r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, true)
		r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
		r.election.set(SegmentKey{BridgeConfig: "dc1", Segment: "app"}, true)
		r.reconcile(t)
		if err := r.agent.Drain(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		// Graceful shutdown, then detach, and only then the lease is
		// released: never two gateways attached.
		wantCalls(t, "drain", r.calls.take(), []string{
			"bgp.GracefulShutdown",
			"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
			"announce arp=[] macs=[]",
			"fence.Guard guarded=[] alive=[]",
			"election.Release",
		})
		wantCalls(t, "after drain", r.reconcile(t), nil)
	})
}

func equalReports(a, b Report) bool {
	a.At, b.At = time.Time{}, time.Time{}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func zapNop() *zap.Logger { return zap.NewNop() }
