package runbook_test

// Integration tests: the cobra commands run in-process against a real
// kube-apiserver. The test plays the controller (BridgeEndpoints) and the
// gateways (BridgeGateway status); the commands only ever write the VMI
// annotation.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/testenv"
	"github.com/netbridge-io/netbridge/runbook"
)

// One API server for the package: the tests give every object a per-test
// name, so they do not see each other's segments, VMs or gateways' prefixes.
var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	e, err := testenv.StartEnv(testenv.Options{ExtraCRDPaths: []string{testenv.KubeVirtCRDPath(), testenv.ForkliftCRDPath()}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start kube-apiserver:", err)
		return 1
	}
	defer func() {
		if err := e.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop kube-apiserver:", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testenv.WaitCRDsEstablished(ctx, e.Client, append([]string{testenv.KubeVirtVMICRDName,
		"bridgeconfigs.netbridge.io", "bridgeendpoints.netbridge.io", "bridgegateways.netbridge.io"}, testenv.ForkliftCRDNames()...)...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env = e
	return m.Run()
}

var fixtureSeq atomic.Int32

// fixture is one segment with an active and a standby gateway and one VM
// with a Staged endpoint, all healthy: each test breaks what it tests.
type fixture struct {
	t          *testing.T
	c          client.Client
	ns         string
	bc         string
	gwA, gwB   string
	vm         string
	ep         string
	ip, prefix string
	mac        string
}

func (f *fixture) seg() string { return f.bc + ".app" }

func newFixture(t *testing.T) *fixture {
	t.Helper()
	n := fixtureSeq.Add(1)
	f := &fixture{
		t: t, c: env.Client,
		ns:  fmt.Sprintf("wave-%d", n),
		bc:  fmt.Sprintf("dc%d", n),
		gwA: fmt.Sprintf("edge-%d-a", n), gwB: fmt.Sprintf("edge-%d-b", n),
		vm: "web1", ep: "web1-eth0",
		// A per-test address: rollback looks at every gateway's list.
		ip:  fmt.Sprintf("10.20.%d.10", n),
		mac: "02:00:00:00:01:10",
	}
	f.prefix = f.ip + "/32"
	ctx := context.Background()
	must(t, f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}))

	bc := &nbv1.BridgeConfig{
		ObjectMeta: metav1.ObjectMeta{Name: f.bc},
		Spec: nbv1.BridgeConfigSpec{
			GatewaySelector: metav1.LabelSelector{MatchLabels: map[string]string{nbv1.LabelGateway: "true"}},
			Uplink:          nbv1.UplinkSpec{Interface: "eth1"},
			Segments: []nbv1.Segment{{
				Name: "app", VLANID: 100, VNI: 10100, Phase: nbv1.PhaseRouted,
				Subnets: []string{fmt.Sprintf("10.20.%d.0/24", n)},
			}},
			BGP: &nbv1.BGPSpec{LocalASN: 65010, Peers: []nbv1.BGPPeer{{Address: "192.0.2.1", ASN: 65000}}},
		},
	}
	must(t, f.c.Create(ctx, bc))
	bc.Status.Segments = []nbv1.SegmentStatus{{
		Name: "app", ActiveGateway: f.gwA, StandbyGateways: []string{f.gwB},
		Endpoints: nbv1.EndpointCounts{Staged: 1},
	}}
	must(t, f.c.Status().Update(ctx, bc))

	for _, gw := range []struct {
		name, role string
	}{{f.gwA, "Active"}, {f.gwB, "Standby"}} {
		obj := &nbv1.BridgeGateway{
			ObjectMeta: metav1.ObjectMeta{Name: gw.name},
			Spec:       nbv1.BridgeGatewaySpec{NodeName: gw.name, Role: nbv1.RoleGateway},
		}
		must(t, f.c.Create(ctx, obj))
		obj.Status = nbv1.BridgeGatewayStatus{
			Segments: []nbv1.GatewaySegmentStatus{{BridgeConfig: f.bc, Name: "app", Role: gw.role, Programmed: true}},
			Peers:    []nbv1.GatewayPeerStatus{{Address: "192.0.2.1", ASN: 65000, State: "Established"}},
			Conditions: []metav1.Condition{{
				Type: nbv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Programmed",
				LastTransitionTime: metav1.Now(),
			}},
			ObservedAt: ptrNow(),
		}
		must(t, f.c.Status().Update(ctx, obj))
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = f.c.Delete(ctx, &nbv1.BridgeConfig{ObjectMeta: metav1.ObjectMeta{Name: f.bc}})
		_ = f.c.Delete(ctx, &nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: f.gwA}})
		_ = f.c.Delete(ctx, &nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: f.gwB}})
		_ = f.c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}})
	})

	f.addVM(f.vm, f.ep, f.ip, f.mac)
	return f
}

