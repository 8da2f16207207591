package controller

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

var t0 = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

func seg() *nbv1.Segment {
	return &nbv1.Segment{Name: "app", VLANID: 100, VNI: 10100, Subnets: []string{"10.20.100.0/24", "2001:db8:100::/64"}}
}

type vmiOpt func(*kubevirt.VMI)

func vmi(name string, age int, opts ...vmiOpt) *kubevirt.VMI {
	v := &kubevirt.VMI{
		Namespace: "ns1", Name: name, UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second)),
		Labels:            map[string]string{nbv1.LabelSegment: "dc1.app"},
		Annotations:       map[string]string{},
		Status:            kubevirt.Status{NodeName: "n1"},
	}
	for _, o := range opts {
		o(v)
	}
	return v
}

func ann(k, val string) vmiOpt { return func(v *kubevirt.VMI) { v.Annotations[k] = val } }
func ips(s string) vmiOpt      { return ann(nbv1.AnnotationIPs, s) }
func inNS(ns string) vmiOpt    { return func(v *kubevirt.VMI) { v.Namespace = ns } }
func status(mac string, addrs ...string) vmiOpt {
	return func(v *kubevirt.VMI) {
		v.Status.Interfaces = []kubevirt.InterfaceStatus{{Name: "default", MAC: mac, IPAddresses: addrs}}
	}
}

func input(s *nbv1.Segment, vmis ...*kubevirt.VMI) SegmentInput {
	return SegmentInput{
		BridgeConfig:    "dc1",
		Segment:         s,
		VMIs:            vmis,
		NamespaceLabels: map[string]labels.Set{"ns1": {"team": "a"}, "ns2": {"team": "b"}},
		VTEPs:           map[string]string{"n1": "192.0.2.11", "n2": "192.0.2.12"},
		Now:             t0,
	}
}

// converge applies a plan's writes to the existing set, as the API server
// would, and returns the new set.
func converge(in SegmentInput, p SegmentPlan) []*nbv1.BridgeEndpoint {
	byName := map[string]*nbv1.BridgeEndpoint{}
	for _, e := range in.Existing {
		byName[e.Name] = e.DeepCopy()
	}
	for _, e := range p.Create {
		byName[e.Name] = e.DeepCopy()
	}
	for _, e := range p.Update {
		byName[e.Name] = e.DeepCopy()
	}
	for _, e := range p.UpdateStatus {
		cur := byName[e.Name]
		cur.Status = *e.Status.DeepCopy()
	}
	for _, e := range p.Delete {
		delete(byName, e.Name)
	}
	var out []*nbv1.BridgeEndpoint
	for _, e := range byName {
		out = append(out, e)
	}
	return out
}

func find(eps []*nbv1.BridgeEndpoint, name string) *nbv1.BridgeEndpoint {
	for _, e := range eps {
		if e.Name == name {
			return e
		}
	}
	return nil
}

