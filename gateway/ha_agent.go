package gateway

import (
	"maps"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/gateway/peerlink"
)

// haRunner applies the state machine (ha.go) inside the agent: the
// election step decides and claims, the fence refresh grants G every
// heartbeat, the claim step publishes what is held after the detach.
type haRunner struct {
	opt   HAOptions
	self  string
	peers PeerChannel
	lease LeaseControl
	log   *zap.Logger
	// trigger asks for a pass (time alone moves a Claiming segment on).
	trigger func()

	// Under the agent's mu (reconcile passes).
	segs      map[SegmentKey]haSegment
	lastPeers map[string]netip.AddrPort

	// cmu guards the claims: the fence refresh also sends them.
	cmu  sync.Mutex
	sent map[string]peerlink.Claim
	// fencedOff: segments whose fence element the refresh removed for a
	// higher claim; claimed free at once (the kernel no longer bridges
	// them), so the winner need not wait for a pass that may hang on
	// the API server.
	fencedOff map[string]bool
}

// haGuard is what the fence refresh needs to recompute G of an attached
// segment between passes.
type haGuard struct {
	others []string
	epoch  uint64
}

func (h *haRunner) view(k SegmentKey, others []string, now time.Time) haView {
	v := haView{Now: now, Self: h.self, Key: k.String(), Others: others, Lease: h.lease.Lease(k), Peers: h.peers.Peers(), Opt: h.opt}
	v.K, v.KOK = h.peers.PeerGrant(others...)
	return v
}

// elect runs the state machine of every guarded segment and overrides the
// Lease-only attachments with its verdict.
func (h *haRunner) elect(p *pass) {
	if !maps.Equal(p.peerAddrs, h.lastPeers) {
		if err := h.peers.SetPeers(p.peerAddrs); err != nil {
			h.log.Error("peer channel: peers refused", zap.String("event", "peersRefused"), zap.Error(err))
		} else {
			h.lastPeers = p.peerAddrs
		}
	}
	p.ha = map[SegmentKey]haDecision{}
	next := map[SegmentKey]haSegment{}
	now := time.Now()
	for _, s := range p.d.Segments {
		if s.Error != "" || !guardedByPeers(s, h.self) {
			continue
		}
		prev := h.segs[s.Key]
		d := decideHA(prev, h.view(s.Key, otherCandidates(s, h.self), now))
		if d.EarlyAgainst != "" {
			h.log.Info("holder silent while claiming: acquiring the lease early", zap.String("event", "earlyAcquire"),
				zap.String("segment", s.Key.String()), zap.String("holder", d.EarlyAgainst))
			h.lease.AcquireNow(s.Key, d.EarlyAgainst)
		}
		h.lease.FastRenew(s.Key, d.FastRenew)
		if q, hi := higherClaim(h.view(s.Key, otherCandidates(s, h.self), now), prev.epoch); hi && prev.state != haStandby &&
			h.peers.Peers()[q].Claims[s.Key.String()].Epoch == prev.epoch {
			h.log.Warn("two gateways claim one segment at one epoch: the larger name yields", zap.String("event", "epochConflict"),
				zap.String("segment", s.Key.String()), zap.String("peer", q), zap.Uint64("epoch", prev.epoch))
		}
		if d.Seg.state != prev.state {
			h.log.Info("segment HA state", zap.String("event", "haStateChanged"), zap.String("segment", s.Key.String()),
				zap.String("from", prev.state.String()), zap.String("to", d.Seg.state.String()),
				zap.Uint64("epoch", d.Seg.epoch), zap.String("reason", d.Reason))
		}
		next[s.Key] = d.Seg
		p.ha[s.Key] = d
		p.attached[s.Key] = d.Attach
		if !d.Attach {
			delete(p.attached, s.Key)
		}
	}
	h.segs = next
	h.publish(p, true)
	if h.waiting(now) {
		time.AfterFunc(h.opt.Heartbeat, h.trigger)
	}
}

// waiting: some segment moves on with time alone (Claiming waits out a
// silent peer; a standby waits out a silent claiming holder), so the next
// pass cannot wait for an event.
func (h *haRunner) waiting(now time.Time) bool {
	for _, d := range h.segs {
		if d.state == haClaiming || d.state == haYielding {
			return true
		}
	}
	peers := h.peers.Peers()
	for k, d := range h.segs {
		if d.state != haStandby {
			continue
		}
		for _, p := range peers {
			if p.Claims[k.String()].Holding && !p.Alive {
				return true
			}
		}
	}
	return false
}

