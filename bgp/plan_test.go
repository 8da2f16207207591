package bgp

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v4/api"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func prefixesOf(rs []Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Prefix.String())
	}
	slices.Sort(out)
	return out
}

func TestPlanRoutes(t *testing.T) {
	a := Route{Prefix: pfx("10.0.0.1/32")}
	b := Route{Prefix: pfx("10.0.0.2/32"), Communities: []Community{1, 2}}
	bReordered := Route{Prefix: pfx("10.0.0.2/32"), Communities: []Community{2, 1, 2}}
	bOther := Route{Prefix: pfx("10.0.0.2/32"), Communities: []Community{3}}
	c := Route{Prefix: pfx("fd00::3/128"), MED: ptr(uint32(5))}
	cMED0 := Route{Prefix: pfx("fd00::3/128"), MED: ptr(uint32(0))}
	cNoMED := Route{Prefix: pfx("fd00::3/128")}
	actual := func(rs ...Route) map[netip.Prefix]Route {
		m := map[netip.Prefix]Route{}
		for _, r := range rs {
			m[r.Prefix] = r
		}
		return m
	}
	for _, tc := range []struct {
		name                  string
		desired               []Route
		actual                map[netip.Prefix]Route
		add, update, withdraw []string
	}{
		{name: "empty"},
		{name: "all new", desired: []Route{a, b}, add: []string{"10.0.0.1/32", "10.0.0.2/32"}},
		{name: "same state sends nothing", desired: []Route{a, b, c}, actual: actual(a, b, c)},
		{name: "community order and duplicates do not matter", desired: []Route{bReordered}, actual: actual(b)},
		{name: "community change updates only that route", desired: []Route{a, bOther, c}, actual: actual(a, b, c), update: []string{"10.0.0.2/32"}},
		{name: "MED 0 differs from no MED", desired: []Route{cMED0}, actual: actual(cNoMED), update: []string{"fd00::3/128"}},
		{name: "MED value change", desired: []Route{cMED0}, actual: actual(c), update: []string{"fd00::3/128"}},
		{name: "removed routes are withdrawn", desired: []Route{a}, actual: actual(a, b, c), withdraw: []string{"10.0.0.2/32", "fd00::3/128"}},
		{name: "withdraw all", actual: actual(a), withdraw: []string{"10.0.0.1/32"}},
		{name: "next hop change", desired: []Route{{Prefix: a.Prefix, NextHop: addr("10.1.1.1")}}, actual: actual(a), update: []string{"10.0.0.1/32"}},
		{name: "prepend change", desired: []Route{{Prefix: a.Prefix, ASPathPrepend: 2}}, actual: actual(a), update: []string{"10.0.0.1/32"}},
		{name: "large community change", desired: []Route{{Prefix: a.Prefix, LargeCommunities: []LargeCommunity{{1, 2, 3}}}}, actual: actual(a), update: []string{"10.0.0.1/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planRoutes(tc.desired, tc.actual)
			if got := prefixesOf(p.Add); !slices.Equal(got, tc.add) {
				t.Errorf("add = %v, want %v", got, tc.add)
			}
			if got := prefixesOf(p.Update); !slices.Equal(got, tc.update) {
				t.Errorf("update = %v, want %v", got, tc.update)
			}
			if got := prefixesOf(p.Withdraw); !slices.Equal(got, tc.withdraw) {
				t.Errorf("withdraw = %v, want %v", got, tc.withdraw)
			}
			if p.empty() != (len(tc.add)+len(tc.update)+len(tc.withdraw) == 0) {
				t.Errorf("empty() = %v", p.empty())
			}
		})
	}
}

func TestPlanPeers(t *testing.T) {
	p1 := Peer{Address: addr("192.0.2.1"), ASN: 65001}
	p2 := Peer{Address: addr("192.0.2.2"), ASN: 65002, Password: "x"}
	p2pw := p2
	p2pw.Password = "y"
	p2desc := p2
	p2desc.Description = "tor-b"
	unknown := Peer{Address: addr("192.0.2.9")}
	m := func(ps ...Peer) map[netip.Addr]Peer {
		out := map[netip.Addr]Peer{}
		for _, p := range ps {
			out[p.Address] = p
		}
		return out
	}
	for _, tc := range []struct {
		name                string
		desired             []Peer
		actual              map[netip.Addr]Peer
		add, update, remove int
	}{
		{name: "new", desired: []Peer{p1, p2}, add: 2},
		{name: "same", desired: []Peer{p1, p2}, actual: m(p1, p2)},
		{name: "password change resets that peer only", desired: []Peer{p1, p2pw}, actual: m(p1, p2), update: 1},
		{name: "description change", desired: []Peer{p1, p2desc}, actual: m(p1, p2), update: 1},
		{name: "removed", desired: []Peer{p1}, actual: m(p1, p2), remove: 1},
		{name: "peer GoBGP has but we did not configure is removed", desired: []Peer{p1}, actual: m(p1, unknown), remove: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planPeers(tc.desired, tc.actual)
			if len(p.Add) != tc.add || len(p.Update) != tc.update || len(p.Remove) != tc.remove {
				t.Errorf("plan = %+v, want add %d update %d remove %d", p, tc.add, tc.update, tc.remove)
			}
		})
	}
}

