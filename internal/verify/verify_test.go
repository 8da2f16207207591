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
	extended := &nbv1.Segment{Name: "app", Phase: nbv1.PhaseExtended}
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
		{"route not checked when the segment advertises none", Input{ActiveGateway: "gw1", Gateway: gw(nil, listed(true, false, true)), Config: &nbv1.BridgeConfig{}, Spec: extended},
			NotChecked, OK, OK, "", ""},
		{"FDB then ARP: the first names the reason", Input{ActiveGateway: "gw1", Gateway: gw(nil, listed(false, false, false)), Config: &nbv1.BridgeConfig{}, Spec: extended},
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

func TestChecksFor(t *testing.T) {
	bgp := &nbv1.BGPSpec{}
	cfg := func(b *nbv1.BGPSpec, adv *nbv1.AdvertiseSpec) *nbv1.BridgeConfig {
		return &nbv1.BridgeConfig{Spec: nbv1.BridgeConfigSpec{BGP: b, Advertise: adv}}
	}
	seg := func(p nbv1.SegmentPhase) *nbv1.Segment { return &nbv1.Segment{Name: "app", Phase: p} }
	cases := []struct {
		name  string
		bc    *nbv1.BridgeConfig
		seg   *nbv1.Segment
		route bool
	}{
		{"Routed, BGP, hostRoutes by default", cfg(bgp, nil), seg(nbv1.PhaseRouted), true},
		{"Routed, BGP, hostRoutes on", cfg(bgp, &nbv1.AdvertiseSpec{HostRoutes: true}), seg(nbv1.PhaseRouted), true},
		{"Routed, hostRoutes off", cfg(bgp, &nbv1.AdvertiseSpec{}), seg(nbv1.PhaseRouted), false},
		{"Routed, BGP off", cfg(nil, nil), seg(nbv1.PhaseRouted), false},
		{"Extended (the default phase)", cfg(bgp, nil), seg(""), false},
		{"Extended", cfg(bgp, nil), seg(nbv1.PhaseExtended), false},
		{"Completed advertises the aggregate", cfg(bgp, nil), seg(nbv1.PhaseCompleted), false},
		{"segment not known: every check", cfg(bgp, nil), nil, true},
		{"config not known: every check", nil, seg(nbv1.PhaseExtended), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ChecksFor(c.bc, c.seg)
			if want := (Checks{Route: c.route, FDB: true, ARP: true}); got != want {
				t.Errorf("ChecksFor = %+v, want %+v", got, want)
			}
		})
	}
}
