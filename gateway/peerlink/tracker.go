package peerlink

import (
	"maps"
	"net/netip"
	"time"
)

// Drop reasons, the label values of Stats.Dropped.
const (
	DropDecode       = "decode"        // not a heartbeat we can parse
	DropVersion      = "version"       // unknown wire version
	DropMisdirected  = "misdirected"   // addressed to another gateway
	DropUnknownName  = "unknown_name"  // sender name is not a configured peer
	DropAddrMismatch = "addr_mismatch" // sender's address is not the one configured for its name
	DropSkew         = "skew"          // send time too far from our clock
	DropStale        = "stale"         // not newer than the last accepted one of that sender: replayed, or reordered (memberlist delivers queued messages newest first)
	DropUnknownAddr  = "unknown_addr"  // packet or stream from an address that is no configured peer
	DropDecrypt      = "decrypt"       // memberlist could not authenticate it (wrong key, forged, corrupted)
	DropLabel        = "label"         // memberlist label of another cluster
	DropMember       = "member"        // memberlist join/alive for a node that is no configured peer
)

// PeerView is what this gateway knows of one configured peer.
type PeerView struct {
	Addr netip.AddrPort
	// Alive is true when a message from the peer was accepted within
	// DeadAfter.
	Alive bool
	// LastHeard is when (local clock, monotonic) the newest message from
	// the peer was accepted; zero if never.
	LastHeard time.Time
	// AcksMe is true when the peer's newest message acknowledges a message
	// of this process (same boot) that was sent within DeadAfter: the peer
	// hears us.
	AcksMe bool
	// AckedSent is when (local clock) we sent the message the peer's newest
	// message acknowledges; zero if it acknowledges none of this boot. A
	// holder's right to bridge on the peer rule ends at
	// min(AckedSent)+DeadAfter over the segment's peers.
	AckedSent time.Time
	// DeadAfter is the peer's own DeadAfter (from its newest message): it
	// calls us dead after that much silence. A standby waiting out a silent
	// holder waits the longer of its own and the holder's.
	DeadAfter time.Duration
	// Claims are the peer's claims from its newest message (also kept
	// when it is no longer alive).
	Claims map[string]Claim
}

type peerState struct {
	addr      netip.AddrPort
	heard     bool
	boot      string
	seq       uint64
	sentWall  int64
	lastHeard time.Time
	ackedSent time.Time
	deadAfter time.Duration
	claims    map[string]Claim
	keys      *keyState
}

// tracker is the channel's bookkeeping, free of I/O and clocks: callers
// pass the local monotonic time (now) and the wall clock (wall).
type tracker struct {
	self      string
	boot      string
	deadAfter time.Duration
	maxSkew   time.Duration

	peers map[string]*peerState
	seq   uint64
	// sent maps our recent sequence numbers to their send time; entries
	// older than deadAfter can no longer make AcksMe true and are pruned.
	sent map[uint64]time.Time
}

func newTracker(self, boot string, deadAfter, maxSkew time.Duration) *tracker {
	return &tracker{self: self, boot: boot, deadAfter: deadAfter, maxSkew: maxSkew,
		peers: map[string]*peerState{}, sent: map[uint64]time.Time{}}
}

// setPeers replaces the configured peers. A peer whose address changed
// starts from scratch: nothing heard from the old address counts.
func (t *tracker) setPeers(peers map[string]netip.AddrPort) {
	for name, p := range t.peers {
		if ap, ok := peers[name]; !ok || ap != p.addr {
			delete(t.peers, name)
		}
	}
	for name, ap := range peers {
		if _, ok := t.peers[name]; !ok {
			t.peers[name] = &peerState{addr: ap}
		}
	}
}

