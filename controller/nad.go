package controller

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Multus NetworkAttachmentDefinitions are not served as Go types here:
// they are read and written as unstructured objects.
var nadGVK = schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"}

func newNAD() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(nadGVK)
	return u
}

func newNADList() *unstructured.UnstructuredList {
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(nadGVK.GroupVersion().WithKind(nadGVK.Kind + "List"))
	return l
}

// cniBridgeConf is the CNI configuration of a segment's NAD, for the
// reference "bridge" plugin (containernetworking/plugins). Every field is
// written out, defaults too, so that the NAD says what it does.
type cniBridgeConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// Bridge is the node agent's segment bridge: the plugin only adds a
	// veth port to it.
	Bridge string `json:"bridge"`
	MTU    int32  `json:"mtu,omitempty"`
	// No address on the bridge, no NAT: the node is not the VM's router,
	// the legacy gateway (or netbridge's gateway) is.
	IsGateway bool `json:"isGateway"`
	IPMasq    bool `json:"ipMasq"`
	// KubeVirt's bridge binding moves the pod interface's MAC into the
	// guest and gives the pod side another one: a spoof check pinned to
	// the ADD-time MAC would drop the VM's own frames.
	MacSpoofChk bool `json:"macspoofchk"`
	// The segment bridge does no VLAN filtering: the port stays untagged.
	PreserveDefaultVlan bool `json:"preserveDefaultVlan"`
	// Capabilities lets Multus pass the preserved MAC (KubeVirt puts the
	// interface's macAddress in the network selection) as runtimeConfig.mac.
	Capabilities map[string]bool `json:"capabilities"`
	// No "ipam": the guest keeps its static IP from the legacy network.
}

// cniConfVersion is the CNI spec version of the generated configuration
// (supported by Multus 4 and the bridge plugin since v1.0).
const cniConfVersion = "1.0.0"

// nadConfig is the CNI configuration (JSON) of a segment's NAD named name.
func nadConfig(name string, s *nbv1.Segment) string {
	c := cniBridgeConf{
		CNIVersion:   cniConfVersion,
		Name:         name,
		Type:         "bridge",
		Bridge:       nbv1.SegmentBridgeName(uint32(s.VNI)),
		MTU:          s.MTU,
		Capabilities: map[string]bool{"mac": true},
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("marshal a fixed struct: %v", err)) // cannot happen: no maps of interfaces, no channels
	}
	return string(b)
}

// NADInput is everything the NADs of one BridgeConfig are planned from.
type NADInput struct {
	// Name of the BridgeConfig.
	Name string
	// Config is nil when the BridgeConfig is gone or being deleted: every
	// NAD it owns is then deleted.
	Config *nbv1.BridgeConfig
	// Namespaces by name with their labels (terminating ones left out).
	Namespaces map[string]labels.Set
	// Existing NADs by "namespace/name": those labelled for this
	// BridgeConfig and those holding a name it wants.
	Existing map[string]*unstructured.Unstructured
}

// NADPlan is the writes that bring a BridgeConfig's NADs to the desired
// state, and what it could not do. Objects in it are fresh copies.
type NADPlan struct {
	Create []*unstructured.Unstructured
	Update []*unstructured.Unstructured
	Delete []*unstructured.Unstructured
	// Conflicts are NADs it wants that exist and belong to someone else
	// (or to two of its own segments), one line each, sorted.
	Conflicts []string
}

// Empty reports whether the plan writes nothing.
func (p *NADPlan) Empty() bool { return len(p.Create)+len(p.Update)+len(p.Delete) == 0 }

// ownsNAD: u carries the controller owner reference to the BridgeConfig
// named bc. The UID is not compared: a BridgeConfig deleted and created
// again under its name adopts its NADs (the reference is then rewritten).
func ownsNAD(u *unstructured.Unstructured, bc string) bool {
	for _, r := range u.GetOwnerReferences() {
		if r.Controller != nil && *r.Controller && r.Kind == "BridgeConfig" && r.Name == bc &&
			strings.HasPrefix(r.APIVersion, nbv1.GroupVersion.Group+"/") {
			return true
		}
	}
	return false
}