func TestPlanSegment(t *testing.T) {
	ns1Only := seg()
	ns1Only.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	auto := seg()
	auto.AutoActivate = true

	tests := []struct {
		name   string
		in     SegmentInput
		check  func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint)
		events []string // reasons
	}{
		{
			name: "annotation gives IPs, status gives MAC, node gives VTEP",
			in:   input(seg(), vmi("vm-a", 0, ips("10.20.100.10, 2001:db8:100::0010"), status("02:AA:00:00:00:01"))),
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				if len(p.Create) != 1 {
					t.Fatalf("creates %d", len(p.Create))
				}
				e := p.Create[0]
				if e.Name != "vm-a-default" || e.Namespace != "ns1" {
					t.Errorf("name %s/%s", e.Namespace, e.Name)
				}
				if strings.Join(e.Spec.IPs, ",") != "10.20.100.10,2001:db8:100::10" || e.Spec.MAC != "02:aa:00:00:00:01" ||
					e.Spec.NodeName != "n1" || e.Spec.VTEP != "192.0.2.11" || e.Spec.State != nbv1.StateStaged {
					t.Errorf("spec %+v", e.Spec)
				}
				if e.Labels[nbv1.LabelBridgeConfig] != "dc1" || e.Labels[nbv1.LabelSegmentName] != "app" {
					t.Errorf("labels %v", e.Labels)
				}
				if len(e.OwnerReferences) != 1 || e.OwnerReferences[0].Kind != "VirtualMachineInstance" || e.OwnerReferences[0].APIVersion != "kubevirt.io/v1" {
					t.Errorf("owner %+v", e.OwnerReferences)
				}
				if len(e.Status.Conditions) != 0 {
					t.Errorf("conditions %+v", e.Status.Conditions)
				}
			},
		},
		{
			name: "guest agent IPs without link-local, MAC from annotation",
			in:   input(seg(), vmi("vm-a", 0, ann(nbv1.AnnotationMAC, "02:00:00:00:00:09"), status("", "10.20.100.11/24", "fe80::1"))),
			check: func(t *testing.T, p SegmentPlan, _ []*nbv1.BridgeEndpoint) {
				e := p.Create[0]
				if strings.Join(e.Spec.IPs, ",") != "10.20.100.11" || e.Spec.MAC != "02:00:00:00:00:09" {
					t.Errorf("spec %+v", e.Spec)
				}
			},
		},
		{
			name: "duplicate IP: the later VMI gets Conflict naming the earlier",
			in:   input(seg(), vmi("vm-b", 5, ips("10.20.100.10"), ann(nbv1.AnnotationCutover, "active")), vmi("vm-a", 0, ips("10.20.100.10"))),
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				a, b := find(eps, "vm-a-default"), find(eps, "vm-b-default")
				if meta.FindStatusCondition(a.Status.Conditions, nbv1.ConditionConflict) != nil {
					t.Errorf("earlier claimant has a conflict")
				}
				c := meta.FindStatusCondition(b.Status.Conditions, nbv1.ConditionConflict)
				if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "ns1/vm-a") {
					t.Fatalf("conflict %+v", c)
				}
				if b.Spec.State != nbv1.StateStaged {
					t.Errorf("conflicting endpoint is %s, want Staged", b.Spec.State)
				}
				if p.Counts.Refused != 1 || p.Counts.Staged != 2 {
					t.Errorf("counts %+v", p.Counts)
				}
			},
			events: []string{string(nbv1.ReasonDuplicateIP)},
		},
		{
			name:   "IP outside the subnets is rejected",
			in:     input(seg(), vmi("vm-a", 0, ips("10.99.0.1"))),
			events: []string{string(nbv1.ReasonOutsideSubnet)},
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				c := meta.FindStatusCondition(eps[0].Status.Conditions, nbv1.ConditionRejected)
				if c == nil || c.Reason != string(nbv1.ReasonOutsideSubnet) || !strings.Contains(c.Message, "10.99.0.1") {
					t.Fatalf("rejected %+v", c)
				}
			},
		},
		{
			name:   "a rejected VMI does not block the IP for a later valid one",
			in:     input(ns1Only, vmi("vm-a", 0, inNS("ns2"), ips("10.20.100.10")), vmi("vm-b", 1, ips("10.20.100.10"))),
			events: []string{string(nbv1.ReasonNamespaceNotAllowed)},
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				if c := meta.FindStatusCondition(find(eps, "vm-a-default").Status.Conditions, nbv1.ConditionRejected); c == nil || c.Reason != string(nbv1.ReasonNamespaceNotAllowed) {
					t.Fatalf("rejected %+v", c)
				}
				if len(find(eps, "vm-b-default").Status.Conditions) != 0 {
					t.Fatalf("vm-b refused: %+v", find(eps, "vm-b-default").Status.Conditions)
				}
			},
		},
		{
			name: "cutover annotation and autoActivate",
			in: input(auto, vmi("vm-a", 0, ips("10.20.100.10")), vmi("vm-b", 0, ips("10.20.100.11"), ann(nbv1.AnnotationCutover, "rollback")),
				vmi("vm-c", 0)),
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				for name, want := range map[string]nbv1.CutoverState{"vm-a-default": nbv1.StateActive, "vm-b-default": nbv1.StateWithdrawn, "vm-c-default": nbv1.StateStaged} {
					if got := find(eps, name).Spec.State; got != want {
						t.Errorf("%s: %s, want %s", name, got, want)
					}
				}
				if c := meta.FindStatusCondition(find(eps, "vm-a-default").Status.Conditions, nbv1.ConditionAdvertised); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonPending {
					t.Errorf("advertised %+v", c)
				}
			},
		},
		{
			name: "refused BridgeConfig: rejected, never Active",
			in: func() SegmentInput {
				in := input(auto, vmi("vm-a", 0, ips("10.20.100.10"), ann(nbv1.AnnotationCutover, "active")))
				in.Refused = "VLANConflict: ..."
				return in
			}(),
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				if eps[0].Spec.State != nbv1.StateStaged || !meta.IsStatusConditionTrue(eps[0].Status.Conditions, nbv1.ConditionRejected) {
					t.Errorf("%+v", eps[0])
				}
			},
			events: []string{string(nbv1.ReasonBridgeConfigNotReady)},
		},
		{
			name: "segment gone deletes everything",
			in: func() SegmentInput {
				in := input(nil)
				in.Existing = []*nbv1.BridgeEndpoint{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "x-default"}}}
				return in
			}(),
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				if len(p.Delete) != 1 || len(eps) != 0 {
					t.Errorf("plan %+v", p)
				}
			},
		},
		{
			name: "gateway report: advertised and duplicate address",
			in: func() SegmentInput {
				in := input(seg(), vmi("vm-a", 0, ips("10.20.100.10"), ann(nbv1.AnnotationCutover, "active")),
					vmi("vm-b", 1, ips("10.20.100.11"), ann(nbv1.AnnotationCutover, "active")))
				in.Gateway = &GatewayView{Name: "gw1", Advertised: map[string]bool{"10.20.100.10/32": true},
					Refused: map[string][]nbv1.RefusedEndpoint{"ns1/vm-b-default": {{IP: "10.20.100.11", Reason: "DuplicateAddress", MAC: "00:50:56:00:00:01"}}}}
				return in
			}(),
			check: func(t *testing.T, p SegmentPlan, eps []*nbv1.BridgeEndpoint) {
				if c := meta.FindStatusCondition(find(eps, "vm-a-default").Status.Conditions, nbv1.ConditionAdvertised); c == nil || c.Status != metav1.ConditionTrue {
					t.Errorf("vm-a advertised %+v", c)
				}
				c := meta.FindStatusCondition(find(eps, "vm-b-default").Status.Conditions, nbv1.ConditionAdvertised)
				if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "DuplicateAddress" || !strings.Contains(c.Message, "00:50:56:00:00:01") {
					t.Errorf("vm-b advertised %+v", c)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanSegment(tc.in)
			eps := converge(tc.in, p)
			tc.check(t, p, eps)
			var reasons []string
			for _, e := range p.Events {
				reasons = append(reasons, e.Reason)
				if e.Regarding.Kind != "VirtualMachineInstance" || e.Type != "Warning" {
					t.Errorf("event %+v", e)
				}
			}
			if strings.Join(reasons, ",") != strings.Join(tc.events, ",") {
				t.Errorf("events %v, want %v", reasons, tc.events)
			}
			// Level-triggered: planning again from the result writes nothing,
			// even a little later.
			again := tc.in
			again.Existing = eps
			again.Now = metav1.NewTime(tc.in.Now.Add(time.Minute))
			if p2 := PlanSegment(again); !p2.Empty() {
				t.Errorf("second plan not empty: create %d update %d status %d delete %d events %d",
					len(p2.Create), len(p2.Update), len(p2.UpdateStatus), len(p2.Delete), len(p2.Events))
			}
		})
	}
}

