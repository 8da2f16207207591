package gateway

import (
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/netbridge-io/netbridge/gateway/peerlink"
)

// The HA state machine of docs/ha.md, as pure functions of (previous
// state, Lease view, peer view, clock). The agent calls them in the
// election step and every heartbeat in the fence refresh; the table tests
// call them directly with a fake peer view and a fake clock.

// HAOptions enable the peer rule (docs/ha.md). Zero Heartbeat: HA off,
// the Lease alone decides (today's behaviour).
type HAOptions struct {
	// Heartbeat is the peer channel's HeartbeatInterval: the fence is
	// refreshed this often.
	Heartbeat time.Duration
	// DeadAfter is this gateway's peer DeadAfter.
	DeadAfter time.Duration
	// Margin covers the agent→kernel write delay, scheduling and clock
	// rate (default one heartbeat).
	Margin time.Duration
	// LeaseAloneGrace is how long a successful renewal lets the holder
	// bridge without the peer rule (default six heartbeats: one renewal
	// slower than Grace − Grace/3 would otherwise end L on a loaded host).
	LeaseAloneGrace time.Duration
	// PeerPort is the peer channel port on every gateway's VTEP.
	PeerPort uint16
}

func (o HAOptions) enabled() bool { return o.Heartbeat > 0 }

func (o HAOptions) withDefaults() HAOptions {
	if o.Margin <= 0 {
		o.Margin = o.Heartbeat
	}
	if o.LeaseAloneGrace <= 0 {
		o.LeaseAloneGrace = 6 * o.Heartbeat
	}
	if o.DeadAfter <= 0 {
		o.DeadAfter = peerlink.DefaultDeadAfterBeats * o.Heartbeat
	}
	if o.PeerPort == 0 {
		o.PeerPort = peerlink.DefaultPort
	}
	return o
}

// PeerChannel is what the agent needs of gateway/peerlink.
type PeerChannel interface {
	SetPeers(peers map[string]netip.AddrPort) error
	SetClaims(claims map[string]peerlink.Claim) error
	Peers() map[string]peerlink.PeerView
	PeerGrant(peers ...string) (until time.Time, ok bool)
}

// LeaseState is what the last successful Lease call said about one
// segment, on the local monotonic clock.
type LeaseState struct {
	// Held: the API server's last answer says this gateway holds the Lease
	// (renewals may fail since; RenewedAt tells).
	Held bool
	// Epoch is leaseTransitions when this gateway acquired it.
	Epoch uint64
	// AcquiredAt is when the acquiring response arrived (T).
	AcquiredAt time.Time
	// RenewedAt is when the last successful renewal started (r).
	RenewedAt time.Time
	// Holder is the holder of the last read (for early acquisition).
	Holder string
	// PrevSeenAt, after a takeover: when this gateway first saw the
	// previous holder's last write, its reads succeeding throughout (zero
	// otherwise). That write started before, so the previous holder's
	// lease-alone grant ends by PrevSeenAt + LeaseAloneGrace.
	PrevSeenAt time.Time
}

// LeaseControl is the part of the election the HA state machine drives
// (kube.Election implements it).
type LeaseControl interface {
	Lease(k SegmentKey) LeaseState
	// AcquireNow takes the Lease at once if its holder is still `against`
	// on the resourceVersion read (early acquisition).
	AcquireNow(k SegmentKey, against string)
	// FastRenew renews every LeaseAloneGrace/3 instead of RetryPeriod
	// while the peer rule does not carry.
	FastRenew(k SegmentKey, on bool)
}

type haState int

const (
	haStandby haState = iota
	haClaiming
	haActive
	haYielding
)

func (s haState) String() string {
	return [...]string{"Standby", "Claiming", "Active", "Yielding"}[s]
}

// haSegment is the agent's memory of one guarded segment.
type haSegment struct {
	state haState
	epoch uint64
	// yieldedEpoch: a Lease epoch this gateway gave up; it does not claim
	// on it again (the Lease still says ours until the winner's write).
	yielded      bool
	yieldedEpoch uint64
}

// haView is everything one decision reads.
type haView struct {
	Now    time.Time
	Self   string
	Key    string // peerlink claim key (SegmentKey.String())
	Others []string
	Lease  LeaseState
	Peers  map[string]peerlink.PeerView
	// K is the peer grant over Others (KOK false: some candidate does not
	// ack us).
	K   time.Time
	KOK bool
	Opt HAOptions
}

