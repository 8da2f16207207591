package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// valid is a spec Parse accepts; each case below breaks one thing in it.
func valid() nbv1.BridgeConfigSpec {
	return nbv1.BridgeConfigSpec{
		GatewaySelector: metav1.LabelSelector{MatchLabels: map[string]string{nbv1.LabelGateway: "true"}},
		Uplink:          nbv1.UplinkSpec{Interface: "eth1"},
		Segments: []nbv1.Segment{
			{Name: "app", VLANID: 100, VNI: 10100, Subnets: []string{"10.20.100.0/24", "2001:db8:100::/64"},
				GatewayAddress: "10.20.100.1/24", MTU: 1450, Communities: []string{"65010:100"}, Phase: nbv1.PhaseRouted},
			{Name: "db", VLANID: 200, VNI: 10200, Subnets: []string{"10.20.200.0/24"},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"netbridge.io/allow-db": "true"}}},
		},
		BGP: &nbv1.BGPSpec{LocalASN: 65010, StandbyPrepend: 3, Peers: []nbv1.BGPPeer{
			{Address: "192.0.2.1", ASN: 65000, HoldTime: ptr.To[int32](9), Keepalive: ptr.To[int32](3),
				GracefulRestart: &nbv1.GracefulRestart{Enabled: true, RestartTime: 120}, BFD: &nbv1.BFD{Enabled: true}},
			{Address: "2001:db8::2", ASN: 65000, BFD: &nbv1.BFD{Enabled: true, MinReceiveMs: 100, MinTransmitMs: 100, Multiplier: 5}},
		}},
		Advertise: &nbv1.AdvertiseSpec{HostRoutes: true, Communities: []string{"65010:1"}, LargeCommunities: []string{"65010:1:1"}, MED: ptr.To[int64](100)},
	}
}

