package runbook

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// VerifyReport is what `netbridgectl verify` prints.
type VerifyReport struct {
	Rows []VerifyRow `json:"rows"`
	// OK is false when any row has a problem.
	OK bool `json:"ok"`
}

// VerifyRow checks one endpoint end to end from its active gateway's view.
type VerifyRow struct {
	VM       string   `json:"vm"`
	Endpoint string   `json:"endpoint,omitempty"`
	Segment  string   `json:"segment,omitempty"`
	IPs      []string `json:"ips,omitempty"`
	Gateway  string   `json:"gateway,omitempty"`
	// Route, FDB and ARP are "ok", "MISSING"/"NO", or "-" when not checked.
	Route string `json:"route"`
	FDB   string `json:"fdb"`
	ARP   string `json:"arp"`
	OK    bool   `json:"ok"`
	// Problems name what is off, in words.
	Problems []string `json:"problems,omitempty"`
}

const (
	verdictOK  = "ok"
	verdictNo  = "NO"
	notChecked = "-"
)

// Verify checks the Active endpoints of the targets: VMs named must be
// Active; segments named contribute their Active endpoints.
func Verify(s *Snapshot, targets []Target) VerifyReport {
	r := VerifyReport{Rows: []VerifyRow{}, OK: true}
	seen := map[string]bool{}
	add := func(row VerifyRow) {
		key := row.VM + "/" + row.Endpoint
		if seen[key] {
			return
		}
		seen[key] = true
		if !row.OK {
			r.OK = false
		}
		r.Rows = append(r.Rows, row)
	}
	for _, t := range targets {
		if t.Segment != nil {
			for i := range s.Endpoints {
				ep := &s.Endpoints[i]
				if endpointSegment(ep) == *t.Segment && ep.Spec.State == nbv1.StateActive {
					add(verifyEndpoint(s, ep))
				}
			}
			continue
		}
		eps := s.EndpointsOfVM(*t.VM)
		if len(eps) == 0 {
			add(missingVM(s, *t.VM))
			continue
		}
		for i := range eps {
			ep := &eps[i]
			if ep.Spec.State != nbv1.StateActive {
				st := ep.Spec.State
				if st == "" {
					st = nbv1.StateStaged
				}
				add(VerifyRow{
					VM: t.VM.String(), Endpoint: ep.Name, Segment: endpointSegment(ep).String(), IPs: ep.Spec.IPs,
					Gateway: s.ActiveGateway(endpointSegment(ep)), Route: notChecked, FDB: notChecked, ARP: notChecked,
					Problems: []string{fmt.Sprintf("endpoint is %s, not Active: run `netbridgectl cutover activate %s`", st, t.VM)},
				})
				continue
			}
			add(verifyEndpoint(s, ep))
		}
	}
	return r
}

func missingVM(s *Snapshot, vm types.NamespacedName) VerifyRow {
	row := VerifyRow{VM: vm.String(), Route: notChecked, FDB: notChecked, ARP: notChecked}
	if v, ok := s.VMI(vm); ok {
		row.Segment = v.Segment
		row.Problems = []string{"no BridgeEndpoint: the controller has not derived one for this VM"}
	} else {
		row.Problems = []string{"no such VM: no VirtualMachineInstance and no BridgeEndpoint"}
	}
	return row
}

func verifyEndpoint(s *Snapshot, ep *nbv1.BridgeEndpoint) VerifyRow {
	ref := endpointSegment(ep)
	row := VerifyRow{
		VM:       ep.Namespace + "/" + ep.Spec.VMI,
		Endpoint: ep.Name,
		Segment:  ref.String(),
		IPs:      ep.Spec.IPs,
		Gateway:  s.ActiveGateway(ref),
		Route:    notChecked, FDB: notChecked, ARP: notChecked,
	}
	problem := func(format string, args ...interface{}) {
		row.Problems = append(row.Problems, fmt.Sprintf(format, args...))
	}
	for _, typ := range []string{nbv1.ConditionConflict, nbv1.ConditionRejected} {
		if c, ok := conditionTrue(ep.Status.Conditions, typ); ok {
			problem("%s", conditionText(typ, c))
		}
	}
	for _, ref := range s.Refusals(ep.Namespace, ep.Name) {
		problem("%s (on %s)", ref, ref.Gateway)
	}
	if row.Gateway == "" {
		problem("segment %s has no active gateway", ref)
		row.OK = false
		return row
	}
	gw := s.Gateway(row.Gateway)
	if gw == nil {
		problem("active gateway %s has no BridgeGateway status", row.Gateway)
		return row
	}
	gep := gatewayEndpoint(gw, ep.Namespace, ep.Name)
	if gep == nil {
		problem("active gateway %s does not list this endpoint (not programmed yet?)", row.Gateway)
		return row
	}

	prefixes, bad := hostPrefixes(ep.Spec.IPs)
	if len(bad) > 0 {
		problem("unparsable IPs %s", strings.Join(bad, ", "))
	}
	adv := advertisedSet(gw)
	var missing []string
	for _, p := range prefixes {
		if !adv[p] {
			missing = append(missing, p)
		}
	}
	switch {
	case !gep.Advertised:
		row.Route = verdictNo
		problem("route not advertised by %s", row.Gateway)
	case len(missing) > 0:
		row.Route = verdictNo
		problem("%s not in %s's advertised prefixes", strings.Join(missing, ", "), row.Gateway)
	case len(prefixes) == 0:
		row.Route = verdictNo
		problem("endpoint has no IPs to advertise")
	default:
		row.Route = verdictOK
	}
	if gep.FDBProgrammed {
		row.FDB = verdictOK
	} else {
		row.FDB = verdictNo
		mac := ep.Spec.MAC
		if mac == "" {
			mac = gep.MAC
		}
		problem("FDB entry for %s → %s not programmed on %s", mac, ep.Spec.VTEP, row.Gateway)
	}
	if gep.Reachable {
		row.ARP = verdictOK
	} else {
		row.ARP = verdictNo
		msg := fmt.Sprintf("VM did not answer ARP across the segment from %s", row.Gateway)
		if gep.LastProbe != nil {
			msg += " (last probe " + gep.LastProbe.UTC().Format("15:04:05") + ")"
		}
		problem("%s", msg)
	}
	if gep.Message != "" && len(row.Problems) > 0 {
		problem("gateway says: %s", gep.Message)
	}
	row.OK = len(row.Problems) == 0
	return row
}
