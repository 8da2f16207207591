package v1alpha1_test

import (
	"fmt"
	"slices"
	"testing"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

func TestPreferredGateway(t *testing.T) {
	three := []string{"gw1", "gw2", "gw3"}
	for _, c := range []struct {
		seg   string
		cands []string
		want  string
	}{
		{"app", nil, ""},
		{"app", []string{"gw2"}, "gw2"},
		// Fixed answers (also computed outside Go): every gateway and
		// netbridgectl must agree, across releases too — a changed hash
		// would move every segment on upgrade.
		{"s0", three, "gw1"},
		{"s1", three, "gw3"},
		{"s2", three, "gw2"},
		{"db", three, "gw3"},
		{"db", []string{"gw3", "gw2", "gw1"}, "gw3"}, // order does not matter
		{"db", []string{"gw1", "gw2"}, "gw1"},        // gw3 gone: only its segments move
		{"s2", []string{"gw1", "gw2"}, "gw2"},
	} {
		k := nbv1.SegmentKey{BridgeConfig: "lab", Segment: c.seg}
		if got := nbv1.PreferredGateway(k, c.cands); got != c.want {
			t.Errorf("PreferredGateway(%s, %v) = %q, want %q", k, c.cands, got, c.want)
		}
	}
}

// TestPreferredGatewaySpreadAndStability: 1,000 segments over 3 gateways
// land within ±15% of a third each; removing one gateway moves only its
// segments, and the moved ones split between the others.
func TestPreferredGatewaySpreadAndStability(t *testing.T) {
	all := []string{"gw-a", "gw-b", "gw-c"}
	count := map[string]int{}
	moved := map[string]int{}
	for i := 0; i < 1000; i++ {
		k := nbv1.SegmentKey{BridgeConfig: "dc1", Segment: fmt.Sprintf("seg%d", i)}
		p := nbv1.PreferredGateway(k, all)
		count[p]++
		without := nbv1.PreferredGateway(k, slices.DeleteFunc(slices.Clone(all), func(s string) bool { return s == "gw-c" }))
		switch {
		case p != "gw-c" && without != p:
			t.Fatalf("%s moved from %s to %s when gw-c left", k, p, without)
		case p == "gw-c":
			moved[without]++
		}
	}
	t.Logf("spread_1000=%d/%d/%d moved_from_c=%d/%d", count["gw-a"], count["gw-b"], count["gw-c"], moved["gw-a"], moved["gw-b"])
	for _, g := range all {
		if count[g] < 283 || count[g] > 383 {
			t.Errorf("%s prefers %d of 1000 segments, want 333±50", g, count[g])
		}
	}
	if n := moved["gw-a"] + moved["gw-b"]; moved["gw-a"] < n/3 || moved["gw-b"] < n/3 {
		t.Errorf("gw-c's %d segments split %d/%d, want roughly even", n, moved["gw-a"], moved["gw-b"])
	}
}
