package forklift

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

func TestPlanVMsAndMatch(t *testing.T) {
	plan := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": "mtv", "name": "wave1", "uid": "uid-wave1"},
		"spec": map[string]any{"vms": []any{
			map[string]any{"id": "vm-101", "name": "web01"},
			map[string]any{"name": "db01"},
			map[string]any{"id": "vm-103", "name": "cache01", "namespace": "src"},
			map[string]any{"name": "unresolved"},
			map[string]any{"hooks": []any{}},
		}},
		"status": map[string]any{"migration": map[string]any{"vms": []any{
			map[string]any{"id": "vm-102", "name": "db01"},
		}}},
	}}
	vms := PlanVMs(plan)
	want := []PlanVM{{ID: "vm-101", Name: "web01"}, {ID: "vm-102", Name: "db01"}, {ID: "vm-103", Name: "cache01", Namespace: "src"}, {Name: "unresolved"}}
	if !reflect.DeepEqual(vms, want) {
		t.Fatalf("PlanVMs = %+v, want %+v (an entry with neither id nor name is skipped, a name-only one takes its id from status)", vms, want)
	}
	if s := vms[2].String(); s != "src/cache01 (id vm-103)" {
		t.Errorf("String = %q", s)
	}

	vmi := func(ns, name string, labels map[string]string) unstructured.Unstructured {
		u := unstructured.Unstructured{Object: map[string]any{}}
		u.SetNamespace(ns)
		u.SetName(name)
		u.SetLabels(labels)
		return u
	}
	vmis := []unstructured.Unstructured{
		vmi("vms", "web01", map[string]string{LabelPlan: "uid-wave1", LabelVMID: "vm-101"}),
		vmi("vms", "db01", map[string]string{LabelPlan: "uid-wave1", LabelVMID: "vm-102"}),
		// Same source VM in another Plan: not this wave's.
		vmi("vms", "cache01", map[string]string{LabelPlan: "uid-other", LabelVMID: "vm-103"}),
		// Hand-made VMI that only looks alike.
		vmi("vms", "web01-copy", map[string]string{LabelVMID: "vm-101"}),
	}
	got := MatchPlanVMs("uid-wave1", vms, vmis)
	wantKeys := [][]types.NamespacedName{
		{{Namespace: "vms", Name: "web01"}},
		{{Namespace: "vms", Name: "db01"}},
		nil,
		nil,
	}
	if !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("MatchPlanVMs = %v, want %v", got, wantKeys)
	}
}
