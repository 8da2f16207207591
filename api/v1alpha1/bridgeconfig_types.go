package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SegmentPhase is where a segment is in the cutover runbook.
// +kubebuilder:validation:Enum=Extended;Routed;Completed
type SegmentPhase string

const (
	// PhaseExtended (the default): the VLAN is bridged to the VNI and the
	// legacy router is the gateway; no host routes are advertised (the
	// active VMs are reached over the stretched VLAN).
	PhaseExtended SegmentPhase = "Extended"
	// PhaseRouted: bridged, and the active VMs' /32 (/128) host routes are
	// advertised (when advertise.hostRoutes, the default), next hop the
	// gateway: routed traffic to migrated VMs enters via the gateway.
	PhaseRouted SegmentPhase = "Routed"
	// PhaseCompleted: VLAN released, netbridge answers for the gateway address
	// and advertises the subnets (when advertise.aggregate); no host routes.
	PhaseCompleted SegmentPhase = "Completed"
)

// SegmentEgress is who routes migrated VMs' off-subnet traffic before the
// segment is Completed.
// +kubebuilder:validation:Enum=Legacy;Local
type SegmentEgress string

const (
	// EgressLegacy (the default, also when unset): the VMs keep the legacy
	// router as their gateway; replies to routed traffic cross the VLAN.
	EgressLegacy SegmentEgress = "Legacy"
	// EgressLocal: in the Routed phase the active gateway answers for the
	// segment's gatewayAddress on the VXLAN side only, with its bridge's
	// MAC, and routes the VMs' off-subnet traffic out of its routed
	// interface (the path of the host routes inbound). The VLAN side keeps
	// the legacy router. docs/architecture.md, "Local egress".
	EgressLocal SegmentEgress = "Local"
)

// UplinkSpec selects the interface that carries the legacy VLANs.
// +kubebuilder:validation:XValidation:rule="has(self.interface) || has(self.address)",message="uplink: set interface or address"
type UplinkSpec struct {
	// Interface is the name of the trunk (or access) interface, e.g. "eth1".
	// Linux refuses names longer than 15 characters, "." and "..", and
	// names holding '/', ':' or whitespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..' && !self.matches('[/:[:space:]]')",message="uplink.interface must be a Linux interface name: not '.' or '..', no '/', ':' or whitespace"
	// +optional
	Interface string `json:"interface,omitempty"`
	// Address selects the interface holding an address inside this CIDR,
	// for fleets whose interface names differ from node to node.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="uplink.address must be a CIDR, e.g. 192.0.2.0/24"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked().ip() == cidr(self).ip()",message="uplink.address must not have host bits set, e.g. 192.0.2.0/24 not 192.0.2.5/24"
	// +optional
	Address string `json:"address,omitempty"`
}

