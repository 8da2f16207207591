package e2e

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/labnet"
	"github.com/netbridge-io/netbridge/runbook"
)

// Issue 19's scenarios (docs/ha.md): faults of the control plane and of
// the active gateway under 10 ms pings on both paths, and rule 1 (never
// two bridges) checked by frames in every one of them.

// bridgeWatch checks rule 1 by frames: host1 sends a broadcast ICMP echo
// every 10 ms on the VLAN; vm1 sees every one at most once. Two gateways
// bridging the VLAN at once deliver a broadcast twice (once through each
// bridge) — a sequence number seen twice on vm1 is a second bridge.
type bridgeWatch struct {
	ping, dump *exec.Cmd
	mu         sync.Mutex
	seen       map[int]int
	dups       []int
	done       chan struct{}
}

func startBridgeWatch(t *testing.T, env *Env) *bridgeWatch {
	t.Helper()
	w := &bridgeWatch{seen: map[int]int{}, done: make(chan struct{})}
	bcast := "10.20.100.255"
	w.dump = exec.Command("ip", "netns", "exec", env.Lab.NS(vm1.Name), "tcpdump", "-l", "-n", "-i", "eth0",
		"icmp[icmptype] == icmp-echo and dst host "+bcast)
	out, err := w.dump.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.dump.Start(); err != nil {
		t.Fatalf("tcpdump in vm1: %v", err)
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			i := strings.Index(line, ", seq ")
			if i < 0 {
				continue
			}
			f := strings.FieldsFunc(line[i+6:], func(r rune) bool { return r == ',' || r == ' ' })
			if len(f) == 0 {
				continue
			}
			seq, err := strconv.Atoi(f[0])
			if err != nil {
				continue
			}
			w.mu.Lock()
			w.seen[seq]++
			if w.seen[seq] == 2 {
				w.dups = append(w.dups, seq)
			}
			w.mu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond) // tcpdump attaches
	w.ping = exec.Command("ip", "netns", "exec", env.Lab.NS("host1"), "ping", "-b", "-n", "-q", "-i", "0.01", bcast)
	if err := w.ping.Start(); err != nil {
		t.Fatalf("broadcast ping in host1: %v", err)
	}
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *bridgeWatch) stop() {
	for _, c := range []*exec.Cmd{w.ping, w.dump} {
		if c != nil && c.Process != nil && c.ProcessState == nil {
			_ = c.Process.Signal(syscall.SIGINT)
			_ = c.Wait()
		}
	}
}

// check stops the watch and fails the test on a broadcast seen twice, or
// when it saw too few to prove anything.
func (w *bridgeWatch) check(t *testing.T, scenario string) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // the last broadcasts arrive
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("scenario=%s rule1 broadcasts_seen=%d seen_twice=%d", scenario, len(w.seen), len(w.dups))
	if len(w.seen) < 100 {
		t.Errorf("scenario=%s: vm1 saw only %d of host1's broadcasts: rule 1 is not proven", scenario, len(w.seen))
	}
	if len(w.dups) > 0 {
		t.Errorf("scenario=%s: two bridges: %d broadcasts reached vm1 twice (first seqs %v)", scenario, len(w.dups), w.dups[:min(5, len(w.dups))])
	}
}

// paths are the two ping paths and the bridge watch of one scenario.
type paths struct {
	l2, routed *Pinger
	watch      *bridgeWatch
}

