package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/labnet"
)

// Rule 8 (docs/ha.md): a second bridge made by hand behind the agents'
// backs is detected by the loop probe and cut in ≤ 200 ms, and rule 1 on
// the wire in both directions: a legacy broadcast reaches vm1 at most once
// and a frame of vm1 never comes back to it through the VLAN, once cut.

// stamped is a tcpdump capture in a lab namespace with the arrival time
// of every frame (-tt), parsed by key (a sequence number, or "" for any).
type stamped struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	at   map[string][]time.Time
	done chan struct{}
}

func startStamped(t *testing.T, env *Env, role string, key func(line string) (string, bool), args ...string) *stamped {
	t.Helper()
	s := &stamped{at: map[string][]time.Time{}, done: make(chan struct{})}
	s.cmd = exec.Command("ip", append([]string{"netns", "exec", env.Lab.NS(role), "tcpdump", "-l", "-n", "-tt"}, args...)...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("tcpdump in %s: %v", role, err)
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			sp := strings.IndexByte(line, ' ')
			if sp < 0 {
				continue
			}
			sec, err := strconv.ParseFloat(line[:sp], 64)
			if err != nil {
				continue
			}
			k, ok := key(line)
			if !ok {
				continue
			}
			at := time.Unix(0, int64(sec*1e9))
			s.mu.Lock()
			s.at[k] = append(s.at[k], at)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *stamped) stop() {
	if s.cmd.Process != nil && s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		_ = s.cmd.Wait()
	}
}

func (s *stamped) finish() map[string][]time.Time {
	time.Sleep(200 * time.Millisecond)
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at
}

// icmpSeq keys an echo request line by its sequence number.
func icmpSeq(line string) (string, bool) {
	i := strings.Index(line, ", seq ")
	if i < 0 {
		return "", false
	}
	f := strings.FieldsFunc(line[i+6:], func(r rune) bool { return r == ',' || r == ' ' })
	if len(f) == 0 {
		return "", false
	}
	return f[0], true
}

// splitAt counts the keys seen twice whose first copy arrived before and
// after cut, and the last second copy's arrival.
func splitAt(at map[string][]time.Time, cut time.Time) (during, after int, lastDup time.Time) {
	for _, ts := range at {
		if len(ts) < 2 {
			continue
		}
		if ts[0].Before(cut) {
			during++
		} else {
			after++
		}
		if ts[1].After(lastDup) {
			lastDup = ts[1]
		}
	}
	return during, after, lastDup
}

