package gateway

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway/peerlink"
	"github.com/netbridge-io/netbridge/vlan"
)

// TestLoopYield: the yield rule of docs/ha.md, and that two bridging
// agents computing it from each other's facts never both keep bridging
// nor both yield.
func TestLoopYield(t *testing.T) {
	p := func(name string, attached, holding bool, epoch uint64) loopParty {
		return loopParty{Name: name, Attached: attached, Holding: holding, Epoch: epoch}
	}
	for _, c := range []struct {
		name        string
		self, other loopParty
		own         bool
		yield       bool
		reason      string
	}{
		{"port bridged behind the agent's back", p("gw2", false, false, 0), p("gw1", true, true, 4), false, true, "bridgedBehindAgent"},
		{"behind our back, even holding the Lease", p("gw2", false, true, 5), p("gw1", true, false, 4), false, true, "bridgedBehindAgent"},
		{"our own probe back: keep, the other bridge yields", p("gw1", true, true, 4), p("gw1", true, true, 4), true, false, "ownProbeReturned"},
		{"we hold the Lease, it does not", p("gw1", true, true, 4), p("gw2", true, false, 9), false, false, "holdsLease"},
		{"it holds the Lease, we do not", p("gw1", true, false, 9), p("gw2", true, true, 4), false, true, "otherHoldsLease"},
		{"both hold: the lower epoch yields", p("gw1", true, true, 4), p("gw2", true, true, 5), false, true, "lowerEpoch"},
		{"both hold: the higher epoch keeps", p("gw2", true, true, 5), p("gw1", true, true, 4), false, false, "higherEpoch"},
		{"neither holds (standalone): the larger name yields", p("gw2", true, false, 0), p("gw1", true, false, 0), false, true, "largerName"},
		{"neither holds: the smaller name keeps", p("gw1", true, false, 0), p("gw2", true, false, 0), false, false, "smallerName"},
		{"equal epochs held (a bug): larger name yields", p("gw2", true, true, 3), p("gw1", true, true, 3), false, true, "largerName"},
	} {
		yield, reason := loopYield(c.self, c.other, c.own)
		if yield != c.yield || reason != c.reason {
			t.Errorf("%s: yield %v (%s), want %v (%s)", c.name, yield, reason, c.yield, c.reason)
		}
	}
	// Exhaustive symmetry over two bridging agents.
	for _, h1 := range []bool{false, true} {
		for _, h2 := range []bool{false, true} {
			for _, e1 := range []uint64{0, 1, 2} {
				for _, e2 := range []uint64{0, 1, 2} {
					a, b := p("gw-a", true, h1, e1), p("gw-b", true, h2, e2)
					ya, _ := loopYield(a, b, false)
					yb, _ := loopYield(b, a, false)
					if ya == yb {
						t.Errorf("a %+v, b %+v: both yield=%v", a, b, ya)
					}
				}
			}
		}
	}
}

func TestWithCuts(t *testing.T) {
	now := time.Now()
	cuts := map[string]loopCut{"up1": {until: now.Add(time.Second)}, "up2": {until: now.Add(-time.Millisecond)}, "up3": {until: now.Add(time.Second), rogue: true}}
	g, a := withCuts([]string{"up1", "up9"}, map[string]time.Duration{"up1": time.Second, "up9": time.Second, "up2": time.Second}, cuts, now)
	if !slices.Equal(g, []string{"up1", "up3", "up9"}) {
		t.Errorf("guarded %v: want the cut ports added", g)
	}
	if _, ok := a["up1"]; ok || a["up9"] != time.Second || a["up2"] != time.Second {
		t.Errorf("alive %v: want up1 dead, up9 and up2 (its cut expired) untouched", a)
	}
	if _, ok := cuts["up2"]; ok || len(cuts) != 2 {
		t.Errorf("cuts %v: the expired one should be pruned", cuts)
	}
	g, a = withCuts(nil, nil, map[string]loopCut{}, now)
	if g != nil || a != nil {
		t.Errorf("no cuts changed the fence: %v %v", g, a)
	}
}