// addVM creates a labelled VMI and the endpoint the controller would derive.
func (f *fixture) addVM(vm, ep, ip, mac string) {
	f.t.Helper()
	f.createVM(vm, ep, "eth0", ip, mac, map[string]string{nbv1.LabelSegment: f.seg()})
}

// createVM creates a VMI with these labels (its IPs in the annotation) and
// the endpoint of its interface iface on the fixture's segment.
func (f *fixture) createVM(vm, ep, iface, ip, mac string, labels map[string]string) {
	f.t.Helper()
	ctx := context.Background()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(runbook.VMIKind)
	u.SetNamespace(f.ns)
	u.SetName(vm)
	u.SetLabels(labels)
	u.SetAnnotations(map[string]string{nbv1.AnnotationIPs: ip})
	u.Object["spec"] = map[string]interface{}{"domain": map[string]interface{}{"devices": map[string]interface{}{}}}
	must(f.t, f.c.Create(ctx, u))
	must(f.t, f.c.Create(ctx, &nbv1.BridgeEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: ep, Labels: map[string]string{
			nbv1.LabelBridgeConfig: f.bc, nbv1.LabelSegmentName: "app",
		}},
		Spec: nbv1.BridgeEndpointSpec{
			BridgeConfig: f.bc, Segment: "app", VMI: vm, Interface: iface,
			IPs: []string{ip}, MAC: mac, NodeName: "worker-1", VTEP: "192.168.0.11", State: nbv1.StateStaged,
		},
	}))
}

// endpoint plays the controller: mutate one BridgeEndpoint (spec and status).
func (f *fixture) endpoint(name string, mutate func(*nbv1.BridgeEndpoint)) {
	f.t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var ep nbv1.BridgeEndpoint
		if err := f.c.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: name}, &ep); err != nil {
			return err
		}
		before := ep.DeepCopy()
		mutate(&ep)
		if ep.Spec.State != before.Spec.State {
			// Update returns the stored object, whose status is the old one.
			status := ep.Status
			if err := f.c.Update(ctx, &ep); err != nil {
				return err
			}
			ep.Status = status
		}
		return f.c.Status().Update(ctx, &ep)
	})
	must(f.t, err)
}

// gateway plays a gateway: mutate its BridgeGateway status.
func (f *fixture) gateway(name string, mutate func(*nbv1.BridgeGatewayStatus)) {
	f.t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var gw nbv1.BridgeGateway
		if err := f.c.Get(ctx, types.NamespacedName{Name: name}, &gw); err != nil {
			return err
		}
		mutate(&gw.Status)
		gw.Status.ObservedAt = ptrNow()
		return f.c.Status().Update(ctx, &gw)
	})
	must(f.t, err)
}

// activeEndpoint is what a gateway reports for a programmed endpoint.
func (f *fixture) activeEndpoint(fdb, reachable bool) nbv1.GatewayEndpointStatus {
	return nbv1.GatewayEndpointStatus{
		Namespace: f.ns, Name: f.ep, BridgeConfig: f.bc, Segment: "app",
		IPs: []string{f.ip}, MAC: f.mac, FDBProgrammed: fdb, Advertised: true, Reachable: reachable,
		LastProbe: ptrNow(),
	}
}

