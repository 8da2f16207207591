package controller

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/forklift"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/verify"
)

// AutoCutoverInput is what the automatic cutover (cutoverPolicy
// AfterMigration) of one VMI depends on.
type AutoCutoverInput struct {
	VMI *kubevirt.VMI
	// Record is the controller's AnnotationAutoCutover (nil: none).
	Record *nbv1.AutoCutoverRecord
	// Policy of the VMI's segments: AfterMigration when any endpoint's
	// segment has it, with the longest verifyTimeout among them.
	AfterMigration bool
	VerifyTimeout  time.Duration
	// Segments are the VMI's AfterMigration segments (each once), for the
	// auto-cutover metric.
	Segments []SegmentKey
	// Migration ("namespace/name") and its status of the VM; VM is nil
	// when no Migration lists the VM.
	Migration string
	VM        *forklift.MigrationVM
	Endpoints []AutoCutoverEndpoint
	Now       time.Time
}

// AutoCutoverEndpoint is one endpoint of the VMI and verify's verdict.
type AutoCutoverEndpoint struct {
	Name  string
	State nbv1.CutoverState
	Check verify.Result
	// Refused: the endpoint has a Conflict or Rejected condition; such a
	// VM is never activated (the condition already says why).
	Refused bool
}

// AutoCutoverAction is what to write: the cutover annotation (the same
// one `netbridgectl cutover` writes) and the record, in one patch; an
// event on the VMI; when to look again.
type AutoCutoverAction struct {
	Cutover      string
	Record       *nbv1.AutoCutoverRecord
	Event        *Event
	RequeueAfter time.Duration
}

// PlanAutoCutover decides the next step of one VMI's automatic cutover. It
// is pure. A cutover annotation the controller did not write (no record,
// or changed since) is a person's decision: nothing is done.
func PlanAutoCutover(in AutoCutoverInput) AutoCutoverAction {
	var a AutoCutoverAction
	v := in.VMI
	cutover := strings.ToLower(strings.TrimSpace(v.Annotations[nbv1.AnnotationCutover]))
	event := func(typ, reason, msg string) *Event {
		return &Event{Regarding: vmiRef(v), Type: typ, Reason: reason, Message: msg}
	}
	if in.Record == nil {
		if !in.AfterMigration || cutover != "" || in.VM == nil || !in.VM.Done() || v.Status.Phase != "Running" || len(in.Endpoints) == 0 {
			return a
		}
		for _, ep := range in.Endpoints {
			if ep.Refused {
				return a
			}
		}
		deadline := in.Now.Add(in.VerifyTimeout)
		a.Cutover = nbv1.CutoverActive
		a.Record = &nbv1.AutoCutoverRecord{State: nbv1.AutoActivated, At: in.Now, Migration: in.Migration, Deadline: &deadline,
			Reason: nbv1.ReasonAwaitingVerify}
		vmName := in.VM.ID
		if vmName == "" {
			vmName = in.VM.Name
		}
		a.Event = event(corev1.EventTypeNormal, nbv1.EventAutoCutoverActivated, fmt.Sprintf(
			"Forklift migration %s reports VM %s migrated (completed %s) and the VMI is Running: %s=%s; verify must pass within %s",
			in.Migration, vmName, in.VM.Completed.UTC().Format(time.RFC3339), nbv1.AnnotationCutover, nbv1.CutoverActive, in.VerifyTimeout))
		a.RequeueAfter = in.VerifyTimeout
		return a
	}
	if in.Record.State != nbv1.AutoActivated || cutover != nbv1.CutoverActive {
		return a // done, or a person took over
	}
	var failed []string
	reason := ""
	for _, ep := range in.Endpoints {
		var why []string
		r := ""
		if ep.State != nbv1.StateActive {
			st := ep.State
			if st == "" {
				st = nbv1.StateStaged
			}
			why, r = []string{fmt.Sprintf("endpoint is %s, not Active", st)}, nbv1.ReasonNotReported
		} else if !ep.Check.Passed() {
			why, r = ep.Check.Problems, ep.Check.Reason
		}
		if len(why) > 0 {
			failed = append(failed, ep.Name+": "+strings.Join(why, ", "))
			if reason == "" {
				reason = r
			}
		}
	}
	if len(in.Endpoints) == 0 {
		failed, reason = []string{"no BridgeEndpoint"}, nbv1.ReasonNotReported
	}
	if len(failed) == 0 {
		a.Record = &nbv1.AutoCutoverRecord{State: nbv1.AutoVerified, At: in.Now, Migration: in.Record.Migration, Reason: nbv1.ReasonVerified,
			Message: fmt.Sprintf("route, FDB and ARP checks passed %s after the automatic activation", in.Now.Sub(in.Record.At).Round(time.Millisecond))}
		a.Event = event(corev1.EventTypeNormal, nbv1.EventAutoCutoverVerified, a.Record.Message)
		return a
	}
	deadline := in.Record.At.Add(in.VerifyTimeout)
	if in.Record.Deadline != nil {
		deadline = *in.Record.Deadline
	}
	if in.Now.Before(deadline) {
		a.RequeueAfter = deadline.Sub(in.Now)
		return a
	}
	msg := fmt.Sprintf("rolled back: verify did not pass within %s of the automatic activation: %s",
		deadline.Sub(in.Record.At).Round(time.Millisecond), strings.Join(failed, "; "))
	a.Cutover = nbv1.CutoverRollback
	a.Record = &nbv1.AutoCutoverRecord{State: nbv1.AutoRolledBack, At: in.Now, Migration: in.Record.Migration, Reason: reason, Message: msg}
	a.Event = event(corev1.EventTypeWarning, nbv1.EventAutoCutoverRolledBack, msg)
	return a
}

// autoCutoverCondition is the AutoCutover condition of the endpoints of a
// VMI the controller activated, derived from its record (nil: none).
func autoCutoverCondition(v *kubevirt.VMI) *metav1.Condition {
	r, err := nbv1.ParseAutoCutover(v.Annotations[nbv1.AnnotationAutoCutover])
	if err != nil || r == nil {
		return nil
	}
	c := &metav1.Condition{Type: nbv1.ConditionAutoCutover, Status: metav1.ConditionFalse, Reason: r.Reason, Message: r.Message}
	switch r.State {
	case nbv1.AutoActivated:
		c.Reason = nbv1.ReasonAwaitingVerify
		c.Message = fmt.Sprintf("activated after Forklift migration %s; verify's checks (route, FDB, ARP) must pass", r.Migration)
		if r.Deadline != nil {
			c.Message += " by " + r.Deadline.UTC().Format(time.RFC3339)
		}
	case nbv1.AutoVerified:
		c.Status = metav1.ConditionTrue
		c.Reason = nbv1.ReasonVerified
	}
	if c.Reason == "" {
		c.Reason = nbv1.ReasonNotReported
	}
	return c
}
