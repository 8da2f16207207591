package runbook

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/netbridge-io/netbridge/controller/forklift"
)

// CheckMigrated is the wave preflight check that a Plan VM has a VMI.
const CheckMigrated = "vm-migrated"

// Wave is a Forklift (MTV) Plan's VMs, each with the VMI Forklift created
// for it, if any: the unit `netbridgectl wave` cuts over.
type Wave struct {
	// Plan is the Plan's namespace/name, UID its uid (the VMIs' plan label).
	Plan string   `json:"plan"`
	UID  string   `json:"uid"`
	VMs  []WaveVM `json:"vms"`
}

// WaveVM is one Plan VM.
type WaveVM struct {
	forklift.PlanVM `json:",inline"`
	// VMIs are the VMIs labelled plan=<uid>, vmID=<id> (one, normally).
	VMIs []string `json:"vmis,omitempty"`
	// Migrated: Forklift has created the VM's VMI.
	Migrated bool `json:"migrated"`
}

// LoadWave reads the Plan and the VMIs labelled with its UID (any
// namespace: the Plan's targetNamespace is where they normally are, but the
// label is what Forklift guarantees).
func LoadWave(ctx context.Context, c client.Reader, plan types.NamespacedName) (Wave, error) {
	u := forklift.NewObject(forklift.PlanGVK)
	if err := c.Get(ctx, plan, u); err != nil {
		return Wave{}, fmt.Errorf("get forklift plan %s: %w", plan, err)
	}
	vmis := &unstructured.UnstructuredList{}
	vmis.SetGroupVersionKind(VMIKind.GroupVersion().WithKind(VMIKind.Kind + "List"))
	if err := c.List(ctx, vmis, client.MatchingLabels{forklift.LabelPlan: string(u.GetUID())}); err != nil {
		return Wave{}, fmt.Errorf("list virtualmachineinstances of plan %s: %w", plan, err)
	}
	return waveOf(plan, u, vmis.Items), nil
}

func waveOf(plan types.NamespacedName, u *unstructured.Unstructured, vmis []unstructured.Unstructured) Wave {
	w := Wave{Plan: plan.String(), UID: string(u.GetUID()), VMs: []WaveVM{}}
	vms := forklift.PlanVMs(u)
	matched := forklift.MatchPlanVMs(u.GetUID(), vms, vmis)
	for i, v := range vms {
		wv := WaveVM{PlanVM: v, Migrated: len(matched[i]) > 0}
		for _, k := range matched[i] {
			wv.VMIs = append(wv.VMIs, k.String())
		}
		w.VMs = append(w.VMs, wv)
	}
	return w
}

// VMIs are the wave's migrated VMs, as cutover targets.
func (w Wave) VMIs() []types.NamespacedName {
	var out []types.NamespacedName
	for _, v := range w.VMs {
		for _, s := range v.VMIs {
			ns, name, _ := strings.Cut(s, "/")
			out = append(out, types.NamespacedName{Namespace: ns, Name: name})
		}
	}
	return out
}

// NotMigrated are the Plan VMs without a VMI yet.
func (w Wave) NotMigrated() []WaveVM {
	var out []WaveVM
	for _, v := range w.VMs {
		if !v.Migrated {
			out = append(out, v)
		}
	}
	return out
}

// notMigratedText says why a Plan VM has no VMI, with the labels looked for.
func (w Wave) notMigratedText(v WaveVM) string {
	if v.ID == "" {
		return "not migrated: the Plan lists no id for it and Forklift has not resolved one yet"
	}
	return fmt.Sprintf("not migrated: no VirtualMachineInstance labelled %s=%s, %s=%s yet", forklift.LabelPlan, w.UID, forklift.LabelVMID, v.ID)
}

// WavePlan is what `wave plan` prints: the wave's VMs, then the same plan and
// preflight as `cutover plan` of its migrated VMs.
type WavePlan struct {
	Wave Wave `json:"wave"`
	Plan `json:",inline"`
}

// BuildWavePlan plans the cutover of the wave's migrated VMs. A Plan VM not
// migrated yet is a warning, not a failure: planning is done before and
// while Forklift migrates.
func BuildWavePlan(s *Snapshot, w Wave) WavePlan {
	var targets []Target
	for _, vm := range w.VMIs() {
		vm := vm
		targets = append(targets, Target{VM: &vm})
	}
	p := BuildPlan(s, targets)
	var checks []Check
	for _, v := range w.VMs {
		c := Check{Name: CheckMigrated, Subject: v.String(), Result: Pass, Message: "VMI " + strings.Join(v.VMIs, ", ")}
		if !v.Migrated {
			c.Result, c.Message = Warn, w.notMigratedText(v)
		}
		checks = append(checks, c)
	}
	p.Checks = append(checks, p.Checks...)
	p.Ready = len(p.Failed()) == 0
	return WavePlan{Wave: w, Plan: p}
}

// WaveVerify adds a failed row per Plan VM not migrated yet (unless skipped):
// a wave is not verified while one of its VMs is missing.
func WaveVerify(s *Snapshot, w Wave, skipNotMigrated bool) VerifyReport {
	var targets []Target
	for _, vm := range w.VMIs() {
		vm := vm
		targets = append(targets, Target{VM: &vm})
	}
	r := Verify(s, targets)
	if skipNotMigrated {
		return r
	}
	for _, v := range w.NotMigrated() {
		r.Rows = append(r.Rows, VerifyRow{
			VM: v.String(), Route: notChecked, FDB: notChecked, ARP: notChecked,
			Problems: []string{w.notMigratedText(v)},
		})
		r.OK = false
	}
	return r
}