// Segment is one legacy VLAN stretched to one VXLAN VNI.
// +kubebuilder:validation:XValidation:rule="!(has(self.autoActivate) && self.autoActivate && has(self.cutoverPolicy) && self.cutoverPolicy == 'AfterMigration')",message="segments[]: autoActivate activates every VM at once, cutoverPolicy AfterMigration waits for Forklift: set one of them"
// +kubebuilder:validation:XValidation:rule="!has(self.egress) || self.egress != 'Local' || (has(self.gatewayAddress) && isCIDR(self.gatewayAddress) && cidr(self.gatewayAddress).ip().family() == 4)",message="segments[].egress Local needs an IPv4 segments[].gatewayAddress (the legacy default gateway the VMs use)"
// +kubebuilder:validation:XValidation:rule="!has(self.gatewayAddress) || !isCIDR(self.gatewayAddress) || self.subnets.exists(s, isCIDR(s) && cidr(s).prefixLength() == cidr(self.gatewayAddress).prefixLength() && cidr(s).containsIP(cidr(self.gatewayAddress).ip()))",message="segments[].gatewayAddress must be an address inside one of segments[].subnets, with that subnet's prefix length"
type Segment struct {
	// Name is unique within the BridgeConfig (DNS-1123 label).
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="segments[].name must be a DNS-1123 label (lower case letters, digits, '-')"
	Name string `json:"name"`
	// VLANID is the 802.1Q tag of the legacy VLAN on the trunk. Required on
	// an access segment too (no tag is sent there): it names the legacy
	// VLAN the access port is in, so that no two segments bridge it.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 4094",message="segments[].vlanID must be between 1 and 4094"
	VLANID int32 `json:"vlanID"`
	// VNI is the VXLAN network identifier that carries the segment to the nodes.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 16777215",message="segments[].vni must be between 1 and 16777215"
	VNI int32 `json:"vni"`
	// Subnets are the legacy subnets (IPv4 and/or IPv6) whose addresses may
	// be preserved on this segment. Only host routes inside them are advertised.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="segments[].subnets must be CIDRs, e.g. 10.20.0.0/24 or 2001:db8::/64"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !isCIDR(c) || cidr(c).masked().ip() == cidr(c).ip())",message="segments[].subnets must not have host bits set, e.g. 10.20.0.0/24 not 10.20.0.5/24"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !isCIDR(c) || cidr(c).prefixLength() > 0)",message="segments[].subnets must not be a default route (/0)"
	// +kubebuilder:validation:XValidation:rule="self.all(a, !isCIDR(a) || self.filter(b, isCIDR(b) && (cidr(a).containsCIDR(cidr(b)) || cidr(b).containsCIDR(cidr(a)))).size() == 1)",message="segments[].subnets must not overlap each other"
	Subnets []string `json:"subnets"`
	// Uplink overrides the BridgeConfig's uplink for this segment.
	// +optional
	Uplink *UplinkSpec `json:"uplink,omitempty"`
	// Access means the uplink is an untagged access port for this VLAN
	// instead of an 802.1Q trunk.
	// +optional
	Access bool `json:"access,omitempty"`
	// GatewayAddress is the legacy default gateway (CIDR form) the bridge
	// takes over in the Completed phase.
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="segments[].gatewayAddress must be an address with prefix length, e.g. 10.20.0.1/24"
	// +kubebuilder:validation:MaxLength=43
	// +optional
	GatewayAddress string `json:"gatewayAddress,omitempty"`
	// Egress Local makes the active gateway the migrated VMs' default
	// gateway in the Routed phase (needs an IPv4 gatewayAddress); unset or
	// Legacy leaves it to the legacy router.
	// +optional
	Egress SegmentEgress `json:"egress,omitempty"`
	// MTU of the bridge and VXLAN device; the underlay must carry MTU+50.
	// +kubebuilder:validation:XValidation:rule="self >= 1280 && self <= 9000",message="segments[].mtu must be between 1280 and 9000"
	// +optional
	MTU int32 `json:"mtu,omitempty"`
	// NamespaceSelector limits which namespaces' VMs may join the segment.
	// Empty: every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Communities (standard "ASN:value") added to this segment's routes.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=11
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.matches('^[0-9]{1,5}:[0-9]{1,5}$'))",message="segments[].communities must look like 65000:100"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !c.matches('^[0-9]{1,5}:[0-9]{1,5}$') || c.split(':').all(p, int(p) <= 65535))",message="segments[].communities must be ASN:value with both parts between 0 and 65535"
	// +optional
	Communities []string `json:"communities,omitempty"`
	// AutoActivate activates VMs of this segment as soon as they are known,
	// without a per-VM cutover annotation.
	// +optional
	AutoActivate bool `json:"autoActivate,omitempty"`
	// Phase is the segment's place in the cutover runbook (default Extended).
	// +kubebuilder:default=Extended
	// +optional
	Phase SegmentPhase `json:"phase,omitempty"`
	// NetworkAttachmentName names the Multus NetworkAttachmentDefinition
	// the controller creates for this segment in every namespace the
	// segment allows (default "<bridgeconfig>.<segment>", the value of the
	// VMI label netbridge.io/segment). VMs refer to it in
	// spec.networks[].multus.networkName.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="segments[].networkAttachmentName must be a DNS-1123 subdomain (lower case letters, digits, '-', '.')"
	// +optional
	NetworkAttachmentName string `json:"networkAttachmentName,omitempty"`
	// CutoverPolicy says who activates this segment's VMs: Manual (the
	// default: the netbridge.io/cutover annotation, set by netbridgectl
	// cutover or a person) or AfterMigration (the controller activates a
	// VM created by a Forklift Plan once its Migration reports the VM
	// migrated and the VMI runs, and rolls it back when verify's checks do
	// not pass within verifyTimeout). Empty is Manual.
	// +optional
	CutoverPolicy CutoverPolicy `json:"cutoverPolicy,omitempty"`
	// VerifyTimeout bounds, under cutoverPolicy AfterMigration, the time
	// from the automatic activation until verify's checks (route, FDB,
	// ARP reachability) pass; past it the VM is rolled back (default 60s).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s') && duration(self) <= duration('1h')",message="segments[].verifyTimeout must be between 5s and 1h"
	// +optional
	VerifyTimeout *metav1.Duration `json:"verifyTimeout,omitempty"`
}

