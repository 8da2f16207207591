package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/labnet"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netbridge-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	root, _ := filepath.Abs("..")
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/...: %v\n%s", err, stderr.String())
		os.Exit(1)
	}
	fmt.Printf("e2e: binaries built in %s\n", time.Since(t0).Round(time.Second))
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// vm1 and vm2 of the lab.
var vm1, vm2 = labnet.VMs[0], labnet.VMs[1]

func fabricIP(host string) string {
	for _, h := range append(append([]labnet.Host{}, labnet.Gateways...), labnet.Nodes...) {
		if h.Name == host {
			return h.FabricIP
		}
	}
	return ""
}

// newEnv brings up a whole lab for one scenario; it is torn down (and the
// processes' logs printed on failure) when the test ends.
func newEnv(t *testing.T) *Env {
	t.Helper()
	return newEnvWith(t, Options{})
}

// newEnvWith is newEnv with options (BinDir and Logf are set here).
func newEnvWith(t *testing.T, o Options) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o.BinDir, o.Logf = binDir, t.Logf
	env, err := Up(ctx, o)
	if env != nil {
		t.Cleanup(func() {
			if t.Failed() {
				dumpLogs(t, env)
			}
			t0 := time.Now()
			env.Down()
			t.Logf("lab %s: teardown_ms=%d", env.Lab.Prefix, time.Since(t0).Milliseconds())
			if os.Getenv("NETBRIDGE_E2E_KEEP_LOGS") != "" {
				t.Logf("logs kept in %s", env.StateDir)
				return
			}
			_ = os.RemoveAll(env.StateDir)
		})
	}
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return env
}

