package vlan

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var (
	macA  = net.HardwareAddr{2, 0, 0, 0, 0, 0xa}
	macB  = net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	vtep1 = netip.MustParseAddr("192.0.2.1")
	vtep2 = netip.MustParseAddr("192.0.2.2")
	vtep3 = netip.MustParseAddr("192.0.2.3")
	ipA   = netip.MustParseAddr("10.0.0.10")
)

func gatewaySeg() Segment {
	return Segment{
		Name: "a", VNI: 100, Role: RoleGateway, Uplink: "eth1", VLANID: 10, MTU: 1450,
		LocalVTEP: vtep1, FloodVTEPs: []netip.Addr{vtep2},
		Endpoints: []Endpoint{{MAC: macA, IPs: []netip.Addr{ipA}, VTEP: vtep2}},
	}
}

// converged is what the host has once s is fully programmed.
func converged(s Segment) *observed {
	br := BridgeName(s.VNI)
	o := &observed{
		bridge:     &observedLink{name: br, alias: alias(s), mtu: s.MTU, up: true},
		vxlan:      &observedLink{name: VXLANName(s.VNI), alias: alias(s), master: br, mtu: s.MTU, up: true, vni: s.VNI, local: s.LocalVTEP, port: DefaultVXLANPort, learning: s.Role == RoleNode},
		flood:      map[netip.Addr]bool{},
		remoteMACs: map[string]netip.Addr{},
		learned:    map[string]netip.Addr{},
		portMACs:   map[string]bool{},
		neighbours: map[netip.Addr]string{},
		routes:     map[netip.Prefix]bool{},
		addrs:      map[netip.Prefix]bool{},
	}
	if s.Uplink != "" && !s.Access {
		o.vlan = &observedLink{name: VLANName(s.VNI), alias: alias(s), master: br, mtu: s.MTU, up: true, parent: s.Uplink, vid: s.VLANID}
	}
	if s.Uplink != "" && s.Access {
		o.accessUplink = s.Uplink
	}
	for _, v := range s.FloodVTEPs {
		o.flood[v] = true
	}
	for _, e := range s.Endpoints {
		if e.VTEP != s.LocalVTEP {
			o.remoteMACs[e.MAC.String()] = e.VTEP
			o.portMACs[e.MAC.String()] = true
		}
		for _, ip := range e.IPs {
			o.neighbours[ip] = e.MAC.String()
			if s.HostRoutes {
				o.routes[netip.PrefixFrom(ip, ip.BitLen())] = true
			}
		}
	}
	if s.GatewayAddress.IsValid() {
		o.addrs[s.GatewayAddress] = true
	}
	return o
}

