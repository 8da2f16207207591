package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

func wantSpec(ns, name string, check func(*nbv1.BridgeEndpoint) error) func() error {
	return func() error {
		ep, err := getEndpoint(ns, name)
		if err != nil {
			return err
		}
		return check(ep)
	}
}

func condition(ep *nbv1.BridgeEndpoint, typ string, status metav1.ConditionStatus, reason, contains string) error {
	c := meta.FindStatusCondition(ep.Status.Conditions, typ)
	if c == nil || c.Status != status || (reason != "" && c.Reason != reason) || !strings.Contains(c.Message, contains) {
		return fmt.Errorf("endpoint %s: condition %s = %+v, want %s/%s containing %q", ep.Name, typ, c, status, reason, contains)
	}
	return nil
}

// TestEndpoints drives one controller through the whole life of endpoints
// on a real API server.
func TestEndpoints(t *testing.T) {
	ctx := context.Background()
	gwSel := map[string]string{"netbridge.io/gateway": "t1"}
	createNode(t, "t1-n1", "192.0.2.11", "", nil)
	createNode(t, "t1-n2", "192.0.2.12", "198.51.100.2", nil)
	createNode(t, "t1-gw1", "192.0.2.21", "", gwSel)
	createNamespace(t, "t1-vms", nil)
	createNamespace(t, "t1-db", map[string]string{"allow-db": "true"})
	bc := bridgeConfig("t1", gwSel,
		nbv1.Segment{Name: "app", VLANID: 101, VNI: 10101, Subnets: []string{"10.101.0.0/24"}},
		nbv1.Segment{Name: "db", VLANID: 102, VNI: 10102, Subnets: []string{"10.102.0.0/24"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"allow-db": "true"}}},
	)
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)

	run := startManager(t, controller.Config{SyncPeriod: time.Second})

	t.Run("AnnotationGivesEndpointWithinOneSecond", func(t *testing.T) {
		createVMI(t, "t1-vms", "vm1", "t1.app",
			map[string]string{nbv1.AnnotationIPs: "10.101.0.10", nbv1.AnnotationMAC: "02:00:00:00:01:01"},
			kubevirt.Status{NodeName: "t1-n1", Phase: "Running"})
		took := eventually(t, 5*time.Second, "endpoint vm1", wantSpec("t1-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			s := ep.Spec
			if s.BridgeConfig != "t1" || s.Segment != "app" || s.VMI != "vm1" || strings.Join(s.IPs, ",") != "10.101.0.10" ||
				s.MAC != "02:00:00:00:01:01" || s.NodeName != "t1-n1" || s.VTEP != "192.0.2.11" || s.State != nbv1.StateStaged {
				return fmt.Errorf("spec %+v", s)
			}
			if ep.Labels[nbv1.LabelBridgeConfig] != "t1" || ep.Labels[nbv1.LabelSegmentName] != "app" {
				return fmt.Errorf("labels %v", ep.Labels)
			}
			if len(ep.OwnerReferences) != 1 || ep.OwnerReferences[0].Name != "vm1" || ep.OwnerReferences[0].APIVersion != "kubevirt.io/v1" {
				return fmt.Errorf("owner %+v", ep.OwnerReferences)
			}
			return nil
		}))
		t.Logf("endpoint after %s (includes cache start)", took)
		// Now that the caches are warm, the 1 s budget applies.
		createVMI(t, "t1-vms", "vm1b", "t1.app", map[string]string{nbv1.AnnotationIPs: "10.101.0.11"}, kubevirt.Status{NodeName: "t1-n1"})
		took = eventually(t, time.Second, "endpoint vm1b within 1s", wantSpec("t1-vms", "vm1b-default", func(ep *nbv1.BridgeEndpoint) error {
			if strings.Join(ep.Spec.IPs, ",") != "10.101.0.11" {
				return fmt.Errorf("ips %v", ep.Spec.IPs)
			}
			return nil
		}))
		t.Logf("warm: endpoint after %s", took)
	})

	t.Run("GuestAgentIPsWhenNoAnnotation", func(t *testing.T) {
		createVMI(t, "t1-vms", "vm2", "t1.app", nil, kubevirt.Status{NodeName: "t1-n1"})
		eventually(t, 2*time.Second, "endpoint vm2 without IPs", wantSpec("t1-vms", "vm2-default", func(ep *nbv1.BridgeEndpoint) error {
			if len(ep.Spec.IPs) != 0 {
				return fmt.Errorf("ips %v", ep.Spec.IPs)
			}
			return nil
		}))
		setVMIStatus(t, "t1-vms", "vm2", kubevirt.Status{NodeName: "t1-n1", Interfaces: []kubevirt.InterfaceStatus{
			{Name: "default", MAC: "02:00:00:00:01:02", IPAddress: "10.101.0.20", IPAddresses: []string{"10.101.0.20", "fe80::2"}, InfoSource: "guest-agent"}}})
		eventually(t, time.Second, "guest agent IP", wantSpec("t1-vms", "vm2-default", func(ep *nbv1.BridgeEndpoint) error {
			if strings.Join(ep.Spec.IPs, ",") != "10.101.0.20" || ep.Spec.MAC != "02:00:00:00:01:02" {
				return fmt.Errorf("spec %+v", ep.Spec)
			}
			return nil
		}))
		// The guest agent going quiet is "not yet", not "withdraw".
		setVMIStatus(t, "t1-vms", "vm2", kubevirt.Status{NodeName: "t1-n1", Interfaces: []kubevirt.InterfaceStatus{{Name: "default"}}})
		time.Sleep(500 * time.Millisecond)
		ep, err := getEndpoint("t1-vms", "vm2-default")
		if err != nil || strings.Join(ep.Spec.IPs, ",") != "10.101.0.20" {
			t.Fatalf("IPs dropped on an empty guest report: %v %v", ep.Spec.IPs, err)
		}
	})

	t.Run("NodeMoveUpdatesNodeAndVTEP", func(t *testing.T) {
		setVMIStatus(t, "t1-vms", "vm1", kubevirt.Status{NodeName: "t1-n2", Phase: "Running"})
		eventually(t, time.Second, "node move", wantSpec("t1-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.NodeName != "t1-n2" || ep.Spec.VTEP != "198.51.100.2" {
				return fmt.Errorf("node %s vtep %s", ep.Spec.NodeName, ep.Spec.VTEP)
			}
			return nil
		}))
	})

	t.Run("CutoverStagedActiveWithdrawn", func(t *testing.T) {
		annotateVMI(t, "t1-vms", "vm1", nbv1.AnnotationCutover, nbv1.CutoverActive)
		eventually(t, time.Second, "Active", wantSpec("t1-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateActive {
				return fmt.Errorf("state %s", ep.Spec.State)
			}
			return condition(ep, nbv1.ConditionAdvertised, metav1.ConditionFalse, controller.ReasonPending, "")
		}))
		annotateVMI(t, "t1-vms", "vm1", nbv1.AnnotationCutover, nbv1.CutoverRollback)
		eventually(t, time.Second, "Withdrawn", wantSpec("t1-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateWithdrawn {
				return fmt.Errorf("state %s", ep.Spec.State)
			}
			return nil
		}))
		annotateVMI(t, "t1-vms", "vm1", nbv1.AnnotationCutover, nbv1.CutoverActive)
	})

	t.Run("AdvertisedMirroredFromActiveGateway", func(t *testing.T) {
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: controller.DefaultNamespace, Name: nbv1.LeaseName(nbv1.SegmentKey{BridgeConfig: "t1", Segment: "app"})},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("t1-gw1"), LeaseDurationSeconds: ptr.To(int32(3600)),
				RenewTime: &metav1.MicroTime{Time: time.Now()}},
		}
		mustCreate(t, lease)
		gw := &nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: "t1-gw1"}, Spec: nbv1.BridgeGatewaySpec{NodeName: "t1-gw1", Role: nbv1.RoleGateway}}
		mustCreate(t, gw)
		gw.Status = nbv1.BridgeGatewayStatus{
			Segments:   []nbv1.GatewaySegmentStatus{{BridgeConfig: "t1", Name: "app", Role: "Active", Programmed: true}},
			Advertised: []string{"10.101.0.10/32"},
		}
		if err := env.Client.Status().Update(ctx, gw); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "Advertised=True", wantSpec("t1-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionAdvertised, metav1.ConditionTrue, "", "t1-gw1")
		}))
		// A duplicate-address refusal flips it to False naming the MAC.
		gw.Status.Advertised = nil
		gw.Status.Refused = []nbv1.RefusedEndpoint{{Namespace: "t1-vms", Endpoint: "vm1-default", IP: "10.101.0.10", Reason: "DuplicateAddress", MAC: "00:50:56:aa:bb:cc"}}
		if err := env.Client.Status().Update(ctx, gw); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "Advertised=False DuplicateAddress", wantSpec("t1-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionAdvertised, metav1.ConditionFalse, "DuplicateAddress", "00:50:56:aa:bb:cc")
		}))
		eventually(t, 3*time.Second, "BridgeConfig status", func() error {
			var got nbv1.BridgeConfig
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "t1"}, &got); err != nil {
				return err
			}
			if got.Status.ActiveGateways != "t1-gw1" || len(got.Status.Segments) != 2 || got.Status.Segments[0].ActiveGateway != "t1-gw1" ||
				got.Status.Segments[0].Endpoints.Active != 1 || got.Status.EndpointCount < 3 || got.Status.ObservedGeneration != got.Generation ||
				!meta.IsStatusConditionTrue(got.Status.Conditions, nbv1.ConditionReady) {
				return fmt.Errorf("status %+v", got.Status)
			}
			return nil
		})
	})

	t.Run("DuplicateIP", func(t *testing.T) {
		createVMI(t, "t1-vms", "vm3", "t1.app", map[string]string{nbv1.AnnotationIPs: "10.101.0.10", nbv1.AnnotationCutover: "active"}, kubevirt.Status{NodeName: "t1-n1"})
		eventually(t, 2*time.Second, "Conflict on vm3", wantSpec("t1-vms", "vm3-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateStaged {
				return fmt.Errorf("state %s", ep.Spec.State)
			}
			return condition(ep, nbv1.ConditionConflict, metav1.ConditionTrue, string(nbv1.ReasonDuplicateIP), "t1-vms/vm1")
		}))
		eventually(t, 2*time.Second, "event on vm3", func() error { return findEvent("t1-vms", "vm3", string(nbv1.ReasonDuplicateIP), "t1-vms/vm1") })
		ep, err := getEndpoint("t1-vms", "vm1-default")
		if err != nil || ep.Spec.State != nbv1.StateActive || meta.FindStatusCondition(ep.Status.Conditions, nbv1.ConditionConflict) != nil {
			t.Fatalf("the earlier claimant was disturbed: %+v %v", ep, err)
		}
	})

	t.Run("IPOutsideSubnet", func(t *testing.T) {
		createVMI(t, "t1-vms", "vm4", "t1.app", map[string]string{nbv1.AnnotationIPs: "10.99.0.4"}, kubevirt.Status{NodeName: "t1-n1"})
		eventually(t, 2*time.Second, "Rejected on vm4", wantSpec("t1-vms", "vm4-default", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionRejected, metav1.ConditionTrue, string(nbv1.ReasonOutsideSubnet), "10.99.0.4")
		}))
		eventually(t, 2*time.Second, "event on vm4", func() error { return findEvent("t1-vms", "vm4", string(nbv1.ReasonOutsideSubnet), "10.99.0.4") })
	})

	t.Run("NamespaceNotAllowed", func(t *testing.T) {
		createVMI(t, "t1-vms", "vm5", "t1.db", map[string]string{nbv1.AnnotationIPs: "10.102.0.5"}, kubevirt.Status{NodeName: "t1-n1"})
		createVMI(t, "t1-db", "vm6", "t1.db", map[string]string{nbv1.AnnotationIPs: "10.102.0.6"}, kubevirt.Status{NodeName: "t1-n1"})
		eventually(t, 2*time.Second, "Rejected on vm5", wantSpec("t1-vms", "vm5-default", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionRejected, metav1.ConditionTrue, string(nbv1.ReasonNamespaceNotAllowed), "t1-vms")
		}))
		eventually(t, 2*time.Second, "event on vm5", func() error { return findEvent("t1-vms", "vm5", string(nbv1.ReasonNamespaceNotAllowed), "t1-vms") })
		eventually(t, 2*time.Second, "vm6 accepted", wantSpec("t1-db", "vm6-default", func(ep *nbv1.BridgeEndpoint) error {
			if len(ep.Status.Conditions) != 0 {
				return fmt.Errorf("conditions %+v", ep.Status.Conditions)
			}
			return nil
		}))
	})

	t.Run("SameVLANInTwoBridgeConfigs", func(t *testing.T) {
		bc2 := bridgeConfig("t1-second", gwSel, nbv1.Segment{Name: "web", VLANID: 101, VNI: 10901, Subnets: []string{"10.109.0.0/24"}})
		mustCreate(t, bc2)
		deleteOnCleanup(t, bc2)
		createVMI(t, "t1-vms", "vm7", "t1-second.web", map[string]string{nbv1.AnnotationIPs: "10.109.0.7", nbv1.AnnotationCutover: "active"}, kubevirt.Status{NodeName: "t1-n1"})
		eventually(t, 3*time.Second, "t1-second not Ready", func() error {
			var got nbv1.BridgeConfig
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "t1-second"}, &got); err != nil {
				return err
			}
			c := meta.FindStatusCondition(got.Status.Conditions, nbv1.ConditionReady)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != controller.ReasonVLANConflict || !strings.Contains(c.Message, "BridgeConfig t1") {
				return fmt.Errorf("ready %+v", c)
			}
			return nil
		})
		eventually(t, 2*time.Second, "vm7 not Active", wantSpec("t1-vms", "vm7-default", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateStaged {
				return fmt.Errorf("state %s", ep.Spec.State)
			}
			return condition(ep, nbv1.ConditionRejected, metav1.ConditionTrue, string(nbv1.ReasonBridgeConfigNotReady), "VLAN")
		}))
		eventually(t, 2*time.Second, "event on vm7", func() error { return findEvent("t1-vms", "vm7", string(nbv1.ReasonBridgeConfigNotReady), "t1") })
		var first nbv1.BridgeConfig
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "t1"}, &first); err != nil {
			t.Fatal(err)
		}
		if !meta.IsStatusConditionTrue(first.Status.Conditions, nbv1.ConditionReady) {
			t.Fatalf("the earlier BridgeConfig lost Ready: %+v", first.Status.Conditions)
		}
		ep, err := getEndpoint("t1-vms", "vm1-default")
		if err != nil || ep.Spec.State != nbv1.StateActive || meta.FindStatusCondition(ep.Status.Conditions, nbv1.ConditionRejected) != nil {
			t.Fatalf("endpoints of the earlier BridgeConfig were disturbed: %+v %v", ep, err)
		}
	})

	t.Run("ResyncWritesNothing", func(t *testing.T) {
		// Converged: wait until a quiet second, then watch three resyncs
		// (sync period 1 s) go by.
		eventually(t, 10*time.Second, "quiet", func() error {
			before := run.writes.n.Load()
			time.Sleep(1500 * time.Millisecond)
			if d := run.writes.n.Load() - before; d != 0 {
				return fmt.Errorf("%d writes: %v", d, run.writes.recent())
			}
			return nil
		})
		before := run.writes.n.Load()
		time.Sleep(3500 * time.Millisecond)
		if d := run.writes.n.Load() - before; d != 0 {
			t.Fatalf("resyncs after convergence issued %d writes: %v", d, run.writes.recent())
		}
	})

	t.Run("DeletingVMIDeletesEndpoint", func(t *testing.T) {
		if err := env.Client.Delete(ctx, getVMI(t, "t1-vms", "vm4")); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, "vm4 endpoint gone", func() error { return endpointGone("t1-vms", "vm4-default") })
	})

	t.Run("RemovingSegmentDeletesItsEndpoints", func(t *testing.T) {
		var cur nbv1.BridgeConfig
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "t1"}, &cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Segments = cur.Spec.Segments[:1] // drop "db"
		if err := env.Client.Update(ctx, &cur); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "db endpoints gone", func() error {
			if err := endpointGone("t1-db", "vm6-default"); err != nil {
				return err
			}
			return endpointGone("t1-vms", "vm5-default")
		})
		if _, err := getEndpoint("t1-vms", "vm1-default"); err != nil {
			t.Fatalf("app endpoint disturbed: %v", err)
		}
	})
}