func dumpLogs(t *testing.T, env *Env) {
	for _, name := range []string{"controller", "gw1", "gw2", "node1", "node2"} {
		raw, err := os.ReadFile(env.LogPath(name))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("---- last lines of %s.log ----\n%s", name, strings.Join(lines, "\n"))
	}
	out, _ := env.Lab.Vtysh("show bgp ipv4 unicast", "show ip route")
	t.Logf("---- FRR ----\n%s", out)
	if env.Kube != nil {
		s, _ := env.Ctl(context.Background(), "status")
		t.Logf("---- netbridgectl status ----\n%s", s)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func activeGateway(t *testing.T, env *Env) string {
	t.Helper()
	var gw string
	if err := WaitFor(30*time.Second, 100*time.Millisecond, func() bool {
		gw, _ = env.ActiveGateway(context.Background())
		return gw != ""
	}); err != nil {
		t.Fatalf("no gateway holds the segment lease: %v", err)
	}
	return gw
}

// waitRoute waits until FRR's selected route for prefix has next hop nh
// ("" = route gone) and returns how long it took.
func waitRoute(t *testing.T, env *Env, prefix, nh string, timeout time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	var got, proto string
	var err error
	if werr := WaitFor(timeout, 10*time.Millisecond, func() bool {
		got, proto, err = FRRRoute(env.Lab, prefix)
		if nh == "" {
			return err == nil && proto == ""
		}
		return err == nil && got == nh && proto == "bgp"
	}); werr != nil {
		out, _ := env.Lab.Vtysh("show ip route " + prefix)
		t.Fatalf("FRR route %s: want next hop %q, have %q (%s, err %v) after %s:\n%s", prefix, nh, got, proto, err, timeout, out)
	}
	return time.Since(t0)
}

func ping(t *testing.T, env *Env, from, to string) string {
	t.Helper()
	out, err := env.Lab.Exec(from, "ping", "-n", "-c", "3", "-W", "1", to)
	if err != nil {
		t.Fatalf("ping %s -> %s: %v", from, to, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// activate runs `netbridgectl cutover activate` and waits for the /32 in
// FRR through the active gateway; it returns the active gateway.
func activate(t *testing.T, env *Env, vm labnet.VM) string {
	t.Helper()
	gw := activeGateway(t, env)
	t0 := time.Now()
	out, err := env.Ctl(ctx(t), "cutover", "activate", vm.Name, "--timeout", "60s")
	t.Logf("netbridgectl cutover activate %s (%s):\n%s", vm.Name, time.Since(t0).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("cutover activate %s: %v", vm.Name, err)
	}
	d := waitRoute(t, env, vm.IP+"/32", fabricIP(gw), 10*time.Second)
	t.Logf("activate_to_frr_ms=%d (route %s/32 via %s = %s)", (time.Since(t0)).Milliseconds(), vm.IP, fabricIP(gw), gw)
	_ = d
	return gw
}

// gatewayFDB returns the VM MAC's FDB line on a gateway's VXLAN device.
func gatewayFDB(env *Env, gw, mac string) string {
	out, _ := env.Lab.Exec(gw, "bridge", "fdb", "show", "dev", VXLAN)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.ToLower(l), mac) && strings.Contains(l, " dst ") {
			return l
		}
	}
	return ""
}

// TestLifecycle runs the scenarios that fault no gateway on one lab, in
// this order: each leaves the lab as the next one expects (an address the
// legacy side took is given back; the VM moved stays on node2, where the
// VMI deletion finds it). Each also passes alone on a fresh lab
// (-run 'TestLifecycle/VMMove').
func TestLifecycle(t *testing.T) {
	env := newEnv(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *Env)
	}{
		{"Cutover", cutover}, {"Duplicate", duplicate}, {"Rollback", rollback}, {"VMMove", vmMove}, {"VMIDeleted", vmiDeleted},
	} {
		t0 := time.Now()
		t.Run(sc.name, func(t *testing.T) { sc.run(t, env) })
		t.Logf("scenario_wall_ms=%d (%s, shared lab)", time.Since(t0).Milliseconds(), sc.name)
	}
}

// giveBackToVM undoes the legacy side taking a VM's address (rollback,
// duplicate): host1 drops it and the legacy router forgets whom it
// resolved it to, so the VM can be activated again on the same lab.
func giveBackToVM(t *testing.T, env *Env, vm labnet.VM) {
	t.Helper()
	if _, err := env.Lab.Exec("host1", "ip", "addr", "del", vm.IP+"/24", "dev", "eth0"); err != nil {
		t.Errorf("give %s back: %v", vm.IP, err)
	}
	for _, r := range []string{"lrouter", "host1"} {
		_, _ = env.Lab.Exec(r, "ip", "neigh", "flush", "to", vm.IP)
	}
}

// Scenario 1: cutover.
func cutover(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	nh, _, _ := FRRRoute(env.Lab, vm1.IP+"/32")
	t.Logf("FRR: %s/32 next hop %s (active gateway %s, fabric %s)", vm1.IP, nh, gw, fabricIP(gw))
	t.Logf("host1 -> vm1 (L2): %s", ping(t, env, "host1", vm1.IP))
	t.Logf("client -> vm1 (routed /32): %s", ping(t, env, "client", vm1.IP))
	out, err := env.Ctl(ctx(t), "verify", vm1.Name)
	t.Logf("netbridgectl verify %s:\n%s", vm1.Name, out)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
}

// Scenario 2: rollback.
func rollback(t *testing.T, env *Env) {
	activate(t, env, vm1)
	ping(t, env, "client", vm1.IP)
	gone := make(chan time.Duration, 1)
	t0 := time.Now()
	go func() {
		for time.Since(t0) < 30*time.Second {
			if _, proto, err := FRRRoute(env.Lab, vm1.IP+"/32"); err == nil && proto == "" {
				gone <- time.Since(t0)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		gone <- -1
	}()
	out, err := env.Ctl(ctx(t), "cutover", "rollback", vm1.Name, "--timeout", "30s")
	t.Logf("netbridgectl cutover rollback %s (%s):\n%s", vm1.Name, time.Since(t0).Round(time.Millisecond), out)
	if err != nil {
		t.Errorf("cutover rollback: %v", err)
	}
	d := <-gone
	t.Logf("rollback_route_gone_ms=%d", d.Milliseconds())
	if d < 0 {
		t.Fatalf("route %s/32 still in FRR 30 s after rollback", vm1.IP)
	}
	if d > time.Second {
		t.Errorf("route withdrawn after %s, want within 1 s", d)
	}
	// The legacy side takes the IP back: the source VM (host1) holds it
	// again and announces it, as a host does when an address comes up.
	if _, err := env.Lab.Exec("host1", "ip", "addr", "add", vm1.IP+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { giveBackToVM(t, env, vm1) })
	garp, err := env.Lab.Exec("host1", "arping", "-U", "-c", "2", "-i", "eth0", "-S", vm1.IP, vm1.IP)
	t.Logf("host1 announces %s (arping -U): err %v\n%s", vm1.IP, err, garp)
	neigh0, _ := env.Lab.Exec("lrouter", "ip", "neigh", "show", vm1.IP)
	t.Logf("lrouter: ip neigh %s (before ping)", strings.TrimSpace(neigh0))
	t.Logf("lrouter -> %s: %s", vm1.IP, ping(t, env, "lrouter", vm1.IP))
	neigh, _ := env.Lab.Exec("lrouter", "ip", "neigh", "show", vm1.IP)
	t.Logf("lrouter: ip neigh %s", strings.TrimSpace(neigh))
	if !strings.Contains(strings.ToLower(neigh), labnet.LegacyHostMAC) {
		t.Fatalf("lrouter resolves %s to %q, want host1's MAC %s", vm1.IP, strings.TrimSpace(neigh), labnet.LegacyHostMAC)
	}
	if gw := activeGateway(t, env); gatewayFDB(env, gw, vm1.MAC) != "" {
		t.Errorf("gateway %s still has the FDB entry of %s after rollback: %s", gw, vm1.MAC, gatewayFDB(env, gw, vm1.MAC))
	}
}

// Scenario 3: duplicate address on the legacy side blocks activation.
func duplicate(t *testing.T, env *Env) {
	activeGateway(t, env)
	// The source VM is still powered on: host1 holds vm2's IP.
	if _, err := env.Lab.Exec("host1", "ip", "addr", "add", vm2.IP+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { giveBackToVM(t, env, vm2) })
	t0 := time.Now()
	out, err := env.Ctl(ctx(t), "cutover", "activate", vm2.Name, "--timeout", "30s")
	t.Logf("netbridgectl cutover activate %s (%s, err %v):\n%s", vm2.Name, time.Since(t0).Round(time.Millisecond), err, out)
	if err == nil {
		t.Errorf("cutover activate %s succeeded although host1 holds %s", vm2.Name, vm2.IP)
	} else {
		t.Logf("activation_refused_after_ms=%d", time.Since(t0).Milliseconds())
	}
	if !strings.Contains(strings.ToLower(out), labnet.LegacyHostMAC) {
		t.Errorf("activate's output does not name the MAC that answered (%s)", labnet.LegacyHostMAC)
	}
	status, serr := env.Ctl(ctx(t), "status")
	t.Logf("netbridgectl status:\n%s", status)
	if serr != nil {
		t.Errorf("status: %v", serr)
	}
	if !strings.Contains(strings.ToLower(status), labnet.LegacyHostMAC) || !strings.Contains(status, "Duplicate") {
		t.Errorf("status does not show the duplicate address with the MAC %s", labnet.LegacyHostMAC)
	}
	if _, proto, _ := FRRRoute(env.Lab, vm2.IP+"/32"); proto != "" {
		t.Errorf("FRR has %s/32 (%s) although activation was refused", vm2.IP, proto)
	}
}

// Scenario 4: kill -9 the active gateway under 10 ms pings.
func failover(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	ping(t, env, "host1", vm1.IP)
	ping(t, env, "client", vm1.IP)
	pl2, err := StartPinger(env.Lab, "host1", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	pl3, err := StartPinger(env.Lab, "client", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := killActiveAndWaitTakeover(t, env, gw); err != nil {
		t.Error(err)
	}
	time.Sleep(4 * time.Second)
	r2, r3 := pl2.Stop(), pl3.Stop()
	t.Logf("failover L2 (host1->vm1): %s", r2)
	t.Logf("failover routed (client->vm1): %s", r3)
	nh, proto, _ := FRRRoute(env.Lab, vm1.IP+"/32")
	frr, _ := env.Lab.Vtysh("show bgp ipv4 unicast " + vm1.IP + "/32")
	t.Logf("FRR after failover: %s/32 via %s (%s)\n%s", vm1.IP, nh, proto, frr)
	for _, r := range []PingResult{r2, r3} {
		if !r.FirstReply || r.Outage > 3*time.Second {
			t.Errorf("%s: path did not recover within the measurement", r)
		}
	}
	// Both paths must work through the new active gateway.
	t.Logf("after failover: host1 -> vm1 %s", ping(t, env, "host1", vm1.IP))
	t.Logf("after failover: client -> vm1 %s", ping(t, env, "client", vm1.IP))
}

// killActiveAndWaitTakeover kills the active gateway gw (SIGKILL) and
// waits for the standby to hold the Lease; it prints lease_takeover_ms and
// returns the new holder.
func killActiveAndWaitTakeover(t *testing.T, env *Env, gw string) (string, error) {
	t.Helper()
	t0 := time.Now()
	if err := env.Signal(gw, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var now string
	if err := WaitFor(15*time.Second, 20*time.Millisecond, func() bool {
		now, _ = env.ActiveGateway(context.Background())
		return now != "" && now != gw
	}); err != nil {
		return "", fmt.Errorf("standby did not take the lease after kill -9 of %s: %w", gw, err)
	}
	t.Logf("lease_takeover_ms=%d (%s -> %s)", time.Since(t0).Milliseconds(), gw, now)
	return now, nil
}

// Scenario 5: planned drain (SIGTERM) under 10 ms pings.
func drain(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	ping(t, env, "host1", vm1.IP)
	ping(t, env, "client", vm1.IP)
	pl2, err := StartPinger(env.Lab, "host1", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	pl3, err := StartPinger(env.Lab, "client", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	standbyGW := "gw2"
	if gw == "gw2" {
		standbyGW = "gw1"
	}
	for _, c := range [][]string{{"ip", "route"}, {"ip", "neigh"}, {"bridge", "fdb", "show", "dev", VXLAN}} {
		out, _ := env.Lab.Exec(standbyGW, c[0], c[1:]...)
		t.Logf("standby %s before drain: %s:\n%s", standbyGW, strings.Join(c, " "), out)
	}
	if out, err := env.Lab.Exec(standbyGW, "ping", "-n", "-c", "2", "-W", "1", vm1.IP); err != nil {
		t.Logf("standby %s cannot forward to %s before the drain: %v", standbyGW, vm1.IP, err)
	} else {
		t.Logf("standby %s forwards to %s before the drain: %s", standbyGW, vm1.IP, strings.TrimSpace(out))
	}
	stopTrace := traceFRR(t, env, vm1.IP+"/32")
	defer stopTrace()
	time.Sleep(time.Second)
	t0 := time.Now()
	sigAt := time.Since(pl3.started)
	t.Logf("SIGTERM %s at %dms after the pingers started", gw, sigAt.Milliseconds())
	if err := env.Signal(gw, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := env.WaitExit(gw, 20*time.Second); err != nil {
		t.Errorf("drain: %v", err)
	} else {
		t.Logf("drain_exit_ms=%d", time.Since(t0).Milliseconds())
	}
	standby := "gw2"
	if gw == "gw2" {
		standby = "gw1"
	}
	if _, proto, _ := FRRRoute(env.Lab, vm1.IP+"/32"); proto != "" {
		waitRoute(t, env, vm1.IP+"/32", fabricIP(standby), 10*time.Second)
	}
	nh, proto, _ := FRRRoute(env.Lab, vm1.IP+"/32")
	t.Logf("FRR after drain: %s/32 via %s (%s)", vm1.IP, nh, proto)
	time.Sleep(3 * time.Second)
	r2, r3 := pl2.Stop(), pl3.Stop()
	stopTrace()
	t.Logf("drain L2 (host1->vm1): %s", r2)
	t.Logf("drain routed (client->vm1): %s", r3)
	// Graceful shutdown makes the BGP part hitless: FRR moves the /32 to
	// the standby while the draining gateway still bridges, so nothing is
	// lost during the graceful-shutdown wait. What remains is the L2
	// handover of the return path (in the Routed phase the VM answers
	// through the legacy router, across the stretched VLAN): detach →
	// lease released → standby attaches. Target 0; asserted: the routed
	// path loses nothing before the detach and recovers within 2.5 s (a
	// few API round trips; slower when the machine is loaded).
	t.Logf("drain_routed_lost=%d drain_l2_lost=%d (target 0 on the routed path; the residue is the L2 handover of the return path)", r3.Lost, r2.Lost)
	if r3.Lost > 0 && r3.OutageStart < sigAt+drainWait {
		t.Errorf("routed path lost packets during the graceful-shutdown wait (gap began %dms after the pinger started, SIGTERM at %dms): BGP graceful shutdown did not move traffic first",
			r3.OutageStart.Milliseconds(), sigAt.Milliseconds())
	}
	if r3.Outage > 2500*time.Millisecond {
		t.Errorf("routed path outage %s during a planned drain, want below 2.5s", r3.Outage)
	}
	if !r2.FirstReply || r2.Outage > 3*time.Second {
		t.Errorf("L2 path did not recover: %s", r2)
	}
}

// Scenario 6: the VM moves to node2 and announces itself there (as
// KubeVirt's target does); the gateway follows the announcement at once,
// the endpoint a little later.
func vmMove(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	if l := gatewayFDB(env, gw, vm1.MAC); !strings.Contains(l, "dst "+fabricIP("node1")) {
		t.Fatalf("gateway %s FDB for %s: %q, want dst %s", gw, vm1.MAC, l, fabricIP("node1"))
	}
	ping(t, env, "host1", vm1.IP)
	ping(t, env, "client", vm1.IP)
	pl2, err := StartPinger(env.Lab, "host1", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	pl3, err := StartPinger(env.Lab, "client", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := env.Lab.MoveVM(vm1.Name, "node2", Bridge); err != nil {
		t.Fatal(err)
	}
	// The VM runs again on node2 (the lab's move itself takes a while:
	// that part is the simulation, not netbridge) and announces itself
	// there, as KubeVirt's target does (QEMU announce-self, the guest's
	// GARP). The goal counts from here.
	announced := time.Now()
	_, _ = env.Lab.Exec(vm1.Name, "arping", "-U", "-c", "1", "-i", "eth0", "-S", vm1.IP, vm1.IP)
	if err := env.SetVMINode(ctx(t), vm1, "node2"); err != nil {
		t.Fatal(err)
	}
	want := "dst " + fabricIP("node2")
	if err := WaitFor(10*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(gatewayFDB(env, gw, vm1.MAC), want) }); err != nil {
		t.Errorf("gateway %s FDB for %s did not follow to node2: %q", gw, vm1.MAC, gatewayFDB(env, gw, vm1.MAC))
	} else {
		t.Logf("fdb_follow_ms=%d after the announcement (%s)", time.Since(announced).Milliseconds(), gatewayFDB(env, gw, vm1.MAC))
	}
	time.Sleep(3 * time.Second)
	r2, r3 := pl2.Stop(), pl3.Stop()
	// Goal 0.2 s (issue 15): the gateway follows the VM's own
	// announcement from node2, not the API; asserted at twice the goal.
	const moveGoal = 200 * time.Millisecond
	for _, x := range []struct {
		path string
		r    PingResult
	}{{"l2", r2}, {"routed", r3}} {
		reached, ok := x.r.ReachedAfter(announced)
		t.Logf("scenario=vm_move path=%s reached_after_announce_ms=%d outage_ms=%d (whole gap, the lab's move included) lost=%d sent=%d goal_ms=%d",
			x.path, reached.Milliseconds(), x.r.Outage.Milliseconds(), x.r.Lost, x.r.Sent, moveGoal.Milliseconds())
		if !ok || reached > 2*moveGoal {
			t.Errorf("vm_move %s: reached %s after the VM announced itself on node2 (%s), want at most %s", x.path, reached, x.r, 2*moveGoal)
		}
	}
	t.Logf("after move: host1 -> vm1 %s", ping(t, env, "host1", vm1.IP))
	t.Logf("after move: client -> vm1 %s", ping(t, env, "client", vm1.IP))
}

// Scenario 7: the VMI is deleted: route and FDB entry go within 1 s.
func vmiDeleted(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	if gatewayFDB(env, gw, vm1.MAC) == "" {
		t.Fatalf("gateway %s has no FDB entry for %s", gw, vm1.MAC)
	}
	t0 := time.Now()
	if err := env.DeleteVMI(ctx(t), vm1.Name); err != nil {
		t.Fatal(err)
	}
	var routeGone, fdbGone time.Duration
	_ = WaitFor(10*time.Second, 10*time.Millisecond, func() bool {
		if routeGone == 0 {
			if _, proto, err := FRRRoute(env.Lab, vm1.IP+"/32"); err == nil && proto == "" {
				routeGone = time.Since(t0)
			}
		}
		if fdbGone == 0 && gatewayFDB(env, gw, vm1.MAC) == "" {
			fdbGone = time.Since(t0)
		}
		return routeGone > 0 && fdbGone > 0
	})
	t.Logf("vmi_deleted_route_gone_ms=%d fdb_gone_ms=%d", routeGone.Milliseconds(), fdbGone.Milliseconds())
	if routeGone == 0 || routeGone > time.Second {
		t.Errorf("route %s/32 withdrawn after %s (0 = not within 10 s), want within 1 s", vm1.IP, routeGone)
	}
	if fdbGone == 0 || fdbGone > time.Second {
		t.Errorf("FDB entry %s removed after %s (0 = not within 10 s), want within 1 s", vm1.MAC, fdbGone)
	}
}

// traceFRR logs every change of FRR's next hop for prefix until stopped.
func traceFRR(t *testing.T, env *Env, prefix string) func() {
	last := "?"
	t0 := time.Now()
	return SampleRoute(env.Lab, prefix, 20*time.Millisecond, func(nh, proto string, err error) {
		if err != nil {
			return
		}
		if cur := nh + "/" + proto; cur != last {
			t.Logf("frr_trace t=%dms %s next hop %q (%s)", time.Since(t0).Milliseconds(), prefix, nh, proto)
			last = cur
		}
	})
}