// makeActive puts the fixture's VM in the fully cut-over state.
func (f *fixture) makeActive(fdb, reachable bool) {
	f.endpoint(f.ep, func(ep *nbv1.BridgeEndpoint) {
		ep.Spec.State = nbv1.StateActive
		setCond(&ep.Status.Conditions, nbv1.ConditionAdvertised, metav1.ConditionTrue, "Advertised", "advertised by "+f.gwA)
	})
	f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) {
		s.Advertised = append(s.Advertised, f.prefix)
		s.Endpoints = append(s.Endpoints, f.activeEndpoint(fdb, reachable))
	})
	f.gateway(f.gwB, func(s *nbv1.BridgeGatewayStatus) { s.Advertised = append(s.Advertised, f.prefix) })
}

// cutoverAnnotation reads the VMI's annotation.
func (f *fixture) cutoverAnnotation(vm string) string {
	f.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(runbook.VMIKind)
	must(f.t, f.c.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: vm}, u))
	return u.GetAnnotations()[nbv1.AnnotationCutover]
}

// whenAnnotated runs react once the VMI carries the cutover value, as the
// controller and gateway would, in the background.
func (f *fixture) whenAnnotated(ctx context.Context, vm, value string, react func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(runbook.VMIKind)
			if err := f.c.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: vm}, u); err == nil &&
				u.GetAnnotations()[nbv1.AnnotationCutover] == value {
				react()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return done
}

// run executes netbridgectl in-process with the test's kubeconfig.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := runbook.NewCommand(&stdout, &stderr)
	cmd.SetArgs(append([]string{"--kubeconfig", env.Kubeconfig}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	t.Logf("netbridgectl %s\n--- stdout\n%s--- stderr\n%s--- err: %v", strings.Join(args, " "), stdout.String(), stderr.String(), err)
	return stdout.String(), stderr.String(), err
}

func TestStatusTableAndJSON(t *testing.T) {
	f := newFixture(t)
	f.makeActive(true, true)
	f.addVM("db1", "db1-eth0", strings.Replace(f.ip, ".10", ".11", 1), "02:00:00:00:01:11")
	f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) {
		s.Refused = []nbv1.RefusedEndpoint{{Namespace: f.ns, Endpoint: "db1-eth0", IP: strings.Replace(f.ip, ".10", ".11", 1),
			Reason: nbv1.ConditionDuplicateAddress, MAC: "52:54:00:aa:bb:cc"}}
		s.Peers[0].PrefixesSent = 1
	})
	f.addVM("app2", "app2-eth0", strings.Replace(f.ip, ".10", ".12", 1), "02:00:00:00:01:12")
	f.endpoint("app2-eth0", func(ep *nbv1.BridgeEndpoint) {
		setCond(&ep.Status.Conditions, nbv1.ConditionConflict, metav1.ConditionTrue, "IPClaimed", "IP claimed by "+f.ns+"/web1")
	})

	out, _, err := run(t, "status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{
		f.seg(), "100", "10100", "Routed", f.gwA, f.gwB,
		"192.0.2.1", "Established", f.prefix,
		"web1-eth0", "Active",
		f.ns + "/" + "db1", // not expected verbatim: checked below by row
	} {
		if want == f.ns+"/db1" {
			continue
		}
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q", want)
		}
	}
	row := lineWith(out, "db1-eth0")
	if !strings.Contains(row, "refused: DuplicateAddress, answered by 52:54:00:aa:bb:cc") {
		t.Errorf("db1 row should name the duplicate address and MAC: %q", row)
	}
	row = lineWith(out, "app2-eth0")
	if !strings.Contains(row, "Conflict: IPClaimed: IP claimed by "+f.ns+"/web1") {
		t.Errorf("app2 row should show the conflict: %q", row)
	}

	out, _, err = run(t, "status", "-o", "json")
	if err != nil {
		t.Fatalf("status -o json: %v", err)
	}
	var rep runbook.StatusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status json: %v", err)
	}
	var seg *runbook.SegmentRow
	for i := range rep.Segments {
		if rep.Segments[i].Segment == f.seg() {
			seg = &rep.Segments[i]
		}
	}
	if seg == nil || seg.ActiveGateway != f.gwA || seg.VLAN != 100 || seg.VNI != 10100 || len(seg.StandbyGateways) != 1 {
		t.Fatalf("segment row %+v", seg)
	}
	var eps int
	for _, e := range rep.Endpoints {
		if e.Namespace != f.ns {
			continue
		}
		eps++
		if e.Name == "web1-eth0" && (e.State != "Active" || e.Advertised != "True" || e.Node != "worker-1") {
			t.Errorf("web1 endpoint %+v", e)
		}
	}
	if eps != 3 {
		t.Errorf("want 3 endpoints in %s, got %d", f.ns, eps)
	}

	out, _, err = run(t, "status", "-o", "yaml")
	if err != nil || !strings.Contains(out, "activeGateway: "+f.gwA) {
		t.Errorf("status -o yaml: %v\n%s", err, out)
	}
}

