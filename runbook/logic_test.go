package runbook_test

// Table tests of the pure functions over hand-built snapshots (no API server).

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/runbook"
)

var vm1 = types.NamespacedName{Namespace: "wave1", Name: "web1"}

// healthy is one segment dc1.app, active gw-a (programmed, BGP up), standby
// gw-b, and VM wave1/web1 with one Staged endpoint. BGP is configured (the
// peers gw-a reports), so phase Routed advertises host routes.
func healthy() *runbook.Snapshot {
	return &runbook.Snapshot{
		BridgeConfigs: []nbv1.BridgeConfig{{
			ObjectMeta: metav1.ObjectMeta{Name: "dc1"},
			Spec: nbv1.BridgeConfigSpec{
				BGP: &nbv1.BGPSpec{LocalASN: 65100, Peers: []nbv1.BGPPeer{{Address: "192.0.2.1", ASN: 65000}, {Address: "192.0.2.2", ASN: 65000}}},
				Segments: []nbv1.Segment{{
					Name: "app", VLANID: 100, VNI: 10100, Subnets: []string{"10.20.100.0/24"}, Phase: nbv1.PhaseRouted,
				}},
			},
			Status: nbv1.BridgeConfigStatus{Segments: []nbv1.SegmentStatus{{
				Name: "app", ActiveGateway: "gw-a", StandbyGateways: []string{"gw-b"},
			}}},
		}},
		Gateways: []nbv1.BridgeGateway{
			{
				ObjectMeta: metav1.ObjectMeta{Name: "gw-a"},
				Status: nbv1.BridgeGatewayStatus{
					Segments: []nbv1.GatewaySegmentStatus{{BridgeConfig: "dc1", Name: "app", Role: "Active", Programmed: true}},
					Peers: []nbv1.GatewayPeerStatus{
						{Address: "192.0.2.1", ASN: 65000, State: "Established"},
						{Address: "192.0.2.2", ASN: 65000, State: "Established"},
					},
				},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "gw-b"},
				Status: nbv1.BridgeGatewayStatus{
					Segments: []nbv1.GatewaySegmentStatus{{BridgeConfig: "dc1", Name: "app", Role: "Standby", Programmed: true}},
				},
			},
		},
		Endpoints: []nbv1.BridgeEndpoint{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "wave1", Name: "web1-eth0"},
			Spec: nbv1.BridgeEndpointSpec{
				BridgeConfig: "dc1", Segment: "app", VMI: "web1", IPs: []string{"10.20.100.10"},
				MAC: "02:00:00:00:00:10", VTEP: "192.168.0.11", State: nbv1.StateStaged,
			},
		}},
		VMIs: []runbook.VMI{{Namespace: "wave1", Name: "web1", Segment: "dc1.app", IPs: []string{"10.20.100.10"}}},
	}
}

func cond(typ, status, reason, msg string, at time.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: metav1.ConditionStatus(status), Reason: reason, Message: msg,
		LastTransitionTime: metav1.NewTime(at)}
}

func activate(s *runbook.Snapshot, fdb, reachable bool) {
	s.Endpoints[0].Spec.State = nbv1.StateActive
	s.Gateways[0].Status.Advertised = []string{"10.20.100.10/32"}
	s.Gateways[1].Status.Advertised = []string{"10.20.100.10/32"}
	s.Gateways[0].Status.Endpoints = []nbv1.GatewayEndpointStatus{{
		Namespace: "wave1", Name: "web1-eth0", BridgeConfig: "dc1", Segment: "app",
		IPs: []string{"10.20.100.10"}, FDBProgrammed: fdb, Advertised: true, Reachable: reachable,
	}}
}

func vmTarget(n types.NamespacedName) []runbook.Target { return []runbook.Target{{VM: &n}} }

