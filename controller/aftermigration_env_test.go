package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// autoCutoverCount is netbridge_controller_auto_cutovers_total of one
// segment and result in reg (0: no such series).
func autoCutoverCount(t *testing.T, reg prometheus.Gatherer, bridgeConfig, segment, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "netbridge_controller_auto_cutovers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["bridgeconfig"] == bridgeConfig && labels["segment"] == segment && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// wantAutoCutovers checks the auto-cutover counters of one segment.
func wantAutoCutovers(t *testing.T, reg prometheus.Gatherer, bridgeConfig, segment string, want map[string]float64) {
	t.Helper()
	for _, result := range []string{"activated", "verified", "rolled_back"} {
		if got := autoCutoverCount(t, reg, bridgeConfig, segment, result); got != want[result] {
			t.Errorf("netbridge_controller_auto_cutovers_total{bridgeconfig=%q,segment=%q,result=%q} = %v, want %v",
				bridgeConfig, segment, result, got, want[result])
		}
	}
}

// migratedVM is one status.vms[] entry of a Migration that completed the
// VM successfully, as Forklift writes it.
func migratedVM(id, name string) map[string]any {
	return map[string]any{"id": id, "name": name, "phase": "Completed",
		"started": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), "completed": time.Now().UTC().Format(time.RFC3339),
		"conditions": []any{map[string]any{"type": "Succeeded", "status": "True", "category": "Advisory", "message": "The VM migration has SUCCEEDED."}}}
}

func setMigrationVMs(t *testing.T, ns, name string, vms ...map[string]any) {
	t.Helper()
	list := make([]any, 0, len(vms))
	for _, v := range vms {
		list = append(list, v)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u := forkliftObject("Migration", ns, name, nil)
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(u), u); err != nil {
			return err
		}
		if err := unstructured.SetNestedSlice(u.Object, list, "status", "vms"); err != nil {
			return err
		}
		return env.Client.Status().Update(context.Background(), u)
	})
	if err != nil {
		t.Fatalf("migration %s/%s status: %v", ns, name, err)
	}
}

// reportEndpoints makes the fake active gateway report endpoints as a
// real one does after programming them.
func reportEndpoints(t *testing.T, gw string, eps ...nbv1.GatewayEndpointStatus) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var g nbv1.BridgeGateway
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: gw}, &g); err != nil {
			return err
		}
		g.Status.Endpoints = eps
		return env.Client.Status().Update(context.Background(), &g)
	})
	if err != nil {
		t.Fatalf("bridgegateway %s status: %v", gw, err)
	}
}

func autoCutoverRecord(ns, name string) (*nbv1.AutoCutoverRecord, string) {
	u := kubevirt.NewObject()
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return nil, ""
	}
	r, _ := nbv1.ParseAutoCutover(u.GetAnnotations()[nbv1.AnnotationAutoCutover])
	return r, u.GetAnnotations()[nbv1.AnnotationCutover]
}

func findNormalEvent(ns, vmi, reason string) error {
	var evs eventsv1.EventList
	if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, e := range evs.Items {
		if e.Regarding.Name == vmi && e.Reason == reason && e.Type == corev1.EventTypeNormal {
			return nil
		}
	}
	return fmt.Errorf("no Normal event %s on vmi %s/%s", reason, ns, vmi)
}