func TestPlanSegmentChanges(t *testing.T) {
	base := input(seg(), vmi("vm-a", 0, status("02:00:00:00:00:01", "10.20.100.10")))
	eps := converge(base, PlanSegment(base))

	t.Run("empty guest report keeps the IPs", func(t *testing.T) {
		in := input(seg(), vmi("vm-a", 0, status("02:00:00:00:00:01")))
		in.Existing = eps
		if p := PlanSegment(in); !p.Empty() {
			t.Fatalf("plan %+v", p)
		}
	})
	t.Run("node move updates node and VTEP", func(t *testing.T) {
		in := input(seg(), vmi("vm-a", 0, status("02:00:00:00:00:01", "10.20.100.10"), func(v *kubevirt.VMI) { v.Status.NodeName = "n2" }))
		in.Existing = eps
		p := PlanSegment(in)
		if len(p.Update) != 1 || p.Update[0].Spec.NodeName != "n2" || p.Update[0].Spec.VTEP != "192.0.2.12" || len(p.Create)+len(p.Delete) != 0 {
			t.Fatalf("plan %+v", p)
		}
	})
	t.Run("VMI gone deletes its endpoint", func(t *testing.T) {
		in := input(seg())
		in.Existing = eps
		if p := PlanSegment(in); len(p.Delete) != 1 || p.Delete[0].Name != "vm-a-default" {
			t.Fatalf("plan %+v", p)
		}
	})
	t.Run("inputs are not modified", func(t *testing.T) {
		in := input(seg(), vmi("vm-a", 0, ann(nbv1.AnnotationCutover, "active"), status("02:00:00:00:00:01", "10.20.100.11")))
		in.Existing = eps
		before := eps[0].DeepCopy()
		_ = PlanSegment(in)
		if eps[0].Spec.State != before.Spec.State || len(eps[0].Status.Conditions) != len(before.Status.Conditions) {
			t.Fatal("PlanSegment modified an existing endpoint")
		}
	})
}