func TestBuildPlan(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(*runbook.Snapshot)
		targets []runbook.Target
		// failed lists the checks that must fail; empty: plan ready.
		failed []string
		warned []string
		action string
	}{
		{name: "healthy", action: "advertise 10.20.100.10/32 from gw-a (standby gw-b, prepended)"},
		{
			name:    "healthy by segment",
			targets: []runbook.Target{{Segment: &runbook.SegmentRef{BridgeConfig: "dc1", Segment: "app"}}},
			action:  "advertise 10.20.100.10/32 from gw-a",
		},
		{
			name:   "already active",
			mutate: func(s *runbook.Snapshot) { activate(s, true, true) },
			action: "none: already active, advertised from gw-a",
		},
		{
			name:   "unknown VM",
			mutate: func(s *runbook.Snapshot) { s.VMIs = nil; s.Endpoints = nil },
			failed: []string{runbook.CheckVMI},
		},
		{
			name:   "VMI without segment label",
			mutate: func(s *runbook.Snapshot) { s.VMIs[0].Segment = ""; s.Endpoints = nil },
			failed: []string{runbook.CheckVMI},
		},
		{
			name:   "no endpoint yet",
			mutate: func(s *runbook.Snapshot) { s.Endpoints = nil },
			failed: []string{runbook.CheckEndpoint},
		},
		{
			name:   "no IPs",
			mutate: func(s *runbook.Snapshot) { s.Endpoints[0].Spec.IPs = nil; s.VMIs[0].IPs = nil },
			failed: []string{runbook.CheckIPs},
		},
		{
			name:   "segment missing from BridgeConfig",
			mutate: func(s *runbook.Snapshot) { s.BridgeConfigs[0].Spec.Segments[0].Name = "db" },
			failed: []string{runbook.CheckSegment},
		},
		{
			name:   "segment spec the validation refuses",
			mutate: func(s *runbook.Snapshot) { s.BridgeConfigs[0].Spec.Segments[0].Subnets = []string{"10.20.100.5/24"} },
			failed: []string{runbook.CheckConfigValid},
		},
		{
			name: "BridgeConfig refused by the controller",
			mutate: func(s *runbook.Snapshot) {
				s.BridgeConfigs[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionReady, "False", "InvalidSpec",
					`spec.bgp.peers[0].address: Invalid value: "0.0.0.0"`, time.Now())}
			},
			failed: []string{runbook.CheckConfigValid},
		},
		{
			name: "no active gateway",
			mutate: func(s *runbook.Snapshot) {
				s.BridgeConfigs[0].Status.Segments = nil
				s.Gateways[0].Status.Segments[0].Role = "Standby"
			},
			failed: []string{runbook.CheckActiveGateway},
		},
		{
			name: "active gateway from the gateway's own status when the controller has not written it",
			mutate: func(s *runbook.Snapshot) {
				s.BridgeConfigs[0].Status.Segments = nil
			},
			action: "advertise 10.20.100.10/32 from gw-a (standby gw-b, prepended)",
		},
		{
			name:   "segment in phase Extended: activation bridges, advertises nothing",
			mutate: func(s *runbook.Snapshot) { s.BridgeConfigs[0].Spec.Segments[0].Phase = nbv1.PhaseExtended },
			action: "bridge 10.20.100.10/32 through gw-a; not advertised: the segment is in phase Extended",
		},
		{
			name:   "active gateway has not reported",
			mutate: func(s *runbook.Snapshot) { s.Gateways = s.Gateways[1:] },
			failed: []string{runbook.CheckProgrammed, runbook.CheckBGP},
		},
		{
			name:   "not programmed",
			mutate: func(s *runbook.Snapshot) { s.Gateways[0].Status.Segments[0].Programmed = false },
			failed: []string{runbook.CheckProgrammed},
		},
		{
			name:   "programming error",
			mutate: func(s *runbook.Snapshot) { s.Gateways[0].Status.Segments[0].Error = "mtu 9000 does not fit" },
			failed: []string{runbook.CheckProgrammed},
		},
		{
			name: "all BGP sessions down",
			mutate: func(s *runbook.Snapshot) {
				s.Gateways[0].Status.Peers[0].State = "Idle"
				s.Gateways[0].Status.Peers[1].State = "Connect"
			},
			failed: []string{runbook.CheckBGP},
		},
		{
			name:   "one of two BGP sessions down is a warning",
			mutate: func(s *runbook.Snapshot) { s.Gateways[0].Status.Peers[1].State = "Active" },
			warned: []string{runbook.CheckBGP},
			action: "advertise",
		},
		{
			name:   "no BGP peers",
			mutate: func(s *runbook.Snapshot) { s.Gateways[0].Status.Peers = nil },
			failed: []string{runbook.CheckBGP},
		},
		{
			name: "conflict",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionConflict, "True", "IPClaimed", "claimed by x/y", time.Now())}
			},
			failed: []string{runbook.CheckConflict},
		},
		{
			name: "rejected",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionRejected, "True", "OutsideSubnet", "10.9.9.9 not in 10.20.100.0/24", time.Now())}
			},
			failed: []string{runbook.CheckConflict},
		},
		{
			name: "duplicate address refused by a gateway",
			mutate: func(s *runbook.Snapshot) {
				s.Gateways[1].Status.Refused = []nbv1.RefusedEndpoint{{Namespace: "wave1", Endpoint: "web1-eth0", IP: "10.20.100.10", Reason: "DuplicateAddress", MAC: "52:54:00:aa:bb:cc"}}
			},
			failed: []string{runbook.CheckDuplicateAddr},
		},
		{
			name: "duplicate address on the endpoint condition",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionAdvertised, "False", "DuplicateAddress", "answered by 52:54:00:aa:bb:cc", time.Now())}
			},
			failed: []string{runbook.CheckDuplicateAddr},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := healthy()
			if tc.mutate != nil {
				tc.mutate(s)
			}
			targets := tc.targets
			if targets == nil {
				targets = vmTarget(vm1)
			}
			p := runbook.BuildPlan(s, targets)
			var failed, warned []string
			for _, c := range p.Checks {
				switch c.Result {
				case runbook.Fail:
					failed = append(failed, c.Name)
				case runbook.Warn:
					warned = append(warned, c.Name)
				}
			}
			if strings.Join(failed, ",") != strings.Join(tc.failed, ",") {
				t.Errorf("failed checks = %v, want %v\n%+v", failed, tc.failed, p.Checks)
			}
			if strings.Join(warned, ",") != strings.Join(tc.warned, ",") {
				t.Errorf("warned checks = %v, want %v", warned, tc.warned)
			}
			if p.Ready != (len(tc.failed) == 0) {
				t.Errorf("ready = %v", p.Ready)
			}
			if tc.action != "" && (len(p.Items) != 1 || !strings.HasPrefix(p.Items[0].Action, tc.action)) {
				t.Errorf("items = %+v, want action %q", p.Items, tc.action)
			}
		})
	}
}

