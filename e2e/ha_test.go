package e2e

import (
	"bufio"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/labnet"
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
		t.Logf("scenario=%s path=%s outage_ms=%d lost=%d sent=%d", scenario, x.name, x.r.Outage.Milliseconds(), x.r.Lost, x.r.Sent)
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

// apiServerPID finds this lab's kube-apiserver by its secure port.
func apiServerPID(t *testing.T, env *Env) int {
	t.Helper()
	u, err := url.Parse(env.Kube.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasSuffix(args[0], "kube-apiserver") {
			continue
		}
		for _, a := range args {
			if a == "--secure-port="+port {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				return pid
			}
		}
	}
	t.Fatalf("no kube-apiserver process with --secure-port=%s", port)
	return 0
}

// apiHang is how long TestHA_APIHung keeps the API server stopped: the
// issue asks 120 s; 60 s keeps the whole e2e run within its budget and is
// still 60 LeaseDurations of the lab (1 s).
const apiHang = 60 * time.Second

// TestHA_APIHung: the API server is SIGSTOPped (every request of every
// gateway hangs) for apiHang: nothing lost on either path, nothing
// detached, one bridge throughout.
func TestHA_APIHung(t *testing.T) {
	env := newEnv(t)
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
	detached := countEvent(t, env, gw, "segmentDetached")
	pid := apiServerPID(t, env)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	t.Logf("kube-apiserver (pid %d) stopped for %s", pid, apiHang)
	time.Sleep(apiHang)
	_ = syscall.Kill(pid, syscall.SIGCONT)
	resumed = true
	time.Sleep(3 * time.Second) // the holder renews before anyone's expiry clock runs out
	p.finish(t, "api_hung", 0, 0, true)
	if n := countEvent(t, env, gw, "segmentDetached"); n != detached {
		t.Errorf("%s detached its segment during the API outage (%d times)", gw, n-detached)
	}
	for _, g := range labnet.Gateways {
		if g.Name != gw && countEvent(t, env, g.Name, "segmentAttached") > 0 {
			t.Errorf("%s attached during the API outage", g.Name)
		}
	}
}

// TestHA_NodeLossActive: the active gateway's node loses power: its agent
// stops and every link of its namespace goes down at once. L2 ≤ 0.5 s
// (asserted ≤ 1 s); the routed path ≤ 0.5 s too, through BFD (asserted ≤ 1 s).
func TestHA_NodeLossActive(t *testing.T) {
	env := newEnv(t)
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

// TestHA_AgentSIGSTOP: the active agent hangs; its kernel fence stops the
// bridge when its grant runs out, the standby takes over: ≤ 0.5 s
// (asserted ≤ 1 s) on both paths. SIGCONT: the old holder sees the higher
// epoch and stays standby (rule 1 throughout).
func TestHA_AgentSIGSTOP(t *testing.T) {
	env := newEnv(t)
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

// TestHA_AgentKill9: kill -9 of the active agent: ≤ 0.5 s (asserted ≤ 1 s)
// on both paths.
func TestHA_AgentKill9(t *testing.T) {
	env := newEnv(t)
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
	if err := env.Signal(gw, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	p.finish(t, "agent_kill9", time.Second, time.Second, false)
}

// TestHA_AsymmetricAPIPartition: the active gateway's packets to the API
// server are dropped (its requests hang) while the standby keeps the API:
// the standby acquires the expired Lease, claims a higher epoch, the old
// holder yields at once: ≤ 1.5 s (asserted ≤ 3 s), one bridge throughout.
func TestHA_AsymmetricAPIPartition(t *testing.T) {
	env := newEnv(t)
	gw := activate(t, env, vm1)
	p := startPaths(t, env)
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
	if n := countEvent(t, env, gw, "haFencedOff") + countEvent(t, env, gw, "segmentDetached"); n == 0 {
		t.Errorf("%s neither fenced off nor detached although %s holds the lease", gw, now)
	}
}
