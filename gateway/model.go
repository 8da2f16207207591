// Package gateway is the node agent: it turns BridgeConfigs and
// BridgeEndpoints (from the API server, or from a file on an edge host with
// no cluster) into the desired state of the data plane (package vlan) and of
// the BGP speaker (package bgp), applies them, gates every activation behind
// a duplicate-address probe, elects one active gateway per segment, and
// reports what it did.
package gateway

import (
	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
	"net"
	"net/netip"
	"time"
)

// Role of the agent on its host.
type Role string

const (
	// RoleGateway bridges legacy VLANs to VNIs and speaks BGP.
	RoleGateway Role = "gateway"
	// RoleNode hosts VMs: VXLAN + bridge only.
	RoleNode Role = "node"
)

// Phase is a segment's cutover phase (see the runbook).
type Phase string

const (
	PhaseExtended  Phase = "Extended"
	PhaseRouted    Phase = "Routed"
	PhaseCompleted Phase = "Completed"
)

// Desired is everything the agent should make true on its host, in plain
// values: the same shape whether it came from the API server or a file.
type Desired struct {
	// Segments this host takes part in.
	Segments []Segment
	// BGP is nil on node-role hosts and when no BGP is configured.
	BGP *BGP
	// Endpoints are the VM interfaces of these segments, in every state.
	Endpoints []Endpoint
	// NodeVTEPs are the VTEPs a VM may run behind (every known node's and
	// every endpoint's): a VM announcing itself from one of them moved.
	NodeVTEPs []netip.Addr
}

// SegmentKey names a segment across BridgeConfigs (the contract is the
// API's: one format, one parser, for every process).
type SegmentKey = nbv1.SegmentKey

// Segment is one legacy VLAN stretched to one VNI.
type Segment struct {
	Key     SegmentKey
	VLANID  uint16
	VNI     uint32
	Subnets []netip.Prefix
	// Uplink is the trunk (or, with Access, the untagged access port).
	Uplink string
	Access bool
	MTU    int
	// GatewayAddress is put on the bridge in the Completed phase.
	GatewayAddress netip.Prefix
	Phase          Phase
	// LocalEgress: in Routed the active gateway answers for GatewayAddress
	// on the VXLAN side (egress: Local).
	LocalEgress bool
	Communities []bgp.Community
	// Candidates are the gateway nodes selected for this segment (this
	// node included): with only one, losing the lease never detaches.
	Candidates []string
	// ActiveGatewayVTEP is where node-role hosts flood (the lease holder's
	// VTEP); unset when nobody holds the lease.
	ActiveGatewayVTEP netip.Addr
	// Error, when set, refuses the segment before it reaches the kernel
	// (e.g. a missing uplink or a VNI clash found while translating).
	Error string
}

// BGP is the speaker's configuration.
type BGP struct {
	LocalASN         uint32
	RouterID         netip.Addr
	Peers            []Peer
	StandbyPrepend   uint8
	HostRoutes       bool
	Aggregate        bool
	Communities      []bgp.Community
	LargeCommunities []bgp.LargeCommunity
	MED              *uint32
}

// Peer is one router.
type Peer struct {
	Address         netip.Addr
	ASN             uint32
	Port            uint16
	Password        string
	HoldTime        time.Duration
	Keepalive       time.Duration
	EBGPMultihop    uint8
	GracefulRestart bool
	RestartTime     time.Duration
	// BFD is nil when BFD is off on the session.
	BFD         *bgp.BFD
	Description string
}

// EndpointState is the per-VM cutover state.
type EndpointState string

const (
	StateStaged    EndpointState = "Staged"
	StateActive    EndpointState = "Active"
	StateWithdrawn EndpointState = "Withdrawn"
)

// Endpoint is one VM interface.
type Endpoint struct {
	Namespace string
	Name      string
	Segment   SegmentKey
	IPs       []netip.Addr
	MAC       net.HardwareAddr
	NodeName  string
	VTEP      netip.Addr
	State     EndpointState
}

// ID is "namespace/name".
func (e Endpoint) ID() string { return e.Namespace + "/" + e.Name }
