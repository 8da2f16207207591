// Package config turns a BridgeConfig spec (from the API server or from the
// standalone file) into plain, validated values, once. Everything downstream
// (controller, gateway, netbridgectl) trusts its output; every error names
// the field path and the value, and a config with any error is never
// programmed.
package config

import (
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Limits are the site-tunable bounds of the semantic checks.
type Limits struct {
	// BroadestIPv4 is the shortest IPv4 segment prefix allowed (default 16).
	// The export guard lets through any host route inside a segment
	// subnet, so a /8 segment would let a typo advertise a /32 of anyone's.
	BroadestIPv4 int
	// BroadestIPv6 is the shortest IPv6 segment prefix allowed (default 48).
	BroadestIPv6 int
}

// Default bounds: a /16 holds 65,534 hosts, far beyond any one VLAN; /48 is
// a whole IPv6 site allocation.
const (
	DefaultBroadestIPv4 = 16
	DefaultBroadestIPv6 = 48
)

// DefaultLimits are the bounds used when none are configured.
func DefaultLimits() Limits {
	return Limits{BroadestIPv4: DefaultBroadestIPv4, BroadestIPv6: DefaultBroadestIPv6}
}

// orDefault fills unset bounds.
func (l Limits) orDefault() Limits {
	if l.BroadestIPv4 == 0 {
		l.BroadestIPv4 = DefaultBroadestIPv4
	}
	if l.BroadestIPv6 == 0 {
		l.BroadestIPv6 = DefaultBroadestIPv6
	}
	return l
}

// BFD defaults, as documented on the API fields: 300 ms × 3 declares a
// session down 900 ms after the last packet.
const (
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
)

// Default BGP timers (RFC 4271's suggestion, and GoBGP's defaults).
const (
	DefaultHoldTime = 90 * time.Second
	DefaultPort     = 179
)

// BridgeConfig is a validated BridgeConfig spec.
type BridgeConfig struct {
	Name string
	// GatewaySelector picks the gateway nodes.
	GatewaySelector labels.Selector
	Uplink          Uplink
	Segments        []Segment
	// BGP is nil when the spec has none.
	BGP       *BGP
	Advertise Advertise
}

// Uplink is the interface carrying the legacy VLANs: by name, or the
// interface holding an address inside Address.
type Uplink struct {
	Interface string
	Address   netip.Prefix
}

// Segment is one validated segment.
type Segment struct {
	Key    nbv1.SegmentKey
	VLANID uint16
	VNI    uint32
	// Subnets are masked, non-overlapping, none broader than the limits.
	Subnets []netip.Prefix
	// Uplink is the segment's own or the BridgeConfig's.
	Uplink Uplink
	Access bool
	// GatewayAddress is zero when unset; else a host address inside one of
	// Subnets with that subnet's prefix length.
	GatewayAddress netip.Prefix
	// MTU is 0 when unset (the agent's default).
	MTU int
	// NamespaceSelector is labels.Everything() when unset.
	NamespaceSelector labels.Selector
	Communities       []Community
	AutoActivate      bool
	// Phase is defaulted to Extended.
	Phase nbv1.SegmentPhase
	// Egress is defaulted to Legacy; Local needs an IPv4 GatewayAddress.
	Egress nbv1.SegmentEgress
}

// Community is a standard BGP community (RFC 1997), ASN<<16 | value.
type Community uint32

// LargeCommunity is an RFC 8092 large community.
type LargeCommunity struct {
	Global, Local1, Local2 uint32
}

// BGP is the validated speaker configuration.
type BGP struct {
	LocalASN uint32
	// RouterID is zero when unset (the node's InternalIP is used).
	RouterID       netip.Addr
	Peers          []Peer
	StandbyPrepend uint8
}

// Peer is one validated BGP neighbour.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	Port    uint16
	// PasswordSecretRef is nil without a password; resolving it is the
	// caller's (Secrets, or the standalone file's passwords).
	PasswordSecretRef *nbv1.SecretKeyRef
	// HoldTime defaults to 90 s; 0 means keepalives are off.
	HoldTime time.Duration
	// Keepalive defaults to a third of HoldTime.
	Keepalive time.Duration
	// EBGPMultihop is the TTL, 0 when unset (directly connected).
	EBGPMultihop    uint8
	GracefulRestart bool
	// RestartTime is 0 when unset (the speaker's default).
	RestartTime time.Duration
	// BFD is nil when BFD is off on this session.
	BFD *BFD
	// NodeSelector is nil when every gateway peers with this router.
	NodeSelector labels.Selector
	Description  string
}

// BFD is the validated BFD setting of one session.
type BFD struct {
	MinReceive  time.Duration
	MinTransmit time.Duration
	Multiplier  uint8
}

// DetectionTime is how long this side waits without packets before it
// declares the session down, when the peer sends as fast as we accept.
func (b BFD) DetectionTime() time.Duration {
	return time.Duration(b.Multiplier) * b.MinReceive
}

// Advertise is what the gateways announce.
type Advertise struct {
	HostRoutes       bool
	Aggregate        bool
	Communities      []Community
	LargeCommunities []LargeCommunity
	// MED is nil when none is sent.
	MED *uint32
}
