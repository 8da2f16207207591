package runbook

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/verify"
)

// VMIKind is the KubeVirt VirtualMachineInstance kind, read as unstructured
// because kubevirt.io/api is not available to us.
var VMIKind = schema.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachineInstance"}

// SegmentRef names one segment of one BridgeConfig ("<bridgeconfig>.<segment>"),
// as the API defines it.
type SegmentRef = nbv1.SegmentKey

// ParseSegmentRef reads a command argument as a segment key.
func ParseSegmentRef(s string) (SegmentRef, bool) {
	k, err := nbv1.ParseSegmentKey(s)
	return k, err == nil
}

// VMI is the part of a KubeVirt VirtualMachineInstance the runbook reads.
type VMI struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Segment is the netbridge.io/segment label ("" when not managed).
	Segment string `json:"segment,omitempty"`
	// Cutover is the netbridge.io/cutover annotation.
	Cutover  string   `json:"cutover,omitempty"`
	IPs      []string `json:"ips,omitempty"`
	NodeName string   `json:"nodeName,omitempty"`
}

// Key is the VMI's namespace/name.
func (v VMI) Key() types.NamespacedName {
	return types.NamespacedName{Namespace: v.Namespace, Name: v.Name}
}

// VMIFromUnstructured extracts the fields the runbook needs. IPs come from the
// migration plan's annotation first (known before the guest boots), as the
// controller does, else from the guest agent's interfaces.
func VMIFromUnstructured(u *unstructured.Unstructured) VMI {
	v := VMI{
		Namespace: u.GetNamespace(),
		Name:      u.GetName(),
		Segment:   u.GetLabels()[nbv1.LabelSegment],
		Cutover:   u.GetAnnotations()[nbv1.AnnotationCutover],
	}
	v.NodeName, _, _ = unstructured.NestedString(u.Object, "status", "nodeName")
	if ips := u.GetAnnotations()[nbv1.AnnotationIPs]; ips != "" {
		for _, ip := range strings.Split(ips, ",") {
			if ip = strings.TrimSpace(ip); ip != "" {
				v.IPs = append(v.IPs, ip)
			}
		}
		return v
	}
	ifaces, _, _ := unstructured.NestedSlice(u.Object, "status", "interfaces")
	for _, i := range ifaces {
		m, ok := i.(map[string]interface{})
		if !ok {
			continue
		}
		ips, _, _ := unstructured.NestedStringSlice(m, "ipAddresses")
		v.IPs = append(v.IPs, ips...)
	}
	return v
}

// Snapshot is everything the runbook reads, taken at one moment. The report
// functions (Status, BuildPlan, Verify, EvaluateActivate, EvaluateRollback)
// are pure functions of it, so they are table-tested without an API server.
type Snapshot struct {
	BridgeConfigs []nbv1.BridgeConfig   `json:"bridgeConfigs"`
	Gateways      []nbv1.BridgeGateway  `json:"gateways"`
	Endpoints     []nbv1.BridgeEndpoint `json:"endpoints"`
	VMIs          []VMI                 `json:"vmis"`
}

// Collect reads BridgeConfigs, BridgeGateways, BridgeEndpoints of every
// namespace and the VMIs that carry the segment label. A cluster without the
// KubeVirt CRD yields no VMIs rather than an error, so that `status` still
// works there.
func Collect(ctx context.Context, c client.Client) (*Snapshot, error) {
	s := &Snapshot{}
	var bcs nbv1.BridgeConfigList
	if err := c.List(ctx, &bcs); err != nil {
		return nil, fmt.Errorf("list bridgeconfigs: %w", err)
	}
	s.BridgeConfigs = bcs.Items
	var gws nbv1.BridgeGatewayList
	if err := c.List(ctx, &gws); err != nil {
		return nil, fmt.Errorf("list bridgegateways: %w", err)
	}
	s.Gateways = gws.Items
	var eps nbv1.BridgeEndpointList
	if err := c.List(ctx, &eps); err != nil {
		return nil, fmt.Errorf("list bridgeendpoints: %w", err)
	}
	s.Endpoints = eps.Items

	vmis := &unstructured.UnstructuredList{}
	vmis.SetGroupVersionKind(VMIKind.GroupVersion().WithKind(VMIKind.Kind + "List"))
	sel, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: nbv1.LabelSegment, Operator: metav1.LabelSelectorOpExists}},
	})
	if err != nil {
		return nil, fmt.Errorf("segment label selector: %w", err)
	}
	if err := c.List(ctx, vmis, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		if !meta.IsNoMatchError(err) && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("list virtualmachineinstances: %w", err)
		}
	}
	for i := range vmis.Items {
		s.VMIs = append(s.VMIs, VMIFromUnstructured(&vmis.Items[i]))
	}
	s.sort()
	return s, nil
}

