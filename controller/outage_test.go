package controller_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

// The goal for catching up after the API server's return, and the
// bound asserted (2×, for a loaded 2-core machine).
const (
	catchupGoal  = 5 * time.Second
	catchupBound = 2 * catchupGoal
	outageLength = 60 * time.Second
	// A controller started during an outage waits this long before the
	// API server comes up.
	startOutageLength = 20 * time.Second
)

// TestAPIServerOutage runs the real controller binary, with the shipped
// leader-election flags, against its own API server that the test stops
// (SIGTERM, etcd keeps running) or hangs (SIGSTOP) for 60 s while the
// controller runs, or before the controller starts. The controller process
// must stay the same (no exit, no restart), say what is happening (log
// events, /readyz false, /healthz true), and reflect a change made right
// after the API server's return within catchupBound.
func TestAPIServerOutage(t *testing.T) {
	e := testenv.Start(t, testenv.Options{ExtraCRDPaths: []string{testenv.KubeVirtCRDPath()}})
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := testenv.WaitCRDsEstablished(wctx, e.Client, testenv.KubeVirtVMICRDName, "bridgeendpoints.netbridge.io"); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controller.DefaultNamespace}}); err != nil {
		t.Fatal(err)
	}
	api, err := e.APIServer()
	if err != nil {
		t.Fatal(err)
	}
	bin := buildController(t)

	cases := []struct {
		name    string
		hang    bool
		atStart bool
		// noElection runs without --leader-elect: the manager itself
		// lives through the outage and its informers must resume.
		noElection bool
		vlan       int
	}{
		{name: "stopped", vlan: 301},
		{name: "hung", hang: true, vlan: 302},
		{name: "stoppedAtStart", atStart: true, vlan: 303},
		{name: "hungAtStart", hang: true, atStart: true, vlan: 304},
		{name: "stoppedWithoutElection", noElection: true, vlan: 305},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := &outage{t: t, env: e, api: api, hang: tc.hang}
			name := "o" + fmt.Sprint(tc.vlan)
			ns := name + "-vms"
			subnet := fmt.Sprintf("10.%d.0", tc.vlan-100)
			o.mustCreate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			o.mustCreate(bridgeConfig(name, map[string]string{"netbridge.io/gateway": name},
				nbv1.Segment{Name: "app", VLANID: int32(tc.vlan), VNI: int32(10000 + tc.vlan), Subnets: []string{subnet + ".0/24"}}))
			seg := name + ".app"
			for vm, ip := range map[string]string{"keep": ".10", "del": ".11", "move": ".12"} {
				o.createVMI(ns, vm, seg, subnet+ip)
			}
			before := map[string]string{"keep-default": subnet + ".10", "del-default": subnet + ".11", "move-default": subnet + ".12"}
			after := map[string]string{"keep-default": subnet + ".10", "move-default": subnet + ".13", "new-default": subnet + ".20"}

			var p *controllerProc
			var detect time.Duration
			if tc.atStart {
				o.fault()
				p = startController(t, bin, e.Kubeconfig, "netbridge-controller-"+name, !tc.noElection)
				time.Sleep(startOutageLength)
				o.checkWaiting(p)
			} else {
				p = startController(t, bin, e.Kubeconfig, "netbridge-controller-"+name, !tc.noElection)
				o.eventually(30*time.Second, "initial endpoints", func() error { return o.endpointsExactly(ns, before) })
				if !tc.noElection {
					p.waitEvent(t, 10*time.Second, "leaderElected")
				}
				o.fault()
				// From the moment the server is gone (or hung).
				detect = p.waitReady(t, false, 20*time.Second, o.gone)
				time.Sleep(time.Until(o.gone.Add(outageLength)))
				o.checkWaiting(p)
			}
			back := o.recover()
			o.createVMI(ns, "new", seg, subnet+".20")
			o.deleteVMI(ns, "del")
			o.readdressVMI(ns, "move", subnet+".13")
			o.eventually(catchupBound, "endpoints after the API server's return", func() error { return o.endpointsExactly(ns, after) })
			catchup := time.Since(back)
			p.checkSame(t)
			p.waitReady(t, true, 5*time.Second, time.Now())
			if v, err := p.apiReachable(); err != nil || v != "1" {
				t.Errorf("netbridge_controller_api_reachable = %q (%v) after the outage, want 1", v, err)
			}
			if n := p.count("apiReachable"); n == 0 {
				t.Errorf("no apiReachable log line after the outage")
			}
			// A manager that lived through the outage re-runs everything.
			if tc.noElection && p.count("requeueAll") < 2 {
				t.Errorf("requeueAll logged %d times after the outage, want once per controller (2)", p.count("requeueAll"))
			}
			t.Logf("case=%s outage_ms=%d stop_ms=%d detect_ms=%d catchup_ms=%d pid=%d manager_restarts=%d",
				tc.name, o.length.Milliseconds(), o.gone.Sub(o.began).Milliseconds(), detect.Milliseconds(), catchup.Milliseconds(), p.pid, p.count("managerRestart"))
			if catchup > catchupGoal {
				t.Logf("case=%s: catch-up %s is over the %s goal (bound %s)", tc.name, catchup, catchupGoal, catchupBound)
			}
		})
	}
}

