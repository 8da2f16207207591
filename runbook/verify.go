package runbook

import (
	"fmt"

	"k8s.io/apimachinery/pkg/types"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/verify"
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
	verdictOK  = string(verify.OK)
	verdictNo  = string(verify.No)
	notChecked = string(verify.NotChecked)
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
	bc, seg, _ := s.Segment(ref)
	res := verify.Endpoint(verify.Input{Endpoint: ep, Segment: ref.String(), ActiveGateway: row.Gateway, Gateway: s.Gateway(row.Gateway),
		Config: bc, Spec: seg})
	row.Route, row.FDB, row.ARP = string(res.Route), string(res.FDB), string(res.ARP)
	row.Problems = append(row.Problems, res.Problems...)
	if res.GatewayMessage != "" && len(row.Problems) > 0 {
		problem("gateway says: %s", res.GatewayMessage)
	}
	row.OK = len(row.Problems) == 0
	return row
}