func TestEvaluateActivate(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 500_000_000, time.UTC)
	before := metav1.NewTime(start.Add(-time.Minute))
	after := metav1.NewTime(start.Truncate(time.Second)) // serialised to the second
	cases := []struct {
		name     string
		mutate   func(*runbook.Snapshot)
		done     bool
		failed   bool
		contains string
	}{
		{name: "staged", contains: "endpoint web1-eth0 is Staged, waiting for the controller"},
		{name: "no endpoint", mutate: func(s *runbook.Snapshot) { s.Endpoints = nil }, contains: "derive a BridgeEndpoint"},
		{
			name:     "active, not advertised yet",
			mutate:   func(s *runbook.Snapshot) { s.Endpoints[0].Spec.State = nbv1.StateActive },
			contains: "10.20.100.10/32 not yet advertised by gw-a",
		},
		{
			name:     "advertised in the active gateway's list",
			mutate:   func(s *runbook.Snapshot) { activate(s, false, false) },
			done:     true,
			contains: "10.20.100.10/32 advertised from gw-a",
		},
		{
			// Extended advertises no host routes: bridged is done.
			name: "Extended: not bridged yet",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Spec.State = nbv1.StateActive
				s.BridgeConfigs[0].Spec.Segments[0].Phase = nbv1.PhaseExtended
			},
			contains: "endpoint web1-eth0 not yet bridged by gw-a",
		},
		{
			name: "Extended: bridged by the active gateway is done",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Spec.State = nbv1.StateActive
				s.BridgeConfigs[0].Spec.Segments[0].Phase = nbv1.PhaseExtended
				s.Gateways[0].Status.Endpoints = []nbv1.GatewayEndpointStatus{{Namespace: "wave1", Name: "web1-eth0", FDBProgrammed: true}}
			},
			done:     true,
			contains: "bridged by gw-a (phase Extended",
		},
		{
			name: "only the standby advertises: not done",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Spec.State = nbv1.StateActive
				s.Gateways[1].Status.Advertised = []string{"10.20.100.10/32"}
			},
			contains: "not yet advertised by gw-a",
		},
		{
			name: "Advertised=True condition",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Spec.State = nbv1.StateActive
				s.Endpoints[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionAdvertised, "True", "Advertised", "", start)}
			},
			done: true,
		},
		{
			name: "stale Advertised=True on a withdrawn endpoint is not done",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Spec.State = nbv1.StateWithdrawn
				s.Endpoints[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionAdvertised, "True", "Advertised", "", start)}
			},
			contains: "is Withdrawn",
		},
		{
			name: "fresh refusal fails at once",
			mutate: func(s *runbook.Snapshot) {
				s.Gateways[0].Status.ObservedAt = &after
				s.Gateways[0].Status.Refused = []nbv1.RefusedEndpoint{{Namespace: "wave1", Endpoint: "web1-eth0", IP: "10.20.100.10", Reason: "DuplicateAddress", MAC: "52:54:00:aa:bb:cc"}}
			},
			failed:   true,
			contains: "10.20.100.10 refused: DuplicateAddress, answered by 52:54:00:aa:bb:cc",
		},
		{
			name: "refusal reported before the cutover keeps waiting",
			mutate: func(s *runbook.Snapshot) {
				s.Gateways[0].Status.ObservedAt = &before
				s.Gateways[0].Status.Refused = []nbv1.RefusedEndpoint{{Namespace: "wave1", Endpoint: "web1-eth0", IP: "10.20.100.10", Reason: "DuplicateAddress", MAC: "52:54:00:aa:bb:cc"}}
			},
			contains: "answered by 52:54:00:aa:bb:cc (reported before this cutover",
		},
		{
			name: "fresh duplicate-address condition fails",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionAdvertised, "False", "DuplicateAddress", "answered by 52:54:00:aa:bb:cc", start)}
			},
			failed:   true,
			contains: "10.20.100.10 refused: DuplicateAddress, answered by 52:54:00:aa:bb:cc",
		},
		{
			name: "conflict fails",
			mutate: func(s *runbook.Snapshot) {
				s.Endpoints[0].Status.Conditions = []metav1.Condition{cond(nbv1.ConditionConflict, "True", "IPClaimed", "claimed by wave2/old", before.Time)}
			},
			failed:   true,
			contains: "Conflict: IPClaimed: claimed by wave2/old",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := healthy()
			if tc.mutate != nil {
				tc.mutate(s)
			}
			p := runbook.EvaluateActivate(s, vm1, start)
			if p.Done != tc.done || p.Failed != tc.failed || !strings.Contains(p.Message, tc.contains) {
				t.Errorf("got %+v, want done=%v failed=%v message containing %q", p, tc.done, tc.failed, tc.contains)
			}
		})
	}
}