// outage drives one case's fault and the test's writes.
type outage struct {
	t      *testing.T
	env    *testenv.Env
	api    *testenv.APIServer
	hang   bool
	kill   bool          // SIGKILL instead of SIGTERM (a crash)
	began  time.Time     // the fault was injected
	gone   time.Time     // the server stopped answering: exited, or SIGSTOPped
	length time.Duration // from gone to answering again
}

func (o *outage) fault() {
	o.t.Helper()
	o.began = time.Now()
	var err error
	switch {
	case o.hang:
		err = o.api.Hang()
	case o.kill:
		err = o.api.Kill()
	default:
		err = o.api.Stop()
	}
	if err != nil {
		o.t.Fatal(err)
	}
	o.gone = time.Now()
	o.t.Cleanup(func() { _ = o.api.Resume() })
}

// recover ends the fault and returns the moment the server answers again.
func (o *outage) recover() time.Time {
	o.t.Helper()
	if o.hang {
		if err := o.api.Resume(); err != nil {
			o.t.Fatal(err)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := o.api.Start(ctx); err != nil {
			o.t.Fatal(err)
		}
	}
	o.length = time.Since(o.gone)
	return time.Now()
}

// checkWaiting: during the outage the process lives, says so in its log,
// is not ready and is live.
func (o *outage) checkWaiting(p *controllerProc) {
	o.t.Helper()
	p.checkSame(o.t)
	if p.count("apiUnreachable") == 0 {
		o.t.Fatalf("no apiUnreachable log line during the outage; log:\n%s", p.tail())
	}
	if code, err := p.get("/readyz"); err != nil || (code != http.StatusServiceUnavailable && code != http.StatusInternalServerError) {
		o.t.Fatalf("/readyz = %d (%v) during the outage, want not ready", code, err)
	}
	if code, err := p.get("/healthz"); err != nil || code != http.StatusOK {
		o.t.Fatalf("/healthz = %d (%v) during the outage, want 200 (the kubelet must not kill it)", code, err)
	}
	if v, err := p.apiReachable(); err != nil || v != "0" {
		o.t.Fatalf("netbridge_controller_api_reachable = %q (%v) during the outage, want 0", v, err)
	}
}

func (o *outage) eventually(timeout time.Duration, what string, fn func() error) {
	o.t.Helper()
	eventually(o.t, timeout, what, fn)
}

// retry repeats a write of the test's own client for a few seconds: its
// connection may be the one the outage broke.
func (o *outage) retry(what string, fn func(context.Context) error) {
	o.t.Helper()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = fn(ctx)
		cancel()
		if err == nil {
			return
		}
	}
	o.t.Fatalf("%s: %v", what, err)
}

func (o *outage) mustCreate(obj client.Object) {
	o.t.Helper()
	o.retry(fmt.Sprintf("create %T %s", obj, obj.GetName()), func(ctx context.Context) error { return o.env.Client.Create(ctx, obj) })
}

func (o *outage) createVMI(ns, name, segment, ip string) {
	o.t.Helper()
	u, err := kubevirt.ToUnstructured(&kubevirt.VMI{
		Namespace: ns, Name: name,
		Labels:      map[string]string{nbv1.LabelSegment: segment},
		Annotations: map[string]string{nbv1.AnnotationIPs: ip},
	})
	if err != nil {
		o.t.Fatal(err)
	}
	o.mustCreate(u)
	o.retry("vmi status "+name, func(ctx context.Context) error {
		if err := kubevirt.SetStatus(u, kubevirt.Status{NodeName: "n1", Phase: "Running"}); err != nil {
			return err
		}
		return o.env.Client.Status().Update(ctx, u)
	})
}

func (o *outage) deleteVMI(ns, name string) {
	o.t.Helper()
	u := kubevirt.NewObject()
	u.SetNamespace(ns)
	u.SetName(name)
	o.retry("delete vmi "+name, func(ctx context.Context) error { return o.env.Client.Delete(ctx, u) })
}

