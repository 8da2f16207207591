package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GatewayRole is the role of an agent.
// +kubebuilder:validation:Enum=gateway;node
type GatewayRole string

const (
	RoleGateway GatewayRole = "gateway"
	RoleNode    GatewayRole = "node"
)

// BridgeGatewaySpec identifies the agent.
type BridgeGatewaySpec struct {
	NodeName string      `json:"nodeName"`
	Role     GatewayRole `json:"role"`
}

// GatewaySegmentStatus is one segment as this gateway sees it.
type GatewaySegmentStatus struct {
	BridgeConfig string `json:"bridgeConfig"`
	Name         string `json:"name"`
	// Role: Active (holds the lease, VLAN attached) or Standby.
	// +kubebuilder:validation:Enum=Active;Standby;Node
	Role string `json:"role"`
	// Programmed is true when the kernel objects match the desired state.
	Programmed bool `json:"programmed"`
	// +optional
	Error string `json:"error,omitempty"`
	// Phase is the phase this gateway programmed the segment for (with
	// Programmed: the VLAN side, the gateway address and the routes of
	// that phase are in place); what `netbridgectl segment` waits for.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Egress is Local while this gateway answers for the segment's gateway
	// address on the VXLAN side (the active gateway of a Routed segment
	// with egress Local); empty otherwise.
	// +optional
	Egress string `json:"egress,omitempty"`
	// LegacySweep is the active gateway's last ARP sweep of the segment's
	// IPv4 subnets on the VLAN side, run while the segment is Routed: who
	// still answers on the legacy side (the Routed → Completed preflight).
	// +optional
	LegacySweep *LegacySweep `json:"legacySweep,omitempty"`
}

// LegacySweep is one ARP sweep of a segment's subnets on the VLAN side.
type LegacySweep struct {
	// At is when the sweep finished.
	At metav1.Time `json:"at"`
	// Addresses is how many addresses were probed.
	Addresses int32 `json:"addresses"`
	// Answered are the addresses that answered, with the MAC that did.
	// +optional
	Answered []SweepAnswer `json:"answered,omitempty"`
	// Error says why the sweep could not run (then Answered means nothing).
	// +optional
	Error string `json:"error,omitempty"`
}

// SweepAnswer is one address that answered a sweep.
type SweepAnswer struct {
	IP  string `json:"ip"`
	MAC string `json:"mac"`
}

// GatewayPeerStatus is one BGP session.
type GatewayPeerStatus struct {
	Address string `json:"address"`
	ASN     int64  `json:"asn"`
	// State: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
	State string `json:"state"`
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// +optional
	PrefixesSent int64 `json:"prefixesSent,omitempty"`
	// +optional
	PrefixesReceived int64 `json:"prefixesReceived,omitempty"`
	// +optional
	LastError string `json:"lastError,omitempty"`
	// BFD is the BFD session state (Up, Down, Init, AdminDown); empty when
	// BFD is off on this session.
	// +optional
	BFD string `json:"bfd,omitempty"`
	// BFDFlaps counts BFD leaving Up since the gateway started.
	// +optional
	BFDFlaps int64 `json:"bfdFlaps,omitempty"`
}

// RefusedEndpoint is an IP this gateway will not advertise, and why.
type RefusedEndpoint struct {
	Namespace string `json:"namespace"`
	Endpoint  string `json:"endpoint"`
	IP        string `json:"ip"`
	// Reason: DuplicateAddress, OutsideSubnet, ...
	Reason string `json:"reason"`
	// MAC that answered the duplicate-address probe.
	// +optional
	MAC string `json:"mac,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// GatewayEndpointStatus is one Active endpoint as this gateway programmed it:
// what `netbridgectl verify` reads.
type GatewayEndpointStatus struct {
	Namespace    string   `json:"namespace"`
	Name         string   `json:"name"`
	BridgeConfig string   `json:"bridgeConfig"`
	Segment      string   `json:"segment"`
	IPs          []string `json:"ips,omitempty"`
	MAC          string   `json:"mac,omitempty"`
	// FDBProgrammed: the static FDB entry MAC → VTEP is in the kernel.
	FDBProgrammed bool `json:"fdbProgrammed"`
	// Advertised: the host routes are sent to the BGP peers.
	Advertised bool `json:"advertised"`
	// Reachable: the VM answered an ARP probe across the segment.
	Reachable bool `json:"reachable"`
	// +optional
	LastProbe *metav1.Time `json:"lastProbe,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// BridgeGatewayStatus is written only by the gateway it describes.
type BridgeGatewayStatus struct {
	// +optional
	Segments []GatewaySegmentStatus `json:"segments,omitempty"`
	// +optional
	Peers []GatewayPeerStatus `json:"peers,omitempty"`
	// Advertised are the prefixes currently sent to the peers.
	// +optional
	Advertised []string `json:"advertised,omitempty"`
	// +optional
	Endpoints []GatewayEndpointStatus `json:"endpoints,omitempty"`
	// +optional
	Refused []RefusedEndpoint `json:"refused,omitempty"`
	// +optional
	LastErrors []string `json:"lastErrors,omitempty"`
	// ObservedAt is when the gateway last wrote this status.
	// +optional
	ObservedAt *metav1.Time `json:"observedAt,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BridgeGateway reports the state of one gateway node.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgw
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Role",type=string,JSONPath=`.spec.role`
// +kubebuilder:printcolumn:name="Prefixes",type=string,JSONPath=`.status.advertised`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BridgeGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BridgeGatewaySpec   `json:"spec"`
	Status BridgeGatewayStatus `json:"status,omitempty"`
}

// BridgeGatewayList is a list of BridgeGateways.
// +kubebuilder:object:root=true
type BridgeGatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BridgeGateway `json:"items"`
}
