package gateway

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
	"github.com/netbridge-io/netbridge/vlan"
)

var (
	app   = SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	gwVT  = netip.MustParseAddr("172.30.0.11")
	n1VT  = netip.MustParseAddr("172.30.0.21")
	n2VT  = netip.MustParseAddr("172.30.0.22")
	vmIP  = netip.MustParseAddr("10.20.100.50")
	vmMAC = mustMAC("52:54:00:00:01:50")
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func desired(state EndpointState, ips ...netip.Addr) Desired {
	return Desired{
		Segments: []Segment{{Key: app, VLANID: 100, VNI: 10100, Subnets: []netip.Prefix{netip.MustParsePrefix("10.20.100.0/24")},
			Uplink: "uplink0", Access: true, MTU: 1450, Phase: PhaseRouted, Candidates: []string{"gw1", "gw2"}, ActiveGatewayVTEP: gwVT}},
		BGP: &BGP{LocalASN: 65010, RouterID: gwVT, StandbyPrepend: 3, HostRoutes: true, Communities: []bgp.Community{65010<<16 | 1},
			Peers: []Peer{{Address: netip.MustParseAddr("172.30.0.1"), ASN: 65000}}},
		Endpoints: []Endpoint{{Namespace: "default", Name: "vm1-default", Segment: app, IPs: ips, MAC: vmMAC, VTEP: n1VT, State: state}},
	}
}

func TestBuildPlan(t *testing.T) {
	outside := netip.MustParseAddr("192.0.2.9")
	tests := []struct {
		name         string
		d            Desired
		v            runtimeView
		wantUplink   string
		wantRoutes   []string
		wantPrepend  uint8
		wantProbes   []netip.Addr
		wantRefused  []string
		wantFlood    []netip.Addr
		wantEndpoint bool
	}{
		{
			name:       "active gateway, cleared IP: attached, advertised, flood to the VM's node",
			d:          desired(StateActive, vmIP),
			v:          runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear}},
			wantUplink: "uplink0", wantRoutes: []string{"10.20.100.50/32"}, wantFlood: []netip.Addr{n1VT}, wantEndpoint: true,
		},
		{
			name:       "standby: VLAN detached, routes prepended",
			d:          desired(StateActive, vmIP),
			v:          runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{}, Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear}},
			wantUplink: "", wantRoutes: []string{"10.20.100.50/32"}, wantPrepend: 3, wantFlood: []netip.Addr{n1VT}, wantEndpoint: true,
		},
		{
			name:       "not probed yet: no route, a probe is asked for",
			d:          desired(StateActive, vmIP),
			v:          runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{}},
			wantUplink: "uplink0", wantProbes: []netip.Addr{vmIP}, wantFlood: []netip.Addr{n1VT}, wantEndpoint: true,
		},
		{
			name:       "duplicate: refused, re-probed, not advertised",
			d:          desired(StateActive, vmIP),
			v:          runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{vmIP: verdictDuplicate}},
			wantUplink: "uplink0", wantProbes: []netip.Addr{vmIP}, wantRefused: []string{"DuplicateAddress"}, wantFlood: []netip.Addr{n1VT}, wantEndpoint: true,
		},
		{
			name:       "IP outside the subnets is refused, never probed",
			d:          desired(StateActive, outside),
			v:          runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{outside: verdictClear}},
			wantUplink: "uplink0", wantRefused: []string{"OutsideSubnet"}, wantFlood: []netip.Addr{n1VT}, wantEndpoint: true,
		},
		{
			name:       "staged endpoint: nothing on the gateway",
			d:          desired(StateStaged, vmIP),
			v:          runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear}},
			wantUplink: "uplink0",
		},
		{
			name:      "node role: flood to the active gateway, VM local so no static entry needed beyond the endpoint",
			d:         desired(StateStaged, vmIP),
			v:         runtimeView{Role: RoleNode, LocalVTEP: n2VT},
			wantFlood: []netip.Addr{gwVT, n1VT}, wantEndpoint: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := buildPlan(tc.d, tc.v)
			if len(p.Segments) != 1 {
				t.Fatalf("segments: %d", len(p.Segments))
			}
			s := p.Segments[0]
			if s.Uplink != tc.wantUplink {
				t.Errorf("uplink %q, want %q", s.Uplink, tc.wantUplink)
			}
			if !slices.Equal(s.FloodVTEPs, tc.wantFlood) {
				t.Errorf("flood %v, want %v", s.FloodVTEPs, tc.wantFlood)
			}
			if (len(s.Endpoints) > 0) != tc.wantEndpoint {
				t.Errorf("endpoints %v, want present=%v", s.Endpoints, tc.wantEndpoint)
			}
			var routes []string
			if p.BGP != nil {
				for _, r := range p.BGP.Routes {
					routes = append(routes, r.Prefix.String())
					if r.ASPathPrepend != tc.wantPrepend {
						t.Errorf("prepend %d, want %d", r.ASPathPrepend, tc.wantPrepend)
					}
					if len(r.Communities) != 1 || r.Communities[0].String() != "65010:1" {
						t.Errorf("communities %v", r.Communities)
					}
				}
				if p.BGP.Global.ListenPort != -1 {
					t.Errorf("gateway must not listen on 179")
				}
			}
			if !slices.Equal(routes, tc.wantRoutes) {
				t.Errorf("routes %v, want %v", routes, tc.wantRoutes)
			}
			if !slices.Equal(p.Probes[app], tc.wantProbes) {
				t.Errorf("probes %v, want %v", p.Probes[app], tc.wantProbes)
			}
			var reasons []string
			for _, r := range p.Refused {
				reasons = append(reasons, r.Reason)
			}
			if !slices.Equal(reasons, tc.wantRefused) {
				t.Errorf("refused %v, want %v", reasons, tc.wantRefused)
			}
		})
	}
}

