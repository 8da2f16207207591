package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/labnet"
)

// phaseOutageBound is what Extended ↔ Routed may cost a 10 ms pinger:
// the goal is 0 (the routed path moves between two working paths and the
// L2 path does not move); the bound allows one or two late replies on a
// loaded machine.
const phaseOutageBound = 250 * time.Millisecond

// TestSegmentPhases drives the lab's segment with netbridgectl segment
// advance/rollback, real agents, real FRR: Extended → Routed (outage
// printed), Completed refused while the legacy host and router still
// answer the sweep, named, then Routed → Extended (outage printed).
func TestSegmentPhases(t *testing.T) {
	env := newEnv(t)
	c := ctx(t)
	seg := SegmentLabel
	// The lab starts Routed: put it back to Extended, with the gateway
	// address and the aggregate a Completed phase would need.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var bc nbv1.BridgeConfig
		if err := env.Client.Get(c, client.ObjectKey{Name: ConfigName}, &bc); err != nil {
			return err
		}
		bc.Spec.Segments[0].Phase = nbv1.PhaseExtended
		bc.Spec.Segments[0].GatewayAddress = labnet.LegacyRouterIP + "/24"
		bc.Spec.Advertise.Aggregate = true
		return env.Client.Update(c, &bc)
	}); err != nil {
		t.Fatal(err)
	}
	gw := activeGateway(t, env)
	out, err := env.Ctl(c, "cutover", "activate", vm1.Name, "--timeout", "60s")
	t.Logf("netbridgectl cutover activate %s (phase Extended):\n%s", vm1.Name, out)
	if err != nil {
		t.Fatalf("activate in Extended: %v", err)
	}
	out, err = env.Ctl(c, "segment", "plan", seg)
	t.Logf("netbridgectl segment plan %s:\n%s", seg, out)
	if err != nil {
		t.Fatalf("segment plan Extended → Routed: %v", err)
	}
	ping(t, env, "host1", vm1.IP)
	ping(t, env, "client", vm1.IP)

	transition(t, env, "advance", "Extended->Routed")
	waitRoute(t, env, vm1.IP+"/32", fabricIP(gw), 10*time.Second)

	// Completed is refused while the legacy side answers: host1 and the
	// legacy router, each named with its MAC.
	t0 := time.Now()
	out, err = env.Ctl(c, "segment", "advance", seg, "--timeout", "30s")
	t.Logf("netbridgectl segment advance %s with host1 up (%s, err %v):\n%s", seg, time.Since(t0).Round(time.Millisecond), err, out)
	if err == nil {
		t.Fatalf("Routed → Completed advanced although host1 (%s) answers on the legacy side", labnet.LegacyHostIP)
	}
	named := labnet.LegacyHostIP + " answered by " + labnet.LegacyHostMAC
	// out holds stdout and stderr: the table and the `Error:` line.
	if !strings.Contains(out, named) || !strings.Contains(out, "Error: segment transition failed") {
		t.Errorf("the refusal does not name %q:\n%s", named, out)
	}
	if !strings.Contains(out, labnet.LegacyRouterIP+" answered by") {
		t.Errorf("the refusal does not name the legacy router %s", labnet.LegacyRouterIP)
	}
	t.Logf("scenario=segment_phase check=legacy-side-empty refused_after_ms=%d", time.Since(t0).Milliseconds())
	var bc nbv1.BridgeConfig
	if err := env.Client.Get(c, client.ObjectKey{Name: ConfigName}, &bc); err != nil || bc.Spec.Segments[0].Phase != nbv1.PhaseRouted {
		t.Errorf("phase after the refusal = %q (%v), want Routed", bc.Spec.Segments[0].Phase, err)
	}
	if _, proto, _ := FRRRoute(env.Lab, labnet.Subnet); proto == "bgp" {
		t.Errorf("the aggregate %s is in FRR after a refused Completed", labnet.Subnet)
	}

	transition(t, env, "rollback", "Routed->Extended")
	if err := WaitFor(10*time.Second, 50*time.Millisecond, func() bool {
		_, proto, err := FRRRoute(env.Lab, vm1.IP+"/32")
		return err == nil && proto == ""
	}); err != nil {
		t.Errorf("%s/32 still in FRR after Routed → Extended", vm1.IP)
	}
}

// transition runs one segment command with 10 ms pingers from the DC
// client and the legacy host to vm1 and prints and bounds their outage.
func transition(t *testing.T, env *Env, cmd, name string) {
	t.Helper()
	routed, err := StartPinger(env.Lab, "client", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := StartPinger(env.Lab, "host1", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	t0 := time.Now()
	out, cerr := env.Ctl(c, "segment", cmd, SegmentLabel, "--timeout", "60s")
	took := time.Since(t0)
	// Routes settle in FRR after the gateways report: keep pinging.
	time.Sleep(2 * time.Second)
	r, l := routed.Stop(), legacy.Stop()
	t.Logf("netbridgectl segment %s %s (%s):\n%s", cmd, SegmentLabel, took.Round(time.Millisecond), out)
	if cerr != nil {
		t.Fatalf("segment %s (%s): %v", cmd, name, cerr)
	}
	t.Logf("scenario=segment_phase transition=%s path=routed outage_ms=%d lost=%d command_ms=%d (%s)", name, r.Outage.Milliseconds(), r.Lost, took.Milliseconds(), r)
	t.Logf("scenario=segment_phase transition=%s path=l2 outage_ms=%d lost=%d (%s)", name, l.Outage.Milliseconds(), l.Lost, l)
	for _, res := range []PingResult{r, l} {
		if !res.FirstReply || res.Outage > phaseOutageBound {
			t.Errorf("%s: %s->%s outage %s, want at most %s (goal 0)", name, res.From, res.To, res.Outage, phaseOutageBound)
		}
	}
}