func TestProbedSegments(t *testing.T) {
	app := Segment{Key: SegmentKey{BridgeConfig: "dc1", Segment: "app"}, VNI: 10100, Uplink: "uplink0", Access: true, Phase: PhaseRouted}
	db := Segment{Key: SegmentKey{BridgeConfig: "dc1", Segment: "db"}, VNI: 10200, Uplink: "trunk0", VLANID: 200, Phase: PhaseRouted}
	done := Segment{Key: SegmentKey{BridgeConfig: "dc1", Segment: "old"}, VNI: 10300, Uplink: "uplink0", Access: true, Phase: PhaseCompleted}
	bad := Segment{Key: SegmentKey{BridgeConfig: "dc1", Segment: "bad"}, VNI: 10400, Uplink: "uplink1", Access: true, Phase: PhaseRouted}
	d := Desired{Segments: []Segment{db, app, done, bad}}
	ports := map[SegmentKey]fencedPort{app.Key: {port: "uplink0"}}
	views := map[SegmentKey]loopView{app.Key: {Attached: true, Holding: true, Epoch: 7}, db.Key: {Holding: true, Epoch: 3}}
	got := probedSegments(d, ports, map[SegmentKey]string{bad.Key: "uplink1 not found"}, views)
	want := []vlan.ProbedSegment{
		{VNI: 10100, VLANPort: "uplink0", Sending: true, Holding: true, Epoch: 7},
		// A standby listens on its (detached) port, sends nothing.
		{VNI: 10200, VLANPort: "nb-vl-10200"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("probed\n got  %+v\n want %+v", got, want)
	}
}

type fakeLoopProbe struct{ log *callLog }

func (f *fakeLoopProbe) Set(segs []vlan.ProbedSegment) error {
	var s []string
	for _, p := range segs {
		s = append(s, fmt.Sprintf("%d:%s:send=%v:holding=%v@%d", p.VNI, p.VLANPort, p.Sending, p.Holding, p.Epoch))
	}
	f.log.add("loop.Set %v", s)
	return nil
}

type fakeRelease struct{ log *callLog }

func (f *fakeRelease) ReleasePort(bridge, port string) (bool, error) {
	f.log.add("release %s %s", port, bridge)
	return true, nil
}

// loopRig is a rig with the loop probe (and metrics) wired.
func loopRig(t *testing.T, deps func(*Deps), opts Options) (*rig, *prometheus.Registry) {
	app := accessSegment("app", 10100, "10.20.100.0/24", "Routed")
	r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, true)
	reg := prometheus.NewRegistry()
	d := r.agent.deps
	d.LoopProbe, d.LoopInbox, d.Release, d.Metrics = &fakeLoopProbe{log: r.calls}, NewLoopInbox(), &fakeRelease{log: r.calls}, NewMetrics(reg)
	if deps != nil {
		deps(&d)
	}
	opts.NodeName, opts.Role, opts.LocalVTEP = "gw1", RoleGateway, gwVT
	opts.Loop = LoopOptions{HoldDown: 300 * time.Millisecond}
	r.agent = NewAgent(opts, d)
	r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
	return r, reg
}

func probeFrom(from string, holding bool, epoch uint64, sentAgo time.Duration) vlan.Detection {
	now := time.Now()
	return vlan.Detection{VNI: 10100, Port: "uplink0", From: from, At: now, SentAt: now.Add(-sentAgo), FromHolding: holding, FromEpoch: epoch}
}

func loopCount(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "netbridge_gateway_loops_detected_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestAgentLoopStandbyBridgedBehindItsBack: a standby whose VLAN port is
// enslaved by hand hears the active gateway's probe: it fences the port
// first, then releases it, reports LoopDetected (condition, metric); a
// takeover afterwards is not held back by the cut.
func TestAgentLoopStandbyBridgedBehindItsBack(t *testing.T) {
	r, reg := loopRig(t, nil, Options{})
	wantCalls(t, "standby", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[] alive=[]",
		"loop.Set [10100:uplink0:send=false:holding=false@0]",
	})
	r.agent.onLoop(probeFrom("gw2", true, 4, 2*time.Millisecond))
	// The kernel fence first (the kernel stops forwarding at once), then
	// the port leaves the bridge.
	wantCalls(t, "cut", r.calls.take(), []string{"fence.Guard guarded=[uplink0] alive=[]", "release uplink0 nb-br-10100"})
	// A second probe of the same episode: cut again, counted once.
	r.agent.onLoop(probeFrom("gw2", true, 4, 2*time.Millisecond))
	wantCalls(t, "again", r.calls.take(), []string{"fence.Guard guarded=[uplink0] alive=[]", "release uplink0 nb-br-10100"})
	if n := loopCount(t, reg); n != 1 {
		t.Errorf("loops_detected_total = %v, want 1 (one episode)", n)
	}
	calls := r.reconcile(t)
	if !slices.Contains(calls, "fence.Guard guarded=[uplink0] alive=[]") {
		t.Errorf("the pass forgot the cut: %q", calls)
	}
	rep := r.sink.last()
	if len(rep.Loops) != 1 || !rep.Loops[0].Yielded || rep.Loops[0].From != "gw2" || rep.Loops[0].Reason != "bridgedBehindAgent" {
		t.Fatalf("report loops %+v", rep.Loops)
	}
	c := loopCondition(rep.Loops)
	if c.Type != nbv1.ConditionLoopDetected || c.Status != "True" || c.Reason != nbv1.ReasonLoopYielded || !strings.Contains(c.Message, "uplink0") {
		t.Errorf("condition %+v", c)
	}
	if st := StatusFromReport(rep); len(st.Conditions) != 3 || st.Conditions[2].Type != nbv1.ConditionLoopDetected {
		t.Errorf("status conditions %+v", st.Conditions)
	}

	// gw2 dies, gw1 takes over during the cut: it attaches and its port is
	// alive at once (a rogue cut does not hold a takeover back).
	r.election.set(SegmentKey{BridgeConfig: "dc1", Segment: "app"}, true)
	wantCalls(t, "takeover", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+0]",
		"announce arp=[uplink0:10.20.100.50] macs=[uplink0>nb-vx-10100]",
		"fence.Guard guarded=[uplink0] alive=[uplink0]",
		"loop.Set [10100:uplink0:send=true:holding=true@0]",
	})
	// gw2's last probe, sent before we attached: a handover, no loop.
	r.agent.onLoop(probeFrom("gw2", true, 4, time.Second))
	if got := r.calls.take(); len(got) != 0 {
		t.Errorf("a probe sent before our attach acted: %q", got)
	}
}