func TestBuildPlanCompletedPhase(t *testing.T) {
	d := desired(StateActive, vmIP)
	d.Segments[0].Phase = PhaseCompleted
	d.Segments[0].GatewayAddress = netip.MustParsePrefix("10.20.100.1/24")
	d.BGP.Aggregate = true
	// Settled: the aggregate is advertised (the handover is in handover_test.go).
	p := buildPlan(d, runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear},
		Advertised: map[netip.Prefix]bool{netip.MustParsePrefix("10.20.100.0/24"): true}})
	s := p.Segments[0]
	if s.Uplink != "" || s.GatewayAddress != d.Segments[0].GatewayAddress {
		t.Fatalf("completed: VLAN must be released and the gateway address on the bridge: %+v", s)
	}
	if len(p.BGP.Routes) != 1 || p.BGP.Routes[0].Prefix.String() != "10.20.100.0/24" || !p.BGP.Routes[0].Aggregate {
		t.Fatalf("completed: only the aggregate, got %+v", p.BGP.Routes)
	}
}

func TestBuildPlanSegmentError(t *testing.T) {
	d := desired(StateActive, vmIP)
	d.Segments = append(d.Segments, Segment{Key: SegmentKey{BridgeConfig: "dc1", Segment: "bad"}, VNI: 7, Error: "vni clash"})
	p := buildPlan(d, runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true}, Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear}})
	if len(p.Segments) != 1 || p.SegmentErrors[SegmentKey{BridgeConfig: "dc1", Segment: "bad"}] != "vni clash" {
		t.Fatalf("bad segment must be kept out of the kernel and reported: %+v %+v", p.Segments, p.SegmentErrors)
	}
	if len(p.BGP.Routes) != 1 {
		t.Fatalf("the good segment keeps its route: %+v", p.BGP.Routes)
	}
}

