package gateway

import (
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/gateway/peerlink"
)

// TestDecideHA walks the state machine of docs/ha.md on a fake clock and
// a fake peer view: gw1 decides, gw2 is the other candidate. Heartbeat 50
// ms, DeadAfter 150 ms, Margin 50 ms, LeaseAloneGrace 100 ms.
func TestDecideHA(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	opt := HAOptions{Heartbeat: 50 * time.Millisecond, LeaseAloneGrace: 100 * time.Millisecond}.withDefaults()
	const key = "dc1.app"
	claim := func(holding bool, epoch uint64) map[string]peerlink.Claim {
		return map[string]peerlink.Claim{key: {Holding: holding, Epoch: epoch}}
	}
	// gw2 heard at `heard`, acking us (fresh) or not, with its claim.
	peer := func(heard int, acks bool, c map[string]peerlink.Claim) map[string]peerlink.PeerView {
		return map[string]peerlink.PeerView{"gw2": {Alive: true, LastHeard: at(heard), AcksMe: acks, DeadAfter: 150 * time.Millisecond, Claims: c}}
	}
	held := func(epoch uint64, acquired, renewed int) LeaseState {
		return LeaseState{Held: true, Epoch: epoch, AcquiredAt: at(acquired), RenewedAt: at(renewed), Holder: "gw1"}
	}
	other := LeaseState{Holder: "gw2"}

	cases := []struct {
		name   string
		prev   haSegment
		now    int
		lease  LeaseState
		peers  map[string]peerlink.PeerView
		k      int // peer grant (ms); <0: gw2 does not ack
		want   haState
		attach bool
		hold   bool
		grant  int // ms, -1: none
		early  string
		fast   bool
		reason string
	}{
		{name: "standby, holder alive and claiming", now: 1000, lease: other,
			peers: peer(990, true, claim(true, 1)), k: -1, want: haStandby, grant: -1},
		{name: "standby, holder claiming then silent past DeadAfter+Margin: acquire early", now: 1000, lease: other,
			peers: peer(799, false, claim(true, 1)), k: -1, want: haStandby, grant: -1, early: "gw2"},
		{name: "standby, holder silent but not yet past DeadAfter+Margin", now: 1000, lease: other,
			peers: peer(801, false, claim(true, 1)), k: -1, want: haStandby, grant: -1},
		{name: "standby, holder never heard claiming: never early", now: 1000, lease: other,
			peers: peer(100, false, claim(false, 0)), k: -1, want: haStandby, grant: -1},
		{name: "lease won, old holder still claims: claim first, do not attach", now: 1000, lease: held(2, 1000, 1000),
			peers: peer(990, true, claim(true, 1)), k: 1100, want: haClaiming, hold: true, grant: 1100, reason: "leaseAcquired"},
		{name: "claiming, old holder yielded fresh: attach", prev: haSegment{state: haClaiming, epoch: 2}, now: 1020,
			lease: held(2, 1000, 1000), peers: peer(1010, true, claim(false, 1)), k: 1150, want: haActive, attach: true, hold: true, grant: 1150, reason: "attach"},
		{name: "claiming, yielded but the message does not ack this boot: wait", prev: haSegment{state: haClaiming, epoch: 2}, now: 1020,
			lease: held(2, 1000, 1000), peers: peer(1010, false, claim(false, 1)), k: -1, want: haClaiming, hold: true, grant: 1100, fast: true},
		{name: "claiming, holder silent, its lease-alone grant may still run", prev: haSegment{state: haClaiming, epoch: 2}, now: 1120,
			lease: held(2, 1000, 1100), peers: peer(700, false, claim(true, 1)), k: -1, want: haClaiming, hold: true, grant: 1200, fast: true},
		{name: "claiming, holder silent and both its grants over: attach on L", prev: haSegment{state: haClaiming, epoch: 2}, now: 1160,
			lease: held(2, 1000, 1140), peers: peer(700, false, claim(true, 1)), k: -1, want: haActive, attach: true, hold: true, grant: 1240, fast: true, reason: "attach"},
		{name: "claiming, holder silent, its last write seen well before T: attach without the second wait", prev: haSegment{state: haClaiming, epoch: 2}, now: 1010,
			lease: LeaseState{Held: true, Epoch: 2, AcquiredAt: at(1000), RenewedAt: at(1000), Holder: "gw1", PrevSeenAt: at(800)},
			peers: peer(700, false, claim(true, 1)), k: -1, want: haActive, attach: true, hold: true, grant: 1100, fast: true, reason: "attach"},
		{name: "claiming, holder silent, its last write seen just before T: wait", prev: haSegment{state: haClaiming, epoch: 2}, now: 1010,
			lease: LeaseState{Held: true, Epoch: 2, AcquiredAt: at(1000), RenewedAt: at(1000), Holder: "gw1", PrevSeenAt: at(950)},
			peers: peer(700, false, claim(true, 1)), k: -1, want: haClaiming, hold: true, grant: 1100, fast: true},
		{name: "active, API hung: K carries, L long over", prev: haSegment{state: haActive, epoch: 2}, now: 60000,
			lease: held(2, 1000, 1000), peers: peer(59990, true, claim(false, 1)), k: 60120, want: haActive, attach: true, hold: true, grant: 60120},
		{name: "active, standby lost: L carries (fast renewals)", prev: haSegment{state: haActive, epoch: 2}, now: 5000,
			lease: held(2, 1000, 4980), peers: peer(4000, false, claim(false, 1)), k: -1, want: haActive, attach: true, hold: true, grant: 5080, fast: true},
		{name: "active, an ack 1.5 heartbeats late: K still carries, renew fast before it lapses", prev: haSegment{state: haActive, epoch: 2}, now: 5000,
			lease: held(2, 1000, 3000), peers: peer(4930, true, claim(false, 1)), k: 5074, want: haActive, attach: true, hold: true, grant: 5074, fast: true},
		{name: "active, acks on time: no fast renewals", prev: haSegment{state: haActive, epoch: 2}, now: 5000,
			lease: held(2, 1000, 3000), peers: peer(4990, true, claim(false, 1)), k: 5076, want: haActive, attach: true, hold: true, grant: 5076},
		{name: "active, higher epoch claims: yield at once", prev: haSegment{state: haActive, epoch: 2}, now: 5000,
			lease: held(2, 1000, 1000), peers: peer(4990, true, claim(true, 3)), k: 5100, want: haYielding, grant: -1, reason: "higherEpochClaim:gw2"},
		{name: "active, neither K nor L: yield", prev: haSegment{state: haActive, epoch: 2}, now: 5000,
			lease: held(2, 1000, 4000), peers: peer(4000, false, claim(false, 1)), k: -1, want: haYielding, grant: -1, reason: "grantExpired"},
		{name: "active, renewal reports the lease taken", prev: haSegment{state: haActive, epoch: 2}, now: 5000,
			lease: LeaseState{Holder: "gw2"}, peers: peer(4990, true, claim(false, 3)), k: 5100, want: haYielding, grant: -1, reason: "leaseLost"},
		{name: "active, equal epochs: the larger name yields (gw1 keeps)", prev: haSegment{state: haActive, epoch: 2}, now: 5000,
			lease: held(2, 1000, 1000), peers: peer(4990, true, claim(true, 2)), k: 5100, want: haActive, attach: true, hold: true, grant: 5100},
		{name: "yielded, the lease still says ours at that epoch: no new claim", prev: haSegment{state: haYielding, epoch: 2, yielded: true, yieldedEpoch: 2},
			now: 5050, lease: held(2, 1000, 1000), peers: peer(5040, true, claim(true, 3)), k: 5150, want: haStandby, grant: -1},
		{name: "yielded on an expired grant, the lease still ours: claim the same epoch again", prev: haSegment{state: haYielding, epoch: 2},
			now: 5050, lease: held(2, 1000, 5040), peers: peer(3000, false, claim(true, 1)), k: -1, want: haActive, attach: true, hold: true,
			grant: 5140, fast: true, reason: "attach"},
		{name: "claiming, higher epoch claims: back to standby, nothing to detach", prev: haSegment{state: haClaiming, epoch: 2}, now: 1020,
			lease: held(2, 1000, 1000), peers: peer(1010, true, claim(true, 3)), k: 1150, want: haStandby, grant: -1, reason: "higherEpochClaim:gw2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := haView{Now: at(c.now), Self: "gw1", Key: key, Others: []string{"gw2"}, Lease: c.lease, Peers: c.peers, Opt: opt}
			if c.k >= 0 {
				v.K, v.KOK = at(c.k), true
			}
			d := decideHA(c.prev, v)
			if d.Seg.state != c.want || d.Attach != c.attach || d.Holding != c.hold || d.EarlyAgainst != c.early || d.FastRenew != c.fast || d.Reason != c.reason {
				t.Fatalf("decision %+v (state %s), want state %s attach=%v holding=%v early=%q fast=%v reason=%q",
					d, d.Seg.state, c.want, c.attach, c.hold, c.early, c.fast, c.reason)
			}
			wantGrant := time.Time{}
			if c.grant >= 0 {
				wantGrant = at(c.grant)
			}
			if !d.Grant.Equal(wantGrant) {
				t.Fatalf("grant %s, want %s", d.Grant.Sub(t0), wantGrant.Sub(t0))
			}
		})
	}
}