func startPaths(t *testing.T, env *Env) *paths {
	t.Helper()
	ping(t, env, "host1", vm1.IP)
	ping(t, env, "client", vm1.IP)
	p := &paths{watch: startBridgeWatch(t, env)}
	var err error
	if p.l2, err = StartPinger(env.Lab, "host1", vm1.IP); err != nil {
		t.Fatal(err)
	}
	if p.routed, err = StartPinger(env.Lab, "client", vm1.IP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	return p
}

// finish stops the pings, prints the figures with stable names and checks
// them: maxL2/maxRouted ≤ 0 means printed only.
func (p *paths) finish(t *testing.T, scenario string, maxL2, maxRouted time.Duration, wantNoLoss bool) (l2, routed PingResult) {
	t.Helper()
	l2, routed = p.l2.Stop(), p.routed.Stop()
	for _, x := range []struct {
		name string
		r    PingResult
		max  time.Duration
	}{{"l2", l2, maxL2}, {"routed", routed, maxRouted}} {
		t.Logf("scenario=%s path=%s outage_ms=%d lost=%d sent=%d gap_at_ms=%d", scenario, x.name, x.r.Outage.Milliseconds(), x.r.Lost, x.r.Sent,
			x.r.OutageStart.Milliseconds())
		if !x.r.FirstReply {
			t.Errorf("scenario=%s path=%s: no reply at all", scenario, x.name)
		}
		if wantNoLoss && x.r.Lost > 0 {
			t.Errorf("scenario=%s path=%s: %d packets lost, want 0", scenario, x.name, x.r.Lost)
		}
		if x.max > 0 && x.r.Outage > x.max {
			t.Errorf("scenario=%s path=%s: outage %s, want ≤ %s", scenario, x.name, x.r.Outage, x.max)
		}
	}
	p.watch.check(t, scenario)
	return l2, routed
}

func countEvent(t *testing.T, env *Env, host, event string) int {
	t.Helper()
	b, err := os.ReadFile(env.LogPath(host))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), `"event":"`+event+`"`)
}

// apiOutage is how long each API server outage of TestHA_APIOutage lasts
// (rule 2: 120 s, i.e. 120 LeaseDurations of the lab).
const apiOutage = 120 * time.Second

// apiFault is one outage of TestHA_APIOutage: how the API server goes away
// and comes back, a change made right before it goes and one right after
// it is back, and how to see each applied.
type apiFault struct {
	scenario      string
	down, up      func() error
	before, after func(t *testing.T)
	// beforeDone, afterDone: the change is in force (FRR, gateway FDB).
	beforeDone, afterDone func() bool
}