func TestPlanPreflight(t *testing.T) {
	cases := []struct {
		name string
		// breakIt puts the fixture into the state under test.
		breakIt   func(f *fixture)
		args      func(f *fixture) []string
		failCheck string
		wantText  string
	}{
		{
			name:     "all checks pass for a VM",
			args:     func(f *fixture) []string { return []string{"-n", f.ns, f.vm} },
			wantText: "preflight: all checks passed",
		},
		{
			name:     "all checks pass for a segment, ns/name form",
			args:     func(f *fixture) []string { return []string{f.seg()} },
			wantText: "advertise 10.20.",
		},
		{
			name: "segment not programmed on the active gateway",
			breakIt: func(f *fixture) {
				f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) {
					s.Segments[0].Programmed = false
					s.Segments[0].Error = "8021q module missing"
				})
			},
			failCheck: runbook.CheckProgrammed,
			wantText:  "8021q module missing",
		},
		{
			name: "BGP not established on the active gateway",
			breakIt: func(f *fixture) {
				f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) {
					s.Peers[0].State = "Active"
					s.Peers[0].LastError = "connection refused"
				})
			},
			failCheck: runbook.CheckBGP,
			wantText:  "192.0.2.1 AS65000 Active (connection refused)",
		},
		{
			name: "conflict on the endpoint",
			breakIt: func(f *fixture) {
				f.endpoint(f.ep, func(ep *nbv1.BridgeEndpoint) {
					setCond(&ep.Status.Conditions, nbv1.ConditionConflict, metav1.ConditionTrue, "IPClaimed", "10.20.x.10 is claimed by other/vm9")
				})
			},
			failCheck: runbook.CheckConflict,
			wantText:  "claimed by other/vm9",
		},
		{
			name: "duplicate address seen by a gateway",
			breakIt: func(f *fixture) {
				f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) {
					s.Refused = []nbv1.RefusedEndpoint{{Namespace: f.ns, Endpoint: f.ep, IP: f.ip, Reason: nbv1.ConditionDuplicateAddress, MAC: "52:54:00:aa:bb:cc"}}
				})
			},
			failCheck: runbook.CheckDuplicateAddr,
			wantText:  "answered by 52:54:00:aa:bb:cc",
		},
		{
			name: "no active gateway elected",
			breakIt: func(f *fixture) {
				var bc nbv1.BridgeConfig
				must(f.t, f.c.Get(context.Background(), types.NamespacedName{Name: f.bc}, &bc))
				bc.Status.Segments[0].ActiveGateway = ""
				must(f.t, f.c.Status().Update(context.Background(), &bc))
				f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) { s.Segments[0].Role = "Standby" })
			},
			failCheck: runbook.CheckActiveGateway,
			wantText:  "no gateway holds the segment's lease",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.breakIt != nil {
				tc.breakIt(f)
			}
			args := []string{"-n", f.ns, f.vm}
			if tc.args != nil {
				args = tc.args(f)
			}
			out, _, err := run(t, append([]string{"cutover", "plan"}, args...)...)
			if !strings.Contains(out, tc.wantText) {
				t.Errorf("plan output lacks %q", tc.wantText)
			}
			if tc.failCheck == "" {
				if err != nil {
					t.Fatalf("plan should pass: %v", err)
				}
				if !strings.Contains(out, f.prefix) || !strings.Contains(out, "from "+f.gwA) {
					t.Errorf("plan should say %s is advertised from %s", f.prefix, f.gwA)
				}
				return
			}
			if !errors.Is(err, runbook.ErrChecksFailed) {
				t.Fatalf("plan error = %v, want ErrChecksFailed", err)
			}
			if !strings.Contains(err.Error(), tc.failCheck) || !strings.Contains(lineWith(out, tc.failCheck), "FAIL") {
				t.Errorf("want check %s to FAIL in the error and the table; err %v", tc.failCheck, err)
			}
		})
	}
}

