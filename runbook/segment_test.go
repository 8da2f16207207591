package runbook_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/runbook"
)

var appRef = runbook.SegmentRef{BridgeConfig: "dc1", Segment: "app"}

// settled is healthy() with the segment in phase and every gateway
// reporting it programmed, both gateways' sessions up, the VM Active and
// verified, gatewayAddress and aggregate set, and an empty sweep at sweptAt.
func settled(phase nbv1.SegmentPhase, sweptAt time.Time) *runbook.Snapshot {
	s := healthy()
	seg := &s.BridgeConfigs[0].Spec.Segments[0]
	seg.Phase, seg.GatewayAddress = phase, "10.20.100.1/24"
	s.BridgeConfigs[0].Spec.Advertise = &nbv1.AdvertiseSpec{HostRoutes: true, Aggregate: true}
	s.Gateways[1].Status.Peers = []nbv1.GatewayPeerStatus{{Address: "192.0.2.1", ASN: 65000, State: "Established"}}
	activate(s, true, true)
	for i := range s.Gateways {
		s.Gateways[i].Status.Segments[0].Phase = string(phase)
	}
	// A node agent lists the segment too (no BGP, no phase): not a gateway.
	s.Gateways = append(s.Gateways, nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: "node1"},
		Status: nbv1.BridgeGatewayStatus{Segments: []nbv1.GatewaySegmentStatus{{BridgeConfig: "dc1", Name: "app", Role: "Node", Programmed: true}}}})
	if phase == nbv1.PhaseRouted {
		s.Gateways[0].Status.Segments[0].LegacySweep = &nbv1.LegacySweep{At: metav1.NewTime(sweptAt), Addresses: 254}
	}
	if phase != nbv1.PhaseRouted {
		s.Gateways[0].Status.Advertised, s.Gateways[1].Status.Advertised = nil, nil
	}
	if phase == nbv1.PhaseCompleted {
		s.Gateways[0].Status.Advertised = []string{"10.20.100.0/24"}
	}
	return s
}

func TestNextPhase(t *testing.T) {
	cases := []struct {
		from      nbv1.SegmentPhase
		direction string
		want      nbv1.SegmentPhase
		wantErr   string
	}{
		{"", runbook.SegmentAdvance, nbv1.PhaseRouted, ""},
		{nbv1.PhaseExtended, runbook.SegmentAdvance, nbv1.PhaseRouted, ""},
		{nbv1.PhaseRouted, runbook.SegmentAdvance, nbv1.PhaseCompleted, ""},
		{nbv1.PhaseCompleted, runbook.SegmentAdvance, "", "already Completed"},
		{nbv1.PhaseCompleted, runbook.SegmentRollback, nbv1.PhaseRouted, ""},
		{nbv1.PhaseRouted, runbook.SegmentRollback, nbv1.PhaseExtended, ""},
		{nbv1.PhaseExtended, runbook.SegmentRollback, "", "already Extended"},
		{"Bogus", runbook.SegmentAdvance, "", `phase "Bogus"`},
		{nbv1.PhaseRouted, "sideways", "", `direction "sideways"`},
	}
	for _, c := range cases {
		got, err := runbook.NextPhase(c.from, c.direction)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("NextPhase(%q, %s) error = %v, want %q", c.from, c.direction, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("NextPhase(%q, %s) = %q, %v; want %q", c.from, c.direction, got, err, c.want)
		}
	}
}