// TestHA_APIOutage (rule 2): the API server hangs (SIGSTOP: every request
// of every gateway hangs) for apiOutage, comes back, then is stopped
// (killed: its port refuses connections) for apiOutage and is started
// again, on one lab:
// nothing lost on either path, nothing detached, FRR keeps vm1's /32 via
// the active gateway throughout, one bridge throughout. After each return
// every BridgeGateway reports Degraded about the outage, and a change made
// right before it (vm2 activated; vm3 created activated) and one made
// right after it (vm2 moved; vm2 rolled back) are applied within 5 s of
// the return (asserted at 10 s).
func TestHA_APIOutage(t *testing.T) {
	// The product's peer heartbeat (100 ms, DeadAfter 300 ms), not the
	// lab's 50 ms: with the API away for everyone, a peer unheard for
	// DeadAfter leaves the holder no grant at all (it must stop: the peer
	// might reach the API), and at load 11 on this 2-core machine a
	// 390 ms silence between two agents was seen within 240 s.
	env := newEnvWith(t, Options{GatewayFlags: []string{"--peer-heartbeat=100ms"}})
	gw := activate(t, env, vm1)
	api, err := env.Kube.APIServer()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = api.Resume() }()
	route := keepRoute(t, env, vm1.IP+"/32", fabricIP(gw))
	routeVia := func(ip, nh string) func() bool {
		return func() bool {
			got, proto, err := FRRRoute(env.Lab, ip+"/32")
			return err == nil && (nh != "" && proto == "bgp" && got == nh || nh == "" && proto == "")
		}
	}
	vm2Route := func(want bool) func() bool {
		if want {
			return routeVia(vm2.IP, fabricIP(gw))
		}
		return routeVia(vm2.IP, "")
	}
	// vm3 is a VMI created already activated: no lab namespace answers
	// for it, so the duplicate-address probe finds its IP free.
	vm3 := labnet.VM{Name: "vm3", Node: "node1", IP: "10.20.100.70", MAC: "52:54:00:00:01:70"}
	createActive := func(v labnet.VM) func(t *testing.T) {
		return func(t *testing.T) {
			if err := env.CreateVMI(ctx(t), v, map[string]string{nbv1.AnnotationCutover: nbv1.CutoverActive}); err != nil {
				t.Fatal(err)
			}
		}
	}
	vm2On := func(node string) func() bool {
		return func() bool { return strings.Contains(gatewayFDB(env, gw, vm2.MAC), "dst "+fabricIP(node)) }
	}
	moveVM2 := func(node string) func(t *testing.T) {
		return func(t *testing.T) {
			if err := env.Lab.MoveVM(vm2.Name, node, Bridge); err != nil {
				t.Fatal(err)
			}
			if err := env.SetVMINode(ctx(t), vm2, node); err != nil {
				t.Fatal(err)
			}
		}
	}
	cutover := func(value string) func(t *testing.T) {
		return func(t *testing.T) {
			if err := runbook.SetCutover(ctx(t), env.Client, types.NamespacedName{Namespace: VMNamespace, Name: vm2.Name}, value); err != nil {
				t.Fatal(err)
			}
		}
	}
	faults := []apiFault{
		{scenario: "api_hung", down: api.Hang, up: api.Resume,
			before: cutover(nbv1.CutoverActive), beforeDone: vm2Route(true),
			after: moveVM2("node1"), afterDone: vm2On("node1")},
		// The before change must stay observable whatever the after one
		// does (vm2 rolled back loses its FDB entry): a VM of its own.
		{scenario: "api_stopped", down: api.Kill, up: func() error { return api.Start(ctx(t)) },
			before: createActive(vm3), beforeDone: routeVia(vm3.IP, fabricIP(gw)),
			after: cutover(nbv1.CutoverRollback), afterDone: vm2Route(false)},
	}
	reported := map[string]string{}
	for _, f := range faults {
		detached := countEvent(t, env, gw, "segmentDetached")
		attached := map[string]int{}
		for _, g := range labnet.Gateways {
			attached[g.Name] = countEvent(t, env, g.Name, "segmentAttached")
		}
		p := startPaths(t, env)
		f.before(t)
		if err := f.down(); err != nil {
			t.Fatal(err)
		}
		t.Logf("scenario=%s: kube-apiserver down for %s, down_at_ms=%d (from the pingers' start)", f.scenario, apiOutage, time.Since(p.l2.started).Milliseconds())
		time.Sleep(apiOutage)
		if err := f.up(); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		t.Logf("scenario=%s: kube-apiserver back, back_at_ms=%d", f.scenario, back.Sub(p.l2.started).Milliseconds())
		f.after(t)
		waitApplied(t, f.scenario, back, map[string]func() bool{"before_outage": f.beforeDone, "after_outage": f.afterDone})
		wantOutageReported(t, env, f.scenario, back, reported)
		time.Sleep(2 * time.Second) // the holder renews before anyone's expiry clock runs out
		p.finish(t, f.scenario, 0, 0, true)
		route.check(t, f.scenario)
		if n := countEvent(t, env, gw, "segmentDetached"); n != detached {
			t.Errorf("scenario=%s: %s detached its segment during the API outage (%d times)", f.scenario, gw, n-detached)
		}
		for _, g := range labnet.Gateways {
			if n := countEvent(t, env, g.Name, "segmentAttached"); n != attached[g.Name] {
				t.Errorf("scenario=%s: %s attached during the API outage (%d times)", f.scenario, g.Name, n-attached[g.Name])
			}
		}
	}
}

