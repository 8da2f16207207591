package runbook_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/forklift"
	"github.com/netbridge-io/netbridge/runbook"
)

// waveFixture is the base fixture (segment, gateways, the labelled VM web1,
// which is not in the Plan) plus a Forklift Plan of three VMs: app01 and
// app02 migrated (VMIs with Forklift's labels only, endpoints derived by
// the "controller"), app03 not migrated yet, and a decoy VMI of another
// Plan carrying app03's vmID.
type waveFixture struct {
	*fixture
	plan string
	uid  string
	vms  []string
	ips  []string
}

func newWaveFixture(t *testing.T) *waveFixture {
	t.Helper()
	w := &waveFixture{fixture: newFixture(t), vms: []string{"app01", "app02"}}
	ctx := context.Background()
	plan := forklift.NewObject(forklift.PlanGVK)
	plan.SetNamespace(w.ns)
	plan.SetName("wave1")
	plan.Object["spec"] = map[string]any{
		"targetNamespace": w.ns,
		"vms": []any{
			map[string]any{"id": "vm-101", "name": "app01"},
			map[string]any{"id": "vm-102", "name": "App02"},
			map[string]any{"id": "vm-103", "name": "app03"},
		},
	}
	must(t, w.c.Create(ctx, plan))
	w.plan, w.uid = w.ns+"/wave1", string(plan.GetUID())
	for i, vm := range w.vms {
		ip := strings.Replace(w.ip, ".10", []string{".21", ".22"}[i], 1)
		w.ips = append(w.ips, ip)
		w.addForkliftVM(vm, w.uid, []string{"vm-101", "vm-102"}[i], ip, []string{"02:00:00:00:02:21", "02:00:00:00:02:22"}[i])
	}
	w.addForkliftVM("app03-other-plan", "uid-of-another-plan", "vm-103", strings.Replace(w.ip, ".10", ".23", 1), "02:00:00:00:02:23")
	return w
}

// addForkliftVM creates a VMI as Forklift does (its labels, no netbridge
// label) and the endpoint the controller derives through the NetworkMap.
func (w *waveFixture) addForkliftVM(vm, planUID, vmID, ip, mac string) {
	w.t.Helper()
	w.createVM(vm, vm+"-nic1", "nic1", ip, mac, map[string]string{forklift.LabelPlan: planUID, forklift.LabelVMID: vmID, "migration": "uid-migration-1"})
}

// annotations are the cutover annotations of the Plan's VMIs, web1 and the decoy.
func (w *waveFixture) annotations() map[string]string {
	out := map[string]string{}
	for _, vm := range append([]string{w.vm, "app03-other-plan"}, w.vms...) {
		out[vm] = w.cutoverAnnotation(vm)
	}
	return out
}

