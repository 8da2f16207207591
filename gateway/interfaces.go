package gateway

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/vlan"
)

// The agent core depends only on these small interfaces; the real
// implementations live in vlan, bgp and gateway/kube, and the unit tests
// of the core use fakes of each.

// DataPlane is what the agent needs of package vlan.
type DataPlane interface {
	Reconcile(ctx context.Context, desired []vlan.Segment) (vlan.Result, error)
	// ActivatedIPs lists the endpoint IPs that have host routes in the
	// kernel: activated by a previous run of the agent.
	ActivatedIPs() ([]netip.Addr, error)
}

// Links tells which network interfaces exist on the host: a segment whose
// uplink is missing is refused before planning, on every gateway.
type Links interface {
	Exists(name string) bool
}

// Speaker is what the agent needs of package bgp.
type Speaker interface {
	Apply(ctx context.Context, d bgp.Desired) (bgp.ApplyReport, error)
	Status(ctx context.Context) (bgp.Status, error)
	GracefulShutdown(ctx context.Context, wait time.Duration) error
}

// Source gives a consistent snapshot of the inputs (API cache or file).
type Source interface {
	Inputs(ctx context.Context) (Inputs, error)
}

// Leadership is the per-segment election (nil: standalone, always active).
type Leadership interface {
	Sync(ctx context.Context, keys []SegmentKey)
	Leading(k SegmentKey) bool
	// ValidFor is how long this gateway may still act as the segment's
	// active gateway without another renewal (0 when not leading).
	ValidFor(k SegmentKey) time.Duration
	Release(ctx context.Context)
	APIReachable() bool
	// Fenced: k is not led because its lease lapsed (not renewed in
	// time), not because it was released or handed over.
	Fenced(k SegmentKey) bool
}

// Fence is the kernel dead-man switch on the VLAN side (vlan.Fence): a
// guarded port bridges only while it is kept alive.
type Fence interface {
	Guard(guarded []string, alive map[string]time.Duration) error
	TTL() time.Duration
}

// EgressGuard keeps the gateway addresses of local-egress segments off
// their VLAN ports (vlan.EgressGuard).
type EgressGuard interface {
	Set(rules []vlan.EgressRule) error
	Rules() []vlan.EgressRule
	// SetProxy: the bridge answers the legacy router for the Active VMs
	// on exactly these VLAN ports (the guard drops its requests).
	SetProxy(ports []string) error
}

// Prober asks a link who answers for some addresses: ARP probes for IPv4,
// duplicate address detection for IPv6 (vlan.Port in production).
type Prober interface {
	Probe(ctx context.Context, iface string, ips []netip.Addr) (map[netip.Addr]net.HardwareAddr, error)
}

// Announcer keeps the announcements of the active segments as desired
// state and repeats them on its own schedule (see announcer.go).
type Announcer interface {
	Set(a Announcements)
}

// StatusSink receives a report after every reconcile (BridgeGateway
// writer, or the log in standalone mode). It should write only changes.
type StatusSink interface {
	Publish(ctx context.Context, r Report) error
}
