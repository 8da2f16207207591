package runbook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// Progress is where one VM's cutover stands.
type Progress struct {
	VM string `json:"vm"`
	// Done: the gateways report the wanted end state.
	Done bool `json:"done"`
	// Failed: the gateways or the controller refused; waiting will not help.
	Failed  bool   `json:"failed"`
	Message string `json:"message"`
}

// EvaluateActivate says whether a VM's activation is complete: each of its
// endpoints is Active and advertised (Advertised=True, or every host route in
// its active gateway's advertised list). A Conflict/Rejected condition fails
// at once; a refusal (duplicate address) fails at once when reported since
// `since` (a refusal from before this cutover may be stale, the gateway
// re-probes), and is otherwise the reason given if the wait times out.
func EvaluateActivate(s *Snapshot, vm types.NamespacedName, since time.Time) Progress {
	p := Progress{VM: vm.String()}
	eps := s.EndpointsOfVM(vm)
	if len(eps) == 0 {
		p.Message = "waiting for the controller to derive a BridgeEndpoint"
		return p
	}
	// metav1.Time is serialised to the second.
	since = since.Truncate(time.Second)
	var done []string
	var waiting []string
	for i := range eps {
		ep := &eps[i]
		for _, typ := range []string{nbv1.ConditionConflict, nbv1.ConditionRejected} {
			if c, ok := conditionTrue(ep.Status.Conditions, typ); ok {
				p.Failed = true
				p.Message = fmt.Sprintf("endpoint %s refused by the controller: %s", ep.Name, conditionText(typ, c))
				return p
			}
		}
		var stale []string
		for _, r := range s.Refusals(ep.Namespace, ep.Name) {
			if r.ObservedAt == nil || !r.ObservedAt.Time.Before(since) {
				p.Failed = true
				p.Message = r.String()
				return p
			}
			stale = append(stale, r.String())
		}
		adv := condition(ep.Status.Conditions, nbv1.ConditionAdvertised)
		if adv != nil && adv.Status == "False" && adv.Reason == string(nbv1.ReasonDuplicateAddress) {
			msg := fmt.Sprintf("%s refused: %s", strings.Join(ep.Spec.IPs, ","), string(nbv1.ReasonDuplicateAddress))
			if adv.Message != "" {
				msg += ", " + adv.Message
			}
			if !adv.LastTransitionTime.Time.Before(since) {
				p.Failed = true
				p.Message = msg
				return p
			}
			stale = append(stale, msg)
		}

		ref := endpointSegment(ep)
		gwName := s.ActiveGateway(ref)
		prefixes, _ := hostPrefixes(ep.Spec.IPs)
		switch {
		case ep.Spec.State != nbv1.StateActive:
			st := ep.Spec.State
			if st == "" {
				st = nbv1.StateStaged
			}
			waiting = append(waiting, fmt.Sprintf("endpoint %s is %s, waiting for the controller", ep.Name, st))
		case adv != nil && adv.Status == "True":
			done = append(done, fmt.Sprintf("%s advertised from %s", strings.Join(prefixes, ","), orNone(gwName)))
		case gwName == "":
			waiting = append(waiting, fmt.Sprintf("segment %s has no active gateway", ref))
		case segmentPhase(s, ref) == nbv1.PhaseExtended:
			// Extended advertises no host routes: the VM is active once
			// its active gateway bridges it (static FDB entry).
			if fdbProgrammed(s.Gateway(gwName), ep) {
				done = append(done, fmt.Sprintf("%s bridged by %s (phase Extended: host routes from phase Routed on)", strings.Join(ep.Spec.IPs, ","), gwName))
			} else {
				waiting = append(waiting, fmt.Sprintf("endpoint %s not yet bridged by %s", ep.Name, gwName))
			}
		default:
			set := advertisedSet(s.Gateway(gwName))
			var missing []string
			for _, pf := range prefixes {
				if !set[pf] {
					missing = append(missing, pf)
				}
			}
			if len(missing) == 0 && len(prefixes) > 0 {
				done = append(done, fmt.Sprintf("%s advertised from %s", strings.Join(prefixes, ","), gwName))
				continue
			}
			if len(prefixes) == 0 {
				waiting = append(waiting, fmt.Sprintf("endpoint %s has no IPs yet", ep.Name))
			} else {
				waiting = append(waiting, fmt.Sprintf("%s not yet advertised by %s", strings.Join(missing, ","), gwName))
			}
		}
		if len(stale) > 0 {
			waiting = append(waiting, strings.Join(stale, "; ")+" (reported before this cutover, waiting for a new probe)")
		}
	}
	if len(waiting) > 0 {
		p.Message = strings.Join(waiting, "; ")
		return p
	}
	p.Done = true
	p.Message = strings.Join(done, "; ")
	return p
}