func TestBuildSegmentPlan(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	cases := []struct {
		name      string
		snap      func() *runbook.Snapshot
		direction string
		after     time.Time
		wantNext  nbv1.SegmentPhase
		wantReady bool
		// check name → result and a substring of its message.
		want     map[string][2]string
		wantStep string
	}{
		{
			name: "Extended → Routed, all healthy", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseRouted, wantReady: true,
			snap:     func() *runbook.Snapshot { return settled(nbv1.PhaseExtended, now) },
			want:     map[string][2]string{runbook.CheckAllSessions: {runbook.Pass, "gw-b→192.0.2.1"}, runbook.CheckNoRefused: {runbook.Pass, ""}},
			wantStep: "advertise the active VMs' host routes from gw-a (standbys prepended): 10.20.100.10/32",
		},
		{
			name: "Extended → Routed refused: a standby's session is down", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseRouted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseExtended, now)
				s.Gateways[1].Status.Peers[0].State, s.Gateways[1].Status.Peers[0].LastError = "Active", "connection timed out"
				return s
			},
			want: map[string][2]string{runbook.CheckAllSessions: {runbook.Fail, "gw-b→192.0.2.1 Active (connection timed out)"}},
		},
		{
			name: "Extended → Routed refused: an endpoint is refused", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseRouted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseExtended, now)
				s.Gateways[0].Status.Refused = []nbv1.RefusedEndpoint{{Namespace: "wave1", Endpoint: "web1-eth0", IP: "10.20.100.10",
					Reason: string(nbv1.ReasonDuplicateAddress), MAC: "52:54:00:aa:bb:cc"}}
				return s
			},
			want: map[string][2]string{runbook.CheckNoRefused: {runbook.Fail, "10.20.100.10 refused: DuplicateAddress, answered by 52:54:00:aa:bb:cc (on gw-a)"}},
		},
		{
			name: "transition refused while a gateway has not programmed the current phase", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseRouted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseExtended, now)
				s.Gateways[1].Status.Segments[0].Phase = string(nbv1.PhaseRouted)
				return s
			},
			want: map[string][2]string{runbook.CheckGatewaysPhase: {runbook.Fail, "gw-b programmed phase Routed"}},
		},
		{
			name: "Routed → Completed, legacy side empty", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted, wantReady: true,
			snap: func() *runbook.Snapshot { return settled(nbv1.PhaseRouted, now) },
			want: map[string][2]string{
				runbook.CheckVMsVerified: {runbook.Pass, "wave1/web1"}, runbook.CheckLegacyEmpty: {runbook.Pass, "swept 254 addresses"},
				runbook.CheckGatewayAddress: {runbook.Pass, "10.20.100.1/24"}, runbook.CheckAggregate: {runbook.Pass, ""},
			},
			wantStep: "then withdraw the host routes 10.20.100.10/32 (only once the aggregate is advertised)",
		},
		{
			name: "Routed → Completed refused: a legacy host and the legacy router answer, named", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.Gateways[0].Status.Segments[0].LegacySweep.Answered = []nbv1.SweepAnswer{
					{IP: "10.20.100.1", MAC: "52:54:00:00:00:01"}, {IP: "10.20.100.20", MAC: "52:54:00:00:00:20"},
					// The VM's own IP and MAC is a migrated VM, not legacy.
					{IP: "10.20.100.10", MAC: "02:00:00:00:00:10"},
				}
				return s
			},
			want: map[string][2]string{runbook.CheckLegacyEmpty: {runbook.Fail,
				"10.20.100.1 answered by 52:54:00:00:00:01 (the legacy gateway address: shut the legacy router's interface first), 10.20.100.20 answered by 52:54:00:00:00:20"}},
		},
		{
			name: "Routed → Completed: the VM's IP answered by another MAC is legacy", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.Gateways[0].Status.Segments[0].LegacySweep.Answered = []nbv1.SweepAnswer{{IP: "10.20.100.10", MAC: "52:54:00:de:ad:01"}}
				return s
			},
			want: map[string][2]string{runbook.CheckLegacyEmpty: {runbook.Fail, "10.20.100.10 answered by 52:54:00:de:ad:01"}},
		},
		{
			name: "Routed → Completed: a sweep older than the command is pending", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted,
			after: now.Add(5 * time.Second),
			snap:  func() *runbook.Snapshot { return settled(nbv1.PhaseRouted, now) },
			want:  map[string][2]string{runbook.CheckLegacyEmpty: {runbook.Pending, "waiting for a sweep by gw-a newer than"}},
		},
		{
			name: "Routed → Completed: no sweep yet is pending", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.Gateways[0].Status.Segments[0].LegacySweep = nil
				return s
			},
			want: map[string][2]string{runbook.CheckLegacyEmpty: {runbook.Pending, "has not swept"}},
		},
		{
			name: "Routed → Completed: a sweep error fails", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.Gateways[0].Status.Segments[0].LegacySweep.Error = "subnet 10.20.0.0/16 is too broad to sweep"
				return s
			},
			want: map[string][2]string{runbook.CheckLegacyEmpty: {runbook.Fail, "too broad"}},
		},
		{
			name: "Routed → Completed refused: a VM is not Active, no gateway address", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.Endpoints[0].Spec.State = nbv1.StateStaged
				s.BridgeConfigs[0].Spec.Segments[0].GatewayAddress = ""
				return s
			},
			want: map[string][2]string{
				runbook.CheckVMsVerified:    {runbook.Fail, "wave1/web1: endpoint is Staged, not Active"},
				runbook.CheckGatewayAddress: {runbook.Fail, "gatewayAddress is not set"},
			},
		},
		{
			name: "Routed → Completed: aggregate off is a warning", direction: runbook.SegmentAdvance, wantNext: nbv1.PhaseCompleted, wantReady: true,
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.BridgeConfigs[0].Spec.Advertise.Aggregate = false
				return s
			},
			want: map[string][2]string{runbook.CheckAggregate: {runbook.Warn, "nothing is advertised"}},
		},
		{
			name: "Completed → Routed re-extends first, withdraws the aggregate last", direction: runbook.SegmentRollback, wantNext: nbv1.PhaseRouted, wantReady: true,
			snap:     func() *runbook.Snapshot { return settled(nbv1.PhaseCompleted, now) },
			want:     map[string][2]string{runbook.CheckAllSessions: {runbook.Pass, ""}},
			wantStep: "withdraw the aggregate 10.20.100.0/24 last",
		},
		{
			name: "Routed → Extended", direction: runbook.SegmentRollback, wantNext: nbv1.PhaseExtended, wantReady: true,
			snap:     func() *runbook.Snapshot { return settled(nbv1.PhaseRouted, now) },
			wantStep: "withdraw the host routes 10.20.100.10/32 from every gateway",
		},
		{
			name: "nothing past Completed", direction: runbook.SegmentAdvance,
			snap: func() *runbook.Snapshot { return settled(nbv1.PhaseCompleted, now) },
			want: map[string][2]string{runbook.CheckTransition: {runbook.Fail, "already Completed"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := runbook.BuildSegmentPlan(c.snap(), appRef, c.direction, c.after)
			if p.Next != c.wantNext || p.Ready != c.wantReady {
				t.Errorf("next %q ready %v, want %q %v; checks %+v", p.Next, p.Ready, c.wantNext, c.wantReady, p.Checks)
			}
			for name, w := range c.want {
				found := false
				for _, ch := range p.Checks {
					if ch.Name == name {
						found = true
						if ch.Result != w[0] || !strings.Contains(ch.Message, w[1]) {
							t.Errorf("check %s = %s %q, want %s containing %q", name, ch.Result, ch.Message, w[0], w[1])
						}
					}
				}
				if !found {
					t.Errorf("no check %s in %+v", name, p.Checks)
				}
			}
			if c.wantStep != "" && !strings.Contains(strings.Join(p.Steps, "\n"), c.wantStep) {
				t.Errorf("steps %q lack %q", p.Steps, c.wantStep)
			}
			var buf bytes.Buffer
			if err := runbook.Render(&buf, runbook.OutputTable, p); err != nil || !strings.Contains(buf.String(), "preflight:") {
				t.Errorf("table render: %v\n%s", err, buf.String())
			}
		})
	}
}