// LoadVMI makes sure the named VMI is in the snapshot, reading it from the API
// server when the labelled list did not hold it (an unlabelled VMI is still
// shown, so that the error can say it is not managed).
func (s *Snapshot) LoadVMI(ctx context.Context, c client.Client, key types.NamespacedName) (VMI, error) {
	if v, ok := s.VMI(key); ok {
		return v, nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(VMIKind)
	if err := c.Get(ctx, key, u); err != nil {
		return VMI{}, fmt.Errorf("get virtualmachineinstance %s: %w", key, err)
	}
	v := VMIFromUnstructured(u)
	s.VMIs = append(s.VMIs, v)
	s.sort()
	return v, nil
}

func (s *Snapshot) sort() {
	sort.Slice(s.BridgeConfigs, func(i, j int) bool { return s.BridgeConfigs[i].Name < s.BridgeConfigs[j].Name })
	sort.Slice(s.Gateways, func(i, j int) bool { return s.Gateways[i].Name < s.Gateways[j].Name })
	sort.Slice(s.Endpoints, func(i, j int) bool {
		a, b := s.Endpoints[i], s.Endpoints[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	sort.Slice(s.VMIs, func(i, j int) bool {
		a, b := s.VMIs[i], s.VMIs[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}

// VMI returns the snapshot's VMI by key.
func (s *Snapshot) VMI(key types.NamespacedName) (VMI, bool) {
	for _, v := range s.VMIs {
		if v.Namespace == key.Namespace && v.Name == key.Name {
			return v, true
		}
	}
	return VMI{}, false
}

// Segment returns a segment's spec and the controller's status of it.
func (s *Snapshot) Segment(ref SegmentRef) (*nbv1.BridgeConfig, *nbv1.Segment, *nbv1.SegmentStatus) {
	for i := range s.BridgeConfigs {
		bc := &s.BridgeConfigs[i]
		if bc.Name != ref.BridgeConfig {
			continue
		}
		var seg *nbv1.Segment
		for j := range bc.Spec.Segments {
			if bc.Spec.Segments[j].Name == ref.Segment {
				seg = &bc.Spec.Segments[j]
			}
		}
		var st *nbv1.SegmentStatus
		for j := range bc.Status.Segments {
			if bc.Status.Segments[j].Name == ref.Segment {
				st = &bc.Status.Segments[j]
			}
		}
		return bc, seg, st
	}
	return nil, nil, nil
}

// ActiveGateway is the node holding the segment's lease, as the controller
// reports it; before the controller has written that, the gateway that
// claims the Active role for the segment in its own status.
func (s *Snapshot) ActiveGateway(ref SegmentRef) string {
	if _, _, st := s.Segment(ref); st != nil && st.ActiveGateway != "" {
		return st.ActiveGateway
	}
	for _, gw := range s.Gateways {
		if seg := gatewaySegment(&gw, ref); seg != nil && nbv1.SegmentRole(seg.Role) == nbv1.SegmentRoleActive {
			return gw.Name
		}
	}
	return ""
}

// StandbyGateways are the segment's other gateways.
func (s *Snapshot) StandbyGateways(ref SegmentRef) []string {
	if _, _, st := s.Segment(ref); st != nil && len(st.StandbyGateways) > 0 {
		return st.StandbyGateways
	}
	var out []string
	for _, gw := range s.Gateways {
		if seg := gatewaySegment(&gw, ref); seg != nil && nbv1.SegmentRole(seg.Role) == nbv1.SegmentRoleStandby {
			out = append(out, gw.Name)
		}
	}
	return out
}

// Gateway returns the BridgeGateway of a node.
func (s *Snapshot) Gateway(name string) *nbv1.BridgeGateway {
	for i := range s.Gateways {
		if s.Gateways[i].Name == name {
			return &s.Gateways[i]
		}
	}
	return nil
}

func gatewaySegment(gw *nbv1.BridgeGateway, ref SegmentRef) *nbv1.GatewaySegmentStatus {
	for i := range gw.Status.Segments {
		seg := &gw.Status.Segments[i]
		if seg.BridgeConfig == ref.BridgeConfig && seg.Name == ref.Segment {
			return seg
		}
	}
	return nil
}

func gatewayEndpoint(gw *nbv1.BridgeGateway, namespace, name string) *nbv1.GatewayEndpointStatus {
	return verify.GatewayEndpoint(gw, namespace, name)
}

// EndpointsOfVM are the BridgeEndpoints the controller derived from a VMI.
func (s *Snapshot) EndpointsOfVM(key types.NamespacedName) []nbv1.BridgeEndpoint {
	var out []nbv1.BridgeEndpoint
	for _, ep := range s.Endpoints {
		if ep.Namespace == key.Namespace && ep.Spec.VMI == key.Name {
			out = append(out, ep)
		}
	}
	return out
}

// VMsOfSegment are the VMs on a segment: labelled VMIs and the VMIs named by
// the segment's endpoints, deduplicated and sorted.
func (s *Snapshot) VMsOfSegment(ref SegmentRef) []types.NamespacedName {
	seen := map[types.NamespacedName]bool{}
	var out []types.NamespacedName
	add := func(k types.NamespacedName) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, v := range s.VMIs {
		if v.Segment == ref.String() {
			add(v.Key())
		}
	}
	for _, ep := range s.Endpoints {
		if endpointSegment(&ep) == ref {
			add(types.NamespacedName{Namespace: ep.Namespace, Name: ep.Spec.VMI})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Refusals are the gateways' refused[] entries for one endpoint.
func (s *Snapshot) Refusals(namespace, endpoint string) []Refusal {
	var out []Refusal
	for i := range s.Gateways {
		gw := &s.Gateways[i]
		for _, r := range gw.Status.Refused {
			if r.Namespace == namespace && r.Endpoint == endpoint {
				out = append(out, Refusal{Gateway: gw.Name, ObservedAt: gw.Status.ObservedAt, RefusedEndpoint: r})
			}
		}
	}
	return out
}

// Refusal is a refused[] entry with the gateway that reported it.
type Refusal struct {
	Gateway    string
	ObservedAt *metav1.Time
	nbv1.RefusedEndpoint
}

// String reads "10.20.100.10 refused: DuplicateAddress, answered by 52:54:00:aa:bb:cc".
func (r Refusal) String() string {
	msg := fmt.Sprintf("%s refused: %s", r.IP, r.Reason)
	switch {
	case r.MAC != "":
		msg += ", answered by " + r.MAC
	case r.Message != "":
		msg += ", " + r.Message
	}
	return msg
}

func endpointSegment(ep *nbv1.BridgeEndpoint) SegmentRef {
	ref := SegmentRef{BridgeConfig: ep.Spec.BridgeConfig, Segment: ep.Spec.Segment}
	if ref.BridgeConfig == "" {
		ref.BridgeConfig = ep.Labels[nbv1.LabelBridgeConfig]
	}
	if ref.Segment == "" {
		ref.Segment = ep.Labels[nbv1.LabelSegmentName]
	}
	return ref
}

// HostPrefix turns an IP (or an address with a prefix length, as some plans
// write them) into the host route the gateway advertises: /32 or /128.
func HostPrefix(ip string) (netip.Prefix, error) { return verify.HostPrefix(ip) }

// hostPrefixes converts IPs, skipping (and reporting) unparsable ones.
func hostPrefixes(ips []string) ([]string, []string) { return verify.HostPrefixes(ips) }

// advertisedSet normalises a gateway's advertised list.
func advertisedSet(gw *nbv1.BridgeGateway) map[string]bool { return verify.AdvertisedSet(gw) }

// vmIPs are a VM's IPs: its endpoints' when the controller derived them,
// else the VMI's own.
func (s *Snapshot) vmIPs(key types.NamespacedName) []string {
	var ips []string
	seen := map[string]bool{}
	for _, ep := range s.EndpointsOfVM(key) {
		for _, ip := range ep.Spec.IPs {
			if !seen[ip] {
				seen[ip] = true
				ips = append(ips, ip)
			}
		}
	}
	if len(ips) == 0 {
		if v, ok := s.VMI(key); ok {
			ips = append(ips, v.IPs...)
		}
	}
	return ips
}

func condition(conds []metav1.Condition, typ string) *metav1.Condition {
	return meta.FindStatusCondition(conds, typ)
}

func conditionTrue(conds []metav1.Condition, typ string) (*metav1.Condition, bool) {
	c := condition(conds, typ)
	return c, c != nil && c.Status == metav1.ConditionTrue
}
