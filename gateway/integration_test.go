package gateway_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/labnet"
	"github.com/netbridge-io/netbridge/internal/testenv"
	"github.com/netbridge-io/netbridge/vlan"
	"github.com/vishvananda/netns"
)

// gatewayBin builds the agent binary once, on first use: the unit tests
// of this package do not wait for it.
var gatewayBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "nb-gateway-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "netbridge-gateway")
	build := exec.Command("go", "build", "-o", bin, "../cmd/netbridge-gateway")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if raceBuild {
		build = exec.Command("go", "build", "-race", "-o", bin, "../cmd/netbridge-gateway")
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build netbridge-gateway: %w\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := gatewayBin(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

var bridge = vlan.BridgeName(labnet.VNI)

func newLab(t *testing.T) *labnet.Lab {
	t.Helper()
	for _, bin := range []string{"/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s missing: run `make deps` (apt-get install frr)", bin)
		}
	}
	lab := labnet.New(fmt.Sprintf("gt%04x", rand.IntN(0xffff)), t.TempDir())
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, lab)
		}
		lab.Down()
	})
	if err := lab.Up(); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return lab
}

func dumpLogs(t *testing.T, lab *labnet.Lab) {
	logs, _ := filepath.Glob(filepath.Join(lab.StateDir, "*.log"))
	for _, l := range logs {
		raw, _ := os.ReadFile(l)
		if len(raw) > 6000 {
			raw = raw[len(raw)-6000:]
		}
		t.Logf("==== %s (tail)\n%s", filepath.Base(l), raw)
	}
	out, _ := lab.Vtysh("show bgp ipv4 unicast", "show bgp summary")
	t.Logf("==== dc bgp\n%s", out)
}

// agent is one netbridge-gateway process in a lab namespace.
type agent struct {
	lab  *labnet.Lab
	role string
	args []string
	log  string
	cmd  *exec.Cmd
}

func startAgent(t *testing.T, lab *labnet.Lab, ns string, args ...string) *agent {
	t.Helper()
	a := &agent{lab: lab, role: ns, args: append([]string{"--metrics-bind-address=", "--health-probe-bind-address=",
		"--probe-wait=200ms", "--duplicate-backoff-min=300ms", "--duplicate-backoff-max=1s", "--reachability-interval=1s",
		"--graceful-shutdown-wait=1s", "--log-level=debug"}, args...),
		log: filepath.Join(lab.StateDir, ns+".log")}
	a.start(t)
	t.Cleanup(func() { a.kill() })
	return a
}

func (a *agent) start(t *testing.T) {
	t.Helper()
	bin, err := gatewayBin()
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := a.lab.Start(a.role, a.log, bin, a.args...)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = cmd
}

func (a *agent) kill() {
	if a.cmd != nil && a.cmd.Process != nil {
		_ = a.cmd.Process.Kill()
		_, _ = a.cmd.Process.Wait()
	}
}

func (a *agent) signal(sig syscall.Signal) { _ = a.cmd.Process.Signal(sig) }

func eventually(t *testing.T, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, d, err)
	return 0
}

func routeVia(lab *labnet.Lab, prefix, via string) func() error {
	return func() error {
		ok, nh := lab.HasRoute(prefix)
		if !ok {
			return fmt.Errorf("%s not in dc's kernel table", prefix)
		}
		if via != "" && nh != via {
			return fmt.Errorf("%s via %s, want %s", prefix, nh, via)
		}
		return nil
	}
}

func noRoute(lab *labnet.Lab, prefix string) func() error {
	return func() error {
		if ok, nh := lab.HasRoute(prefix); ok {
			return fmt.Errorf("%s still in dc's table via %s", prefix, nh)
		}
		return nil
	}
}

func ping(lab *labnet.Lab, from, to string) error {
	_, err := lab.Exec(from, "ping", "-c", "2", "-i", "0.2", "-W", "1", to)
	return err
}

// attached reports whether the gateway's access uplink is a port of the
// segment bridge (the VLAN bridged to the VNI).
func attached(lab *labnet.Lab, gw string) bool {
	out, err := lab.Exec(gw, "ip", "-o", "link", "show", labnet.Uplink)
	return err == nil && strings.Contains(out, "master "+bridge)
}

