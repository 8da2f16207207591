package gateway

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/gateway/peerlink"
)

// fakePeers is the peer channel: a view the test sets, calls recorded.
type fakePeers struct {
	log   *callLog
	mu    sync.Mutex
	view  map[string]peerlink.PeerView
	grant time.Time
	ok    bool
}

func (f *fakePeers) SetPeers(p map[string]netip.AddrPort) error {
	var s []string
	for n, a := range p {
		s = append(s, n+"="+a.String())
	}
	sort.Strings(s)
	f.log.add("peers.SetPeers %v", s)
	return nil
}

func (f *fakePeers) SetClaims(c map[string]peerlink.Claim) error {
	var s []string
	for k, v := range c {
		if v.Holding {
			s = append(s, fmt.Sprintf("%s=holding@%d", k, v.Epoch))
		} else {
			s = append(s, k+"=free")
		}
	}
	sort.Strings(s)
	f.log.add("peers.SetClaims %v", s)
	return nil
}

func (f *fakePeers) Peers() map[string]peerlink.PeerView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view
}

func (f *fakePeers) PeerGrant(...string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grant, f.ok
}

func (f *fakePeers) set(gw2 peerlink.PeerView, grant time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.view = map[string]peerlink.PeerView{"gw2": gw2}
	f.grant, f.ok = grant, ok
}

// fakeLeases is an election that is also a LeaseControl.
type fakeLeases struct {
	*fakeElection
	lmu   sync.Mutex
	state map[SegmentKey]LeaseState
	fast  map[SegmentKey]bool
}

func (f *fakeLeases) Lease(k SegmentKey) LeaseState {
	f.lmu.Lock()
	defer f.lmu.Unlock()
	return f.state[k]
}

func (f *fakeLeases) AcquireNow(k SegmentKey, against string) {
	f.log.add("lease.AcquireNow %s against=%s", k, against)
}

func (f *fakeLeases) FastRenew(k SegmentKey, on bool) {
	f.lmu.Lock()
	defer f.lmu.Unlock()
	if f.fast[k] != on {
		f.fast[k] = on
		f.log.add("lease.FastRenew %s %v", k, on)
	}
}

func (f *fakeLeases) setLease(k SegmentKey, s LeaseState) {
	f.lmu.Lock()
	defer f.lmu.Unlock()
	f.state[k] = s
}

