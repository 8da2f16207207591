package controller

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

func bcfg(name string, age int, sel map[string]string, segs ...nbv1.Segment) *nbv1.BridgeConfig {
	return &nbv1.BridgeConfig{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))},
		Spec:       nbv1.BridgeConfigSpec{GatewaySelector: metav1.LabelSelector{MatchLabels: sel}, Segments: segs},
	}
}

func sg(name string, vlan, vni int32, subnet string) nbv1.Segment {
	return nbv1.Segment{Name: name, VLANID: vlan, VNI: vni, Subnets: []string{subnet}}
}

func TestCheckBridgeConfigs(t *testing.T) {
	rackA := map[string]string{"rack": "a"}
	rackB := map[string]string{"rack": "b"}
	gw := map[string]string{"netbridge.io/gateway": "true"}
	tests := []struct {
		name  string
		bcs   []*nbv1.BridgeConfig
		nodes []labels.Set
		want  map[string]string // name -> reason ("" accepted)
		names map[string]string // name -> other config named in the message
	}{
		{
			name:  "same VLAN, identical selectors, no nodes yet",
			bcs:   []*nbv1.BridgeConfig{bcfg("b", 1, gw, sg("x", 100, 2, "10.2.0.0/24")), bcfg("a", 0, gw, sg("y", 100, 1, "10.1.0.0/24"))},
			want:  map[string]string{"a": "", "b": ReasonVLANConflict},
			names: map[string]string{"b": "a"},
		},
		{
			name:  "same VLAN on disjoint racks",
			bcs:   []*nbv1.BridgeConfig{bcfg("a", 0, rackA, sg("y", 100, 1, "10.1.0.0/24")), bcfg("b", 1, rackB, sg("x", 100, 2, "10.2.0.0/24"))},
			nodes: []labels.Set{{"rack": "a"}, {"rack": "b"}},
			want:  map[string]string{"a": "", "b": ""},
		},
		{
			name:  "same VNI, a node matches both selectors",
			bcs:   []*nbv1.BridgeConfig{bcfg("a", 0, rackA, sg("y", 100, 7, "10.1.0.0/24")), bcfg("b", 1, gw, sg("x", 200, 7, "10.2.0.0/24"))},
			nodes: []labels.Set{{"rack": "a", "netbridge.io/gateway": "true"}},
			want:  map[string]string{"a": "", "b": ReasonVNIConflict},
			names: map[string]string{"b": "a"},
		},
		{
			name:  "overlapping subnets anywhere",
			bcs:   []*nbv1.BridgeConfig{bcfg("a", 0, rackA, sg("y", 100, 1, "10.1.0.0/16")), bcfg("b", 1, rackB, sg("x", 200, 2, "10.1.5.0/24"))},
			want:  map[string]string{"a": "", "b": ReasonSubnetOverlap},
			names: map[string]string{"b": "a"},
		},
		{
			name: "a refused config blocks nobody; same age ordered by name",
			bcs: []*nbv1.BridgeConfig{bcfg("a", 0, gw, sg("y", 100, 1, "10.1.0.0/24")), bcfg("c", 0, gw, sg("x", 100, 2, "10.2.0.0/24")),
				bcfg("d", 2, rackA, sg("z", 300, 3, "10.2.0.0/24"))},
			want: map[string]string{"a": "", "c": ReasonVLANConflict, "d": ""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckBridgeConfigs(tc.bcs, tc.nodes)
			for name, reason := range tc.want {
				if got[name].Reason != reason {
					t.Errorf("%s: reason %q (%s), want %q", name, got[name].Reason, got[name].Message, reason)
				}
			}
			for name, other := range tc.names {
				if !strings.Contains(got[name].Message, "BridgeConfig "+other) {
					t.Errorf("%s: message %q does not name %s", name, got[name].Message, other)
				}
			}
		})
	}
}

func TestDesiredConfigStatus(t *testing.T) {
	bc := bcfg("a", 0, nil, sg("x", 1, 1, "10.1.0.0/24"), sg("y", 2, 2, "10.2.0.0/24"))
	bc.Generation = 3
	st := DesiredConfigStatus(bc, Verdict{}, map[string]SegmentObservation{
		"x": {ActiveGateway: "gw2", StandbyGateways: []string{"gw1"}, Counts: nbv1.EndpointCounts{Staged: 1, Active: 2}},
		"y": {ActiveGateway: "gw1", Counts: nbv1.EndpointCounts{Withdrawn: 1, Refused: 1}},
	}, t0)
	if st.ActiveGateways != "gw1,gw2" || st.EndpointCount != 4 || st.ObservedGeneration != 3 || len(st.Segments) != 2 {
		t.Fatalf("status %+v", st)
	}
	bc.Status = st
	again := DesiredConfigStatus(bc, Verdict{}, map[string]SegmentObservation{
		"x": {ActiveGateway: "gw2", StandbyGateways: []string{"gw1"}, Counts: nbv1.EndpointCounts{Staged: 1, Active: 2}},
		"y": {ActiveGateway: "gw1", Counts: nbv1.EndpointCounts{Withdrawn: 1, Refused: 1}},
	}, metav1.NewTime(t0.Add(time.Hour)))
	if again.Conditions[0].LastTransitionTime != t0 {
		t.Fatalf("transition time moved without a transition")
	}
}
