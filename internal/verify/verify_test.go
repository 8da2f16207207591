package verify

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

func TestEndpoint(t *testing.T) {
	ep := &nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "app01-default"},
		Spec: nbv1.BridgeEndpointSpec{IPs: []string{"10.20.100.10"}, MAC: "02:00:00:00:00:01", VTEP: "192.0.2.11", State: nbv1.StateActive}}
	gw := func(adv []string, e ...nbv1.GatewayEndpointStatus) *nbv1.BridgeGateway {
		return &nbv1.BridgeGateway{Status: nbv1.BridgeGatewayStatus{Advertised: adv, Endpoints: e}}
	}
	listed := func(fdb, advertised, reachable bool) nbv1.GatewayEndpointStatus {
		return nbv1.GatewayEndpointStatus{Namespace: "vms", Name: "app01-default", FDBProgrammed: fdb, Advertised: advertised, Reachable: reachable}
	}
	cases := []struct {
		name            string
		in              Input
		route, fdb, arp Verdict
		reason, problem string
	}{
		{"all pass", Input{ActiveGateway: "gw1", Gateway: gw([]string{"10.20.100.10/32"}, listed(true, true, true))}, OK, OK, OK, "", ""},
		{"no active gateway", Input{}, NotChecked, NotChecked, NotChecked, nbv1.ReasonNotReported, "no active gateway"},
		{"gateway without status", Input{ActiveGateway: "gw1"}, NotChecked, NotChecked, NotChecked, nbv1.ReasonNotReported, "no BridgeGateway status"},
		{"endpoint not listed", Input{ActiveGateway: "gw1", Gateway: gw(nil)}, NotChecked, NotChecked, NotChecked, nbv1.ReasonNotReported, "does not list this endpoint"},
		{"route missing", Input{ActiveGateway: "gw1", Gateway: gw(nil, listed(true, true, true))}, No, OK, OK, nbv1.ReasonRouteNotAdvertised, "not in gw1's advertised prefixes"},
		{"route not checked when the segment advertises none", Input{ActiveGateway: "gw1", Gateway: gw(nil, listed(true, false, true)), SkipRoute: true},
			NotChecked, OK, OK, "", ""},
		{"FDB then ARP: the first names the reason", Input{ActiveGateway: "gw1", Gateway: gw(nil, listed(false, false, false)), SkipRoute: true},
			NotChecked, No, No, nbv1.ReasonFDBNotProgrammed, "did not answer ARP"},
		{"unreachable", Input{ActiveGateway: "gw1", Gateway: gw([]string{"10.20.100.10/32"}, listed(true, true, false))}, OK, OK, No, nbv1.ReasonNotReachable, "did not answer ARP"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.in.Endpoint, c.in.Segment = ep, "dc1.app"
			r := Endpoint(c.in)
			if r.Route != c.route || r.FDB != c.fdb || r.ARP != c.arp || r.Reason != c.reason {
				t.Errorf("got route=%s fdb=%s arp=%s reason=%q, want %s %s %s %q", r.Route, r.FDB, r.ARP, r.Reason, c.route, c.fdb, c.arp, c.reason)
			}
			if r.Passed() != (c.problem == "") || !strings.Contains(strings.Join(r.Problems, "; "), c.problem) {
				t.Errorf("problems %q, want one containing %q", r.Problems, c.problem)
			}
		})
	}
}