func TestWavePlanListsThePlansVMs(t *testing.T) {
	w := newWaveFixture(t)
	out, _, err := run(t, "wave", "plan", "--mtv-plan", w.plan, "-o", "json")
	if err != nil {
		t.Fatalf("wave plan: %v (a VM not migrated is a warning, not a failure)", err)
	}
	var p runbook.WavePlan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("wave plan json: %v", err)
	}
	if p.Wave.Plan != w.plan || p.Wave.UID != w.uid || len(p.Wave.VMs) != 3 {
		t.Fatalf("wave %+v", p.Wave)
	}
	for i, want := range []struct {
		id, vmi  string
		migrated bool
	}{{"vm-101", w.ns + "/app01", true}, {"vm-102", w.ns + "/app02", true}, {"vm-103", "", false}} {
		v := p.Wave.VMs[i]
		if v.ID != want.id || v.Migrated != want.migrated || strings.Join(v.VMIs, ",") != want.vmi {
			t.Errorf("wave VM %d = %+v, want id %s vmi %q migrated %v", i, v, want.id, want.vmi, want.migrated)
		}
	}
	// Exactly the Plan's migrated VMs are planned: not web1 (same segment,
	// not in the Plan), not the decoy (app03's id, another Plan).
	var items []string
	for _, it := range p.Items {
		items = append(items, it.VM)
		if it.Segment != w.seg() || it.Gateway != w.gwA || !strings.HasPrefix(it.Action, "advertise ") {
			t.Errorf("item %+v: want advertise on %s from %s", it, w.seg(), w.gwA)
		}
	}
	if strings.Join(items, ",") != w.ns+"/app01,"+w.ns+"/app02" {
		t.Errorf("items %v, want exactly the plan's migrated VMs", items)
	}
	checks := map[string]int{}
	for _, c := range p.Checks {
		checks[c.Name+"/"+c.Result]++
		if c.Name == runbook.CheckMigrated && c.Result == runbook.Warn &&
			(c.Subject != "app03 (id vm-103)" || !strings.Contains(c.Message, "plan="+w.uid+", vmID=vm-103")) {
			t.Errorf("not-migrated check %+v", c)
		}
	}
	for _, want := range []string{runbook.CheckMigrated + "/pass", runbook.CheckMigrated + "/warn", runbook.CheckBGP + "/pass",
		runbook.CheckProgrammed + "/pass", runbook.CheckEndpoint + "/pass", runbook.CheckDuplicateAddr + "/pass"} {
		if checks[want] == 0 {
			t.Errorf("no %s check in %v", want, checks)
		}
	}
	if checks[runbook.CheckMigrated+"/pass"] != 2 || checks[runbook.CheckMigrated+"/warn"] != 1 || !p.Ready {
		t.Errorf("checks %v ready %v", checks, p.Ready)
	}

	out, _, err = run(t, "wave", "plan", "--mtv-plan", "wave1", "-n", w.ns)
	if err != nil {
		t.Fatalf("wave plan (table, NAME in --namespace): %v", err)
	}
	for _, want := range []string{"WAVE " + w.plan, "3 VM(s), 1 not migrated", "preflight: all checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if row := lineWith(out, "vm-103"); !strings.Contains(row, "app03") || !strings.HasSuffix(row, "no") {
		t.Errorf("app03 row %q", row)
	}

	// The same preflight as cutover plan: a session down fails the wave.
	w.gateway(w.gwA, func(s *nbv1.BridgeGatewayStatus) { s.Peers[0].State = "Idle" })
	_, _, err = run(t, "wave", "plan", "--mtv-plan", w.plan)
	if !errors.Is(err, runbook.ErrChecksFailed) || !strings.Contains(err.Error(), runbook.CheckBGP) {
		t.Errorf("wave plan with BGP down: %v", err)
	}

	_, _, err = run(t, "wave", "plan", "--mtv-plan", w.ns+"/nosuchplan")
	if err == nil || !strings.Contains(err.Error(), "forklift plan "+w.ns+"/nosuchplan") {
		t.Errorf("unknown plan: %v", err)
	}
	if _, _, err = run(t, "wave", "plan"); err == nil || !strings.Contains(err.Error(), "mtv-plan") {
		t.Errorf("missing --mtv-plan: %v", err)
	}
}