// TestPlanSegmentContracts: the address rules of config.CheckEndpoint, an
// unusable VTEP annotation, one spelling of an IP, and a refused segment.
func TestPlanSegmentContracts(t *testing.T) {
	withGW := seg()
	withGW.GatewayAddress = "10.20.100.1/24"
	t.Run("addresses no VM can have are Rejected naming the rule", func(t *testing.T) {
		in := input(withGW,
			vmi("net", 0, ips("10.20.100.0")), vmi("bcast", 1, ips("10.20.100.255")), vmi("gw", 2, ips("10.20.100.1")),
			vmi("v6net", 3, ips("2001:db8:100::")), vmi("ok", 4, ips("10.20.100.2, 2001:db8:100::ffff:ffff:ffff:ffff")))
		p := PlanSegment(in)
		want := map[string]nbv1.RefusalReason{"net-default": nbv1.ReasonNetworkAddress, "bcast-default": nbv1.ReasonBroadcastAddress,
			"gw-default": nbv1.ReasonGatewayAddress, "v6net-default": nbv1.ReasonNetworkAddress}
		for _, e := range p.Create {
			c := meta.FindStatusCondition(e.Status.Conditions, nbv1.ConditionRejected)
			if reason, refused := want[e.Name]; refused {
				if c == nil || c.Reason != string(reason) || !strings.Contains(c.Message, e.Spec.IPs[0]) {
					t.Errorf("%s: %+v, want Rejected %s naming %s", e.Name, c, reason, e.Spec.IPs[0])
				}
			} else if c != nil {
				t.Errorf("%s refused: %+v", e.Name, c)
			}
		}
		if p.Counts.Refused != 4 || len(p.Events) != 4 {
			t.Errorf("counts %+v, events %d", p.Counts, len(p.Events))
		}
	})
	t.Run("IPv4-mapped IPv6 is the IPv4 address, so the claim conflicts", func(t *testing.T) {
		p := PlanSegment(input(seg(), vmi("a", 0, ips("10.20.100.10")), vmi("b", 1, ips("::ffff:10.20.100.10"))))
		eps := converge(input(seg()), p)
		if b := find(eps, "b-default"); b.Spec.IPs[0] != "10.20.100.10" ||
			meta.FindStatusCondition(b.Status.Conditions, nbv1.ConditionConflict) == nil {
			t.Fatalf("b: %+v %+v", b.Spec.IPs, b.Status.Conditions)
		}
	})
	t.Run("bad VTEP annotation: reported, last good VTEP kept, never copied", func(t *testing.T) {
		in := input(seg(), vmi("a", 0, ips("10.20.100.10"), ann(nbv1.AnnotationCutover, "active")))
		eps := converge(in, PlanSegment(in))
		in.Existing = eps
		in.VTEPs = map[string]string{}
		in.VTEPErrors = map[string]string{"n1": `node n1: annotation netbridge.io/vtep="bogus" is not an IP address`}
		p := PlanSegment(in)
		eps = converge(in, p)
		a := find(eps, "a-default")
		c := meta.FindStatusCondition(a.Status.Conditions, nbv1.ConditionDegraded)
		if a.Spec.VTEP != "192.0.2.11" || a.Spec.State != nbv1.StateActive || c == nil || c.Reason != string(nbv1.ReasonInvalidVTEP) ||
			!strings.Contains(c.Message, `"bogus"`) || !strings.Contains(c.Message, "192.0.2.11") {
			t.Fatalf("spec %+v, degraded %+v", a.Spec, c)
		}
		// A new endpoint on that node gets no VTEP rather than the bad text.
		in.VMIs = append(in.VMIs, vmi("b", 1, ips("10.20.100.11")))
		eps = converge(in, PlanSegment(in))
		if b := find(eps, "b-default"); b.Spec.VTEP != "" || meta.FindStatusCondition(b.Status.Conditions, nbv1.ConditionDegraded) == nil {
			t.Fatalf("b: %+v %+v", b.Spec, b.Status.Conditions)
		}
		// Fixed annotation: the condition goes away.
		in.Existing = eps
		in.VTEPs, in.VTEPErrors = map[string]string{"n1": "192.0.2.99"}, nil
		eps = converge(in, PlanSegment(in))
		if a := find(eps, "a-default"); a.Spec.VTEP != "192.0.2.99" || meta.FindStatusCondition(a.Status.Conditions, nbv1.ConditionDegraded) != nil {
			t.Fatalf("after fix: %+v %+v", a.Spec, a.Status.Conditions)
		}
	})
	t.Run("a segment the validation refuses is never programmed", func(t *testing.T) {
		bad := seg()
		bad.Subnets = []string{"10.0.0.0/8"}
		p := PlanSegment(input(bad, vmi("a", 0, ips("10.1.2.3"), ann(nbv1.AnnotationCutover, "active"))))
		e := p.Create[0]
		c := meta.FindStatusCondition(e.Status.Conditions, nbv1.ConditionRejected)
		if e.Spec.State != nbv1.StateStaged || c == nil || c.Reason != string(nbv1.ReasonBridgeConfigNotReady) || !strings.Contains(c.Message, "10.0.0.0/8") {
			t.Fatalf("state %s, %+v", e.Spec.State, c)
		}
	})
	t.Run("interface names that joined with '-' would collide get distinct endpoints", func(t *testing.T) {
		a := vmi("a-b", 0, ips("10.20.100.10"))
		a.Spec.Domain.Devices.Interfaces = []kubevirt.NamedItem{{Name: "c"}}
		b := vmi("a", 1, ips("10.20.100.11"))
		b.Spec.Domain.Devices.Interfaces = []kubevirt.NamedItem{{Name: "b-c"}}
		p := PlanSegment(input(seg(), a, b))
		if len(p.Create) != 2 || p.Create[0].Name == p.Create[1].Name {
			t.Fatalf("created %d: %v", len(p.Create), p.Create)
		}
	})
}

