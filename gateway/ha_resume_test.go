package gateway

import (
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/gateway/peerlink"
)

// TestDecideHAResumeAfterStop walks the passes of an active gateway (gw1)
// that was stopped (SIGSTOP) from 1 s to 4 s while gw2 took the Lease at
// epoch 3, on the views it has right after SIGCONT: first its stale Lease
// state and stale peer view, then gw2's fresh heartbeat, then the Lease
// read naming gw2. It must never attach again, end Standby and never try
// to take the Lease back (e2e: TestHA_AgentSIGCONT).
func TestDecideHAResumeAfterStop(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	opt := HAOptions{Heartbeat: 50 * time.Millisecond, LeaseAloneGrace: 300 * time.Millisecond}.withDefaults()
	const key = "dc1.app"
	gw2 := func(heard int, holding bool, epoch uint64) map[string]peerlink.PeerView {
		return map[string]peerlink.PeerView{"gw2": {Alive: true, LastHeard: at(heard), AcksMe: true, DeadAfter: 150 * time.Millisecond,
			Claims: map[string]peerlink.Claim{key: {Holding: holding, Epoch: epoch}}}}
	}
	stale := LeaseState{Held: true, Epoch: 2, AcquiredAt: at(0), RenewedAt: at(990), Holder: "gw1"}
	steps := []struct {
		name  string
		now   int
		lease LeaseState
		peers map[string]peerlink.PeerView
		k     int // the peer grant's end: acks from before the stop end it early
		want  haState
		hold  bool
	}{
		{"first pass: both grants long over", 4000, stale, gw2(990, false, 2), 1140, haYielding, false},
		{"stale Lease, gw2 not heard yet: claims its old epoch, cannot attach", 4010, stale, gw2(990, false, 2), 1140, haClaiming, true},
		{"gw2's fresh heartbeat claims epoch 3: yield", 4020, stale, gw2(4015, true, 3), 4165, haStandby, false},
		{"the Lease read names gw2: standby", 4120, LeaseState{Holder: "gw2"}, gw2(4115, true, 3), 4265, haStandby, false},
		{"a stale Lease answer again: the yielded epoch is not claimed", 4130, stale, gw2(4125, true, 3), 4275, haStandby, false},
	}
	seg := haSegment{state: haActive, epoch: 2}
	for _, s := range steps {
		v := haView{Now: at(s.now), Self: "gw1", Key: key, Others: []string{"gw2"}, Lease: s.lease, Peers: s.peers,
			K: at(s.k), KOK: true, Opt: opt}
		d := decideHA(seg, v)
		t.Logf("%s: %s → %s reason=%q attach=%v holding=%v early=%q", s.name, seg.state, d.Seg.state, d.Reason, d.Attach, d.Holding, d.EarlyAgainst)
		if d.Attach {
			t.Errorf("%s: the resumed gateway attaches again", s.name)
		}
		if d.Seg.state != s.want || d.Holding != s.hold {
			t.Errorf("%s: state %s holding %v, want %s holding %v", s.name, d.Seg.state, d.Holding, s.want, s.hold)
		}
		if d.EarlyAgainst != "" {
			t.Errorf("%s: acquires early against %s, which is heard holding", s.name, d.EarlyAgainst)
		}
		seg = d.Seg
	}
}