func TestTranslate(t *testing.T) {
	older := metav1.NewTime(metav1.Now().Add(-3600e9))
	bc := func(name string, vni int32, ts metav1.Time) nbv1.BridgeConfig {
		return nbv1.BridgeConfig{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: ts},
			Spec: nbv1.BridgeConfigSpec{
				GatewaySelector: metav1.LabelSelector{MatchLabels: map[string]string{"netbridge.io/gateway": "true"}},
				Uplink:          nbv1.UplinkSpec{Interface: "uplink0"},
				Segments:        []nbv1.Segment{{Name: "app", VLANID: 100, VNI: vni, Subnets: []string{"10.20.100.0/24"}, Access: true}},
				BGP: &nbv1.BGPSpec{LocalASN: 65010, Peers: []nbv1.BGPPeer{
					{Address: "172.30.0.1", ASN: 65000, PasswordSecretRef: &nbv1.SecretKeyRef{Name: "pw"}},
					{Address: "172.30.0.2", ASN: 65000, NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "b"}}},
				}},
			}}
	}
	in := Inputs{
		NodeName: "gw1", Role: RoleGateway, LocalVTEP: gwVT,
		NodeLabels: map[string]string{"netbridge.io/gateway": "true", "rack": "a"},
		Configs:    []nbv1.BridgeConfig{bc("second", 10100, metav1.Now()), bc("first", 10100, older)},
		Nodes: map[string]NodeInfo{
			"gw1": {Labels: map[string]string{"netbridge.io/gateway": "true"}, VTEP: gwVT},
			"gw2": {Labels: map[string]string{"netbridge.io/gateway": "true"}, VTEP: netip.MustParseAddr("172.30.0.12")},
		},
		Endpoints: []nbv1.BridgeEndpoint{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "vm1-default"},
			Spec: nbv1.BridgeEndpointSpec{BridgeConfig: "first", Segment: "app", IPs: []string{"10.20.100.50"}, MAC: "52:54:00:00:01:50",
				VTEP: "172.30.0.21", State: nbv1.StateActive}}},
		Password: func(ref nbv1.SecretKeyRef) (string, error) { return "s3cret-" + ref.Name, nil },
	}
	d, problems := translate(in)
	if len(d.Segments) != 2 {
		t.Fatalf("segments %+v", d.Segments)
	}
	if d.Segments[0].Key.BridgeConfig != "first" || d.Segments[0].Error != "" {
		t.Fatalf("the older BridgeConfig keeps the VNI: %+v", d.Segments[0])
	}
	if d.Segments[1].Error == "" {
		t.Fatalf("the newer BridgeConfig's segment must be refused for the VNI clash")
	}
	if !slices.Equal(d.Segments[0].Candidates, []string{"gw1", "gw2"}) {
		t.Fatalf("candidates %v", d.Segments[0].Candidates)
	}
	if d.BGP == nil || len(d.BGP.Peers) != 1 || d.BGP.Peers[0].Password != "s3cret-pw" {
		t.Fatalf("peers: the rack-b peer is not for this node, the other gets its password: %+v", d.BGP)
	}
	if len(problems) != 1 {
		t.Fatalf("problems: want one (second bgp ignored), got %v", problems)
	}
	if len(d.Endpoints) != 1 || d.Endpoints[0].State != StateActive || d.Endpoints[0].VTEP != n1VT {
		t.Fatalf("endpoints %+v", d.Endpoints)
	}
}

