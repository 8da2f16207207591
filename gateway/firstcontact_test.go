package gateway

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/netbridge-io/netbridge/vlan"
)

// TestRefusedSegmentNeverAttached: standalone mode attaches every segment,
// but never one that is refused (a missing uplink): "segment attached"
// was a lie.
func TestRefusedSegmentNeverAttached(t *testing.T) {
	d := desired(StateActive, vmIP)
	missingUplinks(&d, "edge1", func(string) bool { return false })
	if !strings.Contains(d.Segments[0].Error, "uplink uplink0: no such interface on node edge1") {
		t.Fatalf("error does not name the interface: %q", d.Segments[0].Error)
	}
	for _, elected := range []bool{false, true} {
		got := attachments(RoleGateway, d, elected, map[SegmentKey]bool{app: true}, map[SegmentKey]bool{app: true})
		if got[app] {
			t.Errorf("elected=%v: refused segment attached", elected)
		}
	}
	// Its endpoints say why they are not advertised: not "pending".
	p := &pass{d: d, attached: map[SegmentKey]bool{}, plan: buildPlan(d, runtimeView{Role: RoleGateway, LocalVTEP: gwVT})}
	p.segErr = segmentErrors(d, p.plan, vlan.Result{}, nil)
	a := &Agent{opts: Options{Role: RoleGateway}}
	eps := a.endpointReports(p, segmentReports(RoleGateway, p), nil)
	if len(eps) != 1 || eps[0].Advertised || !strings.Contains(eps[0].Message, "not bridged: segment dc1.app: uplink uplink0: no such interface") {
		t.Fatalf("endpoint of a refused segment: %+v", eps)
	}
}

// TestPhasesAndHostRoutes: only Routed advertises host routes; Extended
// bridges the VM and says why it is not advertised; Completed advertises
// the aggregate (when asked) and no host route.
func TestPhasesAndHostRoutes(t *testing.T) {
	// Settled: the aggregate is already advertised (the make-before-break
	// handover between host routes and aggregate is in handover_test.go).
	v := runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear},
		Advertised: map[netip.Prefix]bool{netip.MustParsePrefix("10.20.100.0/24"): true}}
	for _, tc := range []struct {
		phase      Phase
		aggregate  bool
		wantRoutes []string
		wantWhy    string
	}{
		{PhaseExtended, false, nil, "phase Extended, host routes are advertised from phase Routed on"},
		{PhaseRouted, false, []string{"10.20.100.50/32"}, ""},
		{PhaseCompleted, true, []string{"10.20.100.0/24"}, ""},
	} {
		d := desired(StateActive, vmIP)
		d.Segments[0].Phase = tc.phase
		d.BGP.Aggregate = tc.aggregate
		p := buildPlan(d, v)
		var routes []string
		for _, r := range p.BGP.Routes {
			routes = append(routes, r.Prefix.String())
		}
		if strings.Join(routes, ",") != strings.Join(tc.wantRoutes, ",") {
			t.Errorf("%s: routes %v, want %v", tc.phase, routes, tc.wantRoutes)
		}
		var why []string
		for _, u := range p.Unadvertised {
			why = append(why, u.Message)
		}
		if (tc.wantWhy == "") != (len(why) == 0) || (tc.wantWhy != "" && !strings.Contains(why[0], tc.wantWhy)) {
			t.Errorf("%s: unadvertised %q, want %q", tc.phase, why, tc.wantWhy)
		}
		if tc.phase == PhaseExtended && (len(p.Segments) != 1 || len(p.Segments[0].Endpoints) != 1 || len(p.Segments[0].Endpoints[0].IPs) != 1) {
			t.Errorf("Extended must still bridge the VM: %+v", p.Segments)
		}
	}
}

