package runbook

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/config"
)

// Check results.
const (
	Pass = "pass"
	Fail = "FAIL"
	Warn = "warn"
)

// Preflight check names (stable: scripts and the e2e tests match on them).
const (
	CheckSegment         = "segment-exists"
	CheckConfigValid     = "config-valid"
	CheckActiveGateway   = "active-gateway"
	CheckProgrammed      = "segment-programmed"
	CheckBGP             = "bgp-established"
	CheckVMI             = "vmi-managed"
	CheckEndpoint        = "endpoint-derived"
	CheckIPs             = "ips-known"
	CheckConflict        = "no-conflict"
	CheckDuplicateAddr   = "no-duplicate-address"
	PeerStateEstablished = "Established"
)

// Plan is what `cutover plan` prints: the routes the cutover will change and
// the preflight checks.
type Plan struct {
	Items  []PlanItem `json:"items"`
	Checks []Check    `json:"checks"`
	// Ready is false when any check failed.
	Ready bool `json:"ready"`
}

// PlanItem is one VM's cutover.
type PlanItem struct {
	VM       string   `json:"vm"`
	Segment  string   `json:"segment"`
	State    string   `json:"state"`
	Prefixes []string `json:"prefixes,omitempty"`
	Gateway  string   `json:"gateway,omitempty"`
	Standby  []string `json:"standby,omitempty"`
	Action   string   `json:"action"`
}

// Check is one preflight check.
type Check struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Result  string `json:"result"`
	Message string `json:"message"`
}

// Failed lists the failed checks.
func (p Plan) Failed() []Check {
	var out []Check
	for _, c := range p.Checks {
		if c.Result == Fail {
			out = append(out, c)
		}
	}
	return out
}

// BuildPlan evaluates a cutover (activation) of the targets: the VMs named,
// and every VM of the segments named.
func BuildPlan(s *Snapshot, targets []Target) Plan {
	p := Plan{Items: []PlanItem{}, Checks: []Check{}}
	var vms []types.NamespacedName
	seenVM := map[types.NamespacedName]bool{}
	var segs []SegmentRef
	seenSeg := map[SegmentRef]bool{}
	addSeg := func(r SegmentRef) {
		if !seenSeg[r] {
			seenSeg[r] = true
			segs = append(segs, r)
		}
	}
	for _, t := range targets {
		if t.Segment != nil {
			addSeg(*t.Segment)
			for _, vm := range s.VMsOfSegment(*t.Segment) {
				if !seenVM[vm] {
					seenVM[vm] = true
					vms = append(vms, vm)
				}
			}
			continue
		}
		if !seenVM[*t.VM] {
			seenVM[*t.VM] = true
			vms = append(vms, *t.VM)
		}
	}

	var vmChecks []Check
	for _, vm := range vms {
		item, ref, checks := planVM(s, vm)
		vmChecks = append(vmChecks, checks...)
		if ref != nil {
			addSeg(*ref)
		}
		p.Items = append(p.Items, item)
	}
	for _, ref := range segs {
		p.Checks = append(p.Checks, segmentChecks(s, ref)...)
	}
	p.Checks = append(p.Checks, vmChecks...)
	p.Ready = len(p.Failed()) == 0
	return p
}