// EvaluateRollback says whether every host route of the VM is gone from
// every gateway's advertised list (standbys advertise too, prepended).
func EvaluateRollback(s *Snapshot, vm types.NamespacedName) Progress {
	p := Progress{VM: vm.String()}
	prefixes, _ := hostPrefixes(s.vmIPs(vm))
	if len(prefixes) == 0 {
		p.Done = true
		p.Message = "no IPs known for this VM: nothing is advertised"
		return p
	}
	var still []string
	for i := range s.Gateways {
		gw := &s.Gateways[i]
		set := advertisedSet(gw)
		var on []string
		for _, pf := range prefixes {
			if set[pf] {
				on = append(on, pf)
			}
		}
		if len(on) > 0 {
			still = append(still, fmt.Sprintf("%s still advertised by %s", strings.Join(on, ","), gw.Name))
		}
	}
	if len(still) > 0 {
		p.Message = strings.Join(still, "; ")
		return p
	}
	p.Done = true
	p.Message = fmt.Sprintf("%s withdrawn from every gateway", strings.Join(prefixes, ","))
	return p
}

func orNone(s string) string {
	if s == "" {
		return "<no active gateway>"
	}
	return s
}

// SetCutover writes the cutover annotation on a VMI with a merge patch, which
// touches nothing else of the object (KubeVirt owns the rest of it).
func SetCutover(ctx context.Context, c client.Client, vm types.NamespacedName, value string) error {
	if err := kubevirt.PatchAnnotations(ctx, c, vm, map[string]string{nbv1.AnnotationCutover: value}); err != nil {
		return fmt.Errorf("set %s=%s on virtualmachineinstance %s: %w", nbv1.AnnotationCutover, value, vm, err)
	}
	return nil
}