func TestEvaluateRollback(t *testing.T) {
	cases := []struct {
		name     string
		mutate   func(*runbook.Snapshot)
		done     bool
		contains string
	}{
		{name: "never advertised", done: true, contains: "withdrawn from every gateway"},
		{name: "advertised by both", mutate: func(s *runbook.Snapshot) { activate(s, true, true) },
			contains: "10.20.100.10/32 still advertised by gw-a; 10.20.100.10/32 still advertised by gw-b"},
		{name: "standby still advertises", mutate: func(s *runbook.Snapshot) {
			activate(s, true, true)
			s.Gateways[0].Status.Advertised = nil
		}, contains: "still advertised by gw-b"},
		{name: "other prefixes do not matter", mutate: func(s *runbook.Snapshot) {
			s.Gateways[0].Status.Advertised = []string{"10.20.100.11/32", "10.20.100.0/24"}
		}, done: true},
		{name: "IPs from the VMI when there is no endpoint", mutate: func(s *runbook.Snapshot) {
			s.Endpoints = nil
			s.Gateways[0].Status.Advertised = []string{"10.20.100.10/32"}
		}, contains: "still advertised by gw-a"},
		{name: "no IPs at all", mutate: func(s *runbook.Snapshot) { s.Endpoints = nil; s.VMIs = nil }, done: true, contains: "no IPs known"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := healthy()
			if tc.mutate != nil {
				tc.mutate(s)
			}
			p := runbook.EvaluateRollback(s, vm1)
			if p.Done != tc.done || p.Failed || !strings.Contains(p.Message, tc.contains) {
				t.Errorf("got %+v, want done=%v message containing %q", p, tc.done, tc.contains)
			}
		})
	}
}