func TestParseFileConfigRefusals(t *testing.T) {
	for name, raw := range map[string]string{
		"empty file":       "",
		"no segments":      "name: lab\nspec: {uplink: {interface: eth1}}\n",
		"vlan 0":           "spec: {segments: [{name: a, vlanID: 0, vni: 1, subnets: [10.0.0.0/24]}]}",
		"vni too big":      "spec: {segments: [{name: a, vlanID: 1, vni: 16777216, subnets: [10.0.0.0/24]}]}",
		"duplicate name":   "spec: {segments: [{name: a, vlanID: 1, vni: 1, subnets: [10.0.0.0/24]}, {name: a, vlanID: 2, vni: 2, subnets: [10.0.1.0/24]}]}",
		"unknown field":    "spec: {segments: [{name: a, vlanID: 1, vni: 1, subnets: [10.0.0.0/24], vlan: 3}]}",
		"bad gateway vtep": "activeGatewayVTEP: nope\nspec: {segments: [{name: a, vlanID: 1, vni: 1, subnets: [10.0.0.0/24]}]}",
	} {
		if _, err := parseFileConfig([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestIPv6ThroughTheGate: a /128 goes through the same activation gate as
// a /32 — probed while pending, refused as DuplicateAddress while another
// MAC answers, advertised and announced (unsolicited NA) once clear — and
// a standby probes it on its own VLAN side (the access uplink, not
// bridged) exactly as it probes IPv4, announcing nothing.
func TestIPv6ThroughTheGate(t *testing.T) {
	vmIP6 := netip.MustParseAddr("2001:db8:100::50")
	dual := func() Desired {
		d := desired(StateActive, vmIP, vmIP6)
		d.Segments[0].Subnets = append(d.Segments[0].Subnets, netip.MustParsePrefix("2001:db8:100::/64"))
		d.BGP.Peers = append(d.BGP.Peers, Peer{Address: netip.MustParseAddr("2001:db8:ff::1"), ASN: 65000})
		return d
	}
	active := map[SegmentKey]bool{app: true}
	tests := []struct {
		name          string
		attached      map[SegmentKey]bool
		gate          map[netip.Addr]probeVerdict
		wantRoutes    []string
		wantProbes    []probeRequest
		wantRefused   []string
		wantAnnounced []string
	}{
		{name: "active, both pending: both probed on the VLAN side, nothing advertised", attached: active,
			gate:       map[netip.Addr]probeVerdict{},
			wantProbes: []probeRequest{{Iface: "uplink0", IPs: []netip.Addr{vmIP, vmIP6}}}},
		{name: "active, IPv4 clear, IPv6 pending: the /32 alone", attached: active,
			gate:       map[netip.Addr]probeVerdict{vmIP: verdictClear},
			wantRoutes: []string{"10.20.100.50/32"}, wantProbes: []probeRequest{{Iface: "uplink0", IPs: []netip.Addr{vmIP6}}},
			wantAnnounced: []string{"uplink0 10.20.100.50"}},
		{name: "active, IPv6 duplicate: refused, re-probed, the /32 still advertised", attached: active,
			gate:       map[netip.Addr]probeVerdict{vmIP: verdictClear, vmIP6: verdictDuplicate},
			wantRoutes: []string{"10.20.100.50/32"}, wantProbes: []probeRequest{{Iface: "uplink0", IPs: []netip.Addr{vmIP6}}},
			wantRefused: []string{"2001:db8:100::50 DuplicateAddress"}, wantAnnounced: []string{"uplink0 10.20.100.50"}},
		{name: "active, both clear: /32 and /128 advertised, GARP and NA", attached: active,
			gate:          map[netip.Addr]probeVerdict{vmIP: verdictClear, vmIP6: verdictClear},
			wantRoutes:    []string{"10.20.100.50/32", "2001:db8:100::50/128"},
			wantAnnounced: []string{"uplink0 10.20.100.50", "uplink0 2001:db8:100::50"}},
		{name: "standby, IPv6 pending: probed from its own access uplink, nothing announced", attached: map[SegmentKey]bool{},
			gate:       map[netip.Addr]probeVerdict{vmIP: verdictClear},
			wantRoutes: []string{"10.20.100.50/32"}, wantProbes: []probeRequest{{Iface: "uplink0", IPs: []netip.Addr{vmIP6}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := dual()
			p := buildPlan(d, planView(d, RoleGateway, gwVT, tc.attached, tc.gate))
			var routes []string
			for _, r := range p.BGP.Routes {
				routes = append(routes, r.Prefix.String())
			}
			if !slices.Equal(routes, tc.wantRoutes) {
				t.Errorf("routes %v, want %v", routes, tc.wantRoutes)
			}
			probes := probeRequests(d, p, nil)
			if !slices.EqualFunc(probes, tc.wantProbes, func(a, b probeRequest) bool { return a.Iface == b.Iface && slices.Equal(a.IPs, b.IPs) }) {
				t.Errorf("probes %v, want %v", probes, tc.wantProbes)
			}
			var refused []string
			for _, r := range p.Refused {
				refused = append(refused, r.IP.String()+" "+r.Reason)
			}
			if !slices.Equal(refused, tc.wantRefused) {
				t.Errorf("refused %v, want %v", refused, tc.wantRefused)
			}
			var announced []string
			for _, a := range announcements(RoleGateway, d, p, tc.attached, nil).Addresses {
				announced = append(announced, a.Iface+" "+a.IP.String())
			}
			if !slices.Equal(announced, tc.wantAnnounced) {
				t.Errorf("announced %v, want %v", announced, tc.wantAnnounced)
			}
		})
	}
}

// TestCompletedAnnouncesGatewayAddress: in Completed the gateway address is
// announced from the bridge (its own MAC) into the VXLAN side, and nothing
// goes out of the released VLAN side.
func TestCompletedAnnouncesGatewayAddress(t *testing.T) {
	d := desired(StateActive, vmIP)
	d.Segments[0].Phase = PhaseCompleted
	d.Segments[0].GatewayAddress = netip.MustParsePrefix("10.20.100.1/24")
	attached := map[SegmentKey]bool{app: true}
	p := buildPlan(d, planView(d, RoleGateway, gwVT, attached, map[netip.Addr]probeVerdict{vmIP: verdictClear}))
	a := announcements(RoleGateway, d, p, attached, nil)
	if len(a.Addresses) != 1 {
		t.Fatalf("announcements %+v, want the gateway address only", a.Addresses)
	}
	got := a.Addresses[0]
	if got.Iface != "nb-br-10100" || got.IP != netip.MustParseAddr("10.20.100.1") || got.MAC != nil {
		t.Errorf("announcement %+v, want 10.20.100.1 from nb-br-10100 with the bridge's own MAC", got)
	}
	if len(a.MACs) != 0 {
		t.Errorf("MAC refresh %+v on a released VLAN", a.MACs)
	}
	// Not attached (a standby): nothing.
	if a := announcements(RoleGateway, d, p, map[SegmentKey]bool{}, nil); len(a.Addresses) != 0 {
		t.Errorf("standby announces %+v", a.Addresses)
	}
}

// TestLocalEgressPlan: egress Local puts the gateway address on the bridge
// of the bridging gateway of a Routed segment only, guarded on its VLAN
// port, and announces it from the bridge; a standby, Extended, Legacy
// egress or an IPv6 gateway address: nothing.
func TestLocalEgressPlan(t *testing.T) {
	gwAddr := netip.MustParsePrefix("10.20.100.1/24")
	cases := []struct {
		name     string
		phase    Phase
		local    bool
		gw       netip.Prefix
		attached bool
		want     bool
	}{
		{"routed local active", PhaseRouted, true, gwAddr, true, true},
		{"routed local standby", PhaseRouted, true, gwAddr, false, false},
		{"routed legacy egress", PhaseRouted, false, gwAddr, true, false},
		{"extended local", PhaseExtended, true, gwAddr, true, false},
		{"routed local v6 gateway", PhaseRouted, true, netip.MustParsePrefix("2001:db8::1/64"), true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := desired(StateActive, vmIP)
			d.Segments[0].Phase, d.Segments[0].LocalEgress, d.Segments[0].GatewayAddress = c.phase, c.local, c.gw
			attached := map[SegmentKey]bool{app: c.attached}
			p := buildPlan(d, planView(d, RoleGateway, gwVT, attached, map[netip.Addr]probeVerdict{vmIP: verdictClear}))
			got := p.Segments[0].GatewayAddress.IsValid()
			if got != c.want || (len(p.Egress) == 1) != c.want {
				t.Fatalf("gateway address on the bridge %v, egress rules %+v; want %v", p.Segments[0].GatewayAddress, p.Egress, c.want)
			}
			a := announcements(RoleGateway, d, p, attached, nil)
			fromBridge := 0
			for _, x := range a.Addresses {
				if x.Iface == "nb-br-10100" {
					fromBridge++
					if x.IP != gwAddr.Addr() || x.MAC != nil {
						t.Errorf("bridge announcement %+v, want the gateway address with the bridge's MAC", x)
					}
				}
			}
			if (fromBridge == 1) != c.want {
				t.Errorf("announcements from the bridge %d, want %v: %+v", fromBridge, c.want, a.Addresses)
			}
			if !c.want {
				return
			}
			if r := p.Egress[0]; r.Port != vlanSide(d.Segments[0]) || r.Gateway != gwAddr.Addr() {
				t.Errorf("egress rule %+v, want %s on %s", r, gwAddr.Addr(), vlanSide(d.Segments[0]))
			}
			// The VLAN side is still bridged and the host routes stay.
			if p.Segments[0].Uplink == "" || len(p.Advertised) == 0 {
				t.Errorf("routed segment lost its VLAN side or host routes: %+v %v", p.Segments[0], p.Advertised)
			}
		})
	}
}

// TestWithoutEgress: an unguarded local-egress segment gets no gateway
// address (the bridge would answer the legacy side).
func TestWithoutEgress(t *testing.T) {
	seg := vlan.Segment{VNI: 10100, Uplink: "eth1", VLANID: 100, GatewayAddress: netip.MustParsePrefix("10.20.100.1/24")}
	other := vlan.Segment{VNI: 10200, GatewayAddress: netip.MustParsePrefix("10.20.200.1/24")} // Completed: no VLAN side
	out := withoutEgress([]vlan.Segment{seg, other}, []vlan.EgressRule{{Port: seg.VLANSide(), Gateway: seg.GatewayAddress.Addr()}})
	if out[0].GatewayAddress.IsValid() || !out[1].GatewayAddress.IsValid() {
		t.Errorf("withoutEgress %+v", out)
	}
}
