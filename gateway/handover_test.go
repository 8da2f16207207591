package gateway

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestPhaseHandoverMakeBeforeBreak: between Routed and Completed the
// replacement routes are advertised before those they replace go.
func TestPhaseHandoverMakeBeforeBreak(t *testing.T) {
	host := netip.PrefixFrom(vmIP, 32)
	agg := netip.MustParsePrefix("10.20.100.0/24")
	adv := func(ps ...netip.Prefix) map[netip.Prefix]bool {
		m := map[netip.Prefix]bool{}
		for _, p := range ps {
			m[p] = true
		}
		return m
	}
	tests := []struct {
		name         string
		phase        Phase
		aggregate    bool
		advertised   map[netip.Prefix]bool
		wantRoutes   []netip.Prefix
		wantHandover bool
	}{
		{name: "Completed, aggregate not yet advertised: host routes kept", phase: PhaseCompleted, aggregate: true,
			advertised: adv(host), wantRoutes: []netip.Prefix{host, agg}, wantHandover: true},
		{name: "Completed, aggregate advertised: host routes withdrawn", phase: PhaseCompleted, aggregate: true,
			advertised: adv(host, agg), wantRoutes: []netip.Prefix{agg}},
		{name: "Completed without aggregate: nothing to wait for", phase: PhaseCompleted,
			advertised: adv(host), wantRoutes: nil},
		{name: "Routed after Completed, host routes not yet advertised: aggregate kept", phase: PhaseRouted, aggregate: true,
			advertised: adv(agg), wantRoutes: []netip.Prefix{host, agg}, wantHandover: true},
		{name: "Routed after Completed, host routes advertised: aggregate withdrawn last", phase: PhaseRouted, aggregate: true,
			advertised: adv(host, agg), wantRoutes: []netip.Prefix{host}},
		{name: "Routed, aggregate never advertised: host routes only", phase: PhaseRouted, aggregate: true,
			advertised: adv(), wantRoutes: []netip.Prefix{host}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := desired(StateActive, vmIP)
			d.Segments[0].Phase = tt.phase
			d.BGP.Aggregate = tt.aggregate
			v := runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true},
				Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear}, Advertised: tt.advertised}
			p := buildPlan(d, v)
			var got []netip.Prefix
			for _, r := range p.BGP.Routes {
				got = append(got, r.Prefix)
			}
			slices.SortFunc(got, func(a, b netip.Prefix) int { return b.Bits() - a.Bits() })
			if !slices.Equal(got, tt.wantRoutes) || p.Handover != tt.wantHandover {
				t.Errorf("routes %v handover %v, want %v %v", got, p.Handover, tt.wantRoutes, tt.wantHandover)
			}
		})
	}
}

// TestHandoverReplans: a pass that advertised a handover's replacement
// routes asks for another pass (which withdraws the replaced routes); a
// settled or stuck handover does not loop.
func TestHandoverReplans(t *testing.T) {
	host := netip.PrefixFrom(vmIP, 32)
	tr := NewTrigger()
	step := bgpStep{speaker: &fakeSpeaker{log: &callLog{}}, log: zapNop(), trigger: tr}
	d := desired(StateActive, vmIP)
	d.Segments[0].Phase, d.BGP.Aggregate = PhaseCompleted, true
	view := func(adv map[netip.Prefix]bool) runtimeView {
		return runtimeView{Role: RoleGateway, LocalVTEP: gwVT, Attached: map[SegmentKey]bool{app: true},
			Gate: map[netip.Addr]probeVerdict{vmIP: verdictClear}, Advertised: adv}
	}
	was := map[netip.Prefix]bool{host: true}
	p := &pass{d: d, plan: buildPlan(d, view(was)), prevAdv: was}
	step.run(context.Background(), p)
	if !p.plan.Handover || !p.advertised[netip.MustParsePrefix("10.20.100.0/24")] {
		t.Fatalf("first pass: handover %v advertised %v, want the aggregate added in a handover", p.plan.Handover, p.advertised)
	}
	select {
	case <-tr.ch:
	case <-time.After(2 * time.Second):
		t.Fatal("no re-plan after the aggregate went out")
	}
	// The same handover again with nothing new advertised: no re-plan.
	stuck := &pass{d: d, plan: p.plan, prevAdv: p.advertised}
	stuck.plan.BGP.Routes = p.plan.BGP.Routes
	step.run(context.Background(), stuck)
	select {
	case <-tr.ch:
		t.Fatal("re-plan although nothing changed")
	case <-time.After(3 * handoverDelay):
	}
}