func TestEvaluateSegmentPhase(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name     string
		snap     func() *runbook.Snapshot
		phase    nbv1.SegmentPhase
		wantDone bool
		wantMsg  string
	}{
		{name: "Routed reached: host route advertised", phase: nbv1.PhaseRouted, wantDone: true, wantMsg: "host routes 10.20.100.10/32 advertised from gw-a",
			snap: func() *runbook.Snapshot { return settled(nbv1.PhaseRouted, now) }},
		{name: "Routed: a gateway still on Completed", phase: nbv1.PhaseRouted, wantMsg: "gw-b programmed phase Completed",
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.Gateways[1].Status.Segments[0].Phase = string(nbv1.PhaseCompleted)
				return s
			}},
		{name: "Routed after Completed: the aggregate is withdrawn last", phase: nbv1.PhaseRouted, wantMsg: "aggregate still advertised: 10.20.100.0/24 by gw-a",
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseRouted, now)
				s.Gateways[0].Status.Advertised = append(s.Gateways[0].Status.Advertised, "10.20.100.0/24")
				return s
			}},
		{name: "Completed: aggregate in, host routes out", phase: nbv1.PhaseCompleted, wantDone: true, wantMsg: "aggregate 10.20.100.0/24 advertised from gw-a",
			snap: func() *runbook.Snapshot { return settled(nbv1.PhaseCompleted, now) }},
		{name: "Completed: host route still advertised by the standby", phase: nbv1.PhaseCompleted, wantMsg: "host routes still advertised: 10.20.100.10/32 by gw-b",
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseCompleted, now)
				s.Gateways[1].Status.Advertised = []string{"10.20.100.10/32"}
				return s
			}},
		{name: "Completed: aggregate not yet advertised", phase: nbv1.PhaseCompleted, wantMsg: "aggregate 10.20.100.0/24 not yet advertised by gw-a",
			snap: func() *runbook.Snapshot {
				s := settled(nbv1.PhaseCompleted, now)
				s.Gateways[0].Status.Advertised = nil
				return s
			}},
		{name: "Extended: host routes gone", phase: nbv1.PhaseExtended, wantDone: true, wantMsg: "host routes 10.20.100.10/32 withdrawn",
			snap: func() *runbook.Snapshot { return settled(nbv1.PhaseExtended, now) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := runbook.EvaluateSegmentPhase(c.snap(), appRef, c.phase)
			if p.Done != c.wantDone || !strings.Contains(p.Message, c.wantMsg) {
				t.Errorf("got done=%v %q, want done=%v containing %q", p.Done, p.Message, c.wantDone, c.wantMsg)
			}
		})
	}
}