// routeKeeper samples FRR's best route for a prefix every 100 ms and counts
// the samples that are not via the wanted next hop (withdrawn or moved);
// a failed vtysh call (FRR busy on a loaded machine) proves nothing either
// way and is counted apart.
type routeKeeper struct {
	prefix, nexthop        string
	stop                   func()
	mu                     sync.Mutex
	samples, wrong, failed int
	firstWrong             string
}

func keepRoute(t *testing.T, env *Env, prefix, nexthop string) *routeKeeper {
	k := &routeKeeper{prefix: prefix, nexthop: nexthop}
	defer t.Cleanup(func() { k.stop() })
	k.stop = SampleRoute(env.Lab, prefix, 100*time.Millisecond, func(nh, proto string, err error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		if err != nil {
			k.failed++
			return
		}
		k.samples++
		if nh != nexthop || proto != "bgp" {
			if k.wrong == 0 {
				k.firstWrong = fmt.Sprintf("next hop %q (%s)", nh, proto)
			}
			k.wrong++
		}
	})
	return k
}

// check prints and checks the samples since the last check.
func (k *routeKeeper) check(t *testing.T, scenario string) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	t.Logf("scenario=%s frr_route=%s samples=%d not_via_active=%d vtysh_failed=%d", scenario, k.prefix, k.samples, k.wrong, k.failed)
	if k.samples < 10 {
		t.Errorf("scenario=%s: only %d samples of FRR's route %s", scenario, k.samples, k.prefix)
	}
	if k.wrong > 0 {
		t.Errorf("scenario=%s: FRR's route %s was not via %s in %d of %d samples (first: %s)", scenario, k.prefix, k.nexthop, k.wrong, k.samples, k.firstWrong)
	}
	k.samples, k.wrong, k.failed = 0, 0, 0
}

// waitApplied waits until every change is in force, prints for each how
// long after the API server's return it was seen (applied_after_return_ms;
// 0 when it was in force already) and fails beyond twice the 5 s goal.
func waitApplied(t *testing.T, scenario string, back time.Time, changes map[string]func() bool) {
	t.Helper()
	took := map[string]time.Duration{}
	_ = WaitFor(10*time.Second, 10*time.Millisecond, func() bool {
		for name, done := range changes {
			if _, ok := took[name]; !ok && done() {
				took[name] = time.Since(back)
			}
		}
		return len(took) == len(changes)
	})
	for name := range changes {
		d, ok := took[name]
		if !ok {
			t.Errorf("scenario=%s change=%s: not applied 10 s after the API server returned", scenario, name)
			continue
		}
		t.Logf("scenario=%s change=%s applied_after_return_ms=%d", scenario, name, d.Milliseconds())
	}
}

// wantOutageReported waits until every gateway's BridgeGateway says
// Degraded=True about the API outage that just ended (a message other
// than the one it showed about the previous outage, kept in reported).
func wantOutageReported(t *testing.T, env *Env, scenario string, back time.Time, reported map[string]string) {
	t.Helper()
	for _, g := range labnet.Gateways {
		var msg string
		err := WaitFor(10*time.Second, 50*time.Millisecond, func() bool {
			var bg nbv1.BridgeGateway
			if err := env.Client.Get(ctx(t), client.ObjectKey{Name: g.Name}, &bg); err != nil {
				return false
			}
			c := meta.FindStatusCondition(bg.Status.Conditions, nbv1.ConditionDegraded)
			if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "API server was unreachable") {
				return false
			}
			msg = c.Message
			return msg != reported[g.Name]
		})
		if err != nil {
			t.Errorf("scenario=%s: BridgeGateway %s does not report Degraded about the API outage 10 s after its return (last: %q)", scenario, g.Name, msg)
			continue
		}
		reported[g.Name] = msg
		t.Logf("scenario=%s gateway=%s degraded_reported_ms=%d message=%q", scenario, g.Name, time.Since(back).Milliseconds(), msg)
	}
}