// CutoverPolicy says who activates a segment's VMs.
// +kubebuilder:validation:Enum=Manual;AfterMigration
type CutoverPolicy string

const (
	// CutoverManual: a VM is activated by its cutover annotation only.
	CutoverManual CutoverPolicy = "Manual"
	// CutoverAfterMigration: the controller activates a VM when Forklift
	// reports its migration succeeded and the VMI is Running.
	CutoverAfterMigration CutoverPolicy = "AfterMigration"
)

// DefaultVerifyTimeout is segments[].verifyTimeout when unset.
const DefaultVerifyTimeout = 60 * time.Second

// VerifyTimeoutOrDefault is the segment's verifyTimeout, or the default.
func (s *Segment) VerifyTimeoutOrDefault() time.Duration {
	if s.VerifyTimeout == nil || s.VerifyTimeout.Duration <= 0 {
		return DefaultVerifyTimeout
	}
	return s.VerifyTimeout.Duration
}

// SecretKeyRef names a key of a Secret in the netbridge namespace.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +kubebuilder:default=password
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// GracefulRestart configures RFC 4724 graceful restart with a peer.
type GracefulRestart struct {
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// RestartTime in seconds the peer keeps our routes while we restart.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 4095",message="gracefulRestart.restartTime must be between 1 and 4095"
	// +optional
	RestartTime int32 `json:"restartTime,omitempty"`
}

// BFD configures RFC 5880/5881 Bidirectional Forwarding Detection on a BGP
// session, so that a router drops a dead gateway's routes within the
// detection time instead of the hold time. The defaults, 300 ms × 3, declare
// the session down 900 ms after the last packet (multiplier × the slower of
// the two sides' intervals).
type BFD struct {
	// Enabled runs BFD on this session.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// MinReceiveMs is the shortest interval between received BFD packets
	// this side accepts, in milliseconds (default 300).
	// +kubebuilder:validation:XValidation:rule="self >= 10 && self <= 60000",message="peers[].bfd.minReceiveMs must be between 10 and 60000"
	// +kubebuilder:default=300
	// +optional
	MinReceiveMs int32 `json:"minReceiveMs,omitempty"`
	// MinTransmitMs is the shortest interval between sent BFD packets, in
	// milliseconds (default 300).
	// +kubebuilder:validation:XValidation:rule="self >= 10 && self <= 60000",message="peers[].bfd.minTransmitMs must be between 10 and 60000"
	// +kubebuilder:default=300
	// +optional
	MinTransmitMs int32 `json:"minTransmitMs,omitempty"`
	// Multiplier is how many packets may be missed before the session is
	// declared down (default 3).
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 255",message="peers[].bfd.multiplier must be between 1 and 255"
	// +kubebuilder:default=3
	// +optional
	Multiplier int32 `json:"multiplier,omitempty"`
}

