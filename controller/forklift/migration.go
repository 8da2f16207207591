package forklift

import (
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// MigrationGVK is Forklift's Migration: one run of a Plan.
var MigrationGVK = GroupVersion.WithKind("Migration")

// Labels Forklift puts on the VMs (and VMIs) a Migration creates, besides
// LabelPlan: the Migration's UID and the source VM's id.
const (
	LabelMigration = "migration"
	LabelVMID      = "vmID"
)

// Migration is the part of a Migration netbridge reads: spec.plan and,
// per VM, status.vms[].
type Migration struct {
	UID types.UID
	// Name is "namespace/name".
	Name string
	// Plan is spec.plan as "namespace/name" (namespace defaults to the
	// Migration's).
	Plan string
	VMs  []MigrationVM
}

// MigrationVM is one entry of status.vms[]: the source VM (id, name,
// namespace), the target name when Forklift had to change it (newName),
// the pipeline phase, when it completed, the error and the Succeeded /
// Failed conditions.
type MigrationVM struct {
	ID, Name, Namespace, NewName string
	Phase                        string
	Completed                    *time.Time
	Error                        string
	Succeeded, Failed            bool
}

// Done: Forklift completed the VM's migration and says it succeeded.
func (v MigrationVM) Done() bool {
	return v.Completed != nil && v.Succeeded && !v.Failed && v.Error == ""
}

// MigrationFrom reads a Migration.
func MigrationFrom(u *unstructured.Unstructured) Migration {
	m := Migration{UID: u.GetUID(), Name: u.GetNamespace() + "/" + u.GetName()}
	name, _, _ := unstructured.NestedString(u.Object, "spec", "plan", "name")
	ns, _, _ := unstructured.NestedString(u.Object, "spec", "plan", "namespace")
	if ns == "" {
		ns = u.GetNamespace()
	}
	if name != "" {
		m.Plan = ns + "/" + name
	}
	vms, _, _ := unstructured.NestedSlice(u.Object, "status", "vms")
	for _, e := range vms {
		o, ok := e.(map[string]any)
		if !ok {
			continue
		}
		str := func(f ...string) string { s, _, _ := unstructured.NestedString(o, f...); return s }
		v := MigrationVM{ID: str("id"), Name: str("name"), Namespace: str("namespace"), NewName: str("newName"), Phase: str("phase")}
		if c := str("completed"); c != "" {
			if t, err := time.Parse(time.RFC3339, c); err == nil {
				v.Completed = &t
			}
		}
		if reasons, _, _ := unstructured.NestedStringSlice(o, "error", "reasons"); len(reasons) > 0 {
			v.Error = reasons[0]
			for _, r := range reasons[1:] {
				v.Error += "; " + r
			}
		}
		conds, _, _ := unstructured.NestedSlice(o, "conditions")
		for _, c := range conds {
			cm, ok := c.(map[string]any)
			if !ok {
				continue
			}
			typ, _, _ := unstructured.NestedString(cm, "type")
			status, _, _ := unstructured.NestedString(cm, "status")
			switch {
			case typ == "Succeeded" && status == "True":
				v.Succeeded = true
			case typ == "Failed" && status == "True":
				v.Failed = true
			}
		}
		m.VMs = append(m.VMs, v)
	}
	return m
}

// VM finds the status of the VM a VMI was created for: by the source VM
// id of its vmID label, else by its name (Forklift's newName, or the
// source name it kept).
func (m Migration) VM(vmID, vmiName string) (MigrationVM, bool) {
	if vmID != "" {
		for _, v := range m.VMs {
			if v.ID == vmID {
				return v, true
			}
		}
	}
	for _, v := range m.VMs {
		if v.NewName == vmiName || (v.NewName == "" && v.Name == vmiName) {
			return v, true
		}
	}
	return MigrationVM{}, false
}