// Cutover activates or rolls back VMs and waits for the gateways.
type Cutover struct {
	Client client.Client
	// Progress receives one line per change of a VM's state (stderr).
	Progress io.Writer
	Timeout  time.Duration
	// Interval between polls of the API server.
	Interval time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// ErrCutoverFailed is wrapped by the error Run returns when a VM was refused
// or timed out.
var ErrCutoverFailed = errors.New("cutover failed")

// Run writes the annotation (CutoverActive or CutoverRollback) on every VM,
// then waits until each one is done or failed, or the timeout. It returns the
// final progress of each VM, and an error wrapping ErrCutoverFailed naming
// every VM that did not make it.
func (r *Cutover) Run(ctx context.Context, action string, vms []types.NamespacedName) ([]Progress, error) {
	if action != nbv1.CutoverActive && action != nbv1.CutoverRollback {
		return nil, fmt.Errorf("cutover action %q: want %s or %s", action, nbv1.CutoverActive, nbv1.CutoverRollback)
	}
	now := r.Now
	if now == nil {
		now = time.Now
	}
	interval := r.Interval
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	progress := r.Progress
	if progress == nil {
		progress = io.Discard
	}
	start := now()

	// Check every VM before writing any annotation: a typo in the third name
	// should not leave the first two half cut over.
	for _, vm := range vms {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(VMIKind)
		if err := r.Client.Get(ctx, vm, u); err != nil {
			return nil, fmt.Errorf("get virtualmachineinstance %s: %w", vm, err)
		}
		if VMIFromUnstructured(u).Segment != "" {
			continue
		}
		// Unlabelled VMIs are managed when the controller derived an
		// endpoint for them (Forklift Plans' VMIs, through the NetworkMap).
		derived, err := hasEndpoint(ctx, r.Client, vm)
		if err != nil {
			return nil, err
		}
		if !derived {
			return nil, fmt.Errorf("virtualmachineinstance %s has no %s label and no BridgeEndpoint: not managed by netbridge", vm, nbv1.LabelSegment)
		}
	}
	for _, vm := range vms {
		if err := SetCutover(ctx, r.Client, vm, action); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "%s: %s=%s\n", vm, nbv1.AnnotationCutover, action)
	}

	// The timeout is checked between polls, not carried by the API calls'
	// context: client-go's rate limiter refuses a call that "would exceed
	// the deadline" before it passes, which must read as a timeout with
	// the last known state, not as an API error.
	var deadline time.Time
	if r.Timeout > 0 {
		deadline = time.Now().Add(r.Timeout)
	}
	expired := func() bool { return !deadline.IsZero() && !time.Now().Before(deadline) }
	last := map[string]string{}
	final := map[types.NamespacedName]Progress{}
	for {
		pollCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := Collect(pollCtx, r.Client)
		if err == nil {
			for _, vm := range vms {
				if p, ok := final[vm]; ok && (p.Done || p.Failed) {
					continue
				}
				if _, err = snap.LoadVMI(pollCtx, r.Client, vm); err != nil {
					break
				}
				var p Progress
				if action == nbv1.CutoverActive {
					p = EvaluateActivate(snap, vm, start)
				} else {
					p = EvaluateRollback(snap, vm)
				}
				final[vm] = p
				line := p.Message
				if p.Done {
					line = "done: " + line
				} else if p.Failed {
					line = "FAILED: " + line
				}
				if last[p.VM] != line {
					last[p.VM] = line
					fmt.Fprintf(progress, "[%5.1fs] %s: %s\n", now().Sub(start).Seconds(), p.VM, line)
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return r.results(vms, final), fmt.Errorf("cutover %s interrupted: %w", action, ctx.Err())
		}
		if err != nil && !expired() {
			return nil, err
		}
		pending := 0
		for _, vm := range vms {
			if p := final[vm]; !p.Done && !p.Failed {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if expired() {
			return r.results(vms, final), r.failure(action, r.results(vms, final), true)
		}
		wait := interval
		if !deadline.IsZero() {
			if left := time.Until(deadline); left < wait {
				wait = left
			}
		}
		select {
		case <-ctx.Done():
			return r.results(vms, final), fmt.Errorf("cutover %s interrupted: %w", action, ctx.Err())
		case <-time.After(wait):
		}
	}
	out := r.results(vms, final)
	return out, r.failure(action, out, false)
}

func (r *Cutover) results(vms []types.NamespacedName, final map[types.NamespacedName]Progress) []Progress {
	out := make([]Progress, 0, len(vms))
	for _, vm := range vms {
		p, ok := final[vm]
		if !ok {
			p = Progress{VM: vm.String(), Message: "no status read yet"}
		}
		out = append(out, p)
	}
	return out
}

func (r *Cutover) failure(action string, out []Progress, timedOut bool) error {
	var msgs []string
	for _, p := range out {
		switch {
		case p.Failed:
			msgs = append(msgs, fmt.Sprintf("%s: %s", p.VM, p.Message))
		case !p.Done && timedOut:
			msgs = append(msgs, fmt.Sprintf("%s: timed out after %s: %s", p.VM, r.Timeout, p.Message))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	what := "activation"
	if action == nbv1.CutoverRollback {
		what = "rollback"
	}
	return fmt.Errorf("%w: %s of %d of %d VMs did not complete: %s", ErrCutoverFailed, what, len(msgs), len(out), strings.Join(msgs, "; "))
}

// segmentPhase is the segment's phase, Extended when unset or unknown.
func segmentPhase(s *Snapshot, ref SegmentRef) nbv1.SegmentPhase {
	if _, seg, _ := s.Segment(ref); seg != nil && seg.Phase != "" {
		return seg.Phase
	}
	return nbv1.PhaseExtended
}

// fdbProgrammed: the gateway reports the endpoint's FDB entry in place.
func fdbProgrammed(gw *nbv1.BridgeGateway, ep *nbv1.BridgeEndpoint) bool {
	if gw == nil {
		return false
	}
	for _, e := range gw.Status.Endpoints {
		if e.Namespace == ep.Namespace && e.Name == ep.Name {
			return e.FDBProgrammed
		}
	}
	return false
}

// hasEndpoint: the controller has derived a BridgeEndpoint for the VMI.
func hasEndpoint(ctx context.Context, c client.Client, vm types.NamespacedName) (bool, error) {
	var eps nbv1.BridgeEndpointList
	if err := c.List(ctx, &eps, client.InNamespace(vm.Namespace)); err != nil {
		return false, fmt.Errorf("list bridgeendpoints in %s: %w", vm.Namespace, err)
	}
	for _, ep := range eps.Items {
		if ep.Spec.VMI == vm.Name {
			return true, nil
		}
	}
	return false, nil
}
