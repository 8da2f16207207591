package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/labnet"
)

// TestHA_GatewayFaults runs the scenarios that fault the active gateway
// with the lab's Lease timings on one lab. Between two of them the lab is
// brought back to the state a fresh one has (restoreLab): the gateway the
// scenario faulted (killed, drained, stopped, cut) is restarted, and
// both gateways are Established with BFD Up at FRR, heard by each other,
// FRR holds vm1's /32 from as many gateways as it did at the start. Node
// loss comes last: its links stay down. Each also passes alone on a fresh
// lab (-run 'TestHA_GatewayFaults/AgentKill9').
func TestHA_GatewayFaults(t *testing.T) {
	env := newEnv(t)
	activate(t, env, vm1)
	paths0 := waitStablePaths(t, env, vm1.IP+"/32")
	scenarios := []struct {
		name string
		run  func(*testing.T, *Env)
	}{
		{"AgentSIGSTOP", haAgentSIGSTOP},
		{"GatewaysCut", haGatewaysCut},
		{"AsymmetricAPIPartition", haAsymmetricAPIPartition},
		{"AgentKill9", haAgentKill9},
		{"Failover", failover},
		{"Drain", drain},
		{"NodeLossActive", haNodeLossActive},
	}
	for i, sc := range scenarios {
		t0 := time.Now()
		gw := activeGateway(t, env)
		t.Run(sc.name, func(t *testing.T) { sc.run(t, env) })
		t.Logf("scenario_wall_ms=%d (%s, shared lab)", time.Since(t0).Milliseconds(), sc.name)
		if i == len(scenarios)-1 {
			break
		}
		r0 := time.Now()
		restoreLab(t, env, gw, paths0)
		t.Logf("restore_ms=%d (after %s)", time.Since(r0).Milliseconds(), sc.name)
	}
}

// restoreLab restarts gw, the gateway the scenario faulted, whether it
// is dead, drained or back (a fresh process, as on a fresh lab; its log
// moved aside, so the new process's events are counted alone), then waits
// for the known state (see TestHA_GatewayFaults).
func restoreLab(t *testing.T, env *Env, gw string, paths int) {
	t.Helper()
	active := standbyOf(gw) // holds the Lease, or takes it now
	acks := countEvent(t, env, active, "peerAcksMe")
	_ = env.Signal(gw, syscall.SIGCONT)
	_ = env.Signal(gw, syscall.SIGKILL)
	if err := env.WaitExit(gw, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	old := env.LogPath(gw)
	if err := os.Rename(old, fmt.Sprintf("%s.%d", old, time.Now().UnixNano())); err != nil {
		t.Fatal(err)
	}
	if err := env.StartAgent(gw, "gateway"); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(30*time.Second, 50*time.Millisecond, func() bool { return countEvent(t, env, active, "peerAcksMe") > acks }); err != nil {
		t.Fatalf("the restarted %s does not ack %s: %v", gw, active, err)
	}
	if err := env.WaitBGPEstablished(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(30*time.Second, 50*time.Millisecond, func() bool { return env.bfdUp() }); err != nil {
		t.Fatalf("BFD not Up with both gateways: %v", err)
	}
	if n := waitStablePaths(t, env, vm1.IP+"/32"); n < paths {
		t.Fatalf("FRR has %s/32 from %d gateways, %d at the start", vm1.IP, n, paths)
	}
}

// waitStablePaths waits until the number of BGP paths FRR has for prefix
// held for a second, and returns it.
func waitStablePaths(t *testing.T, env *Env, prefix string) int {
	t.Helper()
	count := func() int {
		out, err := env.Lab.Vtysh("show bgp ipv4 unicast " + prefix + " json")
		if err != nil {
			return -1
		}
		var r struct {
			Paths []json.RawMessage `json:"paths"`
		}
		if json.Unmarshal(out, &r) != nil {
			return -1
		}
		return len(r.Paths)
	}
	n, since := count(), time.Now()
	if err := WaitFor(20*time.Second, 50*time.Millisecond, func() bool {
		if c := count(); c != n {
			n, since = c, time.Now()
		}
		return n == len(labnet.Gateways) || time.Since(since) >= time.Second
	}); err != nil {
		t.Fatalf("FRR's paths for %s did not settle: %v", prefix, err)
	}
	return n
}
