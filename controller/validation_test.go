package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

func readyCondition(name string) (*metav1.Condition, error) {
	var bc nbv1.BridgeConfig
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &bc); err != nil {
		return nil, err
	}
	c := meta.FindStatusCondition(bc.Status.Conditions, nbv1.ConditionReady)
	if c == nil {
		return nil, fmt.Errorf("bridgeconfig %s: no Ready condition yet", name)
	}
	return c, nil
}

// TestSemanticValidation: BridgeConfigs the schema lets through but a
// network engineer would refuse get Ready=False naming the field and the
// value, and their VMs are never activated; endpoints claiming addresses
// no VM can have are Rejected naming the rule; a node's unusable VTEP
// annotation is reported on its endpoints, never copied into them.
func TestSemanticValidation(t *testing.T) {
	gwSel := map[string]string{"netbridge.io/gateway": "t9"}
	createNode(t, "t9-n1", "192.0.2.91", "", nil)
	createNode(t, "t9-n2", "192.0.2.92", "192.0.2.300", nil) // a typo in the VTEP annotation
	createNamespace(t, "t9-vms", nil)
	run := startManager(t, controller.Config{SyncPeriod: time.Second})
	defer run.stop()

	good := bridgeConfig("t9-good", gwSel, nbv1.Segment{Name: "app", VLANID: 901, VNI: 10901, Subnets: []string{"10.190.0.0/24"},
		GatewayAddress: "10.190.0.1/24"})
	mustCreate(t, good)
	deleteOnCleanup(t, good)

	bad := []struct {
		name   string
		bc     *nbv1.BridgeConfig
		field  string
		value  string
		vmi    string // a VMI of this config that must be refused
		vmiIPs string
	}{
		{name: "t9-broad", bc: bridgeConfig("t9-broad", gwSel, nbv1.Segment{Name: "app", VLANID: 911, VNI: 10911, Subnets: []string{"10.0.0.0/8"}}),
			field: "spec.segments[0].subnets[0]", value: "10.0.0.0/8", vmi: "vm-broad", vmiIPs: "10.1.2.3"},
		{name: "t9-overlap", bc: bridgeConfig("t9-overlap", gwSel,
			nbv1.Segment{Name: "a", VLANID: 912, VNI: 10912, Subnets: []string{"10.191.0.0/24"}},
			nbv1.Segment{Name: "b", VLANID: 913, VNI: 10913, Subnets: []string{"10.191.0.128/25"}}),
			field: "spec.segments[1].subnets[0]", value: "10.191.0.128/25"},
		{name: "t9-selector", bc: func() *nbv1.BridgeConfig {
			bc := bridgeConfig("t9-selector", nil, nbv1.Segment{Name: "app", VLANID: 914, VNI: 10914, Subnets: []string{"10.192.0.0/24"}})
			bc.Spec.GatewaySelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "rack", Operator: metav1.LabelSelectorOpIn}}}
			return bc
		}(), field: "spec.gatewaySelector.matchExpressions[0].values", value: "Required value"},
		{name: "t9-nssel", bc: bridgeConfig("t9-nssel", gwSel, nbv1.Segment{Name: "app", VLANID: 915, VNI: 10915, Subnets: []string{"10.193.0.0/24"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a b"}}}),
			field: "spec.segments[0].namespaceSelector.matchLabels", value: "a b"},
	}
	for _, b := range bad {
		mustCreate(t, b.bc)
		deleteOnCleanup(t, b.bc)
		if b.vmi != "" {
			createVMI(t, "t9-vms", b.vmi, b.name+".app", map[string]string{nbv1.AnnotationIPs: b.vmiIPs, nbv1.AnnotationCutover: nbv1.CutoverActive},
				kubevirt.Status{NodeName: "t9-n1"})
		}
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			eventually(t, 3*time.Second, b.name+" Ready=False naming the field", func() error {
				c, err := readyCondition(b.name)
				if err != nil {
					return err
				}
				if c.Status != metav1.ConditionFalse || c.Reason != controller.ReasonInvalidSpec || !strings.Contains(c.Message, b.field) || !strings.Contains(c.Message, b.value) {
					return fmt.Errorf("ready %+v, want False/%s naming %s and %q", c, controller.ReasonInvalidSpec, b.field, b.value)
				}
				return nil
			})
			if b.vmi == "" {
				return
			}
			eventually(t, 2*time.Second, b.vmi+" never activated", wantSpec("t9-vms", b.vmi+"-default", func(ep *nbv1.BridgeEndpoint) error {
				if ep.Spec.State != nbv1.StateStaged {
					return fmt.Errorf("state %s", ep.Spec.State)
				}
				return condition(ep, nbv1.ConditionRejected, metav1.ConditionTrue, string(nbv1.ReasonBridgeConfigNotReady), b.value)
			}))
		})
	}
	t.Run("GoodConfigStaysReady", func(t *testing.T) {
		eventually(t, 2*time.Second, "t9-good Ready", func() error {
			c, err := readyCondition("t9-good")
			if err != nil {
				return err
			}
			if c.Status != metav1.ConditionTrue {
				return fmt.Errorf("ready %+v", c)
			}
			return nil
		})
	})

	t.Run("EndpointAddressRules", func(t *testing.T) {
		for _, c := range []struct {
			vmi, ip string
			reason  nbv1.RefusalReason
			says    string
		}{
			{"vm-net", "10.190.0.0", nbv1.ReasonNetworkAddress, "network address of subnet 10.190.0.0/24"},
			{"vm-bcast", "10.190.0.255", nbv1.ReasonBroadcastAddress, "broadcast address of subnet 10.190.0.0/24"},
			{"vm-gw", "10.190.0.1", nbv1.ReasonGatewayAddress, "gateway address 10.190.0.1/24"},
		} {
			createVMI(t, "t9-vms", c.vmi, "t9-good.app", map[string]string{nbv1.AnnotationIPs: c.ip, nbv1.AnnotationCutover: nbv1.CutoverActive},
				kubevirt.Status{NodeName: "t9-n1"})
			eventually(t, 2*time.Second, c.vmi+" Rejected "+string(c.reason), wantSpec("t9-vms", c.vmi+"-default", func(ep *nbv1.BridgeEndpoint) error {
				if ep.Spec.State != nbv1.StateStaged {
					return fmt.Errorf("state %s: a refused endpoint is never Active", ep.Spec.State)
				}
				return condition(ep, nbv1.ConditionRejected, metav1.ConditionTrue, string(c.reason), c.says)
			}))
			eventually(t, 2*time.Second, "event on "+c.vmi, func() error { return findEvent("t9-vms", c.vmi, string(c.reason), c.ip) })
		}
		// A usable host address beside them is accepted.
		createVMI(t, "t9-vms", "vm-ok", "t9-good.app", map[string]string{nbv1.AnnotationIPs: "10.190.0.10", nbv1.AnnotationCutover: nbv1.CutoverActive},
			kubevirt.Status{NodeName: "t9-n1"})
		eventually(t, 2*time.Second, "vm-ok Active", wantSpec("t9-vms", "vm-ok-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateActive || ep.Spec.VTEP != "192.0.2.91" {
				return fmt.Errorf("state %s vtep %q", ep.Spec.State, ep.Spec.VTEP)
			}
			return nil
		}))
	})

	t.Run("InvalidVTEPAnnotationReportedNotCopied", func(t *testing.T) {
		createVMI(t, "t9-vms", "vm-n2", "t9-good.app", map[string]string{nbv1.AnnotationIPs: "10.190.0.20"}, kubevirt.Status{NodeName: "t9-n2"})
		eventually(t, 2*time.Second, "Degraded InvalidVTEP on vm-n2", wantSpec("t9-vms", "vm-n2-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.VTEP != "" {
				return fmt.Errorf("spec.vtep %q: the bad annotation must never be copied", ep.Spec.VTEP)
			}
			return condition(ep, nbv1.ConditionDegraded, metav1.ConditionTrue, string(nbv1.ReasonInvalidVTEP), `netbridge.io/vtep="192.0.2.300"`)
		}))
	})

	t.Run("InvalidEditHoldsWorkingEndpoints", func(t *testing.T) {
		ctx := context.Background()
		edit := func(mutate func(*nbv1.BridgeConfig)) {
			t.Helper()
			var bc nbv1.BridgeConfig
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "t9-good"}, &bc); err != nil {
				t.Fatal(err)
			}
			mutate(&bc)
			if err := env.Client.Update(ctx, &bc); err != nil {
				t.Fatal(err)
			}
		}
		edit(func(bc *nbv1.BridgeConfig) {
			bc.Spec.Segments = append(bc.Spec.Segments, nbv1.Segment{Name: "dup", VLANID: 920, VNI: 10920, Subnets: []string{"10.190.0.128/25"}})
		})
		eventually(t, 3*time.Second, "t9-good Ready=False after the edit", func() error {
			c, err := readyCondition("t9-good")
			if err != nil {
				return err
			}
			if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "spec.segments[1].subnets[0]") || !strings.Contains(c.Message, "10.190.0.128/25") {
				return fmt.Errorf("ready %+v", c)
			}
			return nil
		})
		eventually(t, 2*time.Second, "vm-ok held Active", wantSpec("t9-vms", "vm-ok-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateActive {
				return fmt.Errorf("state %s: a bad edit withdrew a working endpoint", ep.Spec.State)
			}
			return condition(ep, nbv1.ConditionDegraded, metav1.ConditionTrue, string(nbv1.ReasonBridgeConfigNotReady), "10.190.0.128/25")
		}))
		edit(func(bc *nbv1.BridgeConfig) { bc.Spec.Segments = bc.Spec.Segments[:1] })
		eventually(t, 3*time.Second, "vm-ok healthy again", wantSpec("t9-vms", "vm-ok-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateActive || meta.FindStatusCondition(ep.Status.Conditions, nbv1.ConditionDegraded) != nil {
				return fmt.Errorf("state %s, conditions %+v", ep.Spec.State, ep.Status.Conditions)
			}
			return nil
		}))
	})
}