// planNADs computes the NADs of one BridgeConfig: one per segment per
// namespace the segment allows. It is pure; inputs are not modified.
func planNADs(in NADInput) NADPlan {
	var plan NADPlan
	want := map[string]*unstructured.Unstructured{}
	// A segment whose selector cannot be read keeps the NADs it has:
	// bad input never tears down working state.
	keepSegment := map[string]bool{}
	if in.Config != nil {
		wantedBy := map[string]string{}
		for i := range in.Config.Spec.Segments {
			s := &in.Config.Spec.Segments[i]
			sel, err := segmentNamespaces(s)
			if err != nil {
				keepSegment[s.Name] = true
				plan.Conflicts = append(plan.Conflicts, fmt.Sprintf("segment %s: %v: its NADs are left as they are", s.Name, err))
				continue
			}
			name := nbv1.NetworkAttachmentName(SegmentKey{BridgeConfig: in.Name, Segment: s.Name}, s)
			for ns, l := range in.Namespaces {
				if !sel.Matches(l) {
					continue
				}
				id := ns + "/" + name
				if other, dup := wantedBy[id]; dup {
					plan.Conflicts = append(plan.Conflicts, fmt.Sprintf("%s: wanted by segments %s and %s (set segments[].networkAttachmentName)", id, other, s.Name))
					continue
				}
				wantedBy[id] = s.Name
				want[id] = desiredNAD(in.Config, s, ns, name)
			}
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		d := want[id]
		cur, ok := in.Existing[id]
		switch {
		case !ok:
			plan.Create = append(plan.Create, d)
		case !ownsNAD(cur, in.Name):
			plan.Conflicts = append(plan.Conflicts, fmt.Sprintf("%s: exists and is not owned by BridgeConfig %s", id, in.Name))
		default:
			if u := updatedNAD(cur, d); u != nil {
				plan.Update = append(plan.Update, u)
			}
		}
	}
	eids := make([]string, 0, len(in.Existing))
	for id := range in.Existing {
		eids = append(eids, id)
	}
	sort.Strings(eids)
	for _, id := range eids {
		cur := in.Existing[id]
		if _, wanted := want[id]; wanted || !ownsNAD(cur, in.Name) || keepSegment[cur.GetLabels()[nbv1.LabelSegmentName]] {
			continue
		}
		plan.Delete = append(plan.Delete, cur.DeepCopy())
	}
	sort.Strings(plan.Conflicts)
	return plan
}

// segmentNamespaces is the segment's namespace selector (nil: all).
func segmentNamespaces(s *nbv1.Segment) (labels.Selector, error) {
	if s.NamespaceSelector == nil {
		return labels.Everything(), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s.NamespaceSelector)
	if err != nil {
		return nil, fmt.Errorf("namespaceSelector: %w", err)
	}
	return sel, nil
}

func desiredNAD(bc *nbv1.BridgeConfig, s *nbv1.Segment, ns, name string) *unstructured.Unstructured {
	u := newNAD()
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(map[string]string{nbv1.LabelBridgeConfig: bc.Name, nbv1.LabelSegmentName: s.Name})
	u.SetOwnerReferences([]metav1.OwnerReference{nadOwner(bc)})
	u.Object["spec"] = map[string]any{"config": nadConfig(name, s)}
	return u
}

// nadOwner is the controller reference to the BridgeConfig. It does not
// block the owner's deletion: that would need update on
// bridgeconfigs/finalizers, and the controller deletes the NADs itself.
func nadOwner(bc *nbv1.BridgeConfig) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: nbv1.GroupVersion.String(), Kind: "BridgeConfig",
		Name: bc.Name, UID: bc.UID, Controller: ptr.To(true),
	}
}

// updatedNAD is cur with the desired config, labels and owner reference,
// or nil when it has them already. Other fields (annotations, other
// labels) are left as they are.
func updatedNAD(cur, d *unstructured.Unstructured) *unstructured.Unstructured {
	curConf, _, _ := unstructured.NestedString(cur.Object, "spec", "config")
	wantConf, _, _ := unstructured.NestedString(d.Object, "spec", "config")
	l := cur.GetLabels()
	sameLabels := true
	for k, v := range d.GetLabels() {
		if l[k] != v {
			sameLabels = false
		}
	}
	sameOwner := equality.Semantic.DeepEqual(cur.GetOwnerReferences(), d.GetOwnerReferences())
	if curConf == wantConf && sameLabels && sameOwner {
		return nil
	}
	u := cur.DeepCopy()
	if l == nil {
		l = map[string]string{}
	}
	nl := make(map[string]string, len(l))
	for k, v := range l {
		nl[k] = v
	}
	for k, v := range d.GetLabels() {
		nl[k] = v
	}
	u.SetLabels(nl)
	u.SetOwnerReferences(d.GetOwnerReferences())
	if err := unstructured.SetNestedField(u.Object, wantConf, "spec", "config"); err != nil {
		// spec is not a map: replace it whole.
		u.Object["spec"] = map[string]any{"config": wantConf}
	}
	return u
}
