package frrtest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestStartQueryStop(t *testing.T) {
	ns := "frrtest-" + randHex(3)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}

	var r *Router
	t.Run("instance", func(t *testing.T) {
		r = Start(t, ns, Config{Text: "frr defaults datacenter\n!\nrouter bgp 65001\n bgp router-id 10.0.0.1\n no bgp ebgp-requires-policy\n no bgp network import-check\n neighbor 192.0.2.1 remote-as 65000\n!\n"})
		n, err := r.Neighbors()
		if err != nil {
			t.Fatal(err)
		}
		if nb, ok := n["192.0.2.1"]; !ok || nb.RemoteAs != 65000 || nb.State == "Established" {
			t.Fatalf("neighbours = %+v", n)
		}
		out, err := r.Vtysh("show running-config")
		if err != nil || !strings.Contains(string(out), "router bgp 65001") {
			t.Fatalf("running config: %v\n%s", err, out)
		}
		// Configuration through vtysh: a network statement shows in the
		// BGP table.
		if _, err := r.Vtysh("configure terminal", "router bgp 65001", "address-family ipv4 unicast", "network 10.77.0.0/24"); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 5*time.Second, func() error {
			ps, err := r.Prefixes("ipv4")
			if err != nil {
				return err
			}
			if len(ps) != 1 || ps[0] != netip.MustParsePrefix("10.77.0.0/24") {
				return fmt.Errorf("BGP table %v", ps)
			}
			return nil
		})
		if ok, err := r.HasKernelRoute(netip.MustParsePrefix("10.77.0.0/24")); err != nil || ok {
			t.Fatalf("a locally originated network is not a kernel route: ok=%v err=%v", ok, err)
		}
		if paths, err := r.Route(netip.MustParsePrefix("10.78.0.0/24")); err != nil || paths != nil {
			t.Fatalf("unknown prefix: %v %v", paths, err)
		}
	})
	// The subtest's cleanup stopped the daemons and removed the dirs.
	for _, d := range []string{r.confDir, r.runDir} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still exists after cleanup", d)
		}
	}
	if _, err := r.Vtysh("show version"); err == nil {
		t.Errorf("vtysh still answers after cleanup")
	}
}