func (o *outage) readdressVMI(ns, name, ip string) {
	o.t.Helper()
	o.retry("readdress vmi "+name, func(ctx context.Context) error {
		u := kubevirt.NewObject()
		if err := o.env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
			return err
		}
		a := u.GetAnnotations()
		a[nbv1.AnnotationIPs] = ip
		u.SetAnnotations(a)
		return o.env.Client.Update(ctx, u)
	})
}

// endpointsExactly: the namespace holds exactly the endpoints of want
// (name → IPs), all Staged.
func (o *outage) endpointsExactly(ns string, want map[string]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var eps nbv1.BridgeEndpointList
	if err := o.env.Client.List(ctx, &eps, client.InNamespace(ns)); err != nil {
		return err
	}
	got := map[string]string{}
	for _, ep := range eps.Items {
		if ep.Spec.State != nbv1.StateStaged {
			return fmt.Errorf("endpoint %s state %s", ep.Name, ep.Spec.State)
		}
		got[ep.Name] = strings.Join(ep.Spec.IPs, ",")
	}
	if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
		return fmt.Errorf("endpoints %v, want %v", sorted(got), sorted(want))
	}
	return nil
}

func sorted(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// buildController builds cmd/netbridge-controller for the test.
func buildController(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "netbridge-controller")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/netbridge-controller")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build netbridge-controller: %v\n%s", err, out)
	}
	return bin
}

// controllerProc is a netbridge-controller child process and its log.
type controllerProc struct {
	cmd     *exec.Cmd
	pid     int
	health  string
	metrics string
	exited  chan struct{}

	mu     sync.Mutex
	lines  []string
	events map[string]int
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startController runs the binary with the shipped flags (leader election
// lease 15 s, renew deadline 10 s, retry 2 s).
func startController(t *testing.T, bin, kubeconfig, leaseID string, leaderElect bool) *controllerProc {
	t.Helper()
	p := &controllerProc{health: freePort(t), metrics: freePort(t), exited: make(chan struct{}), events: map[string]int{}}
	p.cmd = exec.Command(bin,
		"--kubeconfig", kubeconfig,
		fmt.Sprintf("--leader-elect=%v", leaderElect),
		"--leader-election-id", leaseID,
		"--metrics-bind-address", p.metrics,
		"--health-probe-bind-address", p.health,
	)
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start netbridge-controller: %v", err)
	}
	p.pid = p.cmd.Process.Pid
	go p.read(r)
	go func() {
		_ = p.cmd.Wait()
		_ = w.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", p.tail())
		}
	})
	return p
}

func (p *controllerProc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec struct {
			Event string `json:"event"`
		}
		_ = json.Unmarshal([]byte(line), &rec)
		p.mu.Lock()
		p.lines = append(p.lines, line)
		if rec.Event != "" {
			p.events[rec.Event]++
		}
		p.mu.Unlock()
	}
}

func (p *controllerProc) count(event string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.events[event]
}

func (p *controllerProc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := max(0, len(p.lines)-60)
	return strings.Join(p.lines[n:], "\n")
}

func (p *controllerProc) waitEvent(t *testing.T, timeout time.Duration, event string) {
	t.Helper()
	eventually(t, timeout, "log event "+event, func() error {
		if p.count(event) == 0 {
			return fmt.Errorf("not logged")
		}
		return nil
	})
}

// checkSame fails when the process exited (it must ride out the outage).
func (p *controllerProc) checkSame(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("netbridge-controller (pid %d) exited: %v; log:\n%s", p.pid, p.cmd.ProcessState, p.tail())
	default:
	}
	if n := p.count("start"); n != 1 {
		t.Fatalf("netbridge-controller logged %d start events, want 1", n)
	}
}

func (p *controllerProc) get(path string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.health + path)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// apiReachable reads the netbridge_controller_api_reachable sample.
func (p *controllerProc) apiReachable() (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "netbridge_controller_api_reachable "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no netbridge_controller_api_reachable sample")
}

// waitReady waits until /readyz says ready (or not) and returns the time
// since from.
func (p *controllerProc) waitReady(t *testing.T, ready bool, timeout time.Duration, from time.Time) time.Duration {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("/readyz ready=%v", ready), func() error {
		code, err := p.get("/readyz")
		if err != nil {
			return err
		}
		if (code == http.StatusOK) != ready {
			return fmt.Errorf("/readyz = %d", code)
		}
		return nil
	})
	return time.Since(from)
}