func ifindex(t *testing.T, lab *labnet.Lab, ns, dev string) string {
	t.Helper()
	out, err := lab.Exec(ns, "cat", "/sys/class/net/"+dev+"/ifindex")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// fdbHas reports whether the VXLAN device carries netbridge's static entry
// for mac (to its VTEP); entries the bridge learned dynamically do not count.
func fdbHas(lab *labnet.Lab, ns, mac string) bool {
	out, _ := lab.Exec(ns, "bridge", "fdb", "show", "dev", vlan.VXLANName(labnet.VNI))
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, mac) && (strings.Contains(line, " dst ") || strings.Contains(line, "static") || strings.Contains(line, "permanent")) {
			return true
		}
	}
	return false
}

const vm1 = "10.20.100.50"

// TestStandaloneFile: an edge host with no cluster, configured by a file;
// a reload that removes the endpoint withdraws it.
func TestStandaloneFile(t *testing.T) {
	lab := newLab(t)
	v := labnet.VMs[0]
	cfg := func(withEndpoint bool, activeGW string) string {
		s := fmt.Sprintf(`name: lab
activeGatewayVTEP: %q
spec:
  gatewaySelector: {}
  uplink: {interface: %s}
  segments:
  - {name: app, vlanID: %d, vni: %d, subnets: ["%s"], access: true, mtu: 1450, phase: Routed}
  bgp:
    localASN: %d
    peers:
    - {address: %s, asn: %d, holdTime: 3, keepalive: 1}
  advertise: {hostRoutes: true}
`, activeGW, labnet.Uplink, labnet.VLANID, labnet.VNI, labnet.Subnet, labnet.GatewayASN, labnet.DCFabricIP, labnet.DCASN)
		if withEndpoint {
			s += fmt.Sprintf("endpoints:\n- {name: %s, segment: app, ips: [%q], mac: %q, vtep: %q, state: Active}\n", v.Name, v.IP, v.MAC, labnet.Nodes[0].FabricIP)
		}
		return s
	}
	gwFile := filepath.Join(lab.StateDir, "gw1.yaml")
	nodeFile := filepath.Join(lab.StateDir, "node1.yaml")
	if err := os.WriteFile(gwFile, []byte(cfg(true, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nodeFile, []byte(cfg(true, labnet.Gateways[0].FabricIP)), 0o644); err != nil {
		t.Fatal(err)
	}
	gw := startAgent(t, lab, "gw1", "--role=gateway", "--node-name=gw1", "--config="+gwFile, "--vtep="+labnet.Gateways[0].FabricIP)
	startAgent(t, lab, "node1", "--role=node", "--node-name=node1", "--config="+nodeFile, "--vtep="+labnet.Nodes[0].FabricIP)
	if err := lab.AttachVM(v, bridge, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 30*time.Second, "vm1's /32 at dc via gw1", routeVia(lab, vm1+"/32", labnet.Gateways[0].FabricIP))
	t.Logf("route in dc's FIB %s after start", took.Round(time.Millisecond))
	eventually(t, 10*time.Second, "legacy host pings vm1 (L2)", func() error { return ping(lab, "host1", vm1) })
	eventually(t, 10*time.Second, "dc client pings vm1 (routed)", func() error { return ping(lab, "client", vm1) })

	// Reload without the endpoint (SIGHUP; the file watch may also fire).
	if err := os.WriteFile(gwFile, []byte(cfg(false, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	gw.signal(syscall.SIGHUP)
	took = eventually(t, 10*time.Second, "route withdrawn after reload", noRoute(lab, vm1+"/32"))
	t.Logf("withdrawn %s after reload", took.Round(time.Millisecond))
	eventually(t, 5*time.Second, "FDB entry removed after reload", func() error {
		if fdbHas(lab, "gw1", v.MAC) {
			return fmt.Errorf("FDB entry for %s still on gw1", v.MAC)
		}
		return nil
	})
	// A broken file is refused and changes nothing.
	if err := os.WriteFile(gwFile, []byte("spec: {segments: [{name: x, vlanID: 0}]}"), 0o644); err != nil {
		t.Fatal(err)
	}
	gw.signal(syscall.SIGHUP)
	time.Sleep(time.Second)
	if _, err := lab.Exec("gw1", "ip", "link", "show", bridge); err != nil {
		t.Fatalf("a refused reload tore down the segment: %v", err)
	}
}

// kubeLab is the Kubernetes-mode fixture: API server, two gateways, one node.
type kubeLab struct {
	lab  *labnet.Lab
	env  *testenv.Env
	c    client.Client
	fwd  map[string]*labnet.APIForwarder
	gws  map[string]*agent
	node *agent
}

func newKubeLab(t *testing.T, leaseArgs ...string) *kubeLab {
	t.Helper()
	return newKubeLabWith(t, nil, leaseArgs...)
}

// newKubeLabWith is newKubeLab with a hook that changes the lab and the
// BridgeConfig before any agent starts (nil: none).
func newKubeLabWith(t *testing.T, setup func(*labnet.Lab, *nbv1.BridgeConfig), leaseArgs ...string) *kubeLab {
	t.Helper()
	lab := newLab(t)
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	k := &kubeLab{lab: lab, env: env, c: env.Client, fwd: map[string]*labnet.APIForwarder{}, gws: map[string]*agent{}}
	if err := k.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "netbridge-system"}}); err != nil {
		t.Fatal(err)
	}
	hosts := append(append([]labnet.Host{}, labnet.Gateways...), labnet.Nodes...)
	for _, h := range hosts {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.Name, Labels: map[string]string{}}}
		if strings.HasPrefix(h.Name, "gw") {
			n.Labels[nbv1.LabelGateway] = "true"
		}
		if err := k.c.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: h.FabricIP}}
		if err := k.c.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
		f, err := labnet.ForwardAPI(lab.NS(h.Name), strings.TrimSuffix(strings.TrimPrefix(env.Config.Host, "https://"), "/"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Stop)
		k.fwd[h.Name] = f
	}
	bc := &nbv1.BridgeConfig{ObjectMeta: metav1.ObjectMeta{Name: "lab"}, Spec: nbv1.BridgeConfigSpec{
		GatewaySelector: metav1.LabelSelector{MatchLabels: map[string]string{nbv1.LabelGateway: "true"}},
		Uplink:          nbv1.UplinkSpec{Interface: labnet.Uplink},
		Segments: []nbv1.Segment{{Name: "app", VLANID: labnet.VLANID, VNI: labnet.VNI, Subnets: []string{labnet.Subnet},
			Access: true, MTU: 1450, Phase: nbv1.PhaseRouted}},
		BGP: &nbv1.BGPSpec{LocalASN: labnet.GatewayASN, StandbyPrepend: 3, Peers: []nbv1.BGPPeer{{Address: labnet.DCFabricIP,
			ASN: labnet.DCASN, HoldTime: ptr(int32(3)), Keepalive: ptr(int32(1)),
			GracefulRestart: &nbv1.GracefulRestart{Enabled: true, RestartTime: 30}}}},
		Advertise: &nbv1.AdvertiseSpec{HostRoutes: true},
	}}
	if setup != nil {
		setup(lab, bc)
	}
	if err := k.c.Create(ctx, bc); err != nil {
		t.Fatal(err)
	}
	for _, g := range labnet.Gateways {
		k.gws[g.Name] = startAgent(t, lab, g.Name, append([]string{"--role=gateway", "--node-name=" + g.Name,
			"--kubeconfig=" + env.Kubeconfig}, leaseArgs...)...)
	}
	k.node = startAgent(t, lab, "node1", "--role=node", "--node-name=node1", "--kubeconfig="+env.Kubeconfig)
	if err := lab.AttachVM(labnet.VMs[0], bridge, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return k
}

