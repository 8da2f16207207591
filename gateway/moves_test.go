package gateway

import (
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/vlan"
)

// TestMoveHints: which announcements move a VM, and when a hint ends.
func TestMoveHints(t *testing.T) {
	n3VT := netip.MustParseAddr("172.30.0.23")
	stranger := netip.MustParseAddr("198.51.100.7")
	other := mustMAC("52:54:00:00:09:99")
	const vni = 10100
	plan := func(d Desired, m *moveHints) hostPlan {
		v := runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true},
			Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear}, Moved: m.view()}
		p := buildPlan(d, v)
		m.observe(d, p)
		return p
	}
	fdb := func(p hostPlan) (netip.Addr, []netip.Addr) {
		e := p.Segments[0].Endpoints
		if len(e) != 1 {
			t.Fatalf("plan endpoints %+v, want one", e)
		}
		return e[0].VTEP, p.Segments[0].FloodVTEPs
	}
	tests := []struct {
		name      string
		sightings []vlan.Sighting
		age       time.Duration
		endpoint  netip.Addr // the endpoint's VTEP at the second plan
		want      netip.Addr
		fired     int
	}{
		{name: "no announcement: the endpoint's node", endpoint: n1VT, want: n1VT},
		{name: "the VM from another known node: moved at once", sightings: []vlan.Sighting{{VNI: vni, MAC: vmMAC, VTEP: n2VT}},
			endpoint: n1VT, want: n2VT, fired: 1},
		{name: "from where we already send it: nothing", sightings: []vlan.Sighting{{VNI: vni, MAC: vmMAC, VTEP: n1VT}},
			endpoint: n1VT, want: n1VT},
		{name: "from a VTEP that is no node: ignored", sightings: []vlan.Sighting{{VNI: vni, MAC: vmMAC, VTEP: stranger}},
			endpoint: n1VT, want: n1VT},
		{name: "an unmanaged MAC: ignored", sightings: []vlan.Sighting{{VNI: vni, MAC: other, VTEP: n2VT}},
			endpoint: n1VT, want: n1VT},
		{name: "the VM's MAC on another VNI: ignored", sightings: []vlan.Sighting{{VNI: vni + 1, MAC: vmMAC, VTEP: n2VT}},
			endpoint: n1VT, want: n1VT},
		{name: "the endpoint caught up: the hint is gone, the endpoint rules", sightings: []vlan.Sighting{{VNI: vni, MAC: vmMAC, VTEP: n2VT}},
			endpoint: n2VT, want: n2VT, fired: 1},
		{name: "moved on again before the endpoint followed: the latest node", sightings: []vlan.Sighting{{VNI: vni, MAC: vmMAC, VTEP: n2VT}, {VNI: vni, MAC: vmMAC, VTEP: n3VT}},
			endpoint: n1VT, want: n3VT, fired: 2},
		{name: "never confirmed: after the TTL the endpoint rules again", sightings: []vlan.Sighting{{VNI: vni, MAC: vmMAC, VTEP: n2VT}},
			age: moveHintTTL, endpoint: n1VT, want: n1VT, fired: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			fired := 0
			m := newMoveHints(func() { fired++ }, zap.NewNop())
			m.now = func() time.Time { return now }
			d := desired(StateActive, vmIP)
			d.NodeVTEPs = []netip.Addr{n1VT, n2VT, n3VT}
			if got, _ := fdb(plan(d, m)); got != n1VT {
				t.Fatalf("before any announcement: FDB to %s, want %s", got, n1VT)
			}
			for _, s := range tc.sightings {
				m.sighted(s)
			}
			now = now.Add(tc.age)
			d.Endpoints[0].VTEP = tc.endpoint
			got, flood := fdb(plan(d, m))
			if got != tc.want {
				t.Errorf("FDB to %s, want %s", got, tc.want)
			}
			if len(flood) != 1 || flood[0] != tc.want {
				t.Errorf("flood %v, want [%s]", flood, tc.want)
			}
			if fired != tc.fired {
				t.Errorf("reconciles asked %d, want %d", fired, tc.fired)
			}
			// A third plan after the endpoint caught up or the TTL: the
			// endpoint's VTEP, and no hint left behind.
			if tc.endpoint == tc.want || tc.age > 0 {
				if n := len(m.view()); n != 0 {
					t.Errorf("%d hints left after the endpoint caught up or the TTL", n)
				}
			}
		})
	}
}