// TestAgentHA drives the agent with the peer rule through takeover, an
// API outage and a yield, asserting every call in order: holding is
// claimed before the attach, cleared only after the detach and the fence.
func TestAgentHA(t *testing.T) {
	app := accessSegment("app", 10100, "10.20.100.0/24", "Routed")
	key := SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	r := newRig(t, inputs(bridgeConfig(app), endpoint("vm1", "app", "10.20.100.50", vm1MAC)), fakeLinks{"uplink0": true}, true)
	peers := &fakePeers{log: r.calls}
	leases := &fakeLeases{fakeElection: r.election, state: map[SegmentKey]LeaseState{}, fast: map[SegmentKey]bool{}}
	deps := r.agent.deps
	deps.Election, deps.Peers = leases, peers
	r.agent = NewAgent(Options{NodeName: "gw1", Role: RoleGateway, LocalVTEP: gwVT, HA: HAOptions{Heartbeat: 50 * time.Millisecond}}, deps)
	r.agent.deps.Gate.Adopt([]netip.Addr{netip.MustParseAddr("10.20.100.50")})
	now := time.Now()
	claiming := func(epoch uint64) map[string]peerlink.Claim {
		return map[string]peerlink.Claim{key.String(): {Holding: true, Epoch: epoch}}
	}

	// gw2 holds and claims, alive: gw1 stays standby, claims nothing held.
	leases.setLease(key, LeaseState{Holder: "gw2"})
	peers.set(peerlink.PeerView{Alive: true, LastHeard: now, AcksMe: true, DeadAfter: 150 * time.Millisecond, Claims: claiming(1)}, time.Time{}, false)
	wantCalls(t, "standby", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"peers.SetPeers [gw2=172.30.0.12:7946]",
		"peers.SetClaims [dc1.app=free]",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[] alive=[]",
	})

	// gw2 went silent while claiming: acquire early.
	peers.set(peerlink.PeerView{LastHeard: now.Add(-time.Second), DeadAfter: 150 * time.Millisecond, Claims: claiming(1)}, time.Time{}, false)
	wantCalls(t, "early", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"lease.AcquireNow dc1.app against=gw2",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[] alive=[]",
	})

	// The Lease is ours at epoch 2 and gw2 is back, still claiming epoch 1:
	// claim first (fast renewals: gw2 does not ack yet), do not attach.
	leases.setLease(key, LeaseState{Held: true, Epoch: 2, AcquiredAt: time.Now(), RenewedAt: time.Now(), Holder: "gw1"})
	peers.set(peerlink.PeerView{Alive: true, LastHeard: time.Now(), DeadAfter: 150 * time.Millisecond, Claims: claiming(1)}, time.Time{}, false)
	wantCalls(t, "claiming", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"lease.FastRenew dc1.app true",
		"peers.SetClaims [dc1.app=holding@2]",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[] alive=[]",
	})

	// gw2 yielded in a message that acks us: attach, fence alive on G.
	peers.set(peerlink.PeerView{Alive: true, LastHeard: time.Now(), AcksMe: true, DeadAfter: 150 * time.Millisecond,
		Claims: map[string]peerlink.Claim{key.String(): {Epoch: 1}}}, time.Now().Add(time.Minute), true)
	wantCalls(t, "active", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"lease.FastRenew dc1.app false",
		"dp.Reconcile 10100 bridged:uplink0 eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+0]",
		"announce arp=[uplink0:10.20.100.50] macs=[uplink0>nb-vx-10100]",
		"fence.Guard guarded=[uplink0] alive=[uplink0]",
	})

	// API hung: no renewal for a minute (L long over), K carries: the
	// heartbeat refresh keeps the port alive, a pass changes nothing.
	leases.setLease(key, LeaseState{Held: true, Epoch: 2, AcquiredAt: now.Add(-time.Minute), RenewedAt: now.Add(-time.Minute), Holder: "gw1"})
	r.agent.keepAlive()
	wantCalls(t, "api hung refresh", r.calls.take(), []string{"fence.Guard guarded=[uplink0] alive=[uplink0]"})
	if got := r.reconcile(t); !strings.Contains(strings.Join(got, "\n"), "bridged:uplink0") {
		t.Fatalf("api hung pass detached: %q", got)
	}

	// gw2 claims epoch 3: fenced and claimed free by the refresh, then the
	// pass detaches and the fence forgets the port.
	peers.set(peerlink.PeerView{Alive: true, LastHeard: time.Now(), AcksMe: true, DeadAfter: 150 * time.Millisecond, Claims: claiming(3)},
		time.Now().Add(time.Minute), true)
	r.agent.keepAlive()
	// The refresh cuts the port and claims it free at once: the winner
	// does not wait for a pass (which may hang on the API server).
	wantCalls(t, "higher claim refresh", r.calls.take(), []string{"fence.Guard guarded=[uplink0] alive=[]", "peers.SetClaims [dc1.app=free]"})
	wantCalls(t, "yield", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[] alive=[]",
	})
	// The Lease still says ours at epoch 2: no new claim on it.
	wantCalls(t, "after yield", r.reconcile(t), []string{
		"election.Sync [dc1.app]",
		"dp.Reconcile 10100 vxlan-only eps=[52:54:00:00:01:50[10.20.100.50]] gw=false",
		"bgp.Apply routes=[10.20.100.50/32+3]",
		"announce arp=[] macs=[]",
		"fence.Guard guarded=[] alive=[]",
	})
}