func ptr[T any](v T) *T { return &v }

// endpoint writes a BridgeEndpoint as the controller would.
func (k *kubeLab) endpoint(t *testing.T, name, ip, mac string, state nbv1.CutoverState) {
	t.Helper()
	ctx := context.Background()
	be := &nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default",
		Labels: map[string]string{nbv1.LabelBridgeConfig: "lab", nbv1.LabelSegmentName: "app"}}}
	err := k.c.Get(ctx, client.ObjectKeyFromObject(be), be)
	be.Spec = nbv1.BridgeEndpointSpec{BridgeConfig: "lab", Segment: "app", VMI: strings.TrimSuffix(name, "-default"),
		IPs: []string{ip}, MAC: mac, NodeName: "node1", VTEP: labnet.Nodes[0].FabricIP, State: state}
	if err != nil {
		err = k.c.Create(ctx, be)
	} else {
		err = k.c.Update(ctx, be)
	}
	if err != nil {
		t.Fatalf("write endpoint %s: %v", name, err)
	}
}

func (k *kubeLab) holder(t *testing.T) string {
	var l coordinationv1.Lease
	if err := k.c.Get(context.Background(), client.ObjectKey{Namespace: "netbridge-system", Name: nbv1.LeaseName(nbv1.SegmentKey{BridgeConfig: "lab", Segment: "app"})}, &l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func fabricIP(gw string) string {
	for _, g := range labnet.Gateways {
		if g.Name == gw {
			return g.FabricIP
		}
	}
	return ""
}

func other(gw string) string {
	if gw == "gw1" {
		return "gw2"
	}
	return "gw1"
}

// sampleAttachment samples both gateways' VLAN attachment every 20 ms
// until stop is closed and fails the test if both were ever attached.
func sampleAttachment(t *testing.T, lab *labnet.Lab, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := 0
		for {
			select {
			case <-stop:
				t.Logf("attachment sampled %d times, never both attached", n)
				return
			case <-time.After(20 * time.Millisecond):
			}
			a, b := attached(lab, "gw1"), attached(lab, "gw2")
			n++
			if a && b {
				t.Errorf("both gateways attached to the VLAN at sample %d: L2 loop", n)
				return
			}
		}
	}()
	return &wg
}

// sampleRoute samples dc's kernel table every 50 ms and counts absences.
func sampleRoute(lab *labnet.Lab, prefix string, stop <-chan struct{}) *atomic.Int64 {
	var missing atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if ok, _ := lab.HasRoute(prefix); !ok {
				missing.Add(1)
			}
		}
	}()
	return &missing
}