func host(segs map[uint32]*observed) snapshot {
	return snapshot{
		segments: segs,
		ports:    map[string]string{"eth1": "", "eth2": "", "ul0": ""},
		addrMTU:  map[netip.Addr]int{vtep1: 1500, vtep2: 1500},
		clashes:  map[uint32]error{},
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name    string
		desired []Segment
		snap    func() snapshot
		want    []string
		refused map[uint32]string // VNI -> error substring
	}{
		{
			name: "nothing wanted, nothing there",
			snap: func() snapshot { return host(map[uint32]*observed{}) },
		},
		{
			name:    "new tagged gateway segment: the VLAN is created first",
			desired: []Segment{gatewaySeg()},
			snap:    func() snapshot { return host(map[uint32]*observed{}) },
			want: []string{
				"create-vlan nb-vl-100 parent eth1 vid 10 mtu 1450",
				"create-bridge nb-br-100 mtu 1450",
				"create-vxlan nb-vx-100 vni 100 local 192.0.2.1 learning false mtu 1450",
				"set-master nb-vx-100 nb-br-100",
				"set-master nb-vl-100 nb-br-100",
				"set-mtu nb-br-100 1450",
				"set-up nb-vl-100",
				"set-up nb-vx-100",
				"set-up nb-br-100",
				"add-flood nb-vx-100 192.0.2.2",
				"set-remote-mac nb-vx-100 02:00:00:00:00:0a 192.0.2.2",
				"set-port-mac nb-vx-100 02:00:00:00:00:0a",
				"set-neigh nb-br-100 02:00:00:00:00:0a 10.0.0.10",
			},
		},
		{
			name:    "converged: nothing to do",
			desired: []Segment{gatewaySeg()},
			snap:    func() snapshot { return host(map[uint32]*observed{100: converged(gatewaySeg())}) },
		},
		{
			name: "node: learning on, local endpoint gets no FDB entry",
			desired: []Segment{{Name: "a", VNI: 100, Role: RoleNode, MTU: 1450, LocalVTEP: vtep2, FloodVTEPs: []netip.Addr{vtep1},
				Endpoints: []Endpoint{{MAC: macA, IPs: []netip.Addr{ipA}, VTEP: vtep2}}}},
			snap: func() snapshot { return host(map[uint32]*observed{}) },
			want: []string{
				"create-bridge nb-br-100 mtu 1450",
				"create-vxlan nb-vx-100 vni 100 local 192.0.2.2 learning true mtu 1450",
				"set-master nb-vx-100 nb-br-100",
				"set-mtu nb-br-100 1450",
				"set-up nb-vx-100",
				"set-up nb-br-100",
				"add-flood nb-vx-100 192.0.2.1",
				"set-neigh nb-br-100 02:00:00:00:00:0a 10.0.0.10",
			},
		},
		{
			name:    "node after a gateway change: learned entries behind the old gateway are flushed, others kept",
			desired: []Segment{{Name: "a", VNI: 100, Role: RoleNode, MTU: 1450, LocalVTEP: vtep2, FloodVTEPs: []netip.Addr{vtep1}}},
			snap: func() snapshot {
				o := converged(Segment{Name: "a", VNI: 100, Role: RoleNode, MTU: 1450, LocalVTEP: vtep2, FloodVTEPs: []netip.Addr{vtep1}})
				o.learned["02:00:00:00:00:aa"] = vtep1                            // behind the active gateway: kept
				o.learned["02:00:00:00:00:bb"] = netip.MustParseAddr("192.0.2.9") // behind the old gateway: flushed
				return host(map[uint32]*observed{100: o})
			},
			want: []string{"del-learned nb-vx-100 02:00:00:00:00:bb 192.0.2.9"},
		},
		{
			name: "standby: the VLAN side goes, the VXLAN side stays",
			desired: []Segment{func() Segment {
				s := gatewaySeg()
				s.Uplink = ""
				return s
			}()},
			snap: func() snapshot { return host(map[uint32]*observed{100: converged(gatewaySeg())}) },
			want: []string{"delete-link nb-vl-100"},
		},
		{
			name: "endpoint moved to another node, a flood target changed",
			desired: []Segment{func() Segment {
				s := gatewaySeg()
				s.Endpoints[0].VTEP = vtep3
				s.FloodVTEPs = []netip.Addr{vtep3}
				return s
			}()},
			snap: func() snapshot { return host(map[uint32]*observed{100: converged(gatewaySeg())}) },
			want: []string{
				"del-flood nb-vx-100 192.0.2.2",
				"add-flood nb-vx-100 192.0.2.3",
				"set-remote-mac nb-vx-100 02:00:00:00:00:0a 192.0.2.3",
			},
		},
		{
			name: "endpoint gone, another came; routed and completed extras",
			desired: []Segment{func() Segment {
				s := gatewaySeg()
				s.Endpoints = []Endpoint{{MAC: macB, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.11")}, VTEP: vtep2}}
				s.HostRoutes = true
				s.GatewayAddress = netip.MustParsePrefix("10.0.0.1/24")
				return s
			}()},
			snap: func() snapshot { return host(map[uint32]*observed{100: converged(gatewaySeg())}) },
			want: []string{
				"del-remote-mac nb-vx-100 02:00:00:00:00:0a 192.0.2.2",
				"del-port-mac nb-vx-100 02:00:00:00:00:0a",
				"set-remote-mac nb-vx-100 02:00:00:00:00:0b 192.0.2.2",
				"set-port-mac nb-vx-100 02:00:00:00:00:0b",
				"del-neigh nb-br-100 02:00:00:00:00:0a 10.0.0.10",
				"set-neigh nb-br-100 02:00:00:00:00:0b 10.0.0.11",
				"add-addr nb-br-100 10.0.0.1/24",
				"add-route nb-br-100 10.0.0.11/32",
			},
		},
		{
			name:    "vxlan learning wrong: recreated with its entries",
			desired: []Segment{gatewaySeg()},
			snap: func() snapshot {
				o := converged(gatewaySeg())
				o.vxlan.learning = true
				return host(map[uint32]*observed{100: o})
			},
			want: []string{
				"delete-link nb-vx-100",
				"create-vxlan nb-vx-100 vni 100 local 192.0.2.1 learning false mtu 1450",
				"set-master nb-vx-100 nb-br-100",
				"set-mtu nb-br-100 1450",
				"set-up nb-vx-100",
				"add-flood nb-vx-100 192.0.2.2",
				"set-remote-mac nb-vx-100 02:00:00:00:00:0a 192.0.2.2",
				"set-port-mac nb-vx-100 02:00:00:00:00:0a",
			},
		},
		{
			name: "access uplink switched to another interface",
			desired: []Segment{func() Segment {
				s := gatewaySeg()
				s.Access, s.Uplink = true, "eth2"
				return s
			}()},
			snap: func() snapshot {
				old := gatewaySeg()
				old.Access = true
				sn := host(map[uint32]*observed{100: converged(old)})
				sn.ports["eth1"] = "nb-br-100"
				return sn
			},
			want: []string{
				"set-nomaster eth1",
				`set-alias nb-br-100 "netbridge:a access=eth2"`,
				"set-master eth2 nb-br-100",
			},
		},
		{
			name:    "segment no longer wanted: VLAN side first, bridge last",
			desired: nil,
			snap:    func() snapshot { return host(map[uint32]*observed{100: converged(gatewaySeg())}) },
			want:    []string{"delete-link nb-vl-100", "delete-link nb-vx-100", "delete-link nb-br-100"},
		},
		{
			name:    "clash with a foreign link: refused, untouched",
			desired: []Segment{gatewaySeg()},
			snap: func() snapshot {
				sn := host(map[uint32]*observed{})
				sn.clashes[100] = errString("link nb-br-100 exists but was not created by netbridge")
				return sn
			},
			refused: map[uint32]string{100: "not created by netbridge"},
		},
		{
			name: "access uplink belongs to another bridge",
			desired: []Segment{func() Segment {
				s := gatewaySeg()
				s.Access = true
				return s
			}()},
			snap: func() snapshot {
				sn := host(map[uint32]*observed{})
				sn.ports["eth1"] = "br0"
				return sn
			},
			refused: map[uint32]string{100: "already a port of br0"},
		},
		{
			name: "underlay too small, uplink missing, VTEP not local",
			desired: []Segment{
				func() Segment { s := gatewaySeg(); s.MTU = 1480; return s }(),
				func() Segment { s := gatewaySeg(); s.VNI, s.VLANID, s.Uplink = 101, 11, "eth9"; return s }(),
				func() Segment { s := gatewaySeg(); s.VNI, s.VLANID, s.LocalVTEP = 102, 12, vtep3; return s }(),
			},
			snap: func() snapshot { return host(map[uint32]*observed{}) },
			refused: map[uint32]string{
				100: "VXLAN needs 1530",
				101: "uplink eth9 not found",
				102: "not an address of this host",
			},
		},
		{
			name: "set conflicts: both claimants of a VNI refused, a reused tag refused",
			desired: []Segment{
				gatewaySeg(),
				func() Segment { s := gatewaySeg(); s.Name = "b"; return s }(),
				func() Segment { s := gatewaySeg(); s.Name, s.VNI = "c", 103; return s }(),
			},
			snap:    func() snapshot { return host(map[uint32]*observed{}) },
			refused: map[uint32]string{100: "vni 100 already used by segment \"a\"", 103: "vlan 10 on eth1 already used by segment \"a\""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			acts, refused := plan(tc.desired, tc.snap())
			var got []string
			for _, a := range acts {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("plan:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
			for vni, err := range refused {
				want, ok := tc.refused[vni]
				if !ok {
					t.Errorf("vni %d refused unexpectedly: %v", vni, err)
				} else if !strings.Contains(err.Error(), want) {
					t.Errorf("vni %d: error %q does not mention %q", vni, err, want)
				}
			}
			for vni, want := range tc.refused {
				if _, ok := refused[vni]; !ok && want != "" {
					t.Errorf("vni %d: want refusal mentioning %q", vni, want)
				}
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestValidate(t *testing.T) {
	ok := gatewaySeg()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid segment: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Segment)
		want string
	}{
		{"vni zero", func(s *Segment) { s.VNI = 0 }, "vni 0"},
		{"vni too big", func(s *Segment) { s.VNI = 1 << 24 }, "vni 16777216"},
		{"vlan 4095", func(s *Segment) { s.VLANID = 4095 }, "vlanID 4095"},
		{"node with uplink", func(s *Segment) { s.Role = RoleNode }, "only a gateway"},
		{"uplink is ours", func(s *Segment) { s.Uplink = "nb-br-1" }, "netbridge's own"},
		{"mtu", func(s *Segment) { s.MTU = 9001 }, "mtu 9001"},
		{"no vtep", func(s *Segment) { s.LocalVTEP = netip.Addr{} }, "localVTEP: required"},
		{"mixed families", func(s *Segment) { s.FloodVTEPs = []netip.Addr{netip.MustParseAddr("2001:db8::1")} }, "floodVTEPs"},
		{"multicast mac", func(s *Segment) { s.Endpoints[0].MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }, "unicast Ethernet MAC"},
		{"duplicate mac", func(s *Segment) { s.Endpoints = append(s.Endpoints, Endpoint{MAC: macA, VTEP: vtep2}) }, "endpoints[1].mac"},
		{"duplicate ip", func(s *Segment) {
			s.Endpoints = append(s.Endpoints, Endpoint{MAC: macB, VTEP: vtep2, IPs: []netip.Addr{ipA}})
		}, "endpoints[1].ips 10.0.0.10"},
		{"bad role", func(s *Segment) { s.Role = "router" }, `role "router"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := gatewaySeg()
			tc.mod(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestSegmentLinkNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		vni  uint32
		ok   bool
	}{
		{"nb-br-16777215", 16777215, true},
		{"nb-vx-1", 1, true},
		{"nb-vl-0100", 0, false},
		{"nb-vx-16777216", 0, false},
		{"nb-br-", 0, false},
		{"nb-pb-abcdef", 0, false},
		{"eth0", 0, false},
	} {
		_, vni, ok := segmentLink(tc.name)
		if ok != tc.ok || vni != tc.vni {
			t.Errorf("segmentLink(%q) = %d, %t; want %d, %t", tc.name, vni, ok, tc.vni, tc.ok)
		}
	}
	if n := VXLANName(16777215); len(n) > 15 {
		t.Errorf("%s is longer than IFNAMSIZ-1", n)
	}
}
