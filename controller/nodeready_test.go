package controller

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

func TestPlanNodeLabels(t *testing.T) {
	app := SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	db := SegmentKey{BridgeConfig: "dc1", Segment: "db"}
	gone := SegmentKey{BridgeConfig: "dc1", Segment: "gone"}
	segs := map[SegmentKey]bool{app: true, db: true}
	report := func(ss ...nbv1.GatewaySegmentStatus) *nbv1.BridgeGateway {
		return &nbv1.BridgeGateway{Status: nbv1.BridgeGatewayStatus{Segments: ss}}
	}
	programmed := func(k SegmentKey) nbv1.GatewaySegmentStatus {
		return nbv1.GatewaySegmentStatus{BridgeConfig: k.BridgeConfig, Name: k.Segment, Role: "Node", Programmed: true}
	}
	failed := func(k SegmentKey) nbv1.GatewaySegmentStatus {
		return nbv1.GatewaySegmentStatus{BridgeConfig: k.BridgeConfig, Name: k.Segment, Role: "Node", Error: "mtu 9000 exceeds the underlay"}
	}
	l := nbv1.SegmentReadyLabel
	tests := []struct {
		name    string
		labels  map[string]string
		gw      *nbv1.BridgeGateway
		ready   corev1.ConditionStatus // the node's Ready condition; "": none yet
		add     []string
		removes []string
	}{
		{name: "no agent, no labels: nothing", labels: map[string]string{"kubernetes.io/os": "linux"}},
		{name: "programmed segments get ready", gw: report(programmed(app), programmed(db)), add: []string{l(app), l(db)}},
		{name: "already labelled: nothing", labels: map[string]string{l(app): "ready"}, gw: report(programmed(app))},
		{name: "failed segment loses its label", labels: map[string]string{l(app): "ready", l(db): "ready"}, gw: report(programmed(app), failed(db)), removes: []string{l(db)}},
		{name: "agent gone: every readiness label goes, others stay", labels: map[string]string{l(app): "ready", "team": "a", nbv1.LabelGateway: "true"}, removes: []string{l(app)}},
		{name: "removed segment: label goes even if still reported", labels: map[string]string{l(gone): "ready"}, gw: report(programmed(gone)), removes: []string{l(gone)}},
		{name: "wrong value is corrected", labels: map[string]string{l(app): "no"}, gw: report(programmed(app)), add: []string{l(app)}},
		{name: "node NotReady: a dead agent's stale report labels nothing", labels: map[string]string{l(app): "ready", "team": "a"}, gw: report(programmed(app), programmed(db)),
			ready: corev1.ConditionFalse, removes: []string{l(app)}},
		{name: "node Ready Unknown (kubelet silent): labels go", labels: map[string]string{l(app): "ready", l(db): "ready"}, gw: report(programmed(app), programmed(db)),
			ready: corev1.ConditionUnknown, removes: []string{l(app), l(db)}},
		{name: "node Ready again: labels come back", gw: report(programmed(app)), ready: corev1.ConditionTrue, add: []string{l(app)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{}
			if tc.ready != "" {
				node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: tc.ready}}
			}
			p := planNodeLabels(tc.labels, readySegments(node, tc.gw, segs))
			var add, rm []string
			for k, v := range p {
				if v == nil {
					rm = append(rm, k)
				} else if *v != nbv1.SegmentReadyValue {
					t.Errorf("%s set to %q", k, *v)
				} else {
					add = append(add, k)
				}
			}
			if strings.Join(sorted(add), ",") != strings.Join(sorted(tc.add), ",") || strings.Join(sorted(rm), ",") != strings.Join(sorted(tc.removes), ",") {
				t.Errorf("add %v remove %v, want add %v remove %v", add, rm, tc.add, tc.removes)
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

func TestPlanSegmentNodeNotReady(t *testing.T) {
	s := seg()
	in := input(s, vmi("vm1", 1, ips("10.20.100.10")), vmi("vm2", 2, ips("10.20.100.11"), func(v *kubevirt.VMI) { v.Status.NodeName = "n2" }))
	in.NodeReady = map[string]bool{"n1": true, "n2": false}
	p := PlanSegment(in)
	eps := converge(in, p)
	if c := meta.FindStatusCondition(find(eps, "vm1-default").Status.Conditions, nbv1.ConditionNodeNotReady); c != nil {
		t.Errorf("ready node: condition %+v", c)
	}
	c := meta.FindStatusCondition(find(eps, "vm2-default").Status.Conditions, nbv1.ConditionNodeNotReady)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != nbv1.ReasonSegmentNotReady ||
		!strings.Contains(c.Message, "node n2") || !strings.Contains(c.Message, "netbridge.io/segment.dc1.app=ready") {
		t.Fatalf("not-ready node: condition %+v", c)
	}
	if p.Counts.Refused != 0 {
		t.Errorf("a not-ready node refuses nothing: counts %+v", p.Counts)
	}
	var ev []string
	for _, e := range p.Events {
		ev = append(ev, e.Reason+" "+e.Regarding.Name)
	}
	if strings.Join(ev, ",") != nbv1.ReasonSegmentNotReady+" vm2" {
		t.Errorf("events %v, want one %s on vm2", ev, nbv1.ReasonSegmentNotReady)
	}

	// The node becomes ready: the condition goes, no new event.
	in.Existing = eps
	in.NodeReady["n2"] = true
	p = PlanSegment(in)
	eps = converge(in, p)
	if c := meta.FindStatusCondition(find(eps, "vm2-default").Status.Conditions, nbv1.ConditionNodeNotReady); c != nil {
		t.Errorf("after the label: condition %+v", c)
	}
	if len(p.Events) != 0 {
		t.Errorf("events %+v", p.Events)
	}

	// Readiness not reported (nil): no condition at all.
	in2 := input(s, vmi("vm3", 3, ips("10.20.100.12")))
	if eps := converge(in2, PlanSegment(in2)); meta.FindStatusCondition(find(eps, "vm3-default").Status.Conditions, nbv1.ConditionNodeNotReady) != nil {
		t.Errorf("readiness off: condition set")
	}
}