// publish sends the claims. Before the data plane (pre) a segment still
// attached keeps holding=true: holding is cleared only after the detach.
func (h *haRunner) publish(p *pass, pre bool) {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	claims := map[string]peerlink.Claim{}
	for k, d := range p.ha {
		holding := d.Holding || (pre && p.prevAttached[k])
		if h.fencedOff[k.String()] && !d.Holding {
			holding = false
		}
		if holding {
			claims[k.String()] = peerlink.Claim{Holding: true, Epoch: d.Seg.epoch}
		} else {
			claims[k.String()] = peerlink.Claim{}
		}
	}
	if !pre {
		h.fencedOff = nil
	}
	if maps.Equal(claims, h.sent) {
		return
	}
	if err := h.peers.SetClaims(claims); err != nil {
		h.log.Error("peer channel: claims refused", zap.String("event", "claimsRefused"), zap.Error(err))
		return
	}
	h.sent = claims
}

// guards are the attached guarded segments whose fence element is granted G.
func (h *haRunner) guards(p *pass, ports map[SegmentKey]fencedPort) map[SegmentKey]haGuard {
	out := map[SegmentKey]haGuard{}
	for _, s := range p.d.Segments {
		d, ok := p.ha[s.Key]
		if _, fenced := ports[s.Key]; !ok || !fenced || !d.Attach {
			continue
		}
		out[s.Key] = haGuard{others: otherCandidates(s, h.self), epoch: d.Seg.epoch}
	}
	return out
}

// grantLeft is G − now for an attached segment, fresh from the peer view
// and the Lease; when it has run out (or a higher epoch claims the
// segment) the agent is asked for a pass, which yields.
func (h *haRunner) grantLeft(k SegmentKey, g haGuard, trigger func()) (left time.Duration, higher bool) {
	now := time.Now()
	v := h.view(k, g.others, now)
	h.lease.FastRenew(k, renewFast(v))
	_, hi := higherClaim(v, g.epoch)
	left = haGrant(v, g.epoch).Sub(now)
	if left <= 0 || hi || !v.Lease.Held || v.Lease.Epoch != g.epoch {
		trigger()
		return 0, hi
	}
	return left, false
}

// yieldFenced claims the segments free whose fence element was just
// removed for a higher claim.
func (h *haRunner) yieldFenced(keys []SegmentKey) {
	if len(keys) == 0 {
		return
	}
	h.cmu.Lock()
	defer h.cmu.Unlock()
	claims := maps.Clone(h.sent)
	if claims == nil {
		claims = map[string]peerlink.Claim{}
	}
	if h.fencedOff == nil {
		h.fencedOff = map[string]bool{}
	}
	for _, k := range keys {
		claims[k.String()] = peerlink.Claim{}
		h.fencedOff[k.String()] = true
	}
	if maps.Equal(claims, h.sent) {
		return
	}
	if err := h.peers.SetClaims(claims); err != nil {
		h.log.Error("peer channel: claims refused", zap.String("event", "claimsRefused"), zap.Error(err))
		return
	}
	h.log.Info("fenced off for a higher claim: claimed free before the detach", zap.String("event", "haFencedOff"),
		zap.Int("segments", len(keys)))
	h.sent = claims
}

// loopYield: the loop probe made this gateway yield segment k (loop.go).
// Like a yield to a higher claim, the epoch is not claimed again: the
// other bridge proved a Lease at least as strong as ours.
func (h *haRunner) loopYield(p *pass, k SegmentKey) {
	seg, ok := h.segs[k]
	if !ok || seg.state == haStandby {
		return
	}
	h.log.Info("segment HA state", zap.String("event", "haStateChanged"), zap.String("segment", k.String()),
		zap.String("from", seg.state.String()), zap.String("to", haStandby.String()),
		zap.Uint64("epoch", seg.epoch), zap.String("reason", "loopDetected"))
	seg.state, seg.yielded, seg.yieldedEpoch = haStandby, true, seg.epoch
	h.segs[k] = seg
	if d, ok := p.ha[k]; ok {
		d.Seg, d.Attach, d.Holding, d.Grant, d.FastRenew = seg, false, false, time.Time{}, false
		p.ha[k] = d
	}
}

// dropAll forgets every segment (drain: all detached) and claims nothing.
func (h *haRunner) dropAll() {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	h.segs = map[SegmentKey]haSegment{}
	if err := h.peers.SetClaims(map[string]peerlink.Claim{}); err == nil {
		h.sent = map[string]peerlink.Claim{}
	}
}
