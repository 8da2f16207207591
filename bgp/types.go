package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Global is the speaker-wide configuration. ASN and RouterID cannot be
// changed on a running GoBGP server: a change restarts the speaker (sessions
// flap, routes are re-advertised).
type Global struct {
	ASN      uint32
	RouterID netip.Addr // IPv4
	// ListenAddresses restricts the passive listener; empty = all addresses.
	ListenAddresses []netip.Addr
	// ListenPort: 0 = 179, -1 = do not listen (outbound connections only).
	ListenPort int32
}

// Peer is one BGP neighbour. Any change to a peer resets its session (it is
// removed and added again), as a router does when its session parameters
// change; Description and MaxPrefixes changes included, for simplicity.
type Peer struct {
	Address     netip.Addr
	ASN         uint32
	Port        uint16 // 0 = 179
	Password    string // TCP MD5 (RFC 2385); empty = none
	Description string
	// Timers; zero = GoBGP defaults (hold 90 s, keepalive hold/3, connect retry 120 s).
	HoldTime     time.Duration
	Keepalive    time.Duration
	ConnectRetry time.Duration
	// EBGPMultihopTTL > 0 enables eBGP multihop with that TTL.
	EBGPMultihopTTL uint8
	// GracefulRestart (RFC 4724) with RestartTime (0 = 120 s). Enables the
	// capability for every address family the peer carries.
	GracefulRestart bool
	RestartTime     time.Duration
	// MaxPrefixes > 0 tears the session down (CEASE, maximum number of
	// prefixes reached) when the peer sends more prefixes than that, per
	// address family. Counted before the import policy, as routers do.
	MaxPrefixes uint32
	// BFD (RFC 5880/5881, single hop) next to the session; nil = off. When
	// BFD declares the peer down GoBGP resets the BGP session at once, and
	// reconnects after 1 s (not GoBGP's default 30 s idle hold). BFD needs a
	// directly connected peer: EBGPMultihopTTL > 1 is refused.
	BFD *BFD
}

// BFD timers of one peer. The zero value of a field takes its default:
// 300 ms × 3, i.e. the peer is declared down 900 ms after its last
// packet. Intervals must lie within 10 ms–60 s, the multiplier within
// 1–255. The peer's own timers count too: GoBGP detects by the peer's
// transmit interval × the peer's multiplier when those are larger, but it
// always transmits at MinTx even when the peer asks for less (gobgp#3563),
// so do not set MinTx below the router's receive interval.
//
// Changing the timers of a running peer resets its session once (the peer
// is removed and added again, BFD and BGP both restart).
type BFD struct {
	MinRx      time.Duration // required minimum receive interval; 0 = 300 ms
	MinTx      time.Duration // desired minimum transmit interval; 0 = 300 ms
	Multiplier uint8         // detection multiplier; 0 = 3
}

// BFD defaults (the Antrea and MetalLB defaults: conservative while BFD
// runs in the agent's process).
const (
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
)

// withDefaults fills zero fields.
func (b BFD) withDefaults() BFD {
	if b.MinRx == 0 {
		b.MinRx = DefaultBFDInterval
	}
	if b.MinTx == 0 {
		b.MinTx = DefaultBFDInterval
	}
	if b.Multiplier == 0 {
		b.Multiplier = DefaultBFDMultiplier
	}
	return b
}

// DetectionTime is how long after the peer's last packet BFD declares it
// down, counting our own timers only (MinRx × Multiplier).
func (b BFD) DetectionTime() time.Duration {
	b = b.withDefaults()
	return b.MinRx * time.Duration(b.Multiplier)
}

// equalPeer compares two peers by value (BFD is a pointer).
func equalPeer(a, b Peer) bool {
	ab, bb := a.BFD, b.BFD
	a.BFD, b.BFD = nil, nil
	if a != b || (ab == nil) != (bb == nil) {
		return false
	}
	return ab == nil || ab.withDefaults() == bb.withDefaults()
}

