package v1alpha1

// Labels and annotations read or written by netbridge.
const (
	// LabelSegment on a VirtualMachineInstance names the segment its first
	// interface joins, as "<bridgeconfig>.<segment>".
	LabelSegment = "netbridge.io/segment"
	// AnnotationIPs lists the preserved IPs of a VMI (comma separated), set by
	// the migration plan before the guest boots.
	AnnotationIPs = "netbridge.io/ips"
	// AnnotationMAC is the preserved MAC of a VMI when its status has none yet.
	AnnotationMAC = "netbridge.io/mac"
	// AnnotationCutover drives the per-VM cutover: "active" or "rollback".
	AnnotationCutover = "netbridge.io/cutover"
	// AnnotationVTEP on a Node overrides its InternalIP as VXLAN tunnel endpoint.
	AnnotationVTEP = "netbridge.io/vtep"
	// LabelGateway marks edge nodes that run the gateway role.
	LabelGateway = "netbridge.io/gateway"
	// LabelBridgeConfig and LabelSegmentName on a BridgeEndpoint let gateways
	// list the endpoints of one segment with a label selector.
	LabelBridgeConfig = "netbridge.io/bridgeconfig"
	LabelSegmentName  = "netbridge.io/segment-name"

	// CutoverActive and CutoverRollback are the values of AnnotationCutover.
	CutoverActive   = "active"
	CutoverRollback = "rollback"
)

// Condition types.
const (
	ConditionReady            = "Ready"
	ConditionAdvertised       = "Advertised"
	ConditionReachable        = "Reachable"
	ConditionConflict         = "Conflict"
	ConditionRejected         = "Rejected"
	ConditionDegraded         = "Degraded"
	ConditionDuplicateAddress = "DuplicateAddress"
)

// NetworkAttachmentDefinitions (Multus, k8s.cni.cncf.io/v1) the controller
// creates per segment carry LabelBridgeConfig and LabelSegmentName and a
// controller owner reference to their BridgeConfig; one without that
// reference is someone else's and never touched.
const (
	// ConditionNetworkAttachmentConflict on a BridgeConfig is True while a
	// NetworkAttachmentDefinition the controller would create exists and
	// belongs to someone else; its message names them.
	ConditionNetworkAttachmentConflict = "NetworkAttachmentConflict"
	// ReasonForeignNetworkAttachment: the NAD is not ours (no controller
	// owner reference to this BridgeConfig).
	ReasonForeignNetworkAttachment = "ForeignNetworkAttachment"
	// ReasonNoNetworkAttachmentConflict: every NAD is ours.
	ReasonNoNetworkAttachmentConflict = "NoConflict"
)

// Per-segment node readiness.
const (
	// SegmentReadyValue is the value of a node's SegmentReadyLabel once
	// its agent reports the segment's bridge programmed.
	SegmentReadyValue = "ready"
	// ConditionNodeNotReady on a BridgeEndpoint is True while the VM's node
	// does not carry the segment's readiness label: its agent has not
	// built (or lost) the segment bridge the VM attaches to.
	ConditionNodeNotReady = "NodeNotReady"
	// ReasonSegmentNotReady is that condition's reason.
	ReasonSegmentNotReady = "SegmentNotReady"
)
