package gateway

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// TestTranslateOneValidationPath: a BridgeConfig that internal/config
// refuses is never programmed, and the problem names the field and value.
func TestTranslateOneValidationPath(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*nbv1.BridgeConfig)
		want   string
	}{
		"community out of range": {func(bc *nbv1.BridgeConfig) { bc.Spec.Segments[0].Communities = []string{"70000:1"} },
			"spec.segments[0].communities[0]"},
		"host bits set": {func(bc *nbv1.BridgeConfig) { bc.Spec.Segments[0].Subnets = []string{"10.20.100.7/24"} },
			"10.20.100.7/24"},
		"default route as segment": {func(bc *nbv1.BridgeConfig) { bc.Spec.Segments[0].Subnets = []string{"0.0.0.0/0"} },
			"0.0.0.0/0"},
		"gateway address outside the segment": {func(bc *nbv1.BridgeConfig) { bc.Spec.Segments[0].GatewayAddress = "10.99.0.1/24" },
			"spec.segments[0].gatewayAddress"},
		"router id that cannot be one": {func(bc *nbv1.BridgeConfig) { bc.Spec.BGP.RouterID = "0.0.0.0" },
			"spec.bgp.routerID"},
		"interface name Linux refuses": {func(bc *nbv1.BridgeConfig) { bc.Spec.Uplink.Interface = "eth/1" },
			"spec.uplink.interface"},
	} {
		t.Run(name, func(t *testing.T) {
			bc := bridgeConfig(accessSegment("app", 10100, "10.20.100.0/24", nbv1.PhaseRouted))
			tc.mutate(&bc)
			in := inputs(bc)
			in.NodeName, in.Role, in.LocalVTEP = "gw1", RoleGateway, gwVT
			d, problems := translate(in)
			if len(d.Segments) != 0 || d.BGP != nil {
				t.Fatalf("a refused BridgeConfig was translated: %+v", d)
			}
			if len(problems) != 1 || !strings.Contains(problems[0], tc.want) {
				t.Fatalf("problems %q do not name %q", problems, tc.want)
			}
		})
	}
}

// TestKeepLastValid: a bad edit (or one the controller refused) of a
// BridgeConfig that works keeps the version in force, and says so.
func TestKeepLastValid(t *testing.T) {
	good := bridgeConfig(accessSegment("app", 10100, "10.20.100.0/24", nbv1.PhaseRouted))
	good.Generation = 1
	bad := *good.DeepCopy()
	bad.Generation = 2
	bad.Spec.Segments[0].Communities = []string{"65000:99999"}
	refused := *good.DeepCopy()
	refused.Generation = 3
	refused.Status.Conditions = []metav1.Condition{{Type: nbv1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: "VLANConflict", Message: "vlan 100 is claimed by dc0", ObservedGeneration: 3}}

	use, valid, problems := keepLastValid([]nbv1.BridgeConfig{good}, nil)
	if len(problems) != 0 || use[0].Generation != 1 || valid["dc1"].Generation != 1 {
		t.Fatalf("a valid config: use %v, problems %v", use, problems)
	}
	for _, next := range []nbv1.BridgeConfig{bad, refused} {
		use, valid2, problems := keepLastValid([]nbv1.BridgeConfig{next}, valid)
		if use[0].Generation != 1 || valid2["dc1"].Generation != 1 {
			t.Fatalf("generation %d: the valid generation 1 must stay in force, got %d", next.Generation, use[0].Generation)
		}
		if len(problems) != 1 || !strings.Contains(problems[0], "keeping generation 1") {
			t.Fatalf("generation %d: problems %q", next.Generation, problems)
		}
	}
	// Never valid: passed on, and translate refuses it.
	use, _, problems = keepLastValid([]nbv1.BridgeConfig{bad}, nil)
	if len(problems) != 0 || use[0].Generation != 2 {
		t.Fatalf("never valid: %v %v", use, problems)
	}
}

// TestPlanRefusesAddressesNoVMCanHave: an endpoint claiming its subnet's
// network or broadcast address, or the segment's gateway address, is
// refused by the plan naming the rule; its other IP is advertised.
func TestPlanRefusesAddressesNoVMCanHave(t *testing.T) {
	for _, tc := range []struct {
		ip     string
		reason nbv1.RefusalReason
	}{
		{"10.20.100.0", nbv1.ReasonNetworkAddress},
		{"10.20.100.255", nbv1.ReasonBroadcastAddress},
		{"10.20.100.1", nbv1.ReasonGatewayAddress},
		{"10.20.101.5", nbv1.ReasonOutsideSubnet},
	} {
		d := desired(StateActive, netip.MustParseAddr(tc.ip), vmIP)
		d.Segments[0].GatewayAddress = netip.MustParsePrefix("10.20.100.1/24")
		p := buildPlan(d, runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true},
			Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear, netip.MustParseAddr(tc.ip): verdictClear}})
		if len(p.Refused) != 1 || p.Refused[0].Reason != string(tc.reason) || !strings.Contains(p.Refused[0].Message, tc.ip) {
			t.Fatalf("%s: refused %+v, want %s", tc.ip, p.Refused, tc.reason)
		}
		if adv := p.Advertised["default/vm1-default"]; len(adv) != 1 || adv[0].Addr() != vmIP {
			t.Fatalf("%s: advertised %v, want only %s", tc.ip, adv, vmIP)
		}
	}
}
