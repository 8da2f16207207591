package vlan

import (
	"net/netip"
	"slices"
	"testing"
)

func TestPlanEgressProxy(t *testing.T) {
	a, b := netip.MustParseAddr("10.20.100.50"), netip.MustParseAddr("10.20.100.51")
	const macA, macB = "02:00:00:00:00:50", "02:00:00:00:00:51"
	want := []EgressProxy4{{Bridge: "br0", Port: "p", Hosts: []EgressHost{{a, macA}, {b, macB}}}}
	for _, tc := range []struct {
		name   string
		want   []EgressProxy4
		actual map[egressProxyKey]string
		prev   map[egressProxyKey]struct{}
		ops    []egressNeighOp
	}{
		{name: "fresh", want: want,
			ops: []egressNeighOp{{bridge: "br0", ip: a, mac: macA}, {bridge: "br0", ip: b, mac: macB}}},
		{name: "in place: nothing", want: want,
			actual: map[egressProxyKey]string{{"br0", a}: macA, {"br0", b}: macB}},
		{name: "moved MAC rewritten", want: want,
			actual: map[egressProxyKey]string{{"br0", a}: macB, {"br0", b}: macB},
			ops:    []egressNeighOp{{bridge: "br0", ip: a, mac: macA}}},
		{name: "ours removed, others' kept",
			actual: map[egressProxyKey]string{{"br0", a}: macA, {"br0", b}: macB},
			prev:   map[egressProxyKey]struct{}{{"br0", a}: {}},
			ops:    []egressNeighOp{{del: true, bridge: "br0", ip: a}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := planEgressProxy(tc.want, tc.actual, tc.prev); !slices.Equal(got, tc.ops) {
				t.Errorf("plan %+v, want %+v", got, tc.ops)
			}
		})
	}
}
