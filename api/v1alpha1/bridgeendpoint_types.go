package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CutoverState is the per-VM cutover state.
// +kubebuilder:validation:Enum=Staged;Active;Withdrawn
type CutoverState string

const (
	// StateStaged: known, not advertised.
	StateStaged CutoverState = "Staged"
	// StateActive: FDB and neighbour programmed, probe passed, advertised.
	StateActive CutoverState = "Active"
	// StateWithdrawn: route withdrawn, entries removed.
	StateWithdrawn CutoverState = "Withdrawn"
)

// BridgeEndpointSpec is one migrated VM interface on one segment.
type BridgeEndpointSpec struct {
	// BridgeConfig and Segment name the segment.
	BridgeConfig string `json:"bridgeConfig"`
	Segment      string `json:"segment"`
	// VMI is the VirtualMachineInstance this endpoint belongs to.
	VMI string `json:"vmi"`
	// Interface is the VMI interface name.
	// +optional
	Interface string `json:"interface,omitempty"`
	// IPs are the preserved addresses.
	// +optional
	IPs []string `json:"ips,omitempty"`
	// MAC of the VM interface.
	// +optional
	MAC string `json:"mac,omitempty"`
	// NodeName is where the VM runs.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// VTEP is the node's VXLAN tunnel endpoint.
	// +optional
	VTEP string `json:"vtep,omitempty"`
	// +kubebuilder:default=Staged
	// +optional
	State CutoverState `json:"state,omitempty"`
}

// BridgeEndpointStatus is written by the controller.
type BridgeEndpointStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Advertised, Reachable, Conflict, Rejected.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BridgeEndpoint is derived by the controller from a VirtualMachineInstance.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=be
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Segment",type=string,JSONPath=`.spec.segment`
// +kubebuilder:printcolumn:name="IPs",type=string,JSONPath=`.spec.ips`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.spec.state`
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.status.conditions[?(@.type=="Conflict")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BridgeEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BridgeEndpointSpec   `json:"spec"`
	Status BridgeEndpointStatus `json:"status,omitempty"`
}

// BridgeEndpointList is a list of BridgeEndpoints.
// +kubebuilder:object:root=true
type BridgeEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BridgeEndpoint `json:"items"`
}
