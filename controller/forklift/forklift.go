// Package forklift reads the few Forklift (MTV) fields netbridge needs from
// unstructured objects — forklift.konveyor.io/v1beta1 Plans and
// NetworkMaps, read-only — and resolves which segment a VMI created by a
// Plan joins: the VMI's network whose Multus NAD is a netbridge segment's
// and is a destination of the Plan's NetworkMap.
package forklift

import (
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// GroupVersion of the Forklift API.
var (
	GroupVersion  = schema.GroupVersion{Group: "forklift.konveyor.io", Version: "v1beta1"}
	PlanGVK       = GroupVersion.WithKind("Plan")
	NetworkMapGVK = GroupVersion.WithKind("NetworkMap")
)

// LabelPlan is the label Forklift puts on the VMs (and so VMIs) a Plan
// creates; its value is the Plan's UID. Forklift also sets "migration"
// (the Migration's UID) and "vmID" (the source VM's id).
const LabelPlan = "plan"

// NewObject returns an empty object of gvk for client.Get and watches.
func NewObject(gvk schema.GroupVersionKind) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	return u
}

// NewList returns an empty list of gvk's kind for client.List.
func NewList(gvk schema.GroupVersionKind) *unstructured.UnstructuredList {
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	return l
}

// Plan is the part of a Plan netbridge reads.
type Plan struct {
	UID types.UID
	// NetworkMap is spec.map.network as "namespace/name" (its namespace
	// defaults to the Plan's).
	NetworkMap string
}

// PlanFrom reads spec.map.network of a Plan.
func PlanFrom(u *unstructured.Unstructured) Plan {
	name, _, _ := unstructured.NestedString(u.Object, "spec", "map", "network", "name")
	ns, _, _ := unstructured.NestedString(u.Object, "spec", "map", "network", "namespace")
	if ns == "" {
		ns = u.GetNamespace()
	}
	p := Plan{UID: u.GetUID()}
	if name != "" {
		p.NetworkMap = ns + "/" + name
	}
	return p
}

// NetworkMapDestinations reads the Multus destinations of a NetworkMap's
// spec.map[] as "namespace/name" (a destination without a namespace is
// taken as the NetworkMap's own).
func NetworkMapDestinations(u *unstructured.Unstructured) []string {
	entries, _, _ := unstructured.NestedSlice(u.Object, "spec", "map")
	var out []string
	for _, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		typ, _, _ := unstructured.NestedString(m, "destination", "type")
		name, _, _ := unstructured.NestedString(m, "destination", "name")
		ns, _, _ := unstructured.NestedString(m, "destination", "namespace")
		if typ != "multus" || name == "" {
			continue
		}
		if ns == "" {
			ns = u.GetNamespace()
		}
		out = append(out, ns+"/"+name)
	}
	return out
}

// Mapping is what Resolve reads: plans by UID, each NetworkMap's Multus
// destinations by "namespace/name", and netbridge's own NADs by
// "namespace/name".
type Mapping struct {
	Plans        map[types.UID]Plan
	Destinations map[string][]string
	NADs         map[string]nbv1.SegmentKey
}

// Resolve is the segment and interface of a VMI created by a Forklift
// Plan: the first of its networks whose Multus NAD is netbridge's and a
// destination of the Plan's NetworkMap. ok is false for a VMI without the
// plan label, of an unknown Plan, or with no such network.
func Resolve(v *kubevirt.VMI, m Mapping) (key nbv1.SegmentKey, iface string, ok bool) {
	uid := v.Labels[LabelPlan]
	if uid == "" {
		return key, "", false
	}
	p, found := m.Plans[types.UID(uid)]
	if !found || p.NetworkMap == "" {
		return key, "", false
	}
	mapped := map[string]bool{}
	for _, d := range m.Destinations[p.NetworkMap] {
		mapped[d] = true
	}
	for _, n := range v.Spec.Networks {
		if n.Multus == nil || n.Multus.NetworkName == "" {
			continue
		}
		ref := n.Multus.NetworkName
		if !strings.Contains(ref, "/") {
			ref = v.Namespace + "/" + ref
		}
		if k, ours := m.NADs[ref]; ours && mapped[ref] {
			return k, n.Name, true
		}
	}
	return key, "", false
}