// Community is a standard RFC 1997 community, high 16 bits ASN.
type Community uint32

// GracefulShutdown is the well-known GRACEFUL_SHUTDOWN community (RFC 8326).
const GracefulShutdown Community = 65535<<16 | 0

// NewCommunity returns asn:value.
func NewCommunity(asn, value uint16) Community { return Community(uint32(asn)<<16 | uint32(value)) }

func (c Community) String() string { return fmt.Sprintf("%d:%d", uint32(c)>>16, uint32(c)&0xffff) }

// ParseCommunity parses "65000:100".
func ParseCommunity(s string) (Community, error) {
	a, v, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q: want ASN:VALUE", s)
	}
	hi, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("community %q: ASN: %w", s, err)
	}
	lo, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("community %q: value: %w", s, err)
	}
	return NewCommunity(uint16(hi), uint16(lo)), nil
}

// LargeCommunity is an RFC 8092 large community Global:Local1:Local2.
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2) }

// Route is one advertised prefix.
type Route struct {
	// Prefix: a host route (/32, /128), or any shorter prefix when Aggregate
	// is set. Must lie inside Desired.AllowedPrefixes.
	Prefix netip.Prefix
	// Aggregate must be set to advertise anything but a host route, so that a
	// mistaken mask never announces a whole subnet.
	Aggregate bool
	// NextHop; zero = our own address toward each peer (IPv4 routes only:
	// an IPv6 route needs an explicit IPv6 next hop when sessions are IPv4).
	NextHop          netip.Addr
	Communities      []Community
	LargeCommunities []LargeCommunity
	// MED; nil = not sent.
	MED *uint32
	// LocalPref is sent to iBGP peers only (eBGP strips it); 0 = not set (100).
	LocalPref uint32
	// ASPathPrepend extra copies of the local ASN (eBGP peers then see it
	// PrependCount+1 times). Use on standby gateways; do not use with iBGP
	// peers (they would see their own ASN and drop the route).
	ASPathPrepend uint8
}

// Equal reports whether two routes carry the same attributes.
func (r Route) Equal(o Route) bool {
	if r.Prefix != o.Prefix || r.Aggregate != o.Aggregate || r.NextHop != o.NextHop ||
		r.LocalPref != o.LocalPref || r.ASPathPrepend != o.ASPathPrepend {
		return false
	}
	if (r.MED == nil) != (o.MED == nil) || (r.MED != nil && *r.MED != *o.MED) {
		return false
	}
	return slices.Equal(sortedCommunities(r.Communities), sortedCommunities(o.Communities)) &&
		slices.Equal(sortedLarge(r.LargeCommunities), sortedLarge(o.LargeCommunities))
}

func sortedCommunities(c []Community) []Community {
	c = slices.Clone(c)
	slices.Sort(c)
	return slices.Compact(c)
}

