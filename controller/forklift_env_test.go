package controller_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

func forkliftObject(kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion("forklift.konveyor.io/v1beta1")
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// createForkliftVMI creates a VMI as a Forklift Plan does: its labels, no
// netbridge label, the pod network plus the given Multus networks.
func createForkliftVMI(t *testing.T, ns, name, planUID, ip string, multus map[string]string) {
	t.Helper()
	v := &kubevirt.VMI{Namespace: ns, Name: name,
		Labels:      map[string]string{"plan": planUID, "migration": "uid-migration-t16f", "vmID": "vm-" + name},
		Annotations: map[string]string{nbv1.AnnotationIPs: ip}}
	v.Spec.Networks = []kubevirt.NamedItem{{Name: "default"}}
	v.Spec.Domain.Devices.Interfaces = []kubevirt.NamedItem{{Name: "default"}}
	for iface, ref := range multus {
		v.Spec.Networks = append(v.Spec.Networks, kubevirt.NamedItem{Name: iface, Multus: &kubevirt.MultusNetwork{NetworkName: ref}})
		v.Spec.Domain.Devices.Interfaces = append(v.Spec.Domain.Devices.Interfaces, kubevirt.NamedItem{Name: iface})
	}
	u, err := kubevirt.ToUnstructured(v)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, u)
	setVMIStatus(t, ns, name, kubevirt.Status{NodeName: "t16f-n1", Phase: "Running"})
}

// TestForkliftPlanVMIsManaged: VMIs a Forklift Plan created (its labels,
// no netbridge label) become endpoints on the segment whose NAD the Plan's
// NetworkMap maps their network to; one in a namespace the segment does
// not allow is refused with the rule named.
func TestForkliftPlanVMIsManaged(t *testing.T) {
	team := map[string]string{"t16f-team": "vm"}
	createNode(t, "t16f-n1", "192.0.2.171", "", nil)
	createNamespace(t, "t16f-vms", team)
	createNamespace(t, "t16f-other", nil)
	createNamespace(t, "t16f-mtv", nil)
	bc := bridgeConfig("t16f", map[string]string{"netbridge.io/gateway": "t16f"},
		nbv1.Segment{Name: "app", VLANID: 1641, VNI: 16410, Subnets: []string{"10.164.0.0/24"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: team}})
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)
	nm := forkliftObject("NetworkMap", "t16f-mtv", "legacy-nets", map[string]any{"map": []any{
		map[string]any{"source": map[string]any{"name": "VLAN 1641"}, "destination": map[string]any{"type": "multus", "name": "t16f.app", "namespace": "t16f-vms"}},
		map[string]any{"source": map[string]any{"name": "VM Network"}, "destination": map[string]any{"type": "pod"}},
	}})
	mustCreate(t, nm)
	plan := forkliftObject("Plan", "t16f-mtv", "wave1", map[string]any{
		"map":             map[string]any{"network": map[string]any{"name": "legacy-nets"}},
		"targetNamespace": "t16f-vms",
	})
	mustCreate(t, plan)
	uid := string(plan.GetUID())

	startManager(t, controller.Config{NetworkAttachments: true, Forklift: true})

	t.Run("MappedNetworkBecomesEndpoint", func(t *testing.T) {
		createForkliftVMI(t, "t16f-vms", "app01", uid, "10.164.0.10", map[string]string{"legacy": "t16f.app"})
		took := eventually(t, 10*time.Second, "endpoint app01-legacy", wantSpec("t16f-vms", "app01-legacy", func(ep *nbv1.BridgeEndpoint) error {
			s := ep.Spec
			if s.BridgeConfig != "t16f" || s.Segment != "app" || s.Interface != "legacy" || strings.Join(s.IPs, ",") != "10.164.0.10" {
				return fmt.Errorf("spec %+v", s)
			}
			if c := findCondition(ep, nbv1.ConditionRejected); c != nil {
				return fmt.Errorf("rejected: %+v", c)
			}
			return nil
		}))
		t.Logf("forklift VMI endpoint after %s (includes cache start)", took)
	})

	t.Run("NamespaceNotAllowedRefusedWithRule", func(t *testing.T) {
		createForkliftVMI(t, "t16f-other", "app02", uid, "10.164.0.11", map[string]string{"legacy": "t16f-vms/t16f.app"})
		eventually(t, 5*time.Second, "app02 refused", wantSpec("t16f-other", "app02-legacy", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionRejected, metav1.ConditionTrue, string(nbv1.ReasonNamespaceNotAllowed), "namespaceSelector")
		}))
	})

	t.Run("UnmappedNetworkNotManaged", func(t *testing.T) {
		createForkliftVMI(t, "t16f-vms", "app03", uid, "10.164.0.12", map[string]string{"other": "some-other-nad"})
		createForkliftVMI(t, "t16f-vms", "app04", "uid-not-a-plan", "10.164.0.13", map[string]string{"legacy": "t16f.app"})
		// Wait for something the controller does after seeing them.
		time.Sleep(time.Second)
		for _, n := range []string{"app03-other", "app03-default", "app04-legacy", "app04-default"} {
			if err := endpointGone("t16f-vms", n); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("NetworkMapAddedLater", func(t *testing.T) {
		// A Plan created before its NetworkMap maps once the map exists.
		plan2 := forkliftObject("Plan", "t16f-mtv", "wave2", map[string]any{"map": map[string]any{"network": map[string]any{"name": "later-nets"}}})
		mustCreate(t, plan2)
		createForkliftVMI(t, "t16f-vms", "app05", string(plan2.GetUID()), "10.164.0.14", map[string]string{"nic1": "t16f.app"})
		time.Sleep(300 * time.Millisecond)
		if err := endpointGone("t16f-vms", "app05-nic1"); err != nil {
			t.Fatalf("mapped before the NetworkMap exists: %v", err)
		}
		mustCreate(t, forkliftObject("NetworkMap", "t16f-mtv", "later-nets", map[string]any{"map": []any{
			map[string]any{"source": map[string]any{"name": "VLAN 1641"}, "destination": map[string]any{"type": "multus", "name": "t16f.app", "namespace": "t16f-vms"}},
		}}))
		eventually(t, 2*time.Second, "app05 endpoint", wantSpec("t16f-vms", "app05-nic1", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.Interface != "nic1" || ep.Spec.Segment != "app" {
				return fmt.Errorf("spec %+v", ep.Spec)
			}
			return nil
		}))
	})
}