// logLine is the first line of a gateway log with the event after since.
func logLine(t *testing.T, path, event string, since time.Time) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `"event":"`+event+`"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		if ts, ok := m["ts"].(string); ok && !logTime(t, ts).Before(since.Add(-time.Millisecond)) {
			return m
		}
	}
	return nil
}

func logTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse("2006-01-02T15:04:05.000Z0700", s)
	if err != nil {
		t.Fatalf("log time %q: %v", s, err)
	}
	return at
}

// TestHA_LoopProbe: with vm1 active through gw, the standby's access port
// is enslaved into its segment bridge by hand: two bridges on one VLAN.
// The standby hears the active gateway's probe on that port and, holding
// no Lease, yields: fence first, then the port leaves the bridge.
func TestHA_LoopProbe(t *testing.T) {
	env := newEnv(t)
	gw := activate(t, env, vm1)
	sb := "gw1"
	if gw == sb {
		sb = "gw2"
	}
	// The standby again with its metrics on its fabric address (the host
	// reaches the fabric): the loop counter is read from there.
	metricsAddr := fabricIP(sb) + ":9650"
	if err := env.Signal(sb, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := env.WaitExit(sb, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	args := append(env.AgentArgs(sb, "gateway"), "--metrics-bind-address="+metricsAddr)
	restarted := time.Now()
	if _, err := env.Lab.Start(sb, env.LogPath(sb), env.Bin("netbridge-gateway"), args...); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(20*time.Second, 100*time.Millisecond, func() bool {
		return logLine(t, env.LogPath(sb), "loopProbeStarted", restarted) != nil
	}); err != nil {
		t.Fatalf("the restarted standby %s never started its loop probe listener: %v", sb, err)
	}
	time.Sleep(2 * time.Second) // peers and caches settle
	if now, _ := env.ActiveGateway(ctx(t)); now != gw {
		t.Fatalf("the standby's restart moved the lease to %s", now)
	}

	ping(t, env, "host1", vm1.IP)
	ping(t, env, "client", vm1.IP)
	bcast := "10.20.100.255"
	// Legacy → VXLAN: host1's broadcasts as vm1 sees them.
	legacy := startStamped(t, env, vm1.Name, icmpSeq, "-i", "eth0", "icmp[icmptype] == icmp-echo and dst host "+bcast+" and src host "+labnet.LegacyHostIP)
	// VXLAN → VLAN → VXLAN: vm1's own frames coming back in to it.
	back := startStamped(t, env, vm1.Name, func(string) (string, bool) { return "", true }, "-Q", "in", "-i", "eth0", "ether src "+vm1.MAC)
	time.Sleep(300 * time.Millisecond) // tcpdump attaches
	var bg []*exec.Cmd
	for _, from := range []string{"host1", vm1.Name} {
		c := exec.Command("ip", "netns", "exec", env.Lab.NS(from), "ping", "-b", "-n", "-q", "-i", "0.01", bcast)
		if err := c.Start(); err != nil {
			t.Fatalf("broadcast ping in %s: %v", from, err)
		}
		bg = append(bg, c)
	}
	defer func() {
		for _, c := range bg {
			_ = c.Process.Signal(syscall.SIGINT)
			_ = c.Wait()
		}
	}()
	time.Sleep(time.Second)

	// Control: the same second bridge while the legacy switch keeps the
	// probes from the standby's port. Undetected, it must deliver host1's
	// broadcasts twice and bring vm1's frames back (or the checks below
	// prove nothing: the real cut can beat the 10 ms traffic).
	undo := dropProbesTo(t, env, "l-"+sb)
	ctlFrom := time.Now()
	if _, err := env.Lab.Exec(sb, "ip", "link", "set", labnet.Uplink, "master", Bridge); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := env.Lab.Exec(sb, "ip", "link", "set", labnet.Uplink, "nomaster"); err != nil {
		t.Fatal(err)
	}
	ctlTo := time.Now().Add(20 * time.Millisecond)
	undo()
	if n := countEvent(t, env, sb, "loopDetected"); n != 0 {
		t.Fatalf("%s detected the control bridge (%d): the probe drop did not hold", sb, n)
	}
	time.Sleep(time.Second)
	// 10 ms pings on both paths from here: the loop probe's cut must not
	// cost the active gateway's traffic anything noticeable.
	l2, err := StartPinger(env.Lab, "host1", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	routed, err := StartPinger(env.Lab, "client", vm1.IP)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)

	// The second bridge, behind both agents' backs.
	enslaved := time.Now()
	if _, err := env.Lab.Exec(sb, "ip", "link", "set", labnet.Uplink, "master", Bridge); err != nil {
		t.Fatal(err)
	}
	var cut map[string]any
	if err := WaitFor(5*time.Second, 5*time.Millisecond, func() bool {
		cut = logLine(t, env.LogPath(sb), "loopCut", enslaved)
		return cut != nil
	}); err != nil {
		t.Fatalf("%s never cut the second bridge: %v", sb, err)
	}
	detectedAt := logTime(t, cut["detectedAt"].(string))
	fencedAt := logTime(t, cut["fencedAt"].(string))
	time.Sleep(3 * time.Second) // after the cut: nothing may come twice or back
	for _, c := range bg {
		_ = c.Process.Signal(syscall.SIGINT)
		_ = c.Wait()
	}
	bg = nil
	l2r, routedr := l2.Stop(), routed.Stop()
	legacyAt, backAt := legacy.finish(), back.finish()

	detectMs, cutMs := detectedAt.Sub(enslaved).Milliseconds(), fencedAt.Sub(enslaved).Milliseconds()
	// Frames in flight when the fence was written still arrive: "after"
	// counts from the fence plus 20 ms.
	settle := fencedAt.Add(20 * time.Millisecond)
	real := map[string][]time.Time{}
	for k, ts := range legacyAt {
		if len(ts) > 0 && ts[0].After(enslaved.Add(-20*time.Millisecond)) {
			real[k] = ts
		}
	}
	dupDuring, dupAfter, lastDup := splitAt(real, settle)
	var backDuring, backAfter int
	var lastBack time.Time
	var ctlDups, ctlBack int
	for _, ts := range legacyAt {
		if len(ts) > 1 && ts[0].After(ctlFrom) && ts[0].Before(ctlTo) {
			ctlDups++
		}
	}
	for _, at := range backAt[""] {
		if at.After(ctlFrom) && at.Before(ctlTo) {
			ctlBack++
			continue
		}
		if at.Before(enslaved) {
			t.Errorf("vm1's own frame came back to it outside the second bridges, at %s", at.Format(time.StampMilli))
		}
		if at.Before(settle) {
			backDuring++
		} else {
			backAfter++
		}
		if at.After(lastBack) {
			lastBack = at
		}
	}
	t.Logf("scenario=loop_probe control (probes dropped, 500 ms): seen_twice=%d vm_frames_back=%d", ctlDups, ctlBack)
	t.Logf("scenario=loop_probe standby=%s loop_detect_ms=%d loop_cut_ms=%d released=%v", sb, detectMs, cutMs, cut["released"])
	t.Logf("scenario=loop_probe rule1 broadcasts_seen=%d seen_twice_during=%d seen_twice_after=%d last_twice_ms=%d",
		len(legacyAt), dupDuring, dupAfter, msSince(enslaved, lastDup))
	t.Logf("scenario=loop_probe rule1_reverse vm_frames_back_during=%d vm_frames_back_after=%d last_back_ms=%d",
		backDuring, backAfter, msSince(enslaved, lastBack))
	for _, x := range []struct {
		name string
		r    PingResult
	}{{"l2", l2r}, {"routed", routedr}} {
		t.Logf("scenario=loop_probe path=%s outage_ms=%d lost=%d sent=%d", x.name, x.r.Outage.Milliseconds(), x.r.Lost, x.r.Sent)
		if !x.r.FirstReply || x.r.Outage > 400*time.Millisecond {
			t.Errorf("path %s: outage %s, want ≤ 400ms (the active gateway keeps bridging)", x.name, x.r.Outage)
		}
	}
	// Goal 200 ms, asserted at twice that.
	if cutMs > 400 {
		t.Errorf("loop cut %d ms after the second bridge, want ≤ 400 (goal 200)", cutMs)
	}
	if !lastDup.IsZero() && lastDup.Sub(enslaved) > 400*time.Millisecond {
		t.Errorf("a broadcast reached vm1 twice %s after the second bridge, want ≤ 400ms", lastDup.Sub(enslaved))
	}
	if len(legacyAt) < 100 {
		t.Errorf("vm1 saw only %d of host1's broadcasts: rule 1 is not proven", len(legacyAt))
	}
	if ctlDups == 0 {
		t.Errorf("control: no broadcast reached vm1 twice through an undetected second bridge: the wire check proves nothing")
	}
	if dupAfter > 0 {
		t.Errorf("%d broadcasts reached vm1 twice after the cut", dupAfter)
	}
	if ctlBack == 0 {
		t.Errorf("control: vm1's frames never came back through an undetected second bridge: the reverse check proves nothing")
	}
	if backAfter > 0 {
		t.Errorf("%d of vm1's frames came back to it through the VLAN after the cut", backAfter)
	}
	if out, _ := env.Lab.Exec(sb, "ip", "-o", "link", "show", labnet.Uplink); strings.Contains(out, "master "+Bridge) {
		t.Errorf("%s's %s is still a port of %s: %s", sb, labnet.Uplink, Bridge, out)
	}
	if now, _ := env.ActiveGateway(ctx(t)); now != gw {
		t.Errorf("the lease moved to %s: the holder must keep bridging", now)
	}

	// LoopDetected on the standby's BridgeGateway (condition, event) and
	// in its metric.
	var bg8 nbv1.BridgeGateway
	if err := WaitFor(10*time.Second, 100*time.Millisecond, func() bool {
		if env.Client.Get(ctx(t), client.ObjectKey{Name: sb}, &bg8) != nil {
			return false
		}
		c := meta.FindStatusCondition(bg8.Status.Conditions, nbv1.ConditionLoopDetected)
		return c != nil && c.Status == "True" && c.Reason == nbv1.ReasonLoopYielded
	}); err != nil {
		t.Errorf("BridgeGateway %s has no LoopDetected=True/%s condition: %+v", sb, nbv1.ReasonLoopYielded, bg8.Status.Conditions)
	} else {
		t.Logf("BridgeGateway %s: LoopDetected: %s", sb, meta.FindStatusCondition(bg8.Status.Conditions, nbv1.ConditionLoopDetected).Message)
	}
	var evMsg string
	if err := WaitFor(10*time.Second, 100*time.Millisecond, func() bool {
		var evs corev1.EventList
		if env.Client.List(ctx(t), &evs) != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "BridgeGateway" && e.InvolvedObject.Name == sb && e.Reason == nbv1.EventLoopDetected && e.Type == corev1.EventTypeWarning {
				evMsg = e.Message
				return true
			}
		}
		return false
	}); err != nil {
		t.Errorf("no Warning event %s on BridgeGateway %s", nbv1.EventLoopDetected, sb)
	} else {
		t.Logf("event %s on BridgeGateway %s: %s", nbv1.EventLoopDetected, sb, evMsg)
	}
	metric := `netbridge_gateway_loops_detected_total{segment="` + SegmentLabel + `"} 1`
	if body := httpGet(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(body, metric) {
		t.Errorf("%s's metrics lack %q", sb, metric)
	}
	if c := logLine(t, env.LogPath(gw), "loopDetected", enslaved); c != nil {
		t.Logf("the active gateway %s saw it too: %v", gw, c)
	}
}

func msSince(t0, t1 time.Time) int64 {
	if t1.IsZero() {
		return 0
	}
	return t1.Sub(t0).Milliseconds()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dropProbesTo drops, on the legacy switch, the loop probes it would
// forward to port (its frames only: EtherType 0x88B5): a gateway behind
// it cannot hear them. The control phase uses it to show that a second
// bridge the probe cannot see does deliver frames twice.
func dropProbesTo(t *testing.T, env *Env, port string) (undo func()) {
	t.Helper()
	ns, err := netns.GetFromName(env.Lab.NS("legacy"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	table := &nftables.Table{Name: "lab_probe_drop", Family: nftables.TableFamilyBridge}
	conn.AddTable(table)
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, port)
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x88, 0xB5}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := conn.Flush(); err != nil {
		ns.Close()
		t.Fatalf("nftables probe drop in legacy: %v", err)
	}
	done := false
	undo = func() {
		if done {
			return
		}
		done = true
		defer ns.Close()
		conn.DelTable(table)
		if err := conn.Flush(); err != nil {
			t.Errorf("remove the probe drop: %v", err)
		}
	}
	t.Cleanup(undo)
	return undo
}