func TestParseValid(t *testing.T) {
	cfg, errs := Parse("dc1", valid())
	if len(errs) > 0 {
		t.Fatalf("valid spec refused: %v", errs.ToAggregate())
	}
	app, db := cfg.Segments[0], cfg.Segments[1]
	if app.Key != (nbv1.SegmentKey{BridgeConfig: "dc1", Segment: "app"}) || app.VLANID != 100 || app.VNI != 10100 || app.MTU != 1450 {
		t.Errorf("app: %+v", app)
	}
	if len(app.Subnets) != 2 || app.Subnets[0] != netip.MustParsePrefix("10.20.100.0/24") || app.GatewayAddress != netip.MustParsePrefix("10.20.100.1/24") {
		t.Errorf("app addresses: %v %v", app.Subnets, app.GatewayAddress)
	}
	if app.Uplink.Interface != "eth1" || app.Communities[0] != Community(65010<<16|100) || app.Communities[0].String() != "65010:100" {
		t.Errorf("app uplink/communities: %+v %v", app.Uplink, app.Communities)
	}
	if db.Phase != nbv1.PhaseExtended {
		t.Errorf("phase not defaulted: %q", db.Phase)
	}
	if db.NamespaceSelector.Matches(labels.Set{}) || !db.NamespaceSelector.Matches(labels.Set{"netbridge.io/allow-db": "true"}) {
		t.Errorf("namespace selector %s", db.NamespaceSelector)
	}
	if !app.NamespaceSelector.Matches(labels.Set{}) {
		t.Errorf("no namespaceSelector must allow every namespace")
	}
	if !cfg.GatewaySelector.Matches(labels.Set{nbv1.LabelGateway: "true"}) {
		t.Errorf("gateway selector %s", cfg.GatewaySelector)
	}
	p0, p1 := cfg.BGP.Peers[0], cfg.BGP.Peers[1]
	if p0.Address != netip.MustParseAddr("192.0.2.1") || p0.Port != 179 || p0.HoldTime != 9*time.Second || p0.Keepalive != 3*time.Second ||
		!p0.GracefulRestart || p0.RestartTime != 120*time.Second {
		t.Errorf("peer 0: %+v", p0)
	}
	// Documented defaults: 300 ms × 3 gives 900 ms detection.
	if p0.BFD == nil || *p0.BFD != (BFD{MinReceive: 300 * time.Millisecond, MinTransmit: 300 * time.Millisecond, Multiplier: 3}) || p0.BFD.DetectionTime() != 900*time.Millisecond {
		t.Errorf("peer 0 BFD defaults: %+v", p0.BFD)
	}
	if p1.HoldTime != 90*time.Second || p1.Keepalive != 30*time.Second || p1.BFD.DetectionTime() != 500*time.Millisecond {
		t.Errorf("peer 1 defaults: %+v %+v", p1, p1.BFD)
	}
	adv := cfg.Advertise
	if !adv.HostRoutes || adv.LargeCommunities[0] != (LargeCommunity{65010, 1, 1}) || *adv.MED != 100 || adv.Communities[0].String() != "65010:1" {
		t.Errorf("advertise: %+v", adv)
	}
	// No advertise block: host routes on, as the CRD defaults them.
	s := valid()
	s.Advertise = nil
	if cfg, errs := Parse("dc1", s); len(errs) > 0 || !cfg.Advertise.HostRoutes {
		t.Errorf("no advertise: %+v %v", cfg, errs)
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*nbv1.BridgeConfigSpec)
		field  string // the error names this path
		value  string // and this value
	}{
		// Addresses that can never be a BGP peer or router ID.
		{"peer unspecified", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].Address = "0.0.0.0" }, "spec.bgp.peers[0].address", "0.0.0.0"},
		{"peer IPv6 unspecified", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[1].Address = "::" }, "spec.bgp.peers[1].address", "::"},
		{"peer multicast", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].Address = "224.0.0.5" }, "spec.bgp.peers[0].address", "224.0.0.5"},
		{"peer loopback", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].Address = "127.0.0.1" }, "spec.bgp.peers[0].address", "127.0.0.1"},
		{"peer IPv6 loopback", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[1].Address = "::1" }, "spec.bgp.peers[1].address", "::1"},
		{"peer broadcast", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].Address = "255.255.255.255" }, "spec.bgp.peers[0].address", "255.255.255.255"},
		{"peer link-local", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[1].Address = "fe80::1" }, "spec.bgp.peers[1].address", "fe80::1"},
		{"peer not an IP", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].Address = "core1" }, "spec.bgp.peers[0].address", "core1"},
		{"router ID zero", func(s *nbv1.BridgeConfigSpec) { s.BGP.RouterID = "0.0.0.0" }, "spec.bgp.routerID", "0.0.0.0"},
		{"router ID loopback", func(s *nbv1.BridgeConfigSpec) { s.BGP.RouterID = "127.0.0.1" }, "spec.bgp.routerID", "127.0.0.1"},
		{"router ID link-local", func(s *nbv1.BridgeConfigSpec) { s.BGP.RouterID = "169.254.1.1" }, "spec.bgp.routerID", "169.254.1.1"},
		{"router ID multicast", func(s *nbv1.BridgeConfigSpec) { s.BGP.RouterID = "239.1.1.1" }, "spec.bgp.routerID", "239.1.1.1"},
		{"router ID broadcast", func(s *nbv1.BridgeConfigSpec) { s.BGP.RouterID = "255.255.255.255" }, "spec.bgp.routerID", "255.255.255.255"},
		{"router ID IPv6", func(s *nbv1.BridgeConfigSpec) { s.BGP.RouterID = "2001:db8::1" }, "spec.bgp.routerID", "2001:db8::1"},
		// Two spellings of one address.
		{"peer IPv4-mapped", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[1].Address = "::ffff:192.0.2.9" }, "spec.bgp.peers[1].address", "::ffff:192.0.2.9"},
		{"same peer twice, two spellings", func(s *nbv1.BridgeConfigSpec) {
			s.BGP.Peers[0].Address, s.BGP.Peers[1].Address = "2001:db8::2", "2001:DB8:0::2"
		}, "spec.bgp.peers[1].address", "2001:DB8:0::2"},
		{"subnet IPv4-mapped", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"::ffff:10.20.200.0/120"} }, "spec.segments[1].subnets[0]", "::ffff:10.20.200.0/120"},
		// Prefixes.
		{"subnet host bits", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"10.20.200.5/24"} }, "spec.segments[1].subnets[0]", "10.20.200.5/24"},
		{"subnet IPv6 host bits", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].Subnets[1] = "2001:db8:100::1/64" }, "spec.segments[0].subnets[1]", "2001:db8:100::1/64"},
		{"default route", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"0.0.0.0/0"} }, "spec.segments[1].subnets[0]", "0.0.0.0/0"},
		{"IPv6 default route", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"::/0"} }, "spec.segments[1].subnets[0]", "::/0"},
		{"IPv4 broader than /16", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"10.0.0.0/8"} }, "spec.segments[1].subnets[0]", "10.0.0.0/8"},
		{"IPv6 broader than /48", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"2001:db8::/32"} }, "spec.segments[1].subnets[0]", "2001:db8::/32"},
		{"not a CIDR", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"10.20.300.0/24"} }, "spec.segments[1].subnets[0]", "10.20.300.0/24"},
		{"uplink address host bits", func(s *nbv1.BridgeConfigSpec) { s.Uplink = nbv1.UplinkSpec{Address: "192.0.2.5/24"} }, "spec.uplink.address", "192.0.2.5/24"},
		// Overlaps inside one BridgeConfig.
		{"subnets overlap across segments", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"10.20.100.128/25"} }, "spec.segments[1].subnets[0]", "10.20.100.128/25"},
		{"subnets overlap in a segment", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].Subnets = append(s.Segments[0].Subnets, "10.20.0.0/16") }, "spec.segments[0].subnets[2]", "10.20.0.0/16"},
		{"IPv6 subnets overlap", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Subnets = []string{"2001:db8:100::/56"} }, "spec.segments[1].subnets[0]", "2001:db8:100::/56"},
		// Communities.
		{"community ASN too big", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].Communities = []string{"65536:1"} }, "spec.segments[0].communities[0]", "65536:1"},
		{"community value too big", func(s *nbv1.BridgeConfigSpec) { s.Advertise.Communities = []string{"1:99999"} }, "spec.advertise.communities[0]", "1:99999"},
		{"community word", func(s *nbv1.BridgeConfigSpec) { s.Advertise.Communities = []string{"no-export"} }, "spec.advertise.communities[0]", "no-export"},
		{"large community too big", func(s *nbv1.BridgeConfigSpec) { s.Advertise.LargeCommunities = []string{"65010:4294967296:1"} }, "spec.advertise.largeCommunities[0]", "65010:4294967296:1"},
		{"large community two parts", func(s *nbv1.BridgeConfigSpec) { s.Advertise.LargeCommunities = []string{"65010:1"} }, "spec.advertise.largeCommunities[0]", "65010:1"},
		{"MED too big", func(s *nbv1.BridgeConfigSpec) { s.Advertise.MED = ptr.To[int64](1 << 32) }, "spec.advertise.med", "4294967296"},
		// Interface names Linux would refuse.
		{"interface too long", func(s *nbv1.BridgeConfigSpec) { s.Uplink.Interface = "eth0123456789012" }, "spec.uplink.interface", "eth0123456789012"},
		{"interface slash", func(s *nbv1.BridgeConfigSpec) { s.Uplink.Interface = "eth/1" }, "spec.uplink.interface", "eth/1"},
		{"interface space", func(s *nbv1.BridgeConfigSpec) { s.Uplink.Interface = "eth 1" }, "spec.uplink.interface", "eth 1"},
		{"interface colon", func(s *nbv1.BridgeConfigSpec) { s.Uplink.Interface = "eth1:0" }, "spec.uplink.interface", "eth1:0"},
		{"interface dot", func(s *nbv1.BridgeConfigSpec) { s.Uplink.Interface = "." }, "spec.uplink.interface", "."},
		{"interface dotdot in segment", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Uplink = &nbv1.UplinkSpec{Interface: ".."} }, "spec.segments[1].uplink.interface", ".."},
		{"no uplink", func(s *nbv1.BridgeConfigSpec) { s.Uplink = nbv1.UplinkSpec{} }, "spec.uplink", ""},
		// Gateway address.
		{"gateway outside its segment", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].GatewayAddress = "10.99.0.1/24" }, "spec.segments[0].gatewayAddress", "10.99.0.1/24"},
		{"gateway in another segment", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].GatewayAddress = "10.20.200.1/24" }, "spec.segments[0].gatewayAddress", "10.20.200.1/24"},
		{"gateway wrong prefix length", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].GatewayAddress = "10.20.100.1/16" }, "spec.segments[0].gatewayAddress", "10.20.100.1/16"},
		{"gateway is network address", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].GatewayAddress = "10.20.100.0/24" }, "spec.segments[0].gatewayAddress", "10.20.100.0/24"},
		{"gateway is broadcast address", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].GatewayAddress = "10.20.100.255/24" }, "spec.segments[0].gatewayAddress", "10.20.100.255/24"},
		{"gateway without prefix", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].GatewayAddress = "10.20.100.1" }, "spec.segments[0].gatewayAddress", "10.20.100.1"},
		// Selectors the API machinery cannot parse.
		{"gateway selector bad key", func(s *nbv1.BridgeConfigSpec) { s.GatewaySelector.MatchLabels = map[string]string{"bad key!": "x"} }, "spec.gatewaySelector.matchLabels", "bad key!"},
		{"gateway selector In without values", func(s *nbv1.BridgeConfigSpec) {
			s.GatewaySelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "rack", Operator: metav1.LabelSelectorOpIn}}
		}, "spec.gatewaySelector.matchExpressions[0].values", ""},
		{"gateway selector bad operator", func(s *nbv1.BridgeConfigSpec) {
			s.GatewaySelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "rack", Operator: "Near", Values: []string{"a"}}}
		}, "spec.gatewaySelector.matchExpressions[0].operator", "Near"},
		{"namespace selector bad value", func(s *nbv1.BridgeConfigSpec) {
			s.Segments[1].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a b"}}
		}, "spec.segments[1].namespaceSelector.matchLabels", "a b"},
		{"peer node selector Exists with values", func(s *nbv1.BridgeConfigSpec) {
			s.BGP.Peers[0].NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "rack", Operator: metav1.LabelSelectorOpExists, Values: []string{"a"}}}}
		}, "spec.bgp.peers[0].nodeSelector.matchExpressions[0].values", ""},
		// BFD.
		{"BFD receive too short", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].BFD.MinReceiveMs = 5 }, "spec.bgp.peers[0].bfd.minReceiveMs", "5"},
		{"BFD transmit too long", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].BFD.MinTransmitMs = 60001 }, "spec.bgp.peers[0].bfd.minTransmitMs", "60001"},
		{"BFD multiplier", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].BFD.Multiplier = 256 }, "spec.bgp.peers[0].bfd.multiplier", "256"},
		{"BFD on a multihop peer", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].EBGPMultihop = 2 }, "spec.bgp.peers[0].bfd.enabled", "single-hop"},
		// Timers and ranges the file path has no schema for.
		{"hold time 1", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].HoldTime = ptr.To[int32](1) }, "spec.bgp.peers[0].holdTime", "1"},
		{"keepalive at hold time", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].Keepalive = ptr.To[int32](9) }, "spec.bgp.peers[0].keepalive", "9"},
		{"restart time too big", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].GracefulRestart.RestartTime = 5000 }, "spec.bgp.peers[0].gracefulRestart.restartTime", "5000"},
		{"local ASN 0", func(s *nbv1.BridgeConfigSpec) { s.BGP.LocalASN = 0 }, "spec.bgp.localASN", "0"},
		{"peer ASN too big", func(s *nbv1.BridgeConfigSpec) { s.BGP.Peers[0].ASN = 1 << 32 }, "spec.bgp.peers[0].asn", "4294967296"},
		{"vlan 4095", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].VLANID = 4095 }, "spec.segments[0].vlanID", "4095"},
		// An access segment sends no tag, and the error says why the ID is
		// still needed.
		{"access segment without vlanID", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].Access = true; s.Segments[0].VLANID = 0 },
			"spec.segments[0].vlanID", "legacy VLAN the access port belongs to"},
		{"vni 2^24", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].VNI = 1 << 24 }, "spec.segments[0].vni", "16777216"},
		{"duplicate VLAN", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].VLANID = 100 }, "spec.segments[1].vlanID", "100"},
		{"duplicate VNI", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].VNI = 10100 }, "spec.segments[1].vni", "10100"},
		{"duplicate segment name", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Name = "app" }, "spec.segments[1].name", "app"},
		{"segment name not a DNS label", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Name = "App_VLAN" }, "spec.segments[1].name", "App_VLAN"},
		{"segment key longer than a label value", func(s *nbv1.BridgeConfigSpec) { s.Segments[1].Name = strings.Repeat("d", 60) }, "spec.segments[1].name", strings.Repeat("d", 60)},
		{"mtu 9001", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].MTU = 9001 }, "spec.segments[0].mtu", "9001"},
		{"bad phase", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].Phase = "Done" }, "spec.segments[0].phase", "Done"},
		{"bad egress", func(s *nbv1.BridgeConfigSpec) { s.Segments[0].Egress = "Anycast" }, "spec.segments[0].egress", "Anycast"},
		{"egress local without gateway", func(s *nbv1.BridgeConfigSpec) {
			s.Segments[0].GatewayAddress, s.Segments[0].Egress = "", nbv1.EgressLocal
		}, "spec.segments[0].egress", "Local"},
		{"no segments", func(s *nbv1.BridgeConfigSpec) { s.Segments = nil }, "spec.segments", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := valid()
			tc.mutate(&s)
			cfg, errs := Parse("dc1", s)
			if len(errs) == 0 {
				t.Fatalf("accepted: %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("a refused config must yield nothing to program, got %+v", cfg)
			}
			msg := errs.ToAggregate().Error()
			if !strings.Contains(msg, tc.field) || !strings.Contains(msg, tc.value) {
				t.Fatalf("error does not name %s and %q: %s", tc.field, tc.value, msg)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	s := valid()
	s.Segments[1].Subnets = []string{"10.0.0.0/12", "2001:db9::/40"}
	if _, errs := Parse("dc1", s); len(errs) != 2 {
		t.Fatalf("default bounds: want 2 errors, got %v", errs)
	}
	if _, errs := ParseWithLimits("dc1", s, Limits{BroadestIPv4: 12, BroadestIPv6: 40}); len(errs) > 0 {
		t.Fatalf("site bounds /12 and /40 refused: %v", errs)
	}
	s.Segments[1].Subnets = []string{"0.0.0.0/0"}
	if _, errs := ParseWithLimits("dc1", s, Limits{BroadestIPv4: -1}); len(errs) == 0 {
		t.Fatal("a default route must be refused whatever the bounds")
	}
}

func TestCheckEndpoint(t *testing.T) {
	cfg, errs := Parse("dc1", valid())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	app := &cfg.Segments[0]
	p2p := &Segment{Key: nbv1.SegmentKey{BridgeConfig: "dc1", Segment: "p2p"},
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/31"), netip.MustParsePrefix("10.9.1.1/32"), netip.MustParsePrefix("2001:db8:9::/127")}}
	tests := []struct {
		seg  *Segment
		ip   string
		want nbv1.RefusalReason // "" accepted
	}{
		{app, "10.20.100.10", ""},
		{app, "10.20.100.254", ""},
		{app, "2001:db8:100::10", ""},
		{app, "10.20.100.0", nbv1.ReasonNetworkAddress},
		{app, "10.20.100.255", nbv1.ReasonBroadcastAddress},
		{app, "10.20.100.1", nbv1.ReasonGatewayAddress},
		{app, "2001:db8:100::", nbv1.ReasonNetworkAddress},
		{app, "2001:db8:100::ffff:ffff:ffff:ffff", ""}, // IPv6 has no broadcast
		{app, "10.20.101.1", nbv1.ReasonOutsideSubnet},
		{app, "::ffff:10.20.100.0", nbv1.ReasonNetworkAddress}, // one spelling
		{app, "::ffff:10.20.100.10", ""},
		{app, "10.20.100.300", nbv1.ReasonInvalidAddress},
		{p2p, "10.9.0.0", ""}, // RFC 3021: both ends of a /31 are hosts
		{p2p, "10.9.0.1", ""},
		{p2p, "10.9.1.1", ""},
		{p2p, "2001:db8:9::", ""}, // RFC 6164
	}
	for _, tc := range tests {
		got := CheckEndpoint(tc.seg, []string{tc.ip})
		switch {
		case tc.want == "" && len(got) > 0:
			t.Errorf("%s on %s refused: %+v", tc.ip, tc.seg.Key, got)
		case tc.want != "" && (len(got) != 1 || got[0].Reason != tc.want):
			t.Errorf("%s on %s: %+v, want %s", tc.ip, tc.seg.Key, got, tc.want)
		case tc.want != "" && !strings.Contains(got[0].Message, "segment dc1."):
			t.Errorf("%s: message %q does not name the segment", tc.ip, got[0].Message)
		}
	}
	got := CheckEndpoint(app, []string{"10.20.100.10", "10.20.100.0", "10.20.100.255"})
	if len(got) != 2 || got[0].IP != "10.20.100.0" || !strings.Contains(got[0].Message, "network address of subnet 10.20.100.0/24") ||
		!strings.Contains(got[1].Message, "broadcast address of subnet 10.20.100.0/24") {
		t.Fatalf("refusals %+v", got)
	}
}

func TestParseEndpoint(t *testing.T) {
	good := nbv1.BridgeEndpointSpec{BridgeConfig: "dc1", Segment: "app", VMI: "vm1", Interface: "default",
		IPs: []string{"10.20.100.10", "2001:DB8:100::10"}, MAC: "52:54:00:AA:00:01", NodeName: "n1", VTEP: "::ffff:172.16.0.11"}
	ep, errs := ParseEndpoint("ns1", "vm1-default", good)
	if len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	if ep.State != nbv1.StateStaged || ep.VTEP != netip.MustParseAddr("172.16.0.11") || ep.MAC.String() != "52:54:00:aa:00:01" ||
		ep.IPs[1] != netip.MustParseAddr("2001:db8:100::10") || ep.Segment.String() != "dc1.app" {
		t.Fatalf("%+v", ep)
	}
	for _, tc := range []struct {
		name       string
		mutate     func(*nbv1.BridgeEndpointSpec)
		field, bad string
	}{
		{"bad IP", func(s *nbv1.BridgeEndpointSpec) { s.IPs = []string{"10.20.100.300"} }, "spec.ips[0]", "10.20.100.300"},
		{"same IP two spellings", func(s *nbv1.BridgeEndpointSpec) { s.IPs = []string{"10.20.100.10", "::ffff:10.20.100.10"} }, "spec.ips[1]", "::ffff:10.20.100.10"},
		{"bad MAC", func(s *nbv1.BridgeEndpointSpec) { s.MAC = "52:54:00:aa:00" }, "spec.mac", "52:54:00:aa:00"},
		{"EUI-64", func(s *nbv1.BridgeEndpointSpec) { s.MAC = "02:00:00:00:00:00:00:01" }, "spec.mac", "02:00:00:00:00:00:00:01"},
		{"multicast MAC", func(s *nbv1.BridgeEndpointSpec) { s.MAC = "01:00:5e:00:00:01" }, "spec.mac", "01:00:5e:00:00:01"},
		{"zero MAC", func(s *nbv1.BridgeEndpointSpec) { s.MAC = "00:00:00:00:00:00" }, "spec.mac", "00:00:00:00:00:00"},
		{"bad VTEP", func(s *nbv1.BridgeEndpointSpec) { s.VTEP = "node1" }, "spec.vtep", "node1"},
		{"multicast VTEP", func(s *nbv1.BridgeEndpointSpec) { s.VTEP = "239.1.1.1" }, "spec.vtep", "239.1.1.1"},
		{"bad state", func(s *nbv1.BridgeEndpointSpec) { s.State = "Live" }, "spec.state", "Live"},
		{"bad segment", func(s *nbv1.BridgeEndpointSpec) { s.Segment = "App" }, "spec.segment", "dc1.App"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.IPs = append([]string(nil), good.IPs...)
			tc.mutate(&s)
			_, errs := ParseEndpoint("ns1", "e", s)
			msg := errs.ToAggregate().Error()
			if len(errs) == 0 || !strings.Contains(msg, tc.field) || !strings.Contains(msg, tc.bad) {
				t.Fatalf("errors %v do not name %s and %q", errs, tc.field, tc.bad)
			}
		})
	}
}
