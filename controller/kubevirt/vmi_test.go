package kubevirt

import "testing"

func TestRoundTripAndInterfaces(t *testing.T) {
	in := &VMI{Namespace: "ns", Name: "vm", Labels: map[string]string{"a": "b"},
		Status: Status{NodeName: "n1", Interfaces: []InterfaceStatus{{Name: "nic0", MAC: "02:00:00:00:00:01", IPAddresses: []string{"10.0.0.1"}}}}}
	in.Spec.Networks = []NamedItem{{Name: "nic0"}}
	u, err := ToUnstructured(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	if out.PrimaryInterface() != "nic0" || out.Status.NodeName != "n1" || out.Labels["a"] != "b" {
		t.Fatalf("round trip: %+v", out)
	}
	st, ok := out.InterfaceStatus("nic0")
	if !ok || st.MAC != "02:00:00:00:00:01" {
		t.Fatalf("interface status %+v %v", st, ok)
	}
	if (&VMI{}).PrimaryInterface() != DefaultInterface {
		t.Fatal("default interface")
	}
}