func TestWaveActivateRollbackActOnThePlansVMs(t *testing.T) {
	w := newWaveFixture(t)
	_, _, err := run(t, "wave", "activate", "--mtv-plan", w.plan, "--timeout", "5s")
	if err == nil || !strings.Contains(err.Error(), "app03 (id vm-103)") || !strings.Contains(err.Error(), "--skip-not-migrated") {
		t.Fatalf("activate with a VM not migrated: %v", err)
	}
	for vm, a := range w.annotations() {
		if a != "" {
			t.Errorf("%s annotated %q: activate must write nothing while a Plan VM is not migrated", vm, a)
		}
	}

	// Play the controller and the active gateway for each Plan VM.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reacted []<-chan struct{}
	for i, vm := range w.vms {
		prefix := w.ips[i] + "/32"
		reacted = append(reacted, w.whenAnnotated(ctx, vm, nbv1.CutoverActive, func() {
			w.endpoint(vm+"-nic1", func(ep *nbv1.BridgeEndpoint) { ep.Spec.State = nbv1.StateActive })
			w.gateway(w.gwA, func(s *nbv1.BridgeGatewayStatus) { s.Advertised = append(s.Advertised, prefix) })
		}))
	}
	out, stderr, err := run(t, "wave", "activate", "--mtv-plan", w.plan, "--skip-not-migrated", "--timeout", "20s", "--poll-interval", "100ms", "-o", "json")
	for _, r := range reacted {
		<-r
	}
	if err != nil {
		t.Fatalf("wave activate --skip-not-migrated: %v", err)
	}
	if !strings.Contains(stderr, "skipping 1 VM(s) of plan "+w.plan+" not migrated yet: app03 (id vm-103)") {
		t.Errorf("stderr should name the skipped VM: %q", stderr)
	}
	var results []runbook.Progress
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || !results[0].Done || !results[1].Done || results[0].VM != w.ns+"/app01" || results[1].VM != w.ns+"/app02" {
		t.Errorf("results %+v", results)
	}
	want := map[string]string{"app01": nbv1.CutoverActive, "app02": nbv1.CutoverActive, w.vm: "", "app03-other-plan": ""}
	if got := w.annotations(); !equalMaps(got, want) {
		t.Errorf("annotations %v, want %v: exactly the Plan's VMs", got, want)
	}

	// verify: the VM not migrated fails the wave unless skipped.
	for i, vm := range w.vms {
		w.gateway(w.gwA, func(s *nbv1.BridgeGatewayStatus) {
			s.Endpoints = append(s.Endpoints, nbv1.GatewayEndpointStatus{
				Namespace: w.ns, Name: vm + "-nic1", BridgeConfig: w.bc, Segment: "app", IPs: []string{w.ips[i]},
				MAC: []string{"02:00:00:00:02:21", "02:00:00:00:02:22"}[i], FDBProgrammed: true, Advertised: true, Reachable: true, LastProbe: ptrNow(),
			})
		})
	}
	out, _, err = run(t, "wave", "verify", "--mtv-plan", w.plan)
	if !errors.Is(err, runbook.ErrChecksFailed) || !strings.Contains(lineWith(out, "app03"), "not migrated") {
		t.Errorf("wave verify with a VM not migrated: %v\n%s", err, out)
	}
	out, _, err = run(t, "wave", "verify", "--mtv-plan", w.plan, "--skip-not-migrated")
	if err != nil || strings.Count(out, " ok") < 8 || strings.Contains(out, w.vm+"-eth0") {
		t.Errorf("wave verify --skip-not-migrated: %v\n%s", err, out)
	}

	// rollback acts on the migrated VMs, never blocked by the missing one.
	for i, vm := range w.vms {
		prefix := w.ips[i] + "/32"
		reacted[i] = w.whenAnnotated(ctx, vm, nbv1.CutoverRollback, func() {
			w.endpoint(vm+"-nic1", func(ep *nbv1.BridgeEndpoint) { ep.Spec.State = nbv1.StateWithdrawn })
			w.gateway(w.gwA, func(s *nbv1.BridgeGatewayStatus) {
				var kept []string
				for _, p := range s.Advertised {
					if p != prefix {
						kept = append(kept, p)
					}
				}
				s.Advertised = kept
			})
		})
	}
	start := time.Now()
	out, stderr, err = run(t, "wave", "rollback", "--mtv-plan", w.plan, "--timeout", "20s", "--poll-interval", "100ms")
	for _, r := range reacted {
		<-r
	}
	if err != nil {
		t.Fatalf("wave rollback: %v", err)
	}
	t.Logf("wave_rollback_ms=%d", time.Since(start).Milliseconds())
	if !strings.Contains(stderr, "skipping 1 VM(s)") || strings.Count(out, "withdrawn from every gateway") != 2 {
		t.Errorf("rollback output %q stderr %q", out, stderr)
	}
	want = map[string]string{"app01": nbv1.CutoverRollback, "app02": nbv1.CutoverRollback, w.vm: "", "app03-other-plan": ""}
	if got := w.annotations(); !equalMaps(got, want) {
		t.Errorf("annotations %v, want %v", got, want)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