// TestAgentLoopActiveYields: two bridging gateways (Lease alone, neither
// knows an epoch): the larger name yields — fenced, released, detached by
// the pass and held detached for the hold-down, then attached again.
func TestAgentLoopActiveYields(t *testing.T) {
	r, reg := loopRig(t, nil, Options{})
	key := SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	r.election.set(key, true)
	r.reconcile(t)
	time.Sleep(5 * time.Millisecond)
	// gw2 (larger name) is the one to yield: gw1 keeps, counts, reports.
	r.agent.onLoop(probeFrom("gw2", true, 0, time.Millisecond))
	if got := r.calls.take(); len(got) != 0 {
		t.Fatalf("gw1 acted on a loop it wins: %q", got)
	}
	// gw0 (smaller name) bridges too: gw1 yields.
	r.agent.onLoop(probeFrom("gw0", true, 0, time.Millisecond))
	wantCalls(t, "cut", r.calls.take(), []string{"fence.Guard guarded=[uplink0] alive=[]", "release uplink0 nb-br-10100"})
	if n := loopCount(t, reg); n != 2 {
		t.Errorf("loops_detected_total = %v, want 2", n)
	}
	wantCalls(t, "held", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[uplink0] alive=[]",
		"loop.Set [10100:uplink0:send=false:holding=false@0]",
	})
	if c := loopCondition(r.sink.last().Loops); c.Reason != nbv1.ReasonLoopYielded {
		t.Errorf("condition %+v", c)
	}
	time.Sleep(350 * time.Millisecond) // the hold-down is over
	wantCalls(t, "after hold-down", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+0]",
		"announce arp=[uplink0:10.20.100.50] macs=[uplink0>nb-vx-10100]",
		"fence.Guard guarded=[uplink0] alive=[uplink0]",
		"loop.Set [10100:uplink0:send=true:holding=true@0]",
	})
}

// TestAgentLoopHA: an HA holder at epoch 2 hears a probe of a holder at
// epoch 3 (the peer channel said nothing: cut): it yields at once, claims
// the segment free after the detach and never claims epoch 2 again.
func TestAgentLoopHA(t *testing.T) {
	var peers *fakePeers
	var leases *fakeLeases
	key := SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	r, _ := loopRig(t, func(d *Deps) {
		peers = &fakePeers{log: d.Election.(*fakeElection).log}
		leases = &fakeLeases{fakeElection: d.Election.(*fakeElection), state: map[SegmentKey]LeaseState{}, fast: map[SegmentKey]bool{}}
		d.Election, d.Peers = leases, peers
	}, Options{HA: HAOptions{Heartbeat: 50 * time.Millisecond}})
	leases.setLease(key, LeaseState{Held: true, Epoch: 2, AcquiredAt: time.Now(), RenewedAt: time.Now(), Holder: "gw1"})
	peers.set(peerlink.PeerView{Alive: true, LastHeard: time.Now(), AcksMe: true, DeadAfter: 150 * time.Millisecond,
		Claims: map[string]peerlink.Claim{key.String(): {Epoch: 1}}}, time.Now().Add(time.Minute), true)
	r.reconcile(t)
	calls := r.reconcile(t)
	if !slices.Contains(calls, "loop.Set [10100:uplink0:send=true:holding=true@2]") {
		t.Fatalf("not active at epoch 2: %q", calls)
	}
	time.Sleep(5 * time.Millisecond)
	r.agent.onLoop(probeFrom("gw2", true, 3, time.Millisecond))
	wantCalls(t, "cut", r.calls.take(), []string{"fence.Guard guarded=[uplink0] alive=[]", "release uplink0 nb-br-10100"})
	wantCalls(t, "yield", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[uplink0] alive=[]",
		"loop.Set [10100:uplink0:send=false:holding=false@0]",
		"peers.SetClaims [dc1.app=free]",
	})
	time.Sleep(350 * time.Millisecond) // hold-down over; the Lease still says ours at 2
	calls = r.reconcile(t)
	if slices.ContainsFunc(calls, func(c string) bool { return strings.Contains(c, "holding@2") || strings.Contains(c, "bridged:") }) {
		t.Errorf("epoch 2 claimed or attached again after a loop yield: %q", calls)
	}
}
