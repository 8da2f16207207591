package forklift

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestMigrationFields(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": "mtv", "name": "wave1-run1", "uid": "uid-run1"},
		"spec":     map[string]any{"plan": map[string]any{"name": "wave1"}},
		"status": map[string]any{"vms": []any{
			map[string]any{"id": "vm-1", "name": "App01", "newName": "app01", "phase": "Completed", "completed": "2026-12-02T05:00:00Z",
				"conditions": []any{map[string]any{"type": "Succeeded", "status": "True", "category": "Advisory"}}},
			map[string]any{"id": "vm-2", "name": "app02", "phase": "Completed", "completed": "2026-12-02T05:01:00Z",
				"error":      map[string]any{"phase": "CopyDisks", "reasons": []any{"disk copy failed", "timeout"}},
				"conditions": []any{map[string]any{"type": "Failed", "status": "True"}}},
			map[string]any{"id": "vm-3", "name": "app03", "phase": "CopyDisks",
				"conditions": []any{map[string]any{"type": "Succeeded", "status": "False"}}},
			map[string]any{"id": "vm-4", "name": "app04", "phase": "Completed",
				"conditions": []any{map[string]any{"type": "Succeeded", "status": "True"}}},
		}},
	}}
	m := MigrationFrom(u)
	if m.UID != "uid-run1" || m.Name != "mtv/wave1-run1" || m.Plan != "mtv/wave1" || len(m.VMs) != 4 {
		t.Fatalf("migration %+v: the plan's namespace defaults to the Migration's", m)
	}
	cases := []struct {
		vmID, vmi string
		found     bool
		done      bool
		why       string
	}{
		{"vm-1", "whatever", true, true, "found by id, completed and Succeeded"},
		{"", "app01", true, true, "found by newName"},
		{"", "App01", false, false, "a renamed VM is not found by its source name"},
		{"vm-2", "app02", true, false, "Failed with an error"},
		{"vm-3", "app03", true, false, "not completed yet"},
		{"vm-4", "app04", true, false, "Succeeded without a completed timestamp is not done"},
		{"vm-9", "app09", false, false, "not in this migration"},
	}
	for _, c := range cases {
		v, ok := m.VM(c.vmID, c.vmi)
		if ok != c.found || v.Done() != c.done {
			t.Errorf("VM(%q, %q) = %+v, %v; want found=%v done=%v (%s)", c.vmID, c.vmi, v, ok, c.found, c.done, c.why)
		}
	}
	if v, _ := m.VM("vm-2", ""); v.Error != "disk copy failed; timeout" {
		t.Errorf("error %q", v.Error)
	}
}
