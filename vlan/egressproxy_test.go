package vlan

import (
	"slices"
	"testing"
)

func TestPlanProxyPorts(t *testing.T) {
	for _, tc := range []struct {
		name        string
		want, prev  []string
		wantOn, off []string
	}{
		{name: "fresh", want: []string{"b", "a", "a"}, wantOn: []string{"a", "b"}},
		{name: "in place: nothing", want: []string{"a"}, prev: []string{"a"}},
		{name: "one leaves, one comes", want: []string{"b"}, prev: []string{"a"}, wantOn: []string{"b"}, off: []string{"a"}},
		{name: "all off", prev: []string{"a", "b"}, off: []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			on, off := planProxyPorts(tc.want, tc.prev)
			if !slices.Equal(on, tc.wantOn) || !slices.Equal(off, tc.off) {
				t.Errorf("on %v off %v, want on %v off %v", on, off, tc.wantOn, tc.off)
			}
		})
	}
}