func TestNeedsRestart(t *testing.T) {
	g := Global{ASN: 65000, RouterID: addr("10.0.0.1"), ListenPort: -1}
	other := func(f func(*Global)) Global { c := g; f(&c); return c }
	for _, tc := range []struct {
		name string
		cur  *Global
		want Global
		exp  bool
	}{
		{"not running", nil, g, true},
		{"same", &g, g, false},
		{"ASN", &g, other(func(c *Global) { c.ASN = 65010 }), true},
		{"router ID", &g, other(func(c *Global) { c.RouterID = addr("10.0.0.2") }), true},
		{"port", &g, other(func(c *Global) { c.ListenPort = 179 }), true},
		{"listen addresses", &g, other(func(c *Global) { c.ListenAddresses = []netip.Addr{addr("10.0.0.1")} }), true},
	} {
		if got := needsRestart(tc.cur, tc.want); got != tc.exp {
			t.Errorf("%s: needsRestart = %v, want %v", tc.name, got, tc.exp)
		}
	}
}

func TestExportGuardFilter(t *testing.T) {
	g := exportGuard{allowed: []netip.Prefix{pfx("10.1.0.0/24"), pfx("fd10::/64")}}
	for _, tc := range []struct {
		name   string
		route  Route
		reason string // "" = allowed
	}{
		{"host route inside", Route{Prefix: pfx("10.1.0.7/32")}, ""},
		{"v6 host route inside", Route{Prefix: pfx("fd10::7/128")}, ""},
		{"outside", Route{Prefix: pfx("192.0.2.7/32")}, "outside the allowed prefixes"},
		{"v6 outside", Route{Prefix: pfx("fd11::7/128")}, "outside the allowed prefixes"},
		{"neighbouring subnet", Route{Prefix: pfx("10.1.1.7/32")}, "outside the allowed prefixes"},
		{"aggregate equal to the subnet", Route{Prefix: pfx("10.1.0.0/24"), Aggregate: true}, ""},
		{"aggregate without flag", Route{Prefix: pfx("10.1.0.0/24")}, "not a host route"},
		{"aggregate wider than the subnet", Route{Prefix: pfx("10.1.0.0/23"), Aggregate: true}, "outside the allowed prefixes"},
		{"default route", Route{Prefix: pfx("0.0.0.0/0"), Aggregate: true}, "outside the allowed prefixes"},
		{"host bits set", Route{Prefix: pfx("10.1.0.7/24"), Aggregate: true}, "host bits set"},
		{"invalid", Route{}, "invalid prefix"},
		{"4in6", Route{Prefix: pfx("::ffff:10.1.0.7/128")}, "IPv4-mapped"},
		{"next hop family", Route{Prefix: pfx("10.1.0.8/32"), NextHop: addr("fd10::1")}, "next hop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := g.check(tc.route)
			if (got == "") != (tc.reason == "") || !strings.Contains(got, tc.reason) {
				t.Errorf("check = %q, want %q", got, tc.reason)
			}
		})
	}

	ok, refused := g.filter([]Route{
		{Prefix: pfx("10.1.0.1/32")},
		{Prefix: pfx("192.0.2.1/32")},
		{Prefix: pfx("10.1.0.1/32"), MED: ptr(uint32(1))},
		{Prefix: pfx("fd10::1/128")},
	})
	if got := prefixesOf(ok); !slices.Equal(got, []string{"10.1.0.1/32", "fd10::1/128"}) {
		t.Errorf("allowed = %v", got)
	}
	if len(refused) != 2 || refused[0].Prefix != pfx("192.0.2.1/32") || refused[1].Reason != "duplicate prefix" {
		t.Errorf("refused = %+v", refused)
	}
	err := refusedError(refused)
	if !errors.Is(err, ErrRouteRefused) || !strings.Contains(err.Error(), "192.0.2.1/32") {
		t.Errorf("error = %v", err)
	}
	if refusedError(nil) != nil {
		t.Error("no refused routes must give a nil error")
	}

	// No allowed prefixes: nothing leaves.
	if why := (exportGuard{}).check(Route{Prefix: pfx("10.1.0.1/32")}); why == "" {
		t.Error("empty guard allowed a route")
	}
}

func TestPoliciesDefaultReject(t *testing.T) {
	req := policies([]netip.Prefix{pfx("10.1.0.0/24"), pfx("fd10::/64")})
	if len(req.DefinedSets) != 2 || req.DefinedSets[0].Prefixes[0].MaskLengthMin != 24 || req.DefinedSets[0].Prefixes[0].MaskLengthMax != 32 ||
		req.DefinedSets[1].Prefixes[0].MaskLengthMax != 128 {
		t.Errorf("defined sets = %v", req.DefinedSets)
	}
	for _, a := range req.Assignments {
		if a.DefaultAction != api.RouteAction_ROUTE_ACTION_REJECT {
			t.Errorf("assignment %v default %v, want REJECT", a.Direction, a.DefaultAction)
		}
	}
	if req := policies(nil); len(req.DefinedSets) != 0 || len(req.Policies[0].Statements) != 1 {
		t.Errorf("empty allowed set: %v", req)
	}
}

func TestCommunityParse(t *testing.T) {
	c, err := ParseCommunity("65535:0")
	if err != nil || c != GracefulShutdown || c.String() != "65535:0" {
		t.Errorf("ParseCommunity = %v %v", c, err)
	}
	for _, bad := range []string{"", "1", "70000:1", "1:70000", "a:b"} {
		if _, err := ParseCommunity(bad); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", bad)
		}
	}
}

func TestWithGracefulShutdown(t *testing.T) {
	in := []Route{{Prefix: pfx("10.0.0.1/32"), Communities: []Community{5}}, {Prefix: pfx("10.0.0.2/32"), Communities: []Community{GracefulShutdown}}}
	out := withGracefulShutdown(in)
	if !slices.Equal(out[0].Communities, []Community{5, GracefulShutdown}) || len(out[1].Communities) != 1 {
		t.Errorf("out = %+v", out)
	}
	if len(in[0].Communities) != 1 {
		t.Error("input modified")
	}
}
