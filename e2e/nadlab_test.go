package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestLabVMsThroughNAD: the lab as `make lab` builds it, its VMs attached
// as Multus would (CNI ADD of the real bridge plugin with the NAD the
// running controller created, the preserved MAC as capability argument).
// The VM's link carries its preserved MAC and the segment MTU, its node
// side is a port of the node agent's segment bridge, and after activation
// the legacy host (L2 through the gateway) and the DC client (the routed
// /32) reach it.
func TestLabVMsThroughNAD(t *testing.T) {
	t0 := time.Now()
	env := newEnvWith(t, Options{AttachVMsThroughNAD: true})
	t.Logf("lab_up_nad_ms=%d", time.Since(t0).Milliseconds())

	link, err := env.Lab.Exec(vm1.Name, "ip", "-o", "link", "show", VMInterface)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(link, "link/ether "+vm1.MAC) || !strings.Contains(link, "mtu 1450") {
		t.Errorf("%s's %s: %q, want the preserved MAC %s and the segment MTU 1450", vm1.Name, VMInterface, link, vm1.MAC)
	}
	ports, err := env.Lab.Exec(vm1.Node, "bridge", "link", "show", "master", Bridge)
	if err != nil {
		t.Fatal(err)
	}
	var cniPort bool
	for _, l := range strings.Split(ports, "\n") {
		if strings.Contains(l, ": veth") {
			cniPort = true
		}
		if strings.Contains(l, "vm-"+vm1.Name) {
			t.Errorf("the lab's own veth is on %s: %q", Bridge, l)
		}
	}
	if !cniPort {
		t.Fatalf("no CNI veth on %s of %s:\n%s", Bridge, vm1.Node, ports)
	}
	status, err := env.Ctl(ctx(t), "status")
	t.Logf("netbridgectl status:\n%s (err %v)", status, err)

	activate(t, env, vm1)
	t.Logf("host1 -> vm1 (L2 through the gateway): %s", ping(t, env, "host1", vm1.IP))
	t.Logf("client -> vm1 (routed /32): %s", ping(t, env, "client", vm1.IP))
	if out, err := env.Ctl(ctx(t), "verify", vm1.Name); err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
}