func (k *kubeLab) gatewayStatus(t *testing.T, name string) nbv1.BridgeGatewayStatus {
	var gw nbv1.BridgeGateway
	_ = k.c.Get(context.Background(), client.ObjectKey{Name: name}, &gw)
	return gw.Status
}

// TestKubernetesMode drives two gateways and a node agent from a real API
// server through activation, withdrawal, a duplicate address, a bad
// segment, a restart, an API outage, self-fencing and a planned handover.
func TestKubernetesMode(t *testing.T) {
	k := newKubeLab(t, "--lease-duration=3s", "--renew-deadline=1500ms", "--retry-period=200ms")
	lab := k.lab
	v := labnet.VMs[0]
	k.endpoint(t, "vm1-default", v.IP, v.MAC, nbv1.StateActive)

	var active string
	eventually(t, 30*time.Second, "one gateway holds the lease and attaches", func() error {
		active = k.holder(t)
		if active == "" {
			return fmt.Errorf("no lease holder yet")
		}
		if !attached(lab, active) || attached(lab, other(active)) {
			return fmt.Errorf("holder %s: attached gw1=%v gw2=%v", active, attached(lab, "gw1"), attached(lab, "gw2"))
		}
		return nil
	})
	t.Logf("active gateway: %s", active)
	eventually(t, 30*time.Second, "vm1's /32 at dc via the active gateway", routeVia(lab, vm1+"/32", fabricIP(active)))
	if !fdbHas(lab, active, v.MAC) {
		t.Fatalf("no FDB entry for %s on %s", v.MAC, active)
	}
	eventually(t, 10*time.Second, "legacy host pings vm1", func() error { return ping(lab, "host1", vm1) })
	eventually(t, 10*time.Second, "client pings vm1 through the /32", func() error { return ping(lab, "client", vm1) })

	t.Run("Withdrawn", func(t *testing.T) {
		k.endpoint(t, "vm1-default", v.IP, v.MAC, nbv1.StateWithdrawn)
		took := eventually(t, 10*time.Second, "route withdrawn", noRoute(lab, vm1+"/32"))
		t.Logf("withdrawn %s after the endpoint changed", took.Round(time.Millisecond))
		eventually(t, 5*time.Second, "FDB entry removed", func() error {
			if fdbHas(lab, active, v.MAC) {
				return fmt.Errorf("FDB entry still there")
			}
			return nil
		})
		k.endpoint(t, "vm1-default", v.IP, v.MAC, nbv1.StateActive)
		eventually(t, 10*time.Second, "route back", routeVia(lab, vm1+"/32", fabricIP(active)))
	})

	t.Run("DuplicateAddress", func(t *testing.T) {
		const dup = "10.20.100.70"
		if _, err := lab.Exec("host1", "ip", "addr", "add", dup+"/24", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		k.endpoint(t, "vm3-default", dup, "52:54:00:00:01:70", nbv1.StateActive)
		eventually(t, 15*time.Second, "DuplicateAddress reported with the legacy MAC", func() error {
			for _, r := range k.gatewayStatus(t, active).Refused {
				if r.IP == dup && r.Reason == "DuplicateAddress" && r.MAC == labnet.LegacyHostMAC {
					return nil
				}
			}
			return fmt.Errorf("refused: %+v", k.gatewayStatus(t, active).Refused)
		})
		if ok, _ := lab.HasRoute(dup + "/32"); ok {
			t.Fatalf("%s advertised although the legacy side answers for it", dup)
		}
		if _, err := lab.Exec("host1", "ip", "addr", "del", dup+"/24", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		took := eventually(t, 15*time.Second, "advertised after the legacy address is gone", routeVia(lab, dup+"/32", ""))
		t.Logf("advertised %s after the duplicate left", took.Round(time.Millisecond))
	})

	t.Run("BadSegment", func(t *testing.T) {
		var bc nbv1.BridgeConfig
		if err := k.c.Get(context.Background(), client.ObjectKey{Name: "lab"}, &bc); err != nil {
			t.Fatal(err)
		}
		bc.Spec.Segments = append(bc.Spec.Segments, nbv1.Segment{Name: "broken", VLANID: 300, VNI: 10300,
			Subnets: []string{"10.20.30.0/24"}, Access: true, Uplink: &nbv1.UplinkSpec{Interface: "missing0"}})
		if err := k.c.Update(context.Background(), &bc); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "broken segment reported with its reason", func() error {
			for _, s := range k.gatewayStatus(t, active).Segments {
				if s.Name == "broken" && !s.Programmed && strings.Contains(s.Error, "missing0") {
					return nil
				}
			}
			return fmt.Errorf("segments: %+v", k.gatewayStatus(t, active).Segments)
		})
		if err := routeVia(lab, vm1+"/32", fabricIP(active))(); err != nil {
			t.Fatalf("the good segment was disturbed: %v", err)
		}
		if err := ping(lab, "host1", vm1); err != nil {
			t.Fatalf("the good segment was disturbed: %v", err)
		}
		if err := k.c.Get(context.Background(), client.ObjectKey{Name: "lab"}, &bc); err != nil {
			t.Fatal(err)
		}
		bc.Spec.Segments = bc.Spec.Segments[:1]
		if err := k.c.Update(context.Background(), &bc); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Restart", func(t *testing.T) {
		br, vx := ifindex(t, lab, active, bridge), ifindex(t, lab, active, vlan.VXLANName(labnet.VNI))
		stop := make(chan struct{})
		missing := sampleRoute(lab, vm1+"/32", stop)
		g := k.gws[active]
		g.kill()
		time.Sleep(300 * time.Millisecond)
		g.start(t)
		time.Sleep(6 * time.Second)
		close(stop)
		if n := missing.Load(); n > 0 {
			t.Fatalf("route missing from dc's kernel table in %d samples during the restart", n)
		}
		if b2, v2 := ifindex(t, lab, active, bridge), ifindex(t, lab, active, vlan.VXLANName(labnet.VNI)); b2 != br || v2 != vx {
			t.Fatalf("links recreated on restart: bridge %s→%s, vxlan %s→%s", br, b2, vx, v2)
		}
		if h := k.holder(t); h != active {
			t.Fatalf("lease moved to %s on a restart", h)
		}
	})

	t.Run("FailStatic", func(t *testing.T) {
		br := ifindex(t, lab, active, bridge)
		stop := make(chan struct{})
		missing := sampleRoute(lab, vm1+"/32", stop)
		for _, f := range k.fwd {
			f.Stop()
		}
		time.Sleep(30 * time.Second)
		if n := missing.Load(); n > 0 {
			t.Fatalf("route missing in %d samples while the API server was away", n)
		}
		if ifindex(t, lab, active, bridge) != br || !fdbHas(lab, active, v.MAC) {
			t.Fatalf("kernel objects changed while the API server was away")
		}
		for _, f := range k.fwd {
			if err := f.Start(); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 20*time.Second, "a gateway attached again after the API came back", func() error {
			h := k.holder(t)
			if h == "" || !attached(lab, h) {
				return fmt.Errorf("holder %q not attached", h)
			}
			active = h
			return nil
		})
		time.Sleep(2 * time.Second)
		close(stop)
		if n := missing.Load(); n > 0 {
			t.Fatalf("route missing in %d samples after the API came back", n)
		}
	})

	t.Run("CatchUpAfterHungAPI", func(t *testing.T) {
		// The API server hangs (SIGSTOP: requests hang, nothing refused)
		// for 30 s, long enough for client-go's watch back-off to grow.
		// A change made right after it resumes must reach the routers
		// within 5 s (asserted at twice that), not after the back-off.
		api, err := k.env.APIServer()
		if err != nil {
			t.Fatal(err)
		}
		if err := api.Hang(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second)
		if err := api.Resume(); err != nil {
			t.Fatal(err)
		}
		resumed := time.Now()
		v2 := labnet.VMs[1]
		k.endpoint(t, "vm2-default", v2.IP, v2.MAC, nbv1.StateActive)
		eventually(t, 10*time.Second, "vm2's /32 at dc after the API server resumed", routeVia(lab, v2.IP+"/32", ""))
		took := time.Since(resumed)
		t.Logf("catchup_ms=%d (change made right after the API server resumed, until its /32 is in FRR)", took.Milliseconds())
		k.endpoint(t, "vm2-default", v2.IP, v2.MAC, nbv1.StateWithdrawn)
		eventually(t, 10*time.Second, "vm2 withdrawn", noRoute(lab, v2.IP+"/32"))
		eventually(t, 20*time.Second, "a gateway holds the lease and attaches", func() error {
			h := k.holder(t)
			if h == "" || !attached(lab, h) {
				return fmt.Errorf("holder %q not attached", h)
			}
			active = h
			return nil
		})
	})

	t.Run("SelfFencing", func(t *testing.T) {
		stop := make(chan struct{})
		wg := sampleAttachment(t, lab, stop)
		cut := time.Now()
		k.fwd[active].Stop()
		fenced := eventually(t, 10*time.Second, "cut-off gateway detaches", func() error {
			if attached(lab, active) {
				return fmt.Errorf("still attached")
			}
			return nil
		})
		took := eventually(t, 15*time.Second, "standby attaches after the lease expires", func() error {
			if !attached(lab, other(active)) {
				return fmt.Errorf("standby not attached")
			}
			return nil
		})
		t.Logf("self-fencing: detached %s after the cut, standby attached %s after it (lease 3s, renew deadline 1.5s)",
			fenced.Round(time.Millisecond), (time.Since(cut)).Round(time.Millisecond))
		_ = took
		eventually(t, 15*time.Second, "route follows to the new active gateway", routeVia(lab, vm1+"/32", fabricIP(other(active))))
		close(stop)
		wg.Wait()
		if err := k.fwd[active].Start(); err != nil {
			t.Fatal(err)
		}
		active = other(active)
	})

	t.Run("CrashFencedByKernel", func(t *testing.T) {
		// kill -9: no agent left to self-fence, its bridge stays
		// enslaved; the kernel fence must stop it bridging before the
		// standby attaches.
		fences := map[string]*vlan.Fence{}
		for _, gw := range []string{"gw1", "gw2"} {
			ns, err := netns.GetFromName(lab.NS(gw))
			if err != nil {
				t.Fatal(err)
			}
			f, err := vlan.NewFenceIn(ns, time.Second)
			ns.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fences[gw] = f
		}
		bridging := func(gw string) bool {
			if !attached(lab, gw) {
				return false
			}
			guarded, _ := fences[gw].Guarded()
			if !slices.Contains(guarded, labnet.Uplink) {
				return true
			}
			alive, _ := fences[gw].Alive()
			return slices.Contains(alive, labnet.Uplink)
		}
		if !bridging(active) {
			t.Fatalf("the active gateway %s does not bridge before the crash", active)
		}
		stop := make(chan struct{})
		var both atomic.Int64
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if bridging("gw1") && bridging("gw2") {
					both.Add(1)
				}
			}
		}()
		crash := time.Now()
		crashed, restarted := active, false
		defer func() {
			// Later subtests need both agents, whatever happens here.
			if !restarted {
				k.gws[crashed].start(t)
			}
			active = other(crashed)
		}()
		k.gws[active].kill()
		cut := eventually(t, 5*time.Second, "the crashed gateway's VLAN port stops bridging", func() error {
			if bridging(active) {
				g, gerr := fences[active].Guarded()
				a, aerr := fences[active].Alive()
				return fmt.Errorf("still bridging: guarded %v (%v), alive %v (%v)", g, gerr, a, aerr)
			}
			return nil
		})
		eventually(t, 15*time.Second, "the standby attaches", func() error {
			if !bridging(other(active)) {
				return fmt.Errorf("standby not bridging yet")
			}
			return nil
		})
		took := time.Since(crash)
		close(stop)
		if n := both.Load(); n > 0 {
			t.Fatalf("both gateways bridged the VLAN in %d samples after the crash", n)
		}
		t.Logf("kernel fence: crashed %s stopped bridging %s after kill -9 (still enslaved: %v), standby bridging after %s (renew deadline 1.5s, lease 3s)",
			active, cut.Round(time.Millisecond), attached(lab, active), took.Round(time.Millisecond))
		// FRR keeps the crashed gateway's path as stale (graceful restart)
		// and may still prefer it: the route must stay, not necessarily move.
		if err := routeVia(lab, vm1+"/32", "")(); err != nil {
			t.Fatalf("route lost after the crash: %v", err)
		}
		// The crashed agent comes back as standby, detaches for real and
		// re-advertises prepended: FRR then prefers the new active gateway.
		k.gws[crashed].start(t)
		restarted = true
		eventually(t, 15*time.Second, "the restarted gateway detaches", func() error {
			if attached(lab, crashed) {
				return fmt.Errorf("still enslaved")
			}
			return nil
		})
		eventually(t, 20*time.Second, "route via the new active gateway", routeVia(lab, vm1+"/32", fabricIP(other(crashed))))
	})

	t.Run("Handover", func(t *testing.T) {
		stop := make(chan struct{})
		wg := sampleAttachment(t, lab, stop)
		start := time.Now()
		k.gws[active].signal(syscall.SIGTERM)
		eventually(t, 20*time.Second, "the other gateway takes over", func() error {
			if !attached(lab, other(active)) {
				return fmt.Errorf("not attached yet")
			}
			return nil
		})
		takeover := time.Since(start)
		eventually(t, 15*time.Second, "FRR's next hop moves", routeVia(lab, vm1+"/32", fabricIP(other(active))))
		close(stop)
		wg.Wait()
		t.Logf("planned handover: standby attached %s after SIGTERM (graceful-shutdown-wait 1s, lease released)", takeover.Round(time.Millisecond))
		eventually(t, 10*time.Second, "legacy host still reaches vm1", func() error { return ping(lab, "host1", vm1) })
	})
}