// TestPlanSegmentHoldsActiveOnInvalidConfig: an edit that makes the
// BridgeConfig invalid never withdraws working endpoints; new ones wait.
func TestPlanSegmentHoldsActiveOnInvalidConfig(t *testing.T) {
	in := input(seg(), vmi("a", 0, ips("10.20.100.10"), ann(nbv1.AnnotationCutover, "active")))
	eps := converge(in, PlanSegment(in))
	if find(eps, "a-default").Spec.State != nbv1.StateActive {
		t.Fatal("setup: a not Active")
	}
	in.Existing = eps
	in.Refused = `InvalidSpec: spec.segments[1].subnets[0]: Invalid value: "10.20.100.128/25": overlaps 10.20.100.0/24`
	in.VMIs[0].Annotations[nbv1.AnnotationIPs] = "10.20.100.99" // changes wait for a valid spec
	in.VMIs = append(in.VMIs, vmi("b", 1, ips("10.20.100.11"), ann(nbv1.AnnotationCutover, "active")))
	p := PlanSegment(in)
	eps = converge(in, p)
	a, b := find(eps, "a-default"), find(eps, "b-default")
	c := meta.FindStatusCondition(a.Status.Conditions, nbv1.ConditionDegraded)
	if a.Spec.State != nbv1.StateActive || a.Spec.IPs[0] != "10.20.100.10" || c == nil || c.Reason != string(nbv1.ReasonBridgeConfigNotReady) ||
		!strings.Contains(c.Message, "10.20.100.128/25") || meta.FindStatusCondition(a.Status.Conditions, nbv1.ConditionRejected) != nil {
		t.Fatalf("a not held: %+v %+v", a.Spec, a.Status.Conditions)
	}
	if b.Spec.State != nbv1.StateStaged || !meta.IsStatusConditionTrue(b.Status.Conditions, nbv1.ConditionRejected) {
		t.Fatalf("b activated under an invalid config: %+v %+v", b.Spec, b.Status.Conditions)
	}
	if p.Counts.Active != 1 || p.Counts.Refused != 1 {
		t.Fatalf("counts %+v", p.Counts)
	}
	// Rollback is still honoured.
	in.Existing = eps
	in.VMIs[0].Annotations[nbv1.AnnotationCutover] = nbv1.CutoverRollback
	if a := find(converge(in, PlanSegment(in)), "a-default"); a.Spec.State != nbv1.StateWithdrawn {
		t.Fatalf("rollback ignored: %s", a.Spec.State)
	}
}

// TestPendingConditionSaysWhy: an endpoint the active gateway bridges but
// does not advertise carries the gateway's reason (phase Extended, no IPv6
// peer), not only "waiting".
func TestPendingConditionSaysWhy(t *testing.T) {
	ep := &nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "vm1"},
		Spec: nbv1.BridgeEndpointSpec{IPs: []string{"10.20.100.50"}, State: nbv1.StateActive}}
	gw := &GatewayView{Name: "gw-a", Advertised: map[string]bool{}, Endpoints: map[string]nbv1.GatewayEndpointStatus{
		"default/vm1": {Namespace: "default", Name: "vm1", FDBProgrammed: true,
			Message: "10.20.100.50 is bridged, not advertised: segment dc1.app is in phase Extended, host routes are advertised from phase Routed on"}}}
	conds := gatewayConditions(gw, ep)
	if len(conds) == 0 || conds[0].Type != nbv1.ConditionAdvertised || conds[0].Status != metav1.ConditionFalse ||
		conds[0].Message != "waiting for gateway gw-a: "+gw.Endpoints["default/vm1"].Message {
		t.Fatalf("conditions: %+v", conds)
	}
}