// haDecision is what the agent does for one segment.
type haDecision struct {
	Seg haSegment
	// Attach: the segment bridges after this pass.
	Attach bool
	// Holding is the claim to send (before the attach / after the detach).
	Holding bool
	Grant   time.Time
	// EarlyAgainst names a silent claiming holder to acquire against now.
	EarlyAgainst string
	// FastRenew: the peer rule does not carry, keep L fresh.
	FastRenew bool
	// Reason says why the state changed (log).
	Reason string
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// higherClaim is the first other candidate claiming the segment holding
// at a higher epoch (or at an equal epoch with a smaller name: equal
// epochs are a bug, the larger name yields).
func higherClaim(v haView, epoch uint64) (string, bool) {
	for _, q := range v.Others {
		c, ok := v.Peers[q].Claims[v.Key]
		if !ok || !c.Holding {
			continue
		}
		if c.Epoch > epoch || (c.Epoch == epoch && q < v.Self) {
			return q, true
		}
	}
	return "", false
}

// haGrant is G = max(K, L) of a holder at epoch.
func haGrant(v haView, epoch uint64) time.Time {
	if _, hi := higherClaim(v, epoch); hi {
		return time.Time{}
	}
	g := time.Time{}
	if v.KOK {
		g = v.K
	}
	if v.Lease.Held && !v.Lease.RenewedAt.IsZero() {
		if l := v.Lease.RenewedAt.Add(v.Opt.LeaseAloneGrace); l.After(g) {
			g = l
		}
	}
	return g
}

// silentSince reports whether q has been silent long enough that its peer
// grant, which needed our acks, is over.
func silent(v haView, q string) bool {
	p, ok := v.Peers[q]
	if !ok || p.LastHeard.IsZero() {
		return true
	}
	return !v.Now.Before(p.LastHeard.Add(maxDur(v.Opt.DeadAfter, p.DeadAfter) + v.Opt.Margin))
}

// canAttach is the Claiming → Active condition: every other candidate
// yielded (fresh: its newest message acks this boot) or is silent and its
// lease-alone grant is over too.
func canAttach(v haView) bool {
	for _, q := range v.Others {
		p := v.Peers[q]
		if p.AcksMe && !p.Claims[v.Key].Holding {
			continue
		}
		if silent(v, q) && !v.Now.Before(leaseAloneOver(v.Lease).Add(v.Opt.LeaseAloneGrace+v.Opt.Margin)) {
			continue
		}
		return false
	}
	return true
}

// leaseAloneOver is the instant from which the previous holder's
// renewals are known to have stopped: T, or earlier when the Lease reads
// showed its last write before T.
func leaseAloneOver(l LeaseState) time.Time {
	if !l.PrevSeenAt.IsZero() && l.PrevSeenAt.Before(l.AcquiredAt) {
		return l.PrevSeenAt
	}
	return l.AcquiredAt
}

// decideHA is one step of the state machine of a guarded segment.
func decideHA(prev haSegment, v haView) haDecision {
	seg := prev
	d := haDecision{}
	held := v.Lease.Held && !(prev.yielded && v.Lease.Epoch <= prev.yieldedEpoch)
	switch prev.state {
	case haActive, haClaiming:
		switch q, hi := higherClaim(v, prev.epoch); {
		case !v.Lease.Held:
			d.Reason = "leaseLost"
		case v.Lease.Epoch != prev.epoch:
			d.Reason = "epochChanged"
		case hi:
			d.Reason = "higherEpochClaim:" + q
		case prev.state == haActive && !v.Now.Before(haGrant(v, prev.epoch)):
			d.Reason = "grantExpired"
		}
		if d.Reason != "" {
			// Detach now; the claim goes false once detached (the
			// agent sends it after the data plane step).
			seg.state = haStandby
			if strings.HasPrefix(d.Reason, "higherEpochClaim") {
				// The Lease still says ours until the winner's write
				// lands: do not claim that epoch again. (After
				// grantExpired the same epoch may be claimed again: the
				// attach condition is checked afresh.)
				seg.yielded, seg.yieldedEpoch = true, prev.epoch
			}
			if prev.state == haActive {
				seg.state = haYielding
			}
			d.Seg = seg
			return d
		}
	case haYielding:
		seg.state = haStandby
	}
	if seg.state == haStandby {
		switch {
		case held:
			seg.state, seg.epoch, seg.yielded = haClaiming, v.Lease.Epoch, false
			d.Reason = "leaseAcquired"
		case !v.Lease.Held && v.Lease.Holder != "" && v.Lease.Holder != v.Self:
			h := v.Lease.Holder
			p, known := v.Peers[h]
			if known && p.Claims[v.Key].Holding && !p.LastHeard.IsZero() && silent(v, h) {
				d.EarlyAgainst = h
			}
		}
	}
	if seg.state == haClaiming && canAttach(v) {
		if g := haGrant(v, seg.epoch); v.Now.Before(g) {
			seg.state = haActive
			d.Reason = "attach"
		}
	}
	d.Seg = seg
	d.Holding = seg.state == haClaiming || seg.state == haActive
	d.Attach = seg.state == haActive
	if d.Holding {
		d.Grant = haGrant(v, seg.epoch)
		d.FastRenew = renewFast(v)
	}
	return d
}

// renewFast: keep L fresh (renew every LeaseAloneGrace/3, the first one
// at once) while K does not carry, and already while it may stop carrying
// soon — a candidate's ack is more than one and a half heartbeats old. K
// lapses DeadAfter after the send of the last acked message; a renewal
// started only then leaves the holder with neither grant for the renewal's
// round trip, or, with RetryPeriod above LeaseAloneGrace (the defaults:
// 2 s and 600 ms), until the next fast tick: a standby's loss would cut
// the active for ~100 ms (measured in e2e, TestHA_StandbyLoss).
func renewFast(v haView) bool {
	return !v.KOK || v.K.Sub(v.Now) < v.Opt.DeadAfter-v.Opt.Heartbeat-v.Opt.Margin/2
}

// otherCandidates are a segment's candidates but this gateway, sorted.
func otherCandidates(s Segment, self string) []string {
	var out []string
	for _, c := range s.Candidates {
		if c != self {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// guardedByPeers: a segment with another candidate runs the state machine;
// a lone one keeps fail-static.
func guardedByPeers(s Segment, self string) bool { return len(otherCandidates(s, self)) > 0 }

// peerAddrs are the peer channel's peers: every other candidate of any
// segment at its VTEP. A candidate without a known VTEP is left out (it
// never acks: its segments keep only the lease-alone grant).
func peerAddrs(in Inputs, d Desired, self string, port uint16) map[string]netip.AddrPort {
	out := map[string]netip.AddrPort{}
	for _, s := range d.Segments {
		for _, c := range otherCandidates(s, self) {
			if n, ok := in.Nodes[c]; ok && n.VTEP.IsValid() {
				out[c] = netip.AddrPortFrom(n.VTEP, port)
			}
		}
	}
	return out
}