func planVM(s *Snapshot, vm types.NamespacedName) (PlanItem, *SegmentRef, []Check) {
	subject := vm.String()
	item := PlanItem{VM: subject, State: "-", Action: "none"}
	var checks []Check
	check := func(name, result, msg string) {
		checks = append(checks, Check{Name: name, Subject: subject, Result: result, Message: msg})
	}

	eps := s.EndpointsOfVM(vm)
	v, haveVMI := s.VMI(vm)
	var ref *SegmentRef
	switch {
	case !haveVMI && len(eps) == 0:
		check(CheckVMI, Fail, "no VirtualMachineInstance and no BridgeEndpoint by that name")
		item.Action = "none: unknown VM"
		return item, nil, checks
	case haveVMI && v.Segment == "" && len(eps) == 0:
		check(CheckVMI, Fail, fmt.Sprintf("VMI has no %s label: not managed by netbridge", nbv1.LabelSegment))
		item.Action = "none: not managed"
		return item, nil, checks
	}
	if len(eps) > 0 {
		r := endpointSegment(&eps[0])
		ref = &r
	} else if r, err := nbv1.ParseSegmentKey(v.Segment); err == nil {
		ref = &r
	} else {
		check(CheckVMI, Fail, fmt.Sprintf("label %s=%q is not <bridgeconfig>.<segment>: %v", nbv1.LabelSegment, v.Segment, err))
		return item, nil, checks
	}
	item.Segment = ref.String()
	item.Gateway = s.ActiveGateway(*ref)
	item.Standby = s.StandbyGateways(*ref)

	ips := s.vmIPs(vm)
	prefixes, bad := hostPrefixes(ips)
	item.Prefixes = prefixes
	switch {
	case len(bad) > 0:
		check(CheckIPs, Fail, "unparsable IPs: "+strings.Join(bad, ", "))
	case len(prefixes) == 0:
		check(CheckIPs, Fail, "no IPs known yet (no "+nbv1.AnnotationIPs+" annotation, guest agent has not reported)")
	default:
		check(CheckIPs, Pass, strings.Join(ips, ", "))
	}

	if len(eps) == 0 {
		check(CheckEndpoint, Fail, "the controller has not derived a BridgeEndpoint for this VM yet")
		item.Action = "none: no BridgeEndpoint yet"
		return item, ref, checks
	}
	var names, states []string
	allActive := true
	conflicts, dups := []string{}, []string{}
	for i := range eps {
		ep := &eps[i]
		names = append(names, ep.Name)
		st := string(ep.Spec.State)
		if st == "" {
			st = string(nbv1.StateStaged)
		}
		states = append(states, st)
		if ep.Spec.State != nbv1.StateActive {
			allActive = false
		}
		for _, typ := range []string{nbv1.ConditionConflict, nbv1.ConditionRejected} {
			if c, ok := conditionTrue(ep.Status.Conditions, typ); ok {
				conflicts = append(conflicts, ep.Name+": "+conditionText(typ, c))
			}
		}
		for _, r := range s.Refusals(ep.Namespace, ep.Name) {
			if r.Reason == string(nbv1.ReasonDuplicateAddress) {
				dups = append(dups, fmt.Sprintf("%s (on %s)", r, r.Gateway))
			}
		}
		if c := condition(ep.Status.Conditions, nbv1.ConditionAdvertised); c != nil && c.Reason == string(nbv1.ReasonDuplicateAddress) && c.Status != "True" {
			dups = append(dups, ep.Name+": "+conditionText(nbv1.ConditionAdvertised, c))
		}
	}
	item.State = strings.Join(uniq(states), ",")
	check(CheckEndpoint, Pass, strings.Join(names, ", "))
	if len(conflicts) > 0 {
		check(CheckConflict, Fail, strings.Join(conflicts, "; "))
	} else {
		check(CheckConflict, Pass, "no Conflict or Rejected condition")
	}
	if len(dups) > 0 {
		check(CheckDuplicateAddr, Fail, strings.Join(dups, "; ")+" (is the source VM still powered on?)")
	} else {
		check(CheckDuplicateAddr, Pass, "no gateway has seen another MAC answer for these IPs")
	}

	gw := item.Gateway
	if gw == "" {
		gw = "<no active gateway>"
	}
	// Host routes belong to the Routed phase: in Extended activation only
	// bridges the VM (the legacy router keeps routing the subnet).
	extended := false
	if _, seg, _ := s.Segment(*ref); seg != nil && (seg.Phase == "" || seg.Phase == nbv1.PhaseExtended) {
		extended = true
	}
	switch {
	case allActive && extended:
		item.Action = "none: already active, bridged by " + gw + " (phase Extended: no host routes until the segment is Routed)"
	case allActive:
		item.Action = "none: already active, advertised from " + gw
	case extended:
		item.Action = fmt.Sprintf("bridge %s through %s; not advertised: the segment is in phase Extended, host routes start in phase Routed",
			strings.Join(prefixes, ", "), gw)
	default:
		item.Action = fmt.Sprintf("advertise %s from %s", strings.Join(prefixes, ", "), gw)
		if len(item.Standby) > 0 {
			item.Action += fmt.Sprintf(" (standby %s, prepended)", strings.Join(item.Standby, ", "))
		}
	}
	return item, ref, checks
}

