package forklift

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

func TestPlanAndNetworkMapFields(t *testing.T) {
	plan := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": "mtv", "name": "wave1", "uid": "uid-wave1"},
		"spec":     map[string]any{"map": map[string]any{"network": map[string]any{"name": "legacy-nets"}}},
	}}
	if p := PlanFrom(plan); p.UID != "uid-wave1" || p.NetworkMap != "mtv/legacy-nets" {
		t.Errorf("plan %+v: the NetworkMap's namespace defaults to the Plan's", p)
	}
	nm := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": "mtv", "name": "legacy-nets"},
		"spec": map[string]any{"map": []any{
			map[string]any{"source": map[string]any{"name": "VLAN 100"}, "destination": map[string]any{"type": "multus", "name": "dc1.app", "namespace": "vms"}},
			map[string]any{"source": map[string]any{"name": "VM Network"}, "destination": map[string]any{"type": "pod"}},
			map[string]any{"source": map[string]any{"name": "VLAN 200"}, "destination": map[string]any{"type": "multus", "name": "local-nad"}},
		}},
	}}
	got := NetworkMapDestinations(nm)
	if len(got) != 2 || got[0] != "vms/dc1.app" || got[1] != "mtv/local-nad" {
		t.Errorf("destinations %v", got)
	}
}

func TestResolve(t *testing.T) {
	app := nbv1.SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	m := Mapping{
		Plans:        map[types.UID]Plan{"uid-p": {UID: "uid-p", NetworkMap: "mtv/nets"}, "uid-nomap": {UID: "uid-nomap"}},
		Destinations: map[string][]string{"mtv/nets": {"vms/dc1.app", "vms/foreign"}},
		NADs:         map[string]nbv1.SegmentKey{"vms/dc1.app": app, "vms/unmapped": {BridgeConfig: "dc1", Segment: "db"}},
	}
	vmi := func(plan string, nets ...kubevirt.NamedItem) *kubevirt.VMI {
		v := &kubevirt.VMI{Namespace: "vms", Name: "vm1", Labels: map[string]string{}}
		if plan != "" {
			v.Labels[LabelPlan] = plan
		}
		v.Spec.Networks = nets
		return v
	}
	multus := func(name, ref string) kubevirt.NamedItem {
		return kubevirt.NamedItem{Name: name, Multus: &kubevirt.MultusNetwork{NetworkName: ref}}
	}
	pod := kubevirt.NamedItem{Name: "default"}
	tests := []struct {
		name  string
		vmi   *kubevirt.VMI
		iface string // "" = not resolved
	}{
		{"mapped NAD, same namespace", vmi("uid-p", pod, multus("legacy", "dc1.app")), "legacy"},
		{"mapped NAD, namespace/name", vmi("uid-p", multus("nic1", "vms/dc1.app")), "nic1"},
		{"no plan label", vmi("", multus("legacy", "dc1.app")), ""},
		{"unknown plan", vmi("uid-other", multus("legacy", "dc1.app")), ""},
		{"plan without network map", vmi("uid-nomap", multus("legacy", "dc1.app")), ""},
		{"NAD not netbridge's", vmi("uid-p", multus("legacy", "foreign")), ""},
		{"netbridge NAD the map does not name", vmi("uid-p", multus("legacy", "unmapped")), ""},
		{"pod network only", vmi("uid-p", pod), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, iface, ok := Resolve(tc.vmi, m)
			if ok != (tc.iface != "") || iface != tc.iface || (ok && k != app) {
				t.Errorf("Resolve = %v %q %v, want interface %q on %v", k, iface, ok, tc.iface, app)
			}
		})
	}
}