// addrAllowed reports whether ip is the address of a configured peer.
func (t *tracker) addrAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range t.peers {
		if p.addr.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

// nodeAllowed reports whether name at ip is this gateway or a configured
// peer (memberlist's join and alive messages).
func (t *tracker) nodeAllowed(name string, ip netip.Addr, selfAddr netip.Addr) bool {
	if name == t.self {
		return ip.Unmap() == selfAddr.Unmap()
	}
	p, ok := t.peers[name]
	return ok && p.addr.Addr().Unmap() == ip.Unmap()
}

// beginRound allocates the sequence number of the next heartbeat round,
// sent at now.
func (t *tracker) beginRound(now time.Time) uint64 {
	t.seq++
	t.sent[t.seq] = now
	for s, at := range t.sent {
		if now.Sub(at) > t.deadAfter {
			delete(t.sent, s)
		}
	}
	return t.seq
}

// acks returns, per peer heard in this process, its newest accepted message.
func (t *tracker) acks() map[string]ack {
	out := map[string]ack{}
	for name, p := range t.peers {
		if p.heard {
			out[name] = ack{Boot: p.boot, Seq: p.seq}
		}
	}
	return out
}

// receive applies an authenticated message; it returns "" when the
// message was accepted, else the drop reason (and changes nothing).
func (t *tracker) receive(m message, now time.Time, wall time.Time) string {
	if m.V != wireVersion {
		return DropVersion
	}
	if m.To != t.self {
		return DropMisdirected
	}
	p, ok := t.peers[m.From]
	if !ok {
		return DropUnknownName
	}
	if ap, err := netip.ParseAddrPort(m.Addr); err != nil || ap.Addr().Unmap() != p.addr.Addr().Unmap() {
		return DropAddrMismatch
	}
	skew := wall.Sub(time.Unix(0, m.Sent))
	if skew > t.maxSkew || skew < -t.maxSkew {
		return DropSkew
	}
	if p.heard {
		// Within a boot the sequence orders messages; across boots only the
		// sender's clock can, so an old boot's messages stay refused.
		if m.Boot == p.boot && m.Seq <= p.seq {
			return DropStale
		}
		if m.Boot != p.boot && m.Sent <= p.sentWall {
			return DropStale
		}
	}
	p.heard, p.boot, p.seq, p.sentWall, p.lastHeard = true, m.Boot, m.Seq, m.Sent, now
	p.ackedSent = time.Time{}
	if a, ok := m.Acks[t.self]; ok && a.Boot == t.boot {
		if at, ok := t.sent[a.Seq]; ok {
			p.ackedSent = at
		}
	}
	p.claims = maps.Clone(m.Claims)
	p.deadAfter = time.Duration(m.DeadAfter)
	p.keys = m.Keys
	return ""
}

// view returns the peers as seen at now.
func (t *tracker) view(now time.Time) map[string]PeerView {
	out := make(map[string]PeerView, len(t.peers))
	for name, p := range t.peers {
		v := PeerView{Addr: p.addr, LastHeard: p.lastHeard, AckedSent: p.ackedSent, DeadAfter: p.deadAfter, Claims: maps.Clone(p.claims)}
		if v.Claims == nil {
			v.Claims = map[string]Claim{}
		}
		v.Alive = p.heard && now.Sub(p.lastHeard) <= t.deadAfter
		v.AcksMe = !p.ackedSent.IsZero() && now.Sub(p.ackedSent) <= t.deadAfter
		out[name] = v
	}
	return out
}

// peerGrant returns until when the named peers vouch for us: every one of
// them acknowledges a message of ours, and none can call us dead before
// the send time of the oldest acknowledged one plus the stricter of the two
// DeadAfters. ok is false when names is empty or one of them does not
// acknowledge us now.
func (t *tracker) peerGrant(names []string, now time.Time) (until time.Time, ok bool) {
	if len(names) == 0 {
		return time.Time{}, false
	}
	for _, name := range names {
		p, known := t.peers[name]
		if !known || p.ackedSent.IsZero() || now.Sub(p.ackedSent) > t.deadAfter {
			return time.Time{}, false
		}
		d := t.deadAfter
		if p.deadAfter > 0 && p.deadAfter < d {
			d = p.deadAfter
		}
		if end := p.ackedSent.Add(d); until.IsZero() || end.Before(until) {
			until = end
		}
	}
	if !until.After(now) {
		return time.Time{}, false
	}
	return until, true
}

// nextFlip returns the earliest time after now at which Alive or AcksMe of
// some peer turns false without any message arriving; zero if none will.
func (t *tracker) nextFlip(now time.Time) time.Time {
	var next time.Time
	consider := func(at time.Time) {
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	for _, p := range t.peers {
		if p.heard {
			consider(p.lastHeard.Add(t.deadAfter + time.Nanosecond))
		}
		if !p.ackedSent.IsZero() {
			consider(p.ackedSent.Add(t.deadAfter + time.Nanosecond))
		}
	}
	return next
}

// sameView reports whether a and b agree on everything OnChange reports:
// membership, aliveness, acks and claims (not the timestamps).
func sameView(a, b map[string]PeerView) bool {
	if len(a) != len(b) {
		return false
	}
	for name, va := range a {
		vb, ok := b[name]
		if !ok || va.Addr != vb.Addr || va.Alive != vb.Alive || va.AcksMe != vb.AcksMe || !maps.Equal(va.Claims, vb.Claims) {
			return false
		}
	}
	return true
}