// TestIPv6WithOnlyIPv4PeersSaysWhy: the /128 is not advertised, and the
// plan says why instead of leaving the endpoint pending in silence.
func TestIPv6WithOnlyIPv4PeersSaysWhy(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8:100::50")
	d := desired(StateActive, vmIP, v6)
	d.Segments[0].Subnets = append(d.Segments[0].Subnets, netip.MustParsePrefix("2001:db8:100::/64"))
	// Both addresses passed the duplicate-address gate (IPv6 goes through
	// it too).
	cleared := map[netip.Addr]probeVerdict{vmIP: verdictClear, v6: verdictClear}
	v := planView(d, RoleGateway, gwVT, map[SegmentKey]bool{app: true}, cleared)
	p := buildPlan(d, v)
	if len(p.Unadvertised) != 1 || p.Unadvertised[0].IP != v6 || p.Unadvertised[0].Reason != reasonNoIPv6Peer ||
		!strings.Contains(p.Unadvertised[0].Message, "every BGP peer is IPv4") {
		t.Fatalf("unadvertised: %+v", p.Unadvertised)
	}
	// With an IPv6 peer the /128 goes out and nothing is said.
	d.BGP.Peers = append(d.BGP.Peers, Peer{Address: netip.MustParseAddr("2001:db8::1"), ASN: 65000})
	p = buildPlan(d, planView(d, RoleGateway, gwVT, map[SegmentKey]bool{app: true}, cleared))
	if len(p.Unadvertised) != 0 || len(p.Advertised["default/vm1-default"]) != 2 {
		t.Fatalf("with an IPv6 peer: unadvertised %+v, advertised %v", p.Unadvertised, p.Advertised)
	}
}

// TestNoticesLoggedOnce: each refusal is logged once with endpoint, IP and
// rule, each refused segment once with its error, and each clears once.
func TestNoticesLoggedOnce(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(core)
	r := Report{
		Segments:  []SegmentReport{{Key: app, Error: "segment dc1.app: uplink eth9: no such interface on node edge1"}},
		Refused:   []RefusedReport{{Namespace: "default", Endpoint: "vm9", IP: netip.MustParseAddr("10.20.100.255"), Reason: "BroadcastAddress", Message: "IP 10.20.100.255 is the broadcast address"}},
		Endpoints: []EndpointReport{{Namespace: "default", Name: "vm1", Message: "2001:db8:100::50 is not advertised: every BGP peer is IPv4"}},
	}
	var n notices
	n.log(log, r)
	n.log(log, r)
	count := func(event string) int { return logs.FilterField(zap.String("event", event)).Len() }
	for _, ev := range []string{"segmentRefused", "endpointRefused", "endpointNotAdvertised"} {
		if c := count(ev); c != 1 {
			t.Errorf("%s logged %d times, want once", ev, c)
		}
	}
	ref := logs.FilterField(zap.String("event", "endpointRefused")).All()[0].ContextMap()
	if ref["endpoint"] != "default/vm9" || ref["ip"] != "10.20.100.255" || ref["rule"] != "BroadcastAddress" {
		t.Errorf("refusal fields: %v", ref)
	}
	seg := logs.FilterField(zap.String("event", "segmentRefused")).All()[0].ContextMap()
	if !strings.Contains(seg["error"].(string), "eth9") {
		t.Errorf("segment refusal does not name the interface: %v", seg)
	}
	n.log(log, Report{Segments: []SegmentReport{{Key: app, Programmed: true}}})
	n.log(log, Report{Segments: []SegmentReport{{Key: app, Programmed: true}}})
	for _, ev := range []string{"segmentRecovered", "endpointRefusalCleared", "endpointNoticeCleared"} {
		if c := count(ev); c != 1 {
			t.Errorf("%s logged %d times, want once", ev, c)
		}
	}
}

// TestSegmentErrorMetric: a refused segment shows in the metrics by name,
// and the agent is degraded while it lasts.
func TestSegmentErrorMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.observeReport(Report{Segments: []SegmentReport{{Key: app, Error: "uplink eth9 missing"}}, Degraded: true})
	if got := testutil.ToFloat64(m.segmentError.WithLabelValues("dc1.app")); got != 1 {
		t.Fatalf("segment_error{dc1.app} = %v", got)
	}
	if testutil.ToFloat64(m.degraded) != 1 {
		t.Fatal("not degraded")
	}
	m.observeReport(Report{Segments: []SegmentReport{{Key: app, Programmed: true}}})
	if n := testutil.CollectAndCount(m.segmentError); n != 0 {
		t.Fatalf("segment_error still has %d series after recovery", n)
	}
}