func TestPlanJSON(t *testing.T) {
	f := newFixture(t)
	out, _, err := run(t, "cutover", "plan", "-o", "json", f.ns+"/"+f.vm)
	if err != nil {
		t.Fatal(err)
	}
	var p runbook.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	if !p.Ready || len(p.Items) != 1 || p.Items[0].Gateway != f.gwA || p.Items[0].Prefixes[0] != f.prefix {
		t.Fatalf("plan %+v", p)
	}
}

func TestActivateWaitsForAdvertisement(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The controller marks the endpoint Active; one second later the gateway
	// advertises: activate must not return before.
	var advertisedAt atomic.Int64
	reacted := f.whenAnnotated(ctx, f.vm, nbv1.CutoverActive, func() {
		f.endpoint(f.ep, func(ep *nbv1.BridgeEndpoint) { ep.Spec.State = nbv1.StateActive })
		time.Sleep(time.Second)
		advertisedAt.Store(time.Now().UnixNano())
		f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) { s.Advertised = append(s.Advertised, f.prefix) })
	})
	out, stderr, err := run(t, "cutover", "activate", "-n", f.ns, f.vm, "--timeout", "20s", "--poll-interval", "100ms")
	returned := time.Now().UnixNano()
	<-reacted
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	if got := f.cutoverAnnotation(f.vm); got != nbv1.CutoverActive {
		t.Errorf("annotation = %q", got)
	}
	if advertisedAt.Load() == 0 || returned < advertisedAt.Load() {
		t.Errorf("activate returned before the gateway advertised")
	}
	if !strings.Contains(stderr, "not yet advertised by "+f.gwA) && !strings.Contains(stderr, "waiting for the controller") {
		t.Errorf("progress should show the wait: %q", stderr)
	}
	if !strings.Contains(lineWith(out, f.ns+"/"+f.vm), "done") || !strings.Contains(out, f.prefix+" advertised from "+f.gwA) {
		t.Errorf("result table: %q", out)
	}
}

func TestActivateDuplicateAddressFails(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reacted := f.whenAnnotated(ctx, f.vm, nbv1.CutoverActive, func() {
		f.endpoint(f.ep, func(ep *nbv1.BridgeEndpoint) { ep.Spec.State = nbv1.StateActive })
		f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) {
			s.Refused = []nbv1.RefusedEndpoint{{Namespace: f.ns, Endpoint: f.ep, IP: f.ip,
				Reason: nbv1.ConditionDuplicateAddress, MAC: "52:54:00:aa:bb:cc"}}
		})
	})
	start := time.Now()
	_, _, err := run(t, "cutover", "activate", "-n", f.ns, f.vm, "--timeout", "30s", "--poll-interval", "100ms")
	<-reacted
	if !errors.Is(err, runbook.ErrCutoverFailed) {
		t.Fatalf("activate error = %v, want ErrCutoverFailed", err)
	}
	want := f.ip + " refused: DuplicateAddress, answered by 52:54:00:aa:bb:cc"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q should contain %q", err, want)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("a refusal must fail at once, not at the timeout (took %s)", time.Since(start))
	}
}

