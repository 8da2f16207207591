package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// reportSegments writes the node agent's BridgeGateway for node (created
// when missing) with these segments' programmed state.
func reportSegments(t *testing.T, node string, segs ...nbv1.GatewaySegmentStatus) {
	t.Helper()
	ctx := context.Background()
	var gw nbv1.BridgeGateway
	if err := env.Client.Get(ctx, client.ObjectKey{Name: node}, &gw); err != nil {
		gw = nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: nbv1.BridgeGatewaySpec{NodeName: node, Role: nbv1.RoleNode}}
		mustCreate(t, &gw)
		deleteOnCleanup(t, &gw)
	}
	gw.Status.Segments = segs
	if err := env.Client.Status().Update(ctx, &gw); err != nil {
		t.Fatalf("bridgegateway %s status: %v", node, err)
	}
}

func nodeLabels(name string) (map[string]string, error) {
	var n corev1.Node
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &n); err != nil {
		return nil, err
	}
	return n.Labels, nil
}

func wantNodeLabel(node, key string, present bool) func() error {
	return func() error {
		l, err := nodeLabels(node)
		if err != nil {
			return err
		}
		if v, ok := l[key]; ok != present || (present && v != nbv1.SegmentReadyValue) {
			return fmt.Errorf("node %s label %s=%q (present %v), want present=%v", node, key, v, ok, present)
		}
		return nil
	}
}