// TestAutoCutoverAfterMigration: with cutoverPolicy AfterMigration, a VM
// whose Forklift Migration reports it migrated is activated once its VMI
// runs, and verified from the gateway's report; one whose reachability
// check does not pass (the gateway reports it unreachable, or does not
// report it at all) is rolled back within verifyTimeout with an event and
// a condition naming the check; under Manual nothing happens.
func TestAutoCutoverAfterMigration(t *testing.T) {
	ctx := context.Background()
	const verifyTimeout = 5 * time.Second
	createNode(t, "t16a-n1", "192.0.2.172", "", nil)
	createNamespace(t, "t16a-vms", nil)
	createNamespace(t, "t16a-mtv", nil)
	bc := bridgeConfig("t16a", map[string]string{"netbridge.io/gateway": "t16a"},
		nbv1.Segment{Name: "auto", VLANID: 1651, VNI: 16510, Subnets: []string{"10.165.0.0/24"},
			CutoverPolicy: nbv1.CutoverAfterMigration, VerifyTimeout: &metav1.Duration{Duration: verifyTimeout}},
		nbv1.Segment{Name: "manual", VLANID: 1652, VNI: 16520, Subnets: []string{"10.165.1.0/24"}})
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)
	for _, seg := range []string{"auto", "manual"} {
		mustCreate(t, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: controller.DefaultNamespace, Name: nbv1.LeaseName(nbv1.SegmentKey{BridgeConfig: "t16a", Segment: seg})},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("t16a-gw1"), LeaseDurationSeconds: ptr.To(int32(3600)),
				RenewTime: &metav1.MicroTime{Time: time.Now()}},
		})
	}
	gw := &nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: "t16a-gw1"}, Spec: nbv1.BridgeGatewaySpec{NodeName: "t16a-gw1", Role: nbv1.RoleGateway}}
	mustCreate(t, gw)
	mustCreate(t, forkliftObject("NetworkMap", "t16a-mtv", "legacy-nets", map[string]any{"map": []any{
		map[string]any{"source": map[string]any{"name": "VLAN 1651"}, "destination": map[string]any{"type": "multus", "name": "t16a.auto", "namespace": "t16a-vms"}},
		map[string]any{"source": map[string]any{"name": "VLAN 1652"}, "destination": map[string]any{"type": "multus", "name": "t16a.manual", "namespace": "t16a-vms"}},
	}}))
	plan := forkliftObject("Plan", "t16a-mtv", "wave1", map[string]any{
		"map": map[string]any{"network": map[string]any{"name": "legacy-nets"}}, "targetNamespace": "t16a-vms"})
	mustCreate(t, plan)
	mustCreate(t, forkliftObject("Migration", "t16a-mtv", "wave1-run1", map[string]any{"plan": map[string]any{"name": "wave1", "namespace": "t16a-mtv"}}))

	reg := prometheus.NewRegistry()
	startManager(t, controller.Config{NetworkAttachments: true, Forklift: true, Registerer: reg})

	vmis := map[string]string{"app01": "t16a.auto", "app02": "t16a.auto", "app03": "t16a.auto", "app04": "t16a.manual"}
	ips := map[string]string{"app01": "10.165.0.11", "app02": "10.165.0.12", "app03": "10.165.0.13", "app04": "10.165.1.14"}
	for name, nad := range vmis {
		createForkliftVMI(t, "t16a-vms", name, string(plan.GetUID()), ips[name], map[string]string{"legacy": nad})
		setVMIStatus(t, "t16a-vms", name, kubevirt.Status{NodeName: "t16a-n1", Phase: "Running"})
	}
	for name := range vmis {
		eventually(t, 10*time.Second, name+" staged", wantSpec("t16a-vms", name+"-legacy", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateStaged {
				return fmt.Errorf("state %s", ep.Spec.State)
			}
			return nil
		}))
	}
	// The gateway reports app01 programmed and answering, app02 programmed
	// but silent, and does not report app03 at all.
	reportEndpoints(t, "t16a-gw1",
		nbv1.GatewayEndpointStatus{Namespace: "t16a-vms", Name: "app01-legacy", BridgeConfig: "t16a", Segment: "auto", IPs: []string{ips["app01"]},
			FDBProgrammed: true, Reachable: true, LastProbe: &metav1.Time{Time: time.Now()}},
		nbv1.GatewayEndpointStatus{Namespace: "t16a-vms", Name: "app02-legacy", BridgeConfig: "t16a", Segment: "auto", IPs: []string{ips["app02"]},
			FDBProgrammed: true, Reachable: false, LastProbe: &metav1.Time{Time: time.Now()}})

	t.Run("NotActivatedBeforeMigrationCompletes", func(t *testing.T) {
		setMigrationVMs(t, "t16a-mtv", "wave1-run1", map[string]any{"id": "vm-app01", "name": "app01", "phase": "CopyDisks"})
		time.Sleep(time.Second)
		if r, c := autoCutoverRecord("t16a-vms", "app01"); r != nil || c != "" {
			t.Fatalf("activated while Forklift still copies: record %+v cutover %q", r, c)
		}
	})

	var migrated time.Time
	t.Run("MigrationCompletedActivates", func(t *testing.T) {
		migrated = time.Now()
		setMigrationVMs(t, "t16a-mtv", "wave1-run1", migratedVM("vm-app01", "app01"), migratedVM("vm-app02", "app02"),
			migratedVM("vm-app03", "app03"), migratedVM("vm-app04", "app04"))
		took := eventually(t, 5*time.Second, "app01 Active", wantSpec("t16a-vms", "app01-legacy", func(ep *nbv1.BridgeEndpoint) error {
			if ep.Spec.State != nbv1.StateActive {
				return fmt.Errorf("state %s", ep.Spec.State)
			}
			return nil
		}))
		t.Logf("activate_after_migration_ms=%d", took.Milliseconds())
		if _, c := autoCutoverRecord("t16a-vms", "app01"); c != nbv1.CutoverActive {
			t.Errorf("cutover annotation %q: activation must write what `netbridgectl cutover activate` writes", c)
		}
		eventually(t, 3*time.Second, "app01 verified", wantSpec("t16a-vms", "app01-legacy", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionAutoCutover, metav1.ConditionTrue, nbv1.ReasonVerified, "FDB and ARP")
		}))
		eventually(t, 2*time.Second, "activation event", func() error { return findNormalEvent("t16a-vms", "app01", nbv1.EventAutoCutoverActivated) })
		// app01..app03 activated (each once), app01 verified.
		// (The counter follows the patch the condition is derived from.)
		eventually(t, 2*time.Second, "activation counted", func() error {
			a, v := autoCutoverCount(t, reg, "t16a", "auto", "activated"), autoCutoverCount(t, reg, "t16a", "auto", "verified")
			if a != 3 || v != 1 {
				return fmt.Errorf("activated = %v, verified = %v; want 3, 1", a, v)
			}
			return nil
		})
	})

	t.Run("CheckFailingRolledBackInTime", func(t *testing.T) {
		for _, c := range []struct{ vm, reason, contains string }{
			{"app02", nbv1.ReasonNotReachable, "did not answer ARP"},
			{"app03", nbv1.ReasonNotReported, "does not list this endpoint"},
		} {
			eventually(t, verifyTimeout+5*time.Second, c.vm+" rolled back", wantSpec("t16a-vms", c.vm+"-legacy", func(ep *nbv1.BridgeEndpoint) error {
				if ep.Spec.State != nbv1.StateWithdrawn {
					return fmt.Errorf("state %s", ep.Spec.State)
				}
				return condition(ep, nbv1.ConditionAutoCutover, metav1.ConditionFalse, c.reason, c.contains)
			}))
			since := time.Since(migrated)
			r, cut := autoCutoverRecord("t16a-vms", c.vm)
			if r == nil || r.State != nbv1.AutoRolledBack || cut != nbv1.CutoverRollback {
				t.Fatalf("%s: record %+v cutover %q", c.vm, r, cut)
			}
			t.Logf("%s: rollback_after_migration_ms=%d decided_after_ms=%d verify_timeout_ms=%d", c.vm, since.Milliseconds(),
				r.At.Sub(migrated).Milliseconds(), verifyTimeout.Milliseconds())
			if r.At.Sub(migrated) < verifyTimeout {
				t.Errorf("%s rolled back %s after the migration completed, before verifyTimeout %s", c.vm, r.At.Sub(migrated), verifyTimeout)
			}
			if since > 2*verifyTimeout {
				t.Errorf("%s rolled back %s after the migration completed: more than 2× verifyTimeout %s", c.vm, since, verifyTimeout)
			}
			eventually(t, 2*time.Second, c.vm+" rollback event", func() error {
				return findEvent("t16a-vms", c.vm, nbv1.EventAutoCutoverRolledBack, c.contains)
			})
		}
		wantAutoCutovers(t, reg, "t16a", "auto", map[string]float64{"activated": 3, "verified": 1, "rolled_back": 2})
	})

	t.Run("ManualPolicyNothingHappens", func(t *testing.T) {
		ep := &nbv1.BridgeEndpoint{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "t16a-vms", Name: "app04-legacy"}, ep); err != nil {
			t.Fatal(err)
		}
		if ep.Spec.State != nbv1.StateStaged {
			t.Errorf("manual segment's VM is %s after its migration completed", ep.Spec.State)
		}
		if r, c := autoCutoverRecord("t16a-vms", "app04"); r != nil || c != "" {
			t.Errorf("manual segment's VM touched: record %+v cutover %q", r, c)
		}
		if findCondition(ep, nbv1.ConditionAutoCutover) != nil {
			t.Errorf("manual segment's endpoint has an AutoCutover condition")
		}
		wantAutoCutovers(t, reg, "t16a", "manual", nil)
	})
}