func TestActivateTimesOut(t *testing.T) {
	f := newFixture(t)
	// Nobody plays the controller: the endpoint stays Staged.
	start := time.Now()
	_, _, err := run(t, "cutover", "activate", "-n", f.ns, f.vm, "--timeout", "1500ms", "--poll-interval", "100ms")
	if !errors.Is(err, runbook.ErrCutoverFailed) {
		t.Fatalf("activate error = %v, want ErrCutoverFailed", err)
	}
	for _, want := range []string{"timed out after 1.5s", f.ns + "/" + f.vm, "endpoint " + f.ep + " is Staged"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q should contain %q", err, want)
		}
	}
	if d := time.Since(start); d < 1500*time.Millisecond || d > 15*time.Second {
		t.Errorf("timeout took %s", d)
	}
	if got := f.cutoverAnnotation(f.vm); got != nbv1.CutoverActive {
		t.Errorf("annotation = %q, want it set even when the wait fails", got)
	}
}

func TestActivateUnknownVMWritesNothing(t *testing.T) {
	f := newFixture(t)
	_, _, err := run(t, "cutover", "activate", "-n", f.ns, f.vm, "nosuchvm")
	if err == nil || !strings.Contains(err.Error(), f.ns+"/nosuchvm") {
		t.Fatalf("want an error naming %s/nosuchvm, got %v", f.ns, err)
	}
	if got := f.cutoverAnnotation(f.vm); got != "" {
		t.Errorf("annotation on %s = %q: nothing may be written when one VM is unknown", f.vm, got)
	}
	_, _, err = run(t, "cutover", "activate", f.seg())
	if err == nil || !strings.Contains(err.Error(), "is a segment") {
		t.Errorf("activate of a segment: %v", err)
	}
}

func TestRollbackWaitsForWithdrawalEverywhere(t *testing.T) {
	f := newFixture(t)
	f.makeActive(true, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var standbyWithdrawnAt atomic.Int64
	reacted := f.whenAnnotated(ctx, f.vm, nbv1.CutoverRollback, func() {
		f.endpoint(f.ep, func(ep *nbv1.BridgeEndpoint) { ep.Spec.State = nbv1.StateWithdrawn })
		f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) { s.Advertised = nil; s.Endpoints = nil })
		// The standby withdraws later: rollback must wait for it too.
		time.Sleep(time.Second)
		standbyWithdrawnAt.Store(time.Now().UnixNano())
		f.gateway(f.gwB, func(s *nbv1.BridgeGatewayStatus) { s.Advertised = nil })
	})
	out, stderr, err := run(t, "cutover", "rollback", f.ns+"/"+f.vm, "--timeout", "20s", "--poll-interval", "100ms")
	returned := time.Now().UnixNano()
	<-reacted
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if got := f.cutoverAnnotation(f.vm); got != nbv1.CutoverRollback {
		t.Errorf("annotation = %q", got)
	}
	if standbyWithdrawnAt.Load() == 0 || returned < standbyWithdrawnAt.Load() {
		t.Errorf("rollback returned before the standby withdrew")
	}
	if !strings.Contains(stderr, "still advertised by "+f.gwB) {
		t.Errorf("progress should name the standby still advertising: %q", stderr)
	}
	if !strings.Contains(out, "withdrawn from every gateway") {
		t.Errorf("result: %q", out)
	}
}