// haNodeLossActive: the active gateway's node loses power: its agent
// stops and every link of its namespace goes down at once. L2 ≤ 0.5 s
// (asserted ≤ 1 s); the routed path ≤ 0.5 s too, through BFD (asserted ≤ 1 s).
func haNodeLossActive(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
	if err := env.Signal(gw, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := env.Lab.LinksDown(gw); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	// Both paths: L2 by the standby's takeover, routed by the DC router's
	// BFD (100 ms x 3 in the lab) dropping the dead gateway's routes;
	// goal 0.5 s, asserted at twice that.
	p.finish(t, "node_loss_active", time.Second, time.Second, false)
}

// haAgentSIGSTOP: the active agent hangs; its kernel fence stops the
// bridge when its grant runs out, the standby takes over: ≤ 0.5 s
// (asserted ≤ 1 s) on both paths. SIGCONT: the old holder sees the higher
// epoch and stays standby (rule 1 throughout).
func haAgentSIGSTOP(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
	if err := env.Signal(gw, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := env.Signal(gw, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	p.finish(t, "agent_sigstop", time.Second, time.Second, false)
}

// haAgentKill9: kill -9 of the active agent: ≤ 0.5 s (asserted ≤ 1 s)
// on both paths.
func haAgentKill9(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
	if err := env.Signal(gw, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	p.finish(t, "agent_kill9", time.Second, time.Second, false)
}

// haAsymmetricAPIPartition: the active gateway's packets to the API
// server are dropped (its requests hang) while the standby keeps the API:
// the standby acquires the expired Lease, claims a higher epoch, the old
// holder yields at once: ≤ 1.5 s (asserted ≤ 3 s), one bridge throughout.
func haAsymmetricAPIPartition(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
	// Counted from here: on a shared lab the log has earlier scenarios'.
	offBefore := countEvent(t, env, gw, "haFencedOff") + countEvent(t, env, gw, "segmentDetached")
	api, err := netip.ParseAddrPort(env.proxy.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	undo, err := env.Lab.DropTo(gw, api)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = undo() }()
	var now string
	if err := WaitFor(15*time.Second, 20*time.Millisecond, func() bool {
		now, _ = env.ActiveGateway(ctx(t))
		return now != "" && now != gw
	}); err != nil {
		t.Errorf("the standby did not take the lease from %s cut off the API: %v", gw, err)
	}
	time.Sleep(3 * time.Second)
	p.finish(t, "asymmetric_api_partition", 3*time.Second, 3*time.Second, false)
	// The old holder's passes may hang on the API it cannot reach; its
	// fence refresh cuts the port and claims it free on its own.
	if n := countEvent(t, env, gw, "haFencedOff") + countEvent(t, env, gw, "segmentDetached") - offBefore; n == 0 {
		t.Errorf("%s neither fenced off nor detached although %s holds the lease", gw, now)
	}
}

// productLeaseFlags are netbridge-gateway's default Lease timings.
var productLeaseFlags = []string{"--lease-duration=15s", "--renew-deadline=10s", "--retry-period=2s"}

// standbyOf is the lab's other gateway.
func standbyOf(gw string) string {
	for _, g := range labnet.Gateways {
		if g.Name != gw {
			return g.Name
		}
	}
	return ""
}

// bridging says, from the gateway's own log, whether its segment is
// attached now (the frames of rule 1 are the proof; this names who).
func bridging(t *testing.T, env *Env, gw string) bool {
	t.Helper()
	return countEvent(t, env, gw, "segmentAttached") > countEvent(t, env, gw, "segmentDetached")
}

// wantActive fails unless gw still holds the Lease and bridges.
func wantActive(t *testing.T, env *Env, scenario, gw string) {
	t.Helper()
	holder, err := env.ActiveGateway(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if holder != gw || !bridging(t, env, gw) {
		t.Errorf("scenario=%s: %s should still hold the lease and bridge: holder %q, bridging %v", scenario, gw, holder, bridging(t, env, gw))
	}
}

// TestHA_StandbyLoss (rule 6): the standby crashes (kill -9) and is
// restarted, later its node loses power (agent stopped, every link down
// at once): 0 lost on both paths each time, the active keeps its Lease and
// bridges (its peer grant lapses; its fast Lease renewals carry it), one
// bridge throughout.
func TestHA_StandbyLoss(t *testing.T) {
	// The product's Lease timings, not the lab's fast ones: with renewals
	// every 2 s the holder's Lease-alone grant does not carry it through
	// a standby's loss by itself.
	env := newEnvWith(t, Options{GatewayFlags: productLeaseFlags})
	gw := activate(t, env, vm1)
	sb := standbyOf(gw)
	detached := countEvent(t, env, gw, "segmentDetached")
	defer func() {
		if n := countEvent(t, env, gw, "segmentDetached"); n != detached {
			t.Errorf("the active %s detached %d times while its standby was lost", gw, n-detached)
		}
	}()

	p := startPaths(t, env)
	acks := countEvent(t, env, gw, "peerAcksMe")
	if err := env.Signal(sb, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := env.WaitExit(sb, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := env.StartAgent(sb, "gateway"); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(30*time.Second, 50*time.Millisecond, func() bool { return countEvent(t, env, gw, "peerAcksMe") > acks }); err != nil {
		t.Errorf("the restarted standby %s does not ack %s: %v", sb, gw, err)
	}
	if err := env.WaitBGPEstablished(30 * time.Second); err != nil {
		t.Error(err)
	}
	time.Sleep(time.Second)
	p.finish(t, "standby_kill9", 0, 0, true)
	wantActive(t, env, "standby_kill9", gw)

	p = startPaths(t, env)
	if err := env.Signal(sb, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := env.Lab.LinksDown(sb); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	p.finish(t, "standby_node_loss", 0, 0, true)
	wantActive(t, env, "standby_node_loss", gw)
	if bridging(t, env, sb) {
		t.Errorf("the lost standby %s attached", sb)
	}
}

// haGatewaysCut (rule 7): the two gateways cannot reach each other
// (each drops every packet from the other's underlay address: peer
// channel and VXLAN between them) while both reach the API server and
// everything else. The Lease decides: the standby, which cannot tell the
// cut from node loss, takes it early; the holder learns it at its next
// renewal and yields, its Lease-alone grant over before the standby
// attaches. One bridge at every instant; the outage is asserted at twice
// the 0.5 s goal on both paths. Healed, the old holder sees the higher
// epoch and stays standby.
func haGatewaysCut(t *testing.T, env *Env) {
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
	heal, err := env.Lab.Cut(labnet.Gateways[0], labnet.Gateways[1])
	if err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			_ = heal()
		}
	}()
	time.Sleep(5 * time.Second)
	during, err := env.ActiveGateway(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := heal(); err != nil {
		t.Fatal(err)
	}
	healed = true
	time.Sleep(3 * time.Second)
	p.finish(t, "gateways_cut", time.Second, time.Second, false)
	// Settled (the logs lag the kernel by a pass): the holder of the cut
	// still holds the Lease and bridges, the other does not.
	var after string
	settled := func() bool {
		after, _ = env.ActiveGateway(ctx(t))
		return after == during && bridging(t, env, after) && !bridging(t, env, standbyOf(after))
	}
	if err := WaitFor(3*time.Second, 50*time.Millisecond, settled); err != nil {
		t.Errorf("after the heal: lease holder %q (%q during the cut), bridging gw1=%v gw2=%v; want the holder of the cut alone bridging",
			after, during, bridging(t, env, "gw1"), bridging(t, env, "gw2"))
	}
	t.Logf("scenario=gateways_cut holder_before=%s holder_during=%s holder_after=%s", gw, during, after)
}