// BGPPeer is one datacenter router the gateways peer with.
// +kubebuilder:validation:XValidation:rule="!has(self.bfd) || !has(self.bfd.enabled) || !self.bfd.enabled || !has(self.ebgpMultihop) || self.ebgpMultihop <= 1",message="peers[].bfd is single-hop only (RFC 5881): it cannot be enabled with ebgpMultihop above 1"
// +kubebuilder:validation:XValidation:rule="!has(self.holdTime) || self.holdTime == 0 || (self.holdTime >= 3 && self.holdTime <= 65535)",message="peers[].holdTime must be 0 or between 3 and 65535"
// +kubebuilder:validation:XValidation:rule="!has(self.keepalive) || (has(self.holdTime) ? (self.holdTime == 0 ? self.keepalive == 0 : self.keepalive < self.holdTime) : self.keepalive < 90)",message="peers[].keepalive must be below peers[].holdTime (default hold time 90)"
type BGPPeer struct {
	// Address of the router.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="peers[].address must be an IP address"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).isGlobalUnicast()",message="peers[].address must be a unicast address a router can have: not unspecified, loopback, link-local, multicast or broadcast"
	Address string `json:"address"`
	// ASN of the router.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 4294967295",message="peers[].asn must be between 1 and 4294967295"
	ASN int64 `json:"asn"`
	// Port of the router's BGP listener (default 179).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// PasswordSecretRef holds the TCP MD5 password; passwords are never
	// written inline.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	// HoldTime in seconds (0 disables keepalives).
	// +optional
	HoldTime *int32 `json:"holdTime,omitempty"`
	// Keepalive in seconds.
	// +optional
	Keepalive *int32 `json:"keepalive,omitempty"`
	// EBGPMultihop TTL for routers that are not directly connected.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +optional
	EBGPMultihop int32 `json:"ebgpMultihop,omitempty"`
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
	// BFD on this session (single-hop peers only).
	// +optional
	BFD *BFD `json:"bfd,omitempty"`
	// NodeSelector limits which gateways peer with this router (a rack's ToR).
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// +kubebuilder:validation:MaxLength=80
	// +optional
	Description string `json:"description,omitempty"`
}

// BGPSpec configures the gateways' BGP speaker.
type BGPSpec struct {
	// LocalASN of the gateways.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 4294967295",message="bgp.localASN must be between 1 and 4294967295"
	LocalASN int64 `json:"localASN"`
	// RouterID overrides the default (the node's InternalIP).
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="bgp.routerID must be an IPv4 address"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).family() != 4 || ip(self).isGlobalUnicast()",message="bgp.routerID must be a unicast address: not 0.0.0.0, loopback, link-local, multicast or broadcast"
	// +kubebuilder:validation:MaxLength=15
	// +optional
	RouterID string `json:"routerID,omitempty"`
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=address
	// +kubebuilder:validation:XValidation:rule="self.all(a, !isIP(a.address) || self.filter(b, isIP(b.address) && ip(b.address) == ip(a.address)).size() == 1)",message="peers[].address must be unique: the same address is written twice"
	// +optional
	Peers []BGPPeer `json:"peers,omitempty"`
	// StandbyPrepend is how many times standby gateways prepend their ASN.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +kubebuilder:default=3
	// +optional
	StandbyPrepend int32 `json:"standbyPrepend,omitempty"`
}

