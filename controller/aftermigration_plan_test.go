package controller

import (
	"strings"
	"testing"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/forklift"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/verify"
)

func TestPlanAutoCutover(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	completed := t0.Add(-time.Minute)
	done := &forklift.MigrationVM{ID: "vm-1", Name: "app01", Completed: &completed, Succeeded: true}
	copying := &forklift.MigrationVM{ID: "vm-1", Name: "app01", Phase: "CopyDisks"}
	failed := &forklift.MigrationVM{ID: "vm-1", Name: "app01", Completed: &completed, Failed: true, Error: "disk copy failed"}
	passed := verify.Result{Route: verify.OK, FDB: verify.OK, ARP: verify.OK}
	unreachable := verify.Result{Route: verify.OK, FDB: verify.OK, ARP: verify.No, Reason: nbv1.ReasonNotReachable,
		Problems: []string{"VM did not answer ARP across the segment from gw-1"}}
	staged := []AutoCutoverEndpoint{{Name: "app01-legacy", State: nbv1.StateStaged}}
	activeOK := []AutoCutoverEndpoint{{Name: "app01-legacy", State: nbv1.StateActive, Check: passed}}
	activeBad := []AutoCutoverEndpoint{{Name: "app01-legacy", State: nbv1.StateActive, Check: unreachable}}
	deadline := t0.Add(60 * time.Second)
	activated := &nbv1.AutoCutoverRecord{State: nbv1.AutoActivated, At: t0, Migration: "mtv/run1", Deadline: &deadline}
	vmi := func(phase, cutover string) *kubevirt.VMI {
		v := &kubevirt.VMI{Namespace: "vms", Name: "app01", Annotations: map[string]string{}}
		v.Status.Phase = phase
		if cutover != "" {
			v.Annotations[nbv1.AnnotationCutover] = cutover
		}
		return v
	}
	cases := []struct {
		name    string
		in      AutoCutoverInput
		cutover string
		state   nbv1.AutoCutoverState
		reason  string // event reason
		requeue time.Duration
		msg     string
	}{
		{name: "manual policy: nothing", in: AutoCutoverInput{VMI: vmi("Running", ""), VM: done, Endpoints: staged, Now: t0}},
		{name: "migration not complete: wait", in: AutoCutoverInput{VMI: vmi("Running", ""), AfterMigration: true, VM: copying, Endpoints: staged, Now: t0}},
		{name: "migration failed: never activated", in: AutoCutoverInput{VMI: vmi("Running", ""), AfterMigration: true, VM: failed, Endpoints: staged, Now: t0}},
		{name: "no migration lists the VM", in: AutoCutoverInput{VMI: vmi("Running", ""), AfterMigration: true, Endpoints: staged, Now: t0}},
		{name: "VMI not running yet", in: AutoCutoverInput{VMI: vmi("Scheduled", ""), AfterMigration: true, VM: done, Endpoints: staged, Now: t0}},
		{name: "no endpoint yet", in: AutoCutoverInput{VMI: vmi("Running", ""), AfterMigration: true, VM: done, Now: t0}},
		{name: "refused endpoint (namespace not allowed, conflict): never activated", in: AutoCutoverInput{VMI: vmi("Running", ""), AfterMigration: true, VM: done,
			Endpoints: []AutoCutoverEndpoint{{Name: "app01-legacy", State: nbv1.StateStaged, Refused: true}}, Now: t0}},
		{name: "a person's cutover annotation wins", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverRollback), AfterMigration: true, VM: done, Endpoints: staged, Now: t0}},
		{name: "migrated and running: activate", in: AutoCutoverInput{VMI: vmi("Running", ""), AfterMigration: true, VerifyTimeout: 60 * time.Second,
			Migration: "mtv/run1", VM: done, Endpoints: staged, Now: t0},
			cutover: nbv1.CutoverActive, state: nbv1.AutoActivated, reason: nbv1.EventAutoCutoverActivated, requeue: 60 * time.Second, msg: "mtv/run1 reports VM vm-1 migrated"},
		{name: "activated, checks pass: verified", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverActive), Record: activated, AfterMigration: true,
			VerifyTimeout: 60 * time.Second, Endpoints: activeOK, Now: t0.Add(3 * time.Second)},
			state: nbv1.AutoVerified, reason: nbv1.EventAutoCutoverVerified, msg: "passed 3s after"},
		{name: "activated, unreachable, before the deadline: wait", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverActive), Record: activated, AfterMigration: true,
			VerifyTimeout: 60 * time.Second, Endpoints: activeBad, Now: t0.Add(20 * time.Second)}, requeue: 40 * time.Second},
		{name: "activated, unreachable at the deadline: roll back naming the check", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverActive), Record: activated,
			AfterMigration: true, VerifyTimeout: 60 * time.Second, Endpoints: activeBad, Now: deadline},
			cutover: nbv1.CutoverRollback, state: nbv1.AutoRolledBack, reason: nbv1.EventAutoCutoverRolledBack, msg: "within 1m0s of the automatic activation: app01-legacy: VM did not answer ARP"},
		{name: "activated, endpoint never Active: roll back", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverActive), Record: activated,
			AfterMigration: true, VerifyTimeout: 60 * time.Second, Endpoints: staged, Now: deadline.Add(time.Second)},
			cutover: nbv1.CutoverRollback, state: nbv1.AutoRolledBack, reason: nbv1.EventAutoCutoverRolledBack, msg: "endpoint is Staged, not Active"},
		{name: "activated, a person rolled back meanwhile: hands off", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverRollback), Record: activated,
			AfterMigration: true, VerifyTimeout: 60 * time.Second, Endpoints: activeBad, Now: deadline}},
		{name: "verified is final", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverActive), Record: &nbv1.AutoCutoverRecord{State: nbv1.AutoVerified, At: t0},
			AfterMigration: true, VerifyTimeout: 60 * time.Second, Endpoints: activeBad, Now: deadline.Add(time.Hour)}},
		{name: "rolled back is final", in: AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverRollback), Record: &nbv1.AutoCutoverRecord{State: nbv1.AutoRolledBack, At: t0},
			AfterMigration: true, VM: done, Endpoints: activeOK, Now: deadline.Add(time.Hour)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := PlanAutoCutover(c.in)
			if a.Cutover != c.cutover {
				t.Errorf("cutover %q, want %q", a.Cutover, c.cutover)
			}
			var state nbv1.AutoCutoverState
			if a.Record != nil {
				state = a.Record.State
			}
			if state != c.state {
				t.Errorf("record state %q, want %q", state, c.state)
			}
			var reason, msg string
			if a.Event != nil {
				reason, msg = a.Event.Reason, a.Event.Message
			}
			if reason != c.reason || !strings.Contains(msg, c.msg) {
				t.Errorf("event %q %q, want %q containing %q", reason, msg, c.reason, c.msg)
			}
			if a.RequeueAfter != c.requeue {
				t.Errorf("requeue after %s, want %s", a.RequeueAfter, c.requeue)
			}
			if state == nbv1.AutoRolledBack && a.Record.Reason == "" {
				t.Error("rollback without a reason")
			}
		})
	}
	t.Run("rollback reason names the first failed check", func(t *testing.T) {
		a := PlanAutoCutover(AutoCutoverInput{VMI: vmi("Running", nbv1.CutoverActive), Record: activated, AfterMigration: true, VerifyTimeout: time.Minute,
			Endpoints: activeBad, Now: deadline})
		if a.Record.Reason != nbv1.ReasonNotReachable {
			t.Errorf("reason %q", a.Record.Reason)
		}
		v := vmi("Running", nbv1.CutoverRollback)
		v.Annotations[nbv1.AnnotationAutoCutover] = a.Record.String()
		c := autoCutoverCondition(v)
		if c == nil || c.Type != nbv1.ConditionAutoCutover || c.Status != "False" || c.Reason != nbv1.ReasonNotReachable || !strings.Contains(c.Message, "ARP") {
			t.Errorf("condition %+v", c)
		}
	})
}