// segmentChecks: the segment exists, has an active gateway that has it
// programmed, and that gateway's BGP sessions are up. All sessions down is a
// failure; some down is a warning, since the routers are redundant.
func segmentChecks(s *Snapshot, ref SegmentRef) []Check {
	subject := ref.String()
	var checks []Check
	check := func(name, result, msg string) {
		checks = append(checks, Check{Name: name, Subject: subject, Result: result, Message: msg})
	}
	bc, seg, _ := s.Segment(ref)
	switch {
	case bc == nil:
		check(CheckSegment, Fail, "no BridgeConfig "+ref.BridgeConfig)
		return checks
	case seg == nil:
		check(CheckSegment, Fail, fmt.Sprintf("BridgeConfig %s has no segment %s", ref.BridgeConfig, ref.Segment))
		return checks
	}
	phase := seg.Phase
	if phase == "" {
		phase = nbv1.PhaseExtended
	}
	check(CheckSegment, Pass, fmt.Sprintf("VLAN %d ⇄ VNI %d, phase %s", seg.VLANID, seg.VNI, phase))
	if msg := configProblem(bc, seg); msg != "" {
		check(CheckConfigValid, Fail, msg)
		return checks
	}
	check(CheckConfigValid, Pass, "segment spec valid, BridgeConfig not refused")

	active := s.ActiveGateway(ref)
	if active == "" {
		check(CheckActiveGateway, Fail, "no gateway holds the segment's lease")
		return checks
	}
	check(CheckActiveGateway, Pass, active)
	gw := s.Gateway(active)
	if gw == nil {
		check(CheckProgrammed, Fail, fmt.Sprintf("gateway %s has not reported (no BridgeGateway %s)", active, active))
		check(CheckBGP, Fail, fmt.Sprintf("gateway %s has not reported", active))
		return checks
	}
	gs := gatewaySegment(gw, ref)
	switch {
	case gs == nil:
		check(CheckProgrammed, Fail, fmt.Sprintf("gateway %s does not list the segment", active))
	case nbv1.SegmentRole(gs.Role) != nbv1.SegmentRoleActive:
		check(CheckProgrammed, Fail, fmt.Sprintf("gateway %s reports role %s, not Active", active, gs.Role))
	case !gs.Programmed || gs.Error != "":
		msg := fmt.Sprintf("not programmed on %s", active)
		if gs.Error != "" {
			msg += ": " + gs.Error
		}
		check(CheckProgrammed, Fail, msg)
	default:
		check(CheckProgrammed, Pass, "programmed on "+active)
	}

	var up, down []string
	for _, p := range gw.Status.Peers {
		desc := fmt.Sprintf("%s AS%d %s", p.Address, p.ASN, p.State)
		if p.State == PeerStateEstablished {
			up = append(up, desc)
		} else {
			if p.LastError != "" {
				desc += " (" + p.LastError + ")"
			}
			down = append(down, desc)
		}
	}
	switch {
	case len(gw.Status.Peers) == 0:
		check(CheckBGP, Fail, fmt.Sprintf("gateway %s has no BGP peers", active))
	case len(up) == 0:
		check(CheckBGP, Fail, fmt.Sprintf("no session Established on %s: %s", active, strings.Join(down, ", ")))
	case len(down) > 0:
		check(CheckBGP, Warn, fmt.Sprintf("on %s: up %s; down %s", active, strings.Join(up, ", "), strings.Join(down, ", ")))
	default:
		check(CheckBGP, Pass, fmt.Sprintf("on %s: %s", active, strings.Join(up, ", ")))
	}
	return checks
}

// anySubnetBound lets every prefix but a default route through: how broad a
// segment may be is the site's bound, which the controller applies and
// reports as Ready=False.
var anySubnetBound = config.Limits{BroadestIPv4: 1, BroadestIPv6: 1}

// configProblem is why a segment must not be cut over: the same validation
// the controller and the gateways run, or the controller's Ready=False.
func configProblem(bc *nbv1.BridgeConfig, seg *nbv1.Segment) string {
	_, errs := config.ParseSegment(bc.Name, *seg, config.Uplink{}, anySubnetBound, field.NewPath("spec", "segments").Key(seg.Name))
	if len(errs) > 0 {
		return fmt.Sprintf("BridgeConfig %s: %v", bc.Name, errs.ToAggregate())
	}
	if c := condition(bc.Status.Conditions, nbv1.ConditionReady); c != nil && c.Status == metav1.ConditionFalse {
		return fmt.Sprintf("BridgeConfig %s is not Ready (%s): %s", bc.Name, c.Reason, c.Message)
	}
	return ""
}

func uniq(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