func TestVerifyRows(t *testing.T) {
	seg := runbook.SegmentRef{BridgeConfig: "dc1", Segment: "app"}
	cases := []struct {
		name           string
		mutate         func(*runbook.Snapshot)
		targets        []runbook.Target
		ok             bool
		rows           int
		route, fdb, ar string
		problem        string
	}{
		{name: "all good", mutate: func(s *runbook.Snapshot) { activate(s, true, true) }, ok: true, rows: 1, route: "ok", fdb: "ok", ar: "ok"},
		{name: "segment with nothing active", targets: []runbook.Target{{Segment: &seg}}, ok: true, rows: 0},
		{name: "segment all good", targets: []runbook.Target{{Segment: &seg}}, mutate: func(s *runbook.Snapshot) { activate(s, true, true) }, ok: true, rows: 1, route: "ok", fdb: "ok", ar: "ok"},
		{name: "VM not active", rows: 1, route: "-", fdb: "-", ar: "-", problem: "endpoint is Staged, not Active"},
		{name: "unknown VM", mutate: func(s *runbook.Snapshot) { s.Endpoints = nil; s.VMIs = nil }, rows: 1, route: "-", fdb: "-", ar: "-", problem: "no such VM"},
		{name: "prefix missing from the advertised list", mutate: func(s *runbook.Snapshot) {
			activate(s, true, true)
			s.Gateways[0].Status.Advertised = nil
		}, rows: 1, route: "NO", fdb: "ok", ar: "ok", problem: "10.20.100.10/32 not in gw-a's advertised prefixes"},
		{name: "gateway says not advertised", mutate: func(s *runbook.Snapshot) {
			activate(s, true, true)
			s.Gateways[0].Status.Endpoints[0].Advertised = false
		}, rows: 1, route: "NO", fdb: "ok", ar: "ok", problem: "route not advertised by gw-a"},
		// Extended advertises no host routes: verify checks FDB and ARP only.
		{name: "Active in an Extended segment: route not checked", mutate: func(s *runbook.Snapshot) {
			activate(s, true, true)
			s.BridgeConfigs[0].Spec.Segments[0].Phase = nbv1.PhaseExtended
			s.Gateways[0].Status.Advertised = nil
			s.Gateways[0].Status.Endpoints[0].Advertised = false
		}, ok: true, rows: 1, route: "-", fdb: "ok", ar: "ok"},
		{name: "Routed without BGP: route not checked", mutate: func(s *runbook.Snapshot) {
			activate(s, true, true)
			s.BridgeConfigs[0].Spec.BGP = nil
			s.Gateways[0].Status.Advertised = nil
			s.Gateways[0].Status.Endpoints[0].Advertised = false
		}, ok: true, rows: 1, route: "-", fdb: "ok", ar: "ok"},
		{name: "Extended, FDB missing: still failed", mutate: func(s *runbook.Snapshot) {
			activate(s, false, true)
			s.BridgeConfigs[0].Spec.Segments[0].Phase = nbv1.PhaseExtended
		}, rows: 1, route: "-", fdb: "NO", ar: "ok", problem: "FDB entry for 02:00:00:00:00:10"},
		{name: "fdb missing", mutate: func(s *runbook.Snapshot) { activate(s, false, true) }, rows: 1, route: "ok", fdb: "NO", ar: "ok",
			problem: "FDB entry for 02:00:00:00:00:10 → 192.168.0.11 not programmed on gw-a"},
		{name: "unreachable", mutate: func(s *runbook.Snapshot) {
			activate(s, true, false)
			s.Gateways[0].Status.Endpoints[0].Message = "no ARP reply in 3 tries"
		}, rows: 1, route: "ok", fdb: "ok", ar: "NO", problem: "gateway says: no ARP reply in 3 tries"},
		{name: "not listed by the active gateway", mutate: func(s *runbook.Snapshot) {
			activate(s, true, true)
			s.Gateways[0].Status.Endpoints = nil
		}, rows: 1, route: "-", fdb: "-", ar: "-", problem: "does not list this endpoint"},
		{name: "duplicate address while active", mutate: func(s *runbook.Snapshot) {
			activate(s, true, true)
			s.Gateways[0].Status.Refused = []nbv1.RefusedEndpoint{{Namespace: "wave1", Endpoint: "web1-eth0", IP: "10.20.100.10", Reason: "DuplicateAddress", MAC: "52:54:00:aa:bb:cc"}}
		}, rows: 1, route: "ok", fdb: "ok", ar: "ok", problem: "answered by 52:54:00:aa:bb:cc (on gw-a)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := healthy()
			if tc.mutate != nil {
				tc.mutate(s)
			}
			targets := tc.targets
			if targets == nil {
				targets = vmTarget(vm1)
			}
			r := runbook.Verify(s, targets)
			if r.OK != tc.ok || len(r.Rows) != tc.rows {
				t.Fatalf("report %+v: want ok=%v rows=%d", r, tc.ok, tc.rows)
			}
			if tc.rows == 0 {
				return
			}
			row := r.Rows[0]
			if row.Route != tc.route || row.FDB != tc.fdb || row.ARP != tc.ar {
				t.Errorf("route/fdb/arp = %s/%s/%s, want %s/%s/%s", row.Route, row.FDB, row.ARP, tc.route, tc.fdb, tc.ar)
			}
			if got := strings.Join(row.Problems, "; "); !strings.Contains(got, tc.problem) {
				t.Errorf("problems %q should contain %q", got, tc.problem)
			}
		})
	}
}