// AdvertiseSpec says what the gateways announce.
type AdvertiseSpec struct {
	// HostRoutes advertises a /32 (/128) per active VM IP of the segments
	// in phase Routed (Extended advertises none, Completed the aggregate).
	// +kubebuilder:default=true
	// +optional
	HostRoutes bool `json:"hostRoutes,omitempty"`
	// Aggregate advertises each segment subnet once the segment is Completed.
	// +optional
	Aggregate bool `json:"aggregate,omitempty"`
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=11
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.matches('^[0-9]{1,5}:[0-9]{1,5}$'))",message="advertise.communities must look like 65000:100"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !c.matches('^[0-9]{1,5}:[0-9]{1,5}$') || c.split(':').all(p, int(p) <= 65535))",message="advertise.communities must be ASN:value with both parts between 0 and 65535"
	// +optional
	Communities []string `json:"communities,omitempty"`
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$'))",message="advertise.largeCommunities must look like 65000:1:2"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !c.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') || c.split(':').all(p, int(p) <= 4294967295))",message="advertise.largeCommunities must be global:local1:local2 with each part between 0 and 4294967295"
	// +optional
	LargeCommunities []string `json:"largeCommunities,omitempty"`
	// MED sent with every route.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	MED *int64 `json:"med,omitempty"`
}

// BridgeConfigSpec is the desired bridging of legacy VLANs.
type BridgeConfigSpec struct {
	// GatewaySelector picks the edge nodes that run gateways for these segments.
	GatewaySelector metav1.LabelSelector `json:"gatewaySelector"`
	// Uplink is the default trunk for every segment.
	Uplink UplinkSpec `json:"uplink"`
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.filter(b, b.vlanID == a.vlanID).size() == 1)",message="segments[].vlanID must be unique within a BridgeConfig"
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.filter(b, b.vni == a.vni).size() == 1)",message="segments[].vni must be unique within a BridgeConfig"
	Segments []Segment `json:"segments"`
	// +optional
	BGP *BGPSpec `json:"bgp,omitempty"`
	// +optional
	Advertise *AdvertiseSpec `json:"advertise,omitempty"`
}

// EndpointCounts counts a segment's endpoints by cutover state.
type EndpointCounts struct {
	Staged    int32 `json:"staged"`
	Active    int32 `json:"active"`
	Withdrawn int32 `json:"withdrawn"`
	// Refused counts endpoints with a Conflict or Rejected condition.
	Refused int32 `json:"refused"`
}

// SegmentStatus is the observed state of one segment.
type SegmentStatus struct {
	Name string `json:"name"`
	// ActiveGateway is the node holding the segment's lease.
	// +optional
	ActiveGateway string `json:"activeGateway,omitempty"`
	// StandbyGateways are the other selected gateway nodes.
	// +optional
	StandbyGateways []string       `json:"standbyGateways,omitempty"`
	Endpoints       EndpointCounts `json:"endpoints"`
}

// BridgeConfigStatus is written by the controller.
type BridgeConfigStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Segments []SegmentStatus `json:"segments,omitempty"`
	// ActiveGateways is a summary for kubectl: the distinct active gateways.
	// +optional
	ActiveGateways string `json:"activeGateways,omitempty"`
	// EndpointCount is the number of endpoints of all segments.
	// +optional
	EndpointCount int32 `json:"endpointCount,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BridgeConfig stretches legacy VLANs to the cluster through gateway nodes.
// The VMI label netbridge.io/segment holds "<name>.<segment>", a label
// value: at most 63 characters.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="self.spec.segments.all(s, size(self.metadata.name) + 1 + size(s.name) <= 63)",message="metadata.name and spec.segments[].name must fit the label netbridge.io/segment=<name>.<segment>: at most 63 characters together"
// +kubebuilder:resource:scope=Cluster,shortName=bc
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Segments",type=string,JSONPath=`.spec.segments[*].name`
// +kubebuilder:printcolumn:name="Active-Gateway",type=string,JSONPath=`.status.activeGateways`
// +kubebuilder:printcolumn:name="Endpoints",type=integer,JSONPath=`.status.endpointCount`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BridgeConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BridgeConfigSpec   `json:"spec"`
	Status BridgeConfigStatus `json:"status,omitempty"`
}

// BridgeConfigList is a list of BridgeConfigs.
// +kubebuilder:object:root=true
type BridgeConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BridgeConfig `json:"items"`
}
