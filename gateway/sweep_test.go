package gateway

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestSweepRequests(t *testing.T) {
	routed := desired(StateActive, vmIP)
	extended := desired(StateActive, vmIP)
	extended.Segments[0].Phase = PhaseExtended
	completed := desired(StateActive, vmIP)
	completed.Segments[0].Phase = PhaseCompleted
	broad := desired(StateActive, vmIP)
	broad.Segments[0].Subnets = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}
	dual := desired(StateActive, vmIP)
	dual.Segments[0].Subnets = []netip.Prefix{netip.MustParsePrefix("10.20.100.0/30"), netip.MustParsePrefix("2001:db8::/64")}
	held := map[SegmentKey]bool{app: true}
	tests := []struct {
		name     string
		d        Desired
		role     Role
		attached map[SegmentKey]bool
		segErr   map[SegmentKey]string
		wantN    int // -1: no request
		wantErr  bool
		wantIPs  []string
	}{
		{name: "routed on the active gateway: every host of the /24", d: routed, role: RoleGateway, attached: held, wantN: 254},
		{name: "standby gateway does not hold the VLAN: no sweep", d: routed, role: RoleGateway, attached: map[SegmentKey]bool{}, wantN: -1},
		{name: "node role: no sweep", d: routed, role: RoleNode, attached: held, wantN: -1},
		{name: "extended: no sweep", d: extended, role: RoleGateway, attached: held, wantN: -1},
		{name: "completed: the VLAN is released, no sweep", d: completed, role: RoleGateway, attached: held, wantN: -1},
		{name: "segment in error: no sweep", d: routed, role: RoleGateway, attached: held, segErr: map[SegmentKey]string{app: "boom"}, wantN: -1},
		{name: "too broad: reported, not swept", d: broad, role: RoleGateway, attached: held, wantN: 0, wantErr: true},
		{name: "IPv6 subnets skipped, /30 hosts only", d: dual, role: RoleGateway, attached: held, wantN: 2, wantIPs: []string{"10.20.100.1", "10.20.100.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs := sweepRequests(tt.d, tt.role, tt.attached, tt.segErr)
			if tt.wantN < 0 {
				if len(reqs) != 0 {
					t.Fatalf("requests = %+v, want none", reqs)
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("requests = %d, want 1", len(reqs))
			}
			r := reqs[0]
			if len(r.IPs) != tt.wantN || (r.Error != "") != tt.wantErr {
				t.Fatalf("got %d IPs, error %q; want %d, error %v", len(r.IPs), r.Error, tt.wantN, tt.wantErr)
			}
			if r.Iface != vlanSide(tt.d.Segments[0]) {
				t.Errorf("iface = %s, want the VLAN side %s", r.Iface, vlanSide(tt.d.Segments[0]))
			}
			for i, want := range tt.wantIPs {
				if r.IPs[i].String() != want {
					t.Errorf("IPs[%d] = %s, want %s", i, r.IPs[i], want)
				}
			}
			if tt.wantN == 254 && (r.IPs[0].String() != "10.20.100.1" || r.IPs[253].String() != "10.20.100.254") {
				t.Errorf("range %s..%s, want 10.20.100.1..10.20.100.254", r.IPs[0], r.IPs[253])
			}
		})
	}
}

type answeringProber struct {
	answers map[netip.Addr]net.HardwareAddr
	calls   chan []netip.Addr
}

func (p answeringProber) Probe(_ context.Context, _ string, ips []netip.Addr) (map[netip.Addr]net.HardwareAddr, error) {
	p.calls <- ips
	out := map[netip.Addr]net.HardwareAddr{}
	for _, ip := range ips {
		if m, ok := p.answers[ip]; ok {
			out[ip] = m
		}
	}
	return out, nil
}

func TestSweeperRecordsAnswersOncePerInterval(t *testing.T) {
	legacy := netip.MustParseAddr("10.20.100.20")
	p := answeringProber{answers: map[netip.Addr]net.HardwareAddr{legacy: mustMAC("52:54:00:00:00:20")}, calls: make(chan []netip.Addr, 4)}
	changed := make(chan struct{}, 4)
	s := NewSweeper(p, time.Hour, zap.NewNop(), func() { changed <- struct{}{} })
	req := sweepRequests(desired(StateActive, vmIP), RoleGateway, map[SegmentKey]bool{app: true}, nil)[0]
	s.Request(context.Background(), req)
	<-changed
	res, ok := s.Result(app)
	if !ok || len(res.Answered) != 1 || res.Answered[0].IP != legacy || res.Answered[0].MAC.String() != "52:54:00:00:00:20" || res.Addresses != 254 {
		t.Fatalf("result = %+v, want 10.20.100.20 answered by 52:54:00:00:00:20 of 254", res)
	}
	s.Request(context.Background(), req)
	if len(p.calls) != 1 {
		t.Fatalf("probes = %d, want 1 within the interval", len(p.calls))
	}
	s.Retain(map[SegmentKey]bool{})
	if _, ok := s.Result(app); ok {
		t.Fatal("result kept after the segment left Routed")
	}
}