func TestRollbackTimesOutNamingGateway(t *testing.T) {
	f := newFixture(t)
	f.makeActive(true, true)
	_, _, err := run(t, "cutover", "rollback", "-n", f.ns, f.vm, "--timeout", "1s", "--poll-interval", "100ms")
	if !errors.Is(err, runbook.ErrCutoverFailed) || !strings.Contains(err.Error(), f.prefix+" still advertised by "+f.gwA) {
		t.Fatalf("rollback error = %v", err)
	}
}

func TestVerify(t *testing.T) {
	t.Run("everything programmed", func(t *testing.T) {
		f := newFixture(t)
		f.makeActive(true, true)
		for _, args := range [][]string{{"-n", f.ns, f.vm}, {f.seg()}} {
			out, _, err := run(t, append([]string{"verify"}, args...)...)
			if err != nil {
				t.Fatalf("verify %v: %v", args, err)
			}
			row := lineWith(out, f.ep)
			if strings.Count(row, " ok") < 4 {
				t.Errorf("row should be ok on route, fdb, arp and result: %q", row)
			}
		}
	})
	t.Run("FDB missing and VM unreachable", func(t *testing.T) {
		f := newFixture(t)
		f.makeActive(false, false)
		out, _, err := run(t, "verify", "-n", f.ns, f.vm)
		if !errors.Is(err, runbook.ErrChecksFailed) {
			t.Fatalf("verify error = %v, want ErrChecksFailed", err)
		}
		row := lineWith(out, f.ep)
		for _, want := range []string{"FAIL", "FDB entry for " + f.mac, "not programmed on " + f.gwA, "did not answer ARP"} {
			if !strings.Contains(row, want) {
				t.Errorf("verify row lacks %q: %q", want, row)
			}
		}
		out, _, _ = run(t, "verify", "-o", "json", "-n", f.ns, f.vm)
		var rep runbook.VerifyReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.OK || len(rep.Rows) != 1 || rep.Rows[0].FDB != "NO" || rep.Rows[0].ARP != "NO" || rep.Rows[0].Route != "ok" {
			t.Errorf("verify json %+v", rep)
		}
	})
	t.Run("route not advertised, VM not active", func(t *testing.T) {
		f := newFixture(t)
		out, _, err := run(t, "verify", "-n", f.ns, f.vm)
		if !errors.Is(err, runbook.ErrChecksFailed) || !strings.Contains(lineWith(out, f.ep), "not Active") {
			t.Fatalf("verify of a Staged VM: %v\n%s", err, out)
		}
	})
}

func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func setCond(conds *[]metav1.Condition, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg})
}

func ptrNow() *metav1.Time {
	n := metav1.Now()
	return &n
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestBinaryExitCodes runs the built netbridgectl the way an operator does:
// kubeconfig from $KUBECONFIG, exit status 0 / 1, the error on stderr.
func TestBinaryExitCodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "netbridgectl")
	build := exec.Command("go", "build", "-o", bin, "github.com/netbridge-io/netbridge/cmd/netbridgectl")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build netbridgectl: %v\n%s", err, out)
	}
	f := newFixture(t)
	exe := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, "HOME="+t.TempDir())
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			code = exitErr.ExitCode()
		} else if err != nil {
			t.Fatalf("run %v: %v", args, err)
		}
		return stdout.String(), stderr.String(), code
	}
	if out, stderr, code := exe("cutover", "plan", "-n", f.ns, f.vm); code != 0 || !strings.Contains(out, "all checks passed") {
		t.Fatalf("plan: exit %d\n%s%s", code, out, stderr)
	}
	f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) { s.Peers[0].State = "Idle" })
	out, stderr, code := exe("cutover", "plan", "-n", f.ns, f.vm)
	if code != 1 || !strings.Contains(stderr, "Error: checks failed: preflight: bgp-established") || !strings.Contains(out, "FAIL") {
		t.Fatalf("failing plan: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := exe("status", "-o", "xml"); code != 1 || !strings.Contains(stderr, `--output "xml"`) {
		t.Errorf("bad -o: exit %d: %s", code, stderr)
	}
}