// TestNodeReadiness: the agents' reports become node labels a VM's node
// affinity can select, and endpoints on nodes without the label say so.
func TestNodeReadiness(t *testing.T) {
	app := nbv1.SegmentKey{BridgeConfig: "t16r", Segment: "app"}
	db := nbv1.SegmentKey{BridgeConfig: "t16r", Segment: "db"}
	appLabel, dbLabel := nbv1.SegmentReadyLabel(app), nbv1.SegmentReadyLabel(db)
	createNode(t, "t16r-n1", "192.0.2.161", "", map[string]string{"team": "t16r"})
	createNode(t, "t16r-n2", "192.0.2.162", "", nil)
	createNamespace(t, "t16r-vms", nil)
	bc := bridgeConfig("t16r", map[string]string{"netbridge.io/gateway": "t16r"},
		nbv1.Segment{Name: "app", VLANID: 1621, VNI: 16210, Subnets: []string{"10.162.0.0/24"}},
		nbv1.Segment{Name: "db", VLANID: 1622, VNI: 16220, Subnets: []string{"10.163.0.0/24"}},
	)
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)
	programmed := func(k nbv1.SegmentKey) nbv1.GatewaySegmentStatus {
		return nbv1.GatewaySegmentStatus{BridgeConfig: k.BridgeConfig, Name: k.Segment, Role: string(nbv1.SegmentRoleNode), Programmed: true}
	}
	failed := func(k nbv1.SegmentKey) nbv1.GatewaySegmentStatus {
		return nbv1.GatewaySegmentStatus{BridgeConfig: k.BridgeConfig, Name: k.Segment, Role: string(nbv1.SegmentRoleNode), Error: "bridge: operation not permitted"}
	}
	reportSegments(t, "t16r-n1", programmed(app), failed(db))

	startManager(t, controller.Config{NodeReadiness: true})

	t.Run("ProgrammedSegmentsLabelled", func(t *testing.T) {
		eventually(t, 10*time.Second, "app ready on n1", wantNodeLabel("t16r-n1", appLabel, true))
		if err := wantNodeLabel("t16r-n1", dbLabel, false)(); err != nil {
			t.Error(err)
		}
		if l, _ := nodeLabels("t16r-n1"); l["team"] != "t16r" {
			t.Errorf("other labels touched: %v", l)
		}
	})

	t.Run("EndpointOnNodeNotReady", func(t *testing.T) {
		createVMI(t, "t16r-vms", "vm1", "t16r.app", map[string]string{nbv1.AnnotationIPs: "10.162.0.10"},
			kubevirt.Status{NodeName: "t16r-n2", Phase: "Running"})
		eventually(t, 5*time.Second, "NodeNotReady on vm1", wantSpec("t16r-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionNodeNotReady, metav1.ConditionTrue, nbv1.ReasonSegmentNotReady, "node t16r-n2 has no label "+appLabel+"=ready")
		}))
		eventually(t, 2*time.Second, "event on vm1", func() error { return findEvent("t16r-vms", "vm1", nbv1.ReasonSegmentNotReady, "t16r-n2") })
	})

	t.Run("AgentReportClearsIt", func(t *testing.T) {
		start := time.Now()
		reportSegments(t, "t16r-n2", programmed(app), programmed(db))
		eventually(t, 2*time.Second, "app ready on n2", wantNodeLabel("t16r-n2", appLabel, true))
		eventually(t, 2*time.Second, "condition cleared", wantSpec("t16r-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			if c := findCondition(ep, nbv1.ConditionNodeNotReady); c != nil {
				return fmt.Errorf("condition still %+v", c)
			}
			return nil
		}))
		t.Logf("report_to_ready_ms=%d (label and endpoint condition)", time.Since(start).Milliseconds())
	})

	t.Run("LostBridgeLosesLabel", func(t *testing.T) {
		reportSegments(t, "t16r-n2", failed(app), programmed(db))
		eventually(t, 2*time.Second, "app not ready on n2", wantNodeLabel("t16r-n2", appLabel, false))
		eventually(t, 2*time.Second, "NodeNotReady again", wantSpec("t16r-vms", "vm1-default", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionNodeNotReady, metav1.ConditionTrue, nbv1.ReasonSegmentNotReady, "t16r-n2")
		}))
		if err := wantNodeLabel("t16r-n2", dbLabel, true)(); err != nil {
			t.Error(err)
		}
	})

	t.Run("RemovedSegmentLabelGoes", func(t *testing.T) {
		updateBC(t, "t16r", func(bc *nbv1.BridgeConfig) { bc.Spec.Segments = bc.Spec.Segments[:1] })
		eventually(t, 2*time.Second, "db label gone from n2", wantNodeLabel("t16r-n2", dbLabel, false))
	})

	// A dead node agent never rewrites its report: the node's Ready
	// condition is the freshness rule (the kubelet stops, the node
	// lifecycle controller sets Ready=Unknown).
	t.Run("NodeNotReadyLosesLabels", func(t *testing.T) {
		createVMI(t, "t16r-vms", "vm2", "t16r.app", map[string]string{nbv1.AnnotationIPs: "10.162.0.11"},
			kubevirt.Status{NodeName: "t16r-n1", Phase: "Running"})
		eventually(t, 5*time.Second, "vm2 endpoint ready on n1", wantSpec("t16r-vms", "vm2-default", func(ep *nbv1.BridgeEndpoint) error {
			if c := findCondition(ep, nbv1.ConditionNodeNotReady); c != nil {
				return fmt.Errorf("condition %+v", c)
			}
			return nil
		}))
		start := time.Now()
		setNodeReady(t, "t16r-n1", corev1.ConditionUnknown)
		eventually(t, 2*time.Second, "app label gone from the NotReady n1", wantNodeLabel("t16r-n1", appLabel, false))
		eventually(t, 2*time.Second, "NodeNotReady on vm2", wantSpec("t16r-vms", "vm2-default", func(ep *nbv1.BridgeEndpoint) error {
			return condition(ep, nbv1.ConditionNodeNotReady, metav1.ConditionTrue, nbv1.ReasonSegmentNotReady, "t16r-n1")
		}))
		t.Logf("not_ready_to_unlabelled_ms=%d (label and endpoint condition)", time.Since(start).Milliseconds())
		if l, _ := nodeLabels("t16r-n1"); l["team"] != "t16r" {
			t.Errorf("other labels touched: %v", l)
		}
		setNodeReady(t, "t16r-n1", corev1.ConditionTrue)
		eventually(t, 2*time.Second, "app label back on the Ready n1", wantNodeLabel("t16r-n1", appLabel, true))
	})
}

// setNodeReady sets the node's Ready condition, as the kubelet (True) or
// the node lifecycle controller (Unknown) does.
func setNodeReady(t *testing.T, name string, st corev1.ConditionStatus) {
	t.Helper()
	var n corev1.Node
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, Reason: "Test", LastTransitionTime: metav1.Now()}}
	if err := env.Client.Status().Update(context.Background(), &n); err != nil {
		t.Fatalf("node %s Ready=%s: %v", name, st, err)
	}
}

func findCondition(ep *nbv1.BridgeEndpoint, typ string) *metav1.Condition {
	for i := range ep.Status.Conditions {
		if ep.Status.Conditions[i].Type == typ {
			return &ep.Status.Conditions[i]
		}
	}
	return nil
}