func sortedLarge(c []LargeCommunity) []LargeCommunity {
	c = slices.Clone(c)
	slices.SortFunc(c, func(a, b LargeCommunity) int {
		if a.Global != b.Global {
			return cmpU32(a.Global, b.Global)
		}
		if a.Local1 != b.Local1 {
			return cmpU32(a.Local1, b.Local1)
		}
		return cmpU32(a.Local2, b.Local2)
	})
	return slices.Compact(c)
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Desired is the whole state the speaker should have. Apply it as a unit.
type Desired struct {
	Global Global
	// AllowedPrefixes are the only prefixes (and their subnets) the speaker
	// ever exports: the segment subnets.
	AllowedPrefixes []netip.Prefix
	Peers           []Peer
	Routes          []Route
}

// RefusedRoute is a route the export guard (or validation) refused.
type RefusedRoute struct {
	Prefix netip.Prefix
	Reason string
}

// ApplyReport says what one Apply changed.
type ApplyReport struct {
	Restarted       bool // the GoBGP server was (re)started
	PoliciesChanged bool
	PeersAdded      []netip.Addr
	PeersUpdated    []netip.Addr
	PeersRemoved    []netip.Addr
	RoutesAdded     []netip.Prefix
	RoutesUpdated   []netip.Prefix
	RoutesWithdrawn []netip.Prefix
	Refused         []RefusedRoute
}

// Changed reports whether Apply touched anything.
func (r ApplyReport) Changed() bool {
	return r.Restarted || r.PoliciesChanged || len(r.PeersAdded)+len(r.PeersUpdated)+len(r.PeersRemoved)+
		len(r.RoutesAdded)+len(r.RoutesUpdated)+len(r.RoutesWithdrawn) > 0
}

// SessionState is the BGP FSM state (RFC 4271 8.2.2).
type SessionState string

const (
	StateUnknown     SessionState = "Unknown"
	StateIdle        SessionState = "Idle"
	StateConnect     SessionState = "Connect"
	StateActive      SessionState = "Active"
	StateOpenSent    SessionState = "OpenSent"
	StateOpenConfirm SessionState = "OpenConfirm"
	StateEstablished SessionState = "Established"
)

// PeerStatus is the observed state of one peer.
type PeerStatus struct {
	Address     netip.Addr
	ASN         uint32
	Description string
	State       SessionState
	// Since is when State was entered (as seen by this speaker); Uptime is
	// the time since the session was established (0 unless Established).
	Since  time.Time
	Uptime time.Duration
	// EverEstablished is false for a peer that never came up since it was
	// configured (e.g. TCP MD5 mismatch: the SYNs are silently dropped).
	EverEstablished bool
	// LastError is the last reason the session went down or failed, e.g.
	// "notification-sent cease/maximum number of prefixes reached".
	LastError string
	// PrefixLimitExceeded: the session was torn down because the peer sent
	// more than Peer.MaxPrefixes; cleared when it is Established again.
	PrefixLimitExceeded bool
	// Prefix counters summed over address families.
	RoutesSent             uint64
	RoutesReceived         uint64
	RoutesReceivedRejected uint64 // by our import policy (we learn nothing)
	UpdatesSent            uint64
	UpdatesReceived        uint64
	// BFDState is GoBGP's BFD session state: "" (BFD off), BFDDown,
	// BFDInit, BFDUp or BFDAdminDown.
	BFDState string
	// BFDDownTransitions counts BFD leaving Up (flaps) and SessionResets
	// the BGP session leaving Established, since the peer was configured.
	BFDDownTransitions uint64
	SessionResets      uint64
	// LastDisconnect is GoBGP's reason for the last time the session went
	// down, from its peer events, e.g. "notification-received cease/admin
	// reset" (what the peer sent) or "notification-sent cease/admin reset"
	// (after BFD down GoBGP resets the session itself).
	LastDisconnect string
}

// BFD session states (RFC 5880).
const (
	BFDDown      = "Down"
	BFDInit      = "Init"
	BFDUp        = "Up"
	BFDAdminDown = "AdminDown"
)

// Status is the observed state of the speaker.
type Status struct {
	Running          bool
	ASN              uint32
	RouterID         netip.Addr
	Draining         bool // graceful shutdown in progress
	Peers            []PeerStatus
	RoutesAdvertised int // routes in our RIB (locally originated)
}

// PeerEvent is a BGP session state change or a BFD state change; both
// fields carry the current state of both, so a subscriber can keep
// per-peer metrics from events alone.
type PeerEvent struct {
	Address netip.Addr
	State   SessionState
	Time    time.Time
	// BFD is true when this event is a BFD state change (State is then
	// unchanged); BFDState is the BFD state ("" = BFD off).
	BFD      bool
	BFDState string
	// Reason is GoBGP's disconnect reason when the session left
	// Established (see PeerStatus.LastDisconnect).
	Reason string
}