func TestResolveTargets(t *testing.T) {
	s := healthy()
	cases := []struct {
		args          []string
		allowSegments bool
		want          string
		err           string
	}{
		{args: []string{"web1"}, want: "vm:wave9/web1"},
		{args: []string{"wave1/web1"}, want: "vm:wave1/web1"},
		{args: []string{"dc1.app"}, allowSegments: true, want: "seg:dc1.app"},
		// A dotted VM name that is no known segment stays a VM.
		{args: []string{"web1.example"}, allowSegments: true, want: "vm:wave9/web1.example"},
		{args: []string{"dc1.app"}, err: "is a segment"},
		{args: []string{"a/b/c"}, err: "want namespace/name"},
		{args: []string{"/b"}, err: "want namespace/name"},
		{args: nil, err: "name at least one VM"},
	}
	for _, tc := range cases {
		got, err := runbook.ResolveTargets(tc.args, "wave9", s, tc.allowSegments)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != 1 {
			t.Fatalf("%v: %v %v", tc.args, got, err)
		}
		kind := "vm:"
		if got[0].Segment != nil {
			kind = "seg:"
		}
		if kind+got[0].String() != tc.want {
			t.Errorf("%v: got %s%s, want %s", tc.args, kind, got[0], tc.want)
		}
	}
}

func TestHostPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.20.100.10":       "10.20.100.10/32",
		"10.20.100.10/24":    "10.20.100.10/32",
		" 2001:db8:100::10 ": "2001:db8:100::10/128",
		"::ffff:10.0.0.1":    "10.0.0.1/32",
	} {
		p, err := runbook.HostPrefix(in)
		if err != nil || p.String() != want {
			t.Errorf("HostPrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	if _, err := runbook.HostPrefix("vm1"); err == nil {
		t.Error("HostPrefix(vm1) should fail")
	}
}

func TestRenderTables(t *testing.T) {
	s := healthy()
	activate(s, true, false)
	s.Gateways[0].Status.Peers[1].State = "Idle"
	s.Gateways[0].Status.Peers[0].BFD = "Up"
	cases := []struct {
		name   string
		report interface{}
		lines  []string
	}{
		{
			name:   "status",
			report: runbook.Status(s),
			lines: []string{
				"SEGMENT  VLAN  VNI    PHASE   ACTIVE  STANDBY  STAGED/ACTIVE/WITHDRAWN/REFUSED",
				"dc1.app  100   10100  Routed  gw-a    gw-b     0/0/0/0",
				"gw-a     Unknown  dc1.app:Active   192.0.2.1  65000  Established  Up   0     10.20.100.10/32",
				"                                   192.0.2.2  65000  Idle         -    0",
				"wave1      web1  web1-eth0  dc1.app  10.20.100.10  -     Active  Unknown     -",
			},
		},
		{
			name:   "verify",
			report: runbook.Verify(s, vmTarget(vm1)),
			lines: []string{
				"VM          ENDPOINT   SEGMENT  IPS           GATEWAY  ROUTE  FDB  ARP  RESULT",
				"wave1/web1  web1-eth0  dc1.app  10.20.100.10  gw-a     ok     ok   NO   FAIL: VM did not answer ARP across the segment from gw-a",
			},
		},
		{
			name:   "plan",
			report: runbook.BuildPlan(s, vmTarget(vm1)),
			lines: []string{
				"wave1/web1  dc1.app  Active  10.20.100.10/32  gw-a     none: already active, advertised from gw-a",
				"bgp-established       dc1.app     warn    on gw-a: up 192.0.2.1 AS65000 Established; down 192.0.2.2 AS65000 Idle",
				"preflight: all checks passed",
			},
		},
		{
			name:   "progress",
			report: []runbook.Progress{{VM: "wave1/web1", Failed: true, Message: "10.20.100.10 refused: DuplicateAddress"}},
			lines:  []string{"wave1/web1  FAILED  10.20.100.10 refused: DuplicateAddress"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := runbook.Render(&b, runbook.OutputTable, tc.report); err != nil {
				t.Fatal(err)
			}
			got := b.String()
			for _, l := range tc.lines {
				if !strings.Contains(got, l+"\n") && !strings.Contains(got, strings.TrimRight(l, " ")+"\n") {
					t.Errorf("table lacks line %q:\n%s", l, got)
				}
			}
		})
	}
	var b bytes.Buffer
	if err := runbook.Render(&b, "xml", runbook.Status(s)); err == nil {
		t.Error("xml output should be refused")
	}
}
