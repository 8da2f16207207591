package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/labnet"
)

// TestIPv6Failover: a dual-stack lab (labnet.EnableIPv6) with vm1 on
// 10.20.100.50 and 2001:db8:100::50. After `cutover activate` the /128
// is in dc's kernel FIB through the active gateway, and IPv6 works from
// the legacy host (L2) and the DC client (routed). kill -9 of the active
// gateway under 10 ms IPv6 pings: the standby takes over, announces the
// address (unsolicited NA beside the GARP) and both IPv6 paths recover;
// the outage is printed and asserted at the IPv4 scenario's bound (3 s).
func TestIPv6Failover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, err := Up(ctx, Options{BinDir: binDir, Logf: t.Logf, IPv6: true})
	if env != nil {
		t.Cleanup(func() {
			if t.Failed() {
				dumpLogs(t, env)
				out, _ := env.Lab.Vtysh("show bgp ipv6 unicast", "show ipv6 route", "show bgp summary")
				t.Logf("---- FRR IPv6 ----\n%s", out)
			}
			env.Down()
			_ = os.RemoveAll(env.StateDir)
		})
	}
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	vm6 := labnet.VMIP6(vm1)
	gw := activate(t, env, vm1)
	fabric6 := func(gw string) string { return labnet.FabricIP6(labnet.Host{FabricIP: fabricIP(gw)}) }
	route6Via := func(nh string) func() bool {
		return func() bool { ok, via := env.Lab.HasRoute6(vm6 + "/128"); return ok && via == nh }
	}
	t0 := time.Now()
	if err := WaitFor(20*time.Second, 20*time.Millisecond, route6Via(fabric6(gw))); err != nil {
		ok, via := env.Lab.HasRoute6(vm6 + "/128")
		t.Fatalf("%s/128 not in dc's FIB via %s (%v via %q): %v", vm6, fabric6(gw), ok, via, err)
	}
	t.Logf("ipv6_route_after_activate_ms=%d (%s/128 via %s)", time.Since(t0).Milliseconds(), vm6, fabric6(gw))
	t.Logf("before failover: host1 -> vm1 (IPv6) %s", ping(t, env, "host1", vm6))
	t.Logf("before failover: client -> vm1 (IPv6) %s", ping(t, env, "client", vm6))

	l2, err := StartPinger(env.Lab, "host1", vm6)
	if err != nil {
		t.Fatal(err)
	}
	routed, err := StartPinger(env.Lab, "client", vm6)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	now, err := killActiveAndWaitTakeover(t, env, gw)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	r2, r3 := l2.Stop(), routed.Stop()
	t.Logf("IPv6 failover L2 (host1->vm1): %s", r2)
	t.Logf("IPv6 failover routed (client->vm1): %s", r3)
	for _, r := range []PingResult{r2, r3} {
		if !r.FirstReply || r.Outage > 3*time.Second {
			t.Errorf("%s: IPv6 path did not recover within 3 s", r)
		}
	}
	if out, _ := env.Lab.Exec("host1", "ip", "-6", "neigh", "show", vm6); !strings.Contains(strings.ToLower(out), vm1.MAC) {
		t.Errorf("host1's neighbour entry for %s: %q, want %s", vm6, strings.TrimSpace(out), vm1.MAC)
	}
	if out, _ := env.Lab.Exec("legacy", "bridge", "fdb", "show", "br", "l2"); !strings.Contains(out, vm1.MAC+" dev l-"+now) {
		t.Errorf("legacy switch does not have %s behind %s's port:\n%s", vm1.MAC, now, out)
	}
	t.Logf("after failover: host1 -> vm1 (IPv6) %s", ping(t, env, "host1", vm6))
	t.Logf("after failover: client -> vm1 (IPv6) %s", ping(t, env, "client", vm6))
	if log, err := os.ReadFile(env.LogPath(now)); err != nil || !strings.Contains(string(log), `"event":"naSent"`) {
		t.Errorf("%s's log has no naSent event (err %v)", now, err)
	}
}
