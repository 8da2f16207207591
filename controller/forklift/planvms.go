package forklift

import (
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// PlanVM is one entry of a Plan's spec.vms[] (Forklift's plan.VM, whose
// inline ref.Ref carries id, name and, for KubeVirt/OpenShift sources, the
// source namespace).
type PlanVM struct {
	ID        string `json:"id,omitempty"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// String names the VM as an operator knows it: its source name, with the id.
func (v PlanVM) String() string {
	name := v.Name
	if v.Namespace != "" && name != "" {
		name = v.Namespace + "/" + name
	}
	switch {
	case name == "":
		return "id " + v.ID
	case v.ID == "":
		return name
	}
	return name + " (id " + v.ID + ")"
}

// PlanVMs reads a Plan's spec.vms[]. A VM listed by name only gets its id
// from status.migration.vms[], where Forklift records the id it resolved in
// its inventory (the id is what it labels the VMI with).
func PlanVMs(u *unstructured.Unstructured) []PlanVM {
	resolved := map[string]string{}
	for _, m := range maps(u.Object, "status", "migration", "vms") {
		id, _, _ := unstructured.NestedString(m, "id")
		name, _, _ := unstructured.NestedString(m, "name")
		if id != "" && name != "" {
			resolved[name] = id
		}
	}
	var out []PlanVM
	for _, m := range maps(u.Object, "spec", "vms") {
		var v PlanVM
		v.ID, _, _ = unstructured.NestedString(m, "id")
		v.Name, _, _ = unstructured.NestedString(m, "name")
		v.Namespace, _, _ = unstructured.NestedString(m, "namespace")
		if v.ID == "" {
			v.ID = resolved[v.Name]
		}
		if v.ID == "" && v.Name == "" {
			continue
		}
		out = append(out, v)
	}
	return out
}

// MatchPlanVMs pairs each Plan VM with the VMIs Forklift created for it:
// label plan = the Plan's UID and vmID = the VM's id. The result is indexed
// like vms; a VM with no VMI (not migrated yet, or no id known) gets none.
func MatchPlanVMs(uid types.UID, vms []PlanVM, vmis []unstructured.Unstructured) [][]types.NamespacedName {
	byID := map[string][]types.NamespacedName{}
	for i := range vmis {
		l := vmis[i].GetLabels()
		if l[LabelPlan] != string(uid) || l[LabelVMID] == "" {
			continue
		}
		byID[l[LabelVMID]] = append(byID[l[LabelVMID]], types.NamespacedName{Namespace: vmis[i].GetNamespace(), Name: vmis[i].GetName()})
	}
	out := make([][]types.NamespacedName, len(vms))
	for i, v := range vms {
		if v.ID == "" {
			continue
		}
		keys := byID[v.ID]
		sort.Slice(keys, func(a, b int) bool { return keys[a].String() < keys[b].String() })
		out[i] = keys
	}
	return out
}

func maps(obj map[string]any, path ...string) []map[string]any {
	items, _, _ := unstructured.NestedSlice(obj, path...)
	var out []map[string]any
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