// TestDecideHAEqualEpochSmallerNameKeeps: with equal epochs only the
// larger name yields, so exactly one of two claimants stays.
func TestDecideHAEqualEpochSmallerNameKeeps(t *testing.T) {
	now := time.Now()
	opt := HAOptions{Heartbeat: 50 * time.Millisecond}.withDefaults()
	v := haView{Now: now, Self: "gw2", Key: "k", Others: []string{"gw1"}, Opt: opt,
		Lease: LeaseState{Held: true, Epoch: 2, AcquiredAt: now, RenewedAt: now},
		Peers: map[string]peerlink.PeerView{"gw1": {Alive: true, LastHeard: now, AcksMe: true, Claims: map[string]peerlink.Claim{"k": {Holding: true, Epoch: 2}}}},
		K:     now.Add(100 * time.Millisecond), KOK: true}
	if d := decideHA(haSegment{state: haActive, epoch: 2}, v); d.Seg.state != haYielding {
		t.Fatalf("gw2 against gw1 at equal epochs: %s, want Yielding", d.Seg.state)
	}
	v.Self, v.Others = "gw0", []string{"gw1"}
	if d := decideHA(haSegment{state: haActive, epoch: 2}, v); d.Seg.state != haActive {
		t.Fatalf("gw0 against gw1 at equal epochs: %s, want Active", d.Seg.state)
	}
}
