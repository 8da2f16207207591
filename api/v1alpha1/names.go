package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Names and values that cross processes (controller, gateway, netbridgectl)
// are built here and nowhere else, each with its inverse where one is read
// back: two processes that disagree on a Lease name elect two active
// gateways.

// SegmentKey names one segment of one BridgeConfig.
// +kubebuilder:object:generate=false
type SegmentKey struct {
	BridgeConfig string
	Segment      string
}

// String is "<bridgeconfig>.<segment>", the value of the VMI label
// netbridge.io/segment. It is unambiguous because a segment name is a
// DNS-1123 label (no '.') while a BridgeConfig name may hold dots: the last
// dot separates them.
func (k SegmentKey) String() string { return k.BridgeConfig + "." + k.Segment }

// Validate checks both parts and that String fits a label value (63
// characters): a longer key could never be put on a VMI.
func (k SegmentKey) Validate() error {
	if errs := validation.IsDNS1123Subdomain(k.BridgeConfig); len(errs) > 0 {
		return fmt.Errorf("bridgeconfig name %q: %s", k.BridgeConfig, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(k.Segment); len(errs) > 0 {
		return fmt.Errorf("segment name %q: %s", k.Segment, strings.Join(errs, "; "))
	}
	if s := k.String(); len(s) > validation.LabelValueMaxLength {
		return fmt.Errorf("segment key %q is %d characters, a label value holds at most %d: shorten the BridgeConfig or segment name",
			s, len(s), validation.LabelValueMaxLength)
	}
	return nil
}

// ParseSegmentKey is the inverse of String; it refuses what Validate refuses.
func ParseSegmentKey(s string) (SegmentKey, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return SegmentKey{}, fmt.Errorf("segment key %q: want <bridgeconfig>.<segment>", s)
	}
	k := SegmentKey{BridgeConfig: s[:i], Segment: s[i+1:]}
	if err := k.Validate(); err != nil {
		return SegmentKey{}, fmt.Errorf("segment key %q: %w", s, err)
	}
	return k, nil
}

// leasePrefix marks the Leases netbridge's gateways elect with.
const leasePrefix = "nb-"

// LeaseName is the per-segment election Lease: "nb-<bridgeconfig>.<segment>"
// for a valid key (at most 66 characters, a valid object name, read back by
// ParseLeaseName). A key that fails Validate still gets a distinct, valid
// name, "nb-h-<hash>", which holds no dot and so cannot meet a valid one.
func LeaseName(k SegmentKey) string {
	if k.Validate() == nil {
		return leasePrefix + k.String()
	}
	return leasePrefix + "h-" + hashOf(k.BridgeConfig, k.Segment)
}

// ParseLeaseName is the inverse of LeaseName for valid keys.
func ParseLeaseName(name string) (SegmentKey, error) {
	rest, ok := strings.CutPrefix(name, leasePrefix)
	if !ok {
		return SegmentKey{}, fmt.Errorf("lease %q is not a netbridge segment lease (no prefix %q)", name, leasePrefix)
	}
	k, err := ParseSegmentKey(rest)
	if err != nil {
		return SegmentKey{}, fmt.Errorf("lease %q: %w", name, err)
	}
	return k, nil
}

// endpointHashLen is how many hex digits of SHA-256 a hashed endpoint name
// carries (64 bits: no collision among the endpoints of one namespace).
const endpointHashLen = 16

// EndpointName is the BridgeEndpoint name of a VMI interface. The common
// case stays readable: "<vmi>-<iface>" when the interface name is lower-case
// letters and digits only (KubeVirt's "default", "eth0"), since the last '-'
// then separates the parts. Any other interface name, or a result longer
// than an object name may be, gives "<sanitised vmi-iface>.<hash>": its tail
// after the last '-' holds a '.', which a readable name's never does, so the
// two forms cannot collide.
func EndpointName(vmi, iface string) string {
	if isLowerAlnum(iface) && len(vmi)+1+len(iface) <= validation.DNS1123SubdomainMaxLength {
		return vmi + "-" + iface
	}
	base := sanitizeName(vmi + "-" + iface)
	if max := validation.DNS1123SubdomainMaxLength - 1 - endpointHashLen; len(base) > max {
		base = strings.TrimRight(base[:max], "-")
	}
	if base == "" {
		base = "x"
	}
	return base + "." + hashOf(vmi, iface)[:endpointHashLen]
}

func isLowerAlnum(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// sanitizeName keeps [a-z0-9-] (upper case folded), turns anything else
// into '-' and trims '-' at both ends: one valid DNS label.
func sanitizeName(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// hashOf hashes the parts with a separator no name holds.
func hashOf(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])
}

// SegmentRole is a gateway's role for one segment
// (BridgeGateway status.segments[].role).
type SegmentRole string

const (
	// SegmentRoleActive holds the segment's Lease and bridges its VLAN.
	SegmentRoleActive SegmentRole = "Active"
	// SegmentRoleStandby is a selected gateway that does not hold the Lease.
	SegmentRoleStandby SegmentRole = "Standby"
	// SegmentRoleNode is a VM node: VXLAN and bridge only.
	SegmentRoleNode SegmentRole = "Node"
)

// RefusalReason says why an endpoint (or one of its IPs) is not advertised:
// the reason of a BridgeEndpoint's Rejected/Conflict condition and of a
// BridgeGateway's refused[] entry.
type RefusalReason string

const (
	// ReasonInvalidAddress: an IP that does not parse.
	ReasonInvalidAddress RefusalReason = "InvalidAddress"
	// ReasonOutsideSubnet: an IP in none of the segment's subnets.
	ReasonOutsideSubnet RefusalReason = "OutsideSubnet"
	// ReasonNetworkAddress: the subnet's network address (all host bits 0).
	ReasonNetworkAddress RefusalReason = "NetworkAddress"
	// ReasonBroadcastAddress: an IPv4 subnet's broadcast address.
	ReasonBroadcastAddress RefusalReason = "BroadcastAddress"
	// ReasonGatewayAddress: the segment's gatewayAddress, which the bridge
	// takes over in the Completed phase.
	ReasonGatewayAddress RefusalReason = "GatewayAddress"
	// ReasonDuplicateIP: another VM claimed the IP first (Conflict).
	ReasonDuplicateIP RefusalReason = "DuplicateIP"
	// ReasonDuplicateAddress: a host on the legacy VLAN answered the
	// gateway's duplicate-address probe.
	ReasonDuplicateAddress RefusalReason = "DuplicateAddress"
	// ReasonNamespaceNotAllowed: the segment's namespaceSelector excludes
	// the VM's namespace.
	ReasonNamespaceNotAllowed RefusalReason = "NamespaceNotAllowed"
	// ReasonBridgeConfigNotReady: the BridgeConfig is Ready=False.
	ReasonBridgeConfigNotReady RefusalReason = "BridgeConfigNotReady"
	// ReasonInvalidVTEP: the node's netbridge.io/vtep annotation is not a
	// usable address (reported as Degraded, the last good VTEP is kept).
	ReasonInvalidVTEP RefusalReason = "InvalidVTEP"
)

// NodeVTEP is a node's VXLAN tunnel endpoint: the annotation
// netbridge.io/vtep when present, else the first InternalIP that parses. A
// present annotation that is not a usable unicast address is an error
// naming it and its value, never a silent fall-back: the operator set it
// for a reason. The zero Addr and no error: the node reports no address yet.
func NodeVTEP(node *corev1.Node) (netip.Addr, error) {
	if raw, ok := node.Annotations[AnnotationVTEP]; ok {
		a, err := netip.ParseAddr(strings.TrimSpace(raw))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("node %s: annotation %s=%q is not an IP address", node.Name, AnnotationVTEP, raw)
		}
		a = a.Unmap()
		if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return netip.Addr{}, fmt.Errorf("node %s: annotation %s=%q is not a unicast address another node can reach", node.Name, AnnotationVTEP, raw)
		}
		return a, nil
	}
	for _, addr := range node.Status.Addresses {
		if addr.Type != corev1.NodeInternalIP {
			continue
		}
		if a, err := netip.ParseAddr(addr.Address); err == nil {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, nil
}

// SegmentBridgeName is the Linux bridge of the segment with this VNI on
// every gateway and node ("nb-br-VNI"); the node agent builds it (package
// vlan) and the segment's NetworkAttachmentDefinition attaches VMs to it.
func SegmentBridgeName(vni uint32) string { return fmt.Sprintf("nb-br-%d", vni) }

// NetworkAttachmentName is the name of the NetworkAttachmentDefinition the
// controller creates for segment s of key k: s.NetworkAttachmentName when
// set, else the segment key "<bridgeconfig>.<segment>" (a valid object
// name, and the same text as the VMI label netbridge.io/segment).
func NetworkAttachmentName(k SegmentKey, s *Segment) string {
	if s != nil && s.NetworkAttachmentName != "" {
		return s.NetworkAttachmentName
	}
	return k.String()
}

// segmentReadyPrefix starts the node labels of per-segment readiness.
const segmentReadyPrefix = "netbridge.io/segment."

// SegmentReadyLabel is the node label that says the node's agent has built
// segment k's bridge, value SegmentReadyValue: a VM on the segment needs
// it in its node affinity. "netbridge.io/segment.<bridgeconfig>.<segment>"
// while that fits a label name (63 characters after the prefix), else
// "netbridge.io/segment.h-<hash>" (no dot after the prefix, so it cannot
// meet a readable one); BridgeEndpoint conditions name the label in use.
func SegmentReadyLabel(k SegmentKey) string {
	name := "segment." + k.String()
	if k.Validate() == nil && len(name) <= validation.LabelValueMaxLength {
		return segmentReadyPrefix + k.String()
	}
	return segmentReadyPrefix + "h-" + hashOf(k.BridgeConfig, k.Segment)[:endpointHashLen]
}

// IsSegmentReadyLabel reports whether a node label key is a segment
// readiness label (whichever segment).
func IsSegmentReadyLabel(key string) bool { return strings.HasPrefix(key, segmentReadyPrefix) }

// The loop probe's report on a BridgeGateway (docs/ha.md, rule 8): its
// condition, the condition's reasons, and the reason of its Warning event.
const (
	// ConditionLoopDetected is True while a second bridge on one of the
	// gateway's segments was detected recently (the message names the
	// segment, the other bridge and what this gateway did).
	ConditionLoopDetected = "LoopDetected"
	// ReasonLoopYielded: this gateway had to yield and cut its VLAN port
	// (kernel fence, then detach).
	ReasonLoopYielded = "LoopYielded"
	// ReasonLoopOtherYields: this gateway holds the segment; the other
	// bridge must yield.
	ReasonLoopOtherYields = "LoopOtherYields"
	// ReasonNoLoop: no second bridge detected recently.
	ReasonNoLoop = "NoLoop"
	// EventLoopDetected is the Warning event on the BridgeGateway.
	EventLoopDetected = "LoopDetected"
)
