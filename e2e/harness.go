// Package e2e runs netbridge end to end: the real binaries as processes in
// the lab's network namespaces (internal/labnet), a real kube-apiserver +
// etcd (internal/testenv), FRR as the datacenter router. The scenarios are
// in e2e_test.go; cmd-like lab program in e2e/lab uses the same harness.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/labnet"
	"github.com/netbridge-io/netbridge/internal/testenv"
	"github.com/netbridge-io/netbridge/vlan"
)

// Names and values of the lab's cluster objects.
const (
	SystemNamespace = "netbridge-system"
	VMNamespace     = "default"
	ConfigName      = "lab"
	SegmentName     = "app"
	SegmentLabel    = ConfigName + "." + SegmentName
)

// Bridge is the segment bridge the node agents create.
var Bridge = vlan.BridgeName(labnet.VNI)

// VXLAN is the segment's VXLAN device.
var VXLAN = vlan.VXLANName(labnet.VNI)

// Options configure Up.
type Options struct {
	// Prefix of the lab's namespaces; RandomPrefix() when empty.
	Prefix string
	// BinDir holds netbridge-gateway, netbridge-controller, netbridgectl.
	BinDir string
	// StateDir holds logs, pid files, kubeconfigs (a temp dir when empty).
	StateDir string
	// Logf prints progress.
	Logf func(format string, args ...any)
	// SkipVMs leaves the VMIs out (scenarios that create them themselves).
	SkipVMs bool
	// IPv6 makes the lab dual-stack (labnet.EnableIPv6): the segment gets
	// labnet.Subnet6, the BridgeConfig an IPv6 peer (dc), every VMI its
	// labnet.VMIP6 beside its IPv4 address.
	IPv6 bool
	// GatewayFlags are extra netbridge-gateway flags of the gateway role,
	// after the lab's own (the last one of a flag wins).
	GatewayFlags []string
	// AttachVMsThroughNAD attaches the lab's VMs as Multus would: the
	// controller runs with --network-attachments (the NAD CRD installed),
	// and each VM gets its link from CNI ADD of the real bridge plugin
	// with the NAD's config and its preserved MAC (AttachVMsThroughNAD),
	// instead of the lab's own veth into the segment bridge.
	AttachVMsThroughNAD bool
}

// Env is a running lab: namespaces, FRR, API server, netbridge processes.
type Env struct {
	Lab  *labnet.Lab
	Kube *testenv.Env
	// Client talks to the API server (host side).
	Client client.Client
	// LabKubeconfig is the kubeconfig the lab's processes use (through
	// the fabric proxy); HostKubeconfig is the loopback one.
	LabKubeconfig  string
	HostKubeconfig string
	BinDir         string
	StateDir       string

	logf         func(string, ...any)
	ipv6         bool
	gatewayFlags []string
	nadAttach    bool
	proxy        net.Listener
	mu           sync.Mutex
	procs        map[string]*exec.Cmd
	closed       bool
}

// RandomPrefix is a short per-run lab prefix ("nb" + 4 hex digits).
// drainWait is the gateways' --graceful-shutdown-wait: how long routes
// carry GRACEFUL_SHUTDOWN before a draining gateway withdraws them.
const drainWait = 2 * time.Second

func RandomPrefix() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return "nb" + hex.EncodeToString(b)
}

// Up builds everything. On error it tears down what it built.
func Up(ctx context.Context, o Options) (e *Env, err error) {
	if o.Prefix == "" {
		o.Prefix = RandomPrefix()
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.IPv6 && o.AttachVMsThroughNAD {
		// EnableIPv6 addresses the VMs' links, which CNI makes later.
		return nil, fmt.Errorf("e2e options: IPv6 with AttachVMsThroughNAD is not supported")
	}
	if o.StateDir == "" {
		if o.StateDir, err = os.MkdirTemp("", "netbridge-e2e-"+o.Prefix+"-"); err != nil {
			return nil, err
		}
	}
	e = &Env{Lab: labnet.New(o.Prefix, o.StateDir), BinDir: o.BinDir, StateDir: o.StateDir, logf: o.Logf, ipv6: o.IPv6, procs: map[string]*exec.Cmd{},
		gatewayFlags: o.GatewayFlags, nadAttach: o.AttachVMsThroughNAD}
	e.Lab.VMLinksByCNI = o.AttachVMsThroughNAD
	defer func() {
		if err != nil {
			e.Down()
			e = nil
		}
	}()
	ctrllog.SetLogger(logr.Discard())
	t0 := time.Now()
	// phase prints how long each step of Up took (setup_phase=, setup_ms=).
	tp := t0
	phase := func(name string) {
		o.Logf("lab %s: setup_phase=%s setup_ms=%d", o.Prefix, name, time.Since(tp).Milliseconds())
		tp = time.Now()
	}
	o.Logf("lab %s: building namespaces, links and FRR (state in %s)", o.Prefix, o.StateDir)
	if err := e.Lab.Up(); err != nil {
		return e, fmt.Errorf("lab up: %w", err)
	}
	if err := e.Lab.AddHostLink(); err != nil {
		return e, fmt.Errorf("host link: %w", err)
	}
	if o.IPv6 {
		if err := e.Lab.EnableIPv6(); err != nil {
			return e, fmt.Errorf("lab ipv6: %w", err)
		}
	}
	phase("topology")
	o.Logf("lab %s: topology up in %s; starting kube-apiserver + etcd", o.Prefix, time.Since(t0).Round(time.Millisecond))
	crds, crdNames := []string{testenv.KubeVirtCRDPath()}, []string{testenv.KubeVirtVMICRDName}
	if e.nadAttach {
		crds, crdNames = append(crds, testenv.MultusNADCRDPath()), append(crdNames, testenv.MultusNADCRDName)
	}
	e.Kube, err = testenv.StartEnv(testenv.Options{ExtraCRDPaths: crds})
	if err != nil {
		return e, err
	}
	e.Client = e.Kube.Client
	e.HostKubeconfig = e.Kube.Kubeconfig
	phase("apiserver")
	if err := testenv.WaitCRDsEstablished(ctx, e.Client, append(crdNames,
		"bridgeconfigs.netbridge.io", "bridgeendpoints.netbridge.io", "bridgegateways.netbridge.io")...); err != nil {
		return e, err
	}
	phase("crds")
	if err := e.startProxy(); err != nil {
		return e, err
	}
	o.Logf("lab %s: API server %s, reachable from the lab at %s", o.Prefix, e.Kube.Config.Host, e.proxy.Addr())
	if err := e.createObjects(ctx); err != nil {
		return e, err
	}
	phase("objects")
	if err := e.checkLabReachesAPI(); err != nil {
		return e, err
	}
	phase("lab_reaches_api")
	if err := e.StartController(); err != nil {
		return e, err
	}
	if err := e.writePeerKey(); err != nil {
		return e, fmt.Errorf("peer key: %w", err)
	}
	for _, g := range labnet.Gateways {
		if err := e.StartAgent(g.Name, "gateway"); err != nil {
			return e, err
		}
	}
	for _, n := range labnet.Nodes {
		if err := e.StartAgent(n.Name, "node"); err != nil {
			return e, err
		}
	}
	o.Logf("lab %s: netbridge processes started; waiting for BGP sessions and segment bridges", o.Prefix)
	phase("processes")
	if err := e.WaitBGPEstablished(60 * time.Second); err != nil {
		return e, err
	}
	// FRR 8.4 resets a new BFD-enabled session once or twice right after
	// its first Established (FRR issue 17337): a scenario that starts
	// then runs into the reset. Wait it out.
	if err := e.WaitBGPStable(60*time.Second, 2*time.Second); err != nil {
		return e, err
	}
	phase("bgp")
	if !o.SkipVMs {
		for _, v := range labnet.VMs {
			if err := e.CreateVMI(ctx, v, nil); err != nil {
				return e, err
			}
		}
	}
	if e.nadAttach {
		if err := e.AttachVMsThroughNAD(ctx, 60*time.Second); err != nil {
			return e, err
		}
	} else if err := e.Lab.AttachVMs(Bridge, 60*time.Second); err != nil {
		return e, fmt.Errorf("%w (node agents did not create %s; see %s)", err, Bridge, e.LogPath("node1"))
	}
	phase("vms")
	o.Logf("lab %s: frr_sessions %s", o.Prefix, e.FRRSessionCounts())
	o.Logf("lab %s: up in %s", o.Prefix, time.Since(t0).Round(time.Millisecond))
	return e, nil
}

// Down stops the processes, the proxy, the API server and removes the lab.
func (e *Env) Down() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.mu.Unlock()
	_ = e.Lab.StopAll()
	if e.proxy != nil {
		_ = e.proxy.Close()
	}
	e.Lab.Down()
	if e.Kube != nil {
		// SIGKILL first: a SIGTERMed kube-apiserver here outlives envtest's
		// 30 s stop timeout (measured: teardown 30.1 s of a 45 s lab), and
		// nothing of this throwaway cluster needs a graceful end.
		if a, err := e.Kube.APIServer(); err == nil {
			_ = a.Kill()
		}
		_ = e.Kube.Stop()
	}
}

// startProxy listens on the host's fabric address and forwards TCP to the
// API server on loopback: the lab's namespaces cannot reach the host's
// 127.0.0.1.
func (e *Env) startProxy() error {
	u, err := url.Parse(e.Kube.Config.Host)
	if err != nil {
		return err
	}
	target := u.Host
	ln, err := net.Listen("tcp", net.JoinHostPort(labnet.HostFabricIP, "0"))
	if err != nil {
		return fmt.Errorf("proxy listen: %w", err)
	}
	e.proxy = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); closeWrite(up); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	cfg := rest.CopyConfig(e.Kube.Config)
	cfg.Host = "https://" + ln.Addr().String()
	// The serving certificate names localhost / 127.0.0.1, not the fabric
	// address: verify against the real CA with the certificate's name.
	cfg.TLSClientConfig.ServerName = "localhost"
	e.LabKubeconfig = filepath.Join(e.StateDir, "kubeconfig")
	if err := testenv.WriteKubeconfig(cfg, e.LabKubeconfig); err != nil {
		return err
	}
	return setTLSServerName(e.LabKubeconfig, "localhost")
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// setTLSServerName adds tls-server-name to the kubeconfig's cluster
// (WriteKubeconfig does not carry rest.Config's ServerName).
func setTLSServerName(path, name string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(raw)
	if strings.Contains(s, "tls-server-name") {
		return nil
	}
	s = strings.Replace(s, "    server: ", "    tls-server-name: "+name+"\n    server: ", 1)
	return os.WriteFile(path, []byte(s), 0o600)
}

// checkLabReachesAPI runs netbridgectl status from inside gw1: the path
// every lab process uses to the API server.
func (e *Env) checkLabReachesAPI() error {
	out, err := e.Lab.Exec("gw1", e.Bin("netbridgectl"), "--kubeconfig", e.LabKubeconfig, "status")
	if err != nil {
		return fmt.Errorf("the lab cannot reach the API server through %s: %w", e.proxy.Addr(), err)
	}
	_ = out
	return nil
}

// Bin is the path of a netbridge binary.
func (e *Env) Bin(name string) string { return filepath.Join(e.BinDir, name) }

// LogPath is the log file of a process started by the harness.
func (e *Env) LogPath(name string) string { return filepath.Join(e.StateDir, name+".log") }

func (e *Env) createObjects(ctx context.Context) error {
	c := e.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SystemNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	hosts := append(append([]labnet.Host{}, labnet.Gateways...), labnet.Nodes...)
	for i, h := range hosts {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.Name, Labels: map[string]string{"kubernetes.io/hostname": h.Name}}}
		if i < len(labnet.Gateways) {
			n.Labels[nbv1.LabelGateway] = "true"
		}
		if err := c.Create(ctx, n); err != nil {
			return fmt.Errorf("node %s: %w", h.Name, err)
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: h.FabricIP}, {Type: corev1.NodeHostName, Address: h.Name}}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		if err := c.Status().Update(ctx, n); err != nil {
			return fmt.Errorf("node %s status: %w", h.Name, err)
		}
	}
	bc := LabBridgeConfig()
	if e.ipv6 {
		dualStack(bc)
	}
	return c.Create(ctx, bc)
}

// LabBridgeConfig is the lab's BridgeConfig.
func LabBridgeConfig() *nbv1.BridgeConfig {
	i32 := func(v int32) *int32 { return &v }
	return &nbv1.BridgeConfig{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigName},
		Spec: nbv1.BridgeConfigSpec{
			GatewaySelector: metav1.LabelSelector{MatchLabels: map[string]string{nbv1.LabelGateway: "true"}},
			Uplink:          nbv1.UplinkSpec{Interface: labnet.Uplink},
			Segments: []nbv1.Segment{{
				Name: SegmentName, VLANID: labnet.VLANID, VNI: labnet.VNI, Subnets: []string{labnet.Subnet},
				Access: true, MTU: 1450, Phase: nbv1.PhaseRouted,
			}},
			BGP: &nbv1.BGPSpec{
				LocalASN: labnet.GatewayASN, StandbyPrepend: 3,
				Peers: []nbv1.BGPPeer{{
					Address: labnet.DCFabricIP, ASN: labnet.DCASN, HoldTime: i32(3), Keepalive: i32(1),
					GracefulRestart: &nbv1.GracefulRestart{Enabled: true, RestartTime: 30},
					BFD: &nbv1.BFD{Enabled: true, MinReceiveMs: labnet.BFDIntervalMs, MinTransmitMs: labnet.BFDIntervalMs,
						Multiplier: labnet.BFDMultiplier},
				}},
			},
			Advertise: &nbv1.AdvertiseSpec{HostRoutes: true},
		},
	}
}

// CreateVMI creates a lab VM's VirtualMachineInstance with its status.
func (e *Env) CreateVMI(ctx context.Context, v labnet.VM, extraAnnotations map[string]string) error {
	ann := map[string]string{nbv1.AnnotationIPs: v.IP, nbv1.AnnotationMAC: v.MAC}
	if e.ipv6 {
		ann[nbv1.AnnotationIPs] = v.IP + "," + labnet.VMIP6(v)
	}
	for k, val := range extraAnnotations {
		ann[k] = val
	}
	vmi := &kubevirt.VMI{Namespace: VMNamespace, Name: v.Name,
		Labels:      map[string]string{nbv1.LabelSegment: SegmentLabel, "kubevirt.io/nodeName": v.Node},
		Annotations: ann,
	}
	vmi.Spec.Networks = []kubevirt.NamedItem{{Name: "default"}}
	vmi.Spec.Domain.Devices.Interfaces = []kubevirt.NamedItem{{Name: "default", MacAddress: v.MAC}}
	u, err := kubevirt.ToUnstructured(vmi)
	if err != nil {
		return err
	}
	if err := e.Client.Create(ctx, u); err != nil {
		return fmt.Errorf("create vmi %s: %w", v.Name, err)
	}
	return e.SetVMINode(ctx, v, v.Node)
}

// SetVMINode writes the VMI's status (Running on node, one interface).
func (e *Env) SetVMINode(ctx context.Context, v labnet.VM, node string) error {
	for attempt := 0; ; attempt++ {
		u := kubevirt.NewObject()
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: VMNamespace, Name: v.Name}, u); err != nil {
			return err
		}
		if err := kubevirt.SetStatus(u, kubevirt.Status{NodeName: node, Phase: "Running", Interfaces: []kubevirt.InterfaceStatus{{
			Name: "default", InterfaceName: "eth0", MAC: v.MAC, IPAddress: v.IP, IPAddresses: []string{v.IP}, InfoSource: "domain, guest-agent",
		}}}); err != nil {
			return err
		}
		err := e.Client.Status().Update(ctx, u)
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) || attempt > 5 {
			return fmt.Errorf("vmi %s status: %w", v.Name, err)
		}
	}
	// The label KubeVirt keeps in sync with status.nodeName.
	return e.patchVMI(ctx, v.Name, func(u *unstructured.Unstructured) {
		l := u.GetLabels()
		l["kubevirt.io/nodeName"] = node
		u.SetLabels(l)
	})
}

func (e *Env) patchVMI(ctx context.Context, name string, f func(*unstructured.Unstructured)) error {
	for attempt := 0; ; attempt++ {
		u := kubevirt.NewObject()
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: VMNamespace, Name: name}, u); err != nil {
			return err
		}
		f(u)
		err := e.Client.Update(ctx, u)
		if err == nil || !apierrors.IsConflict(err) || attempt > 5 {
			return err
		}
	}
}

// DeleteVMI deletes a VMI.
func (e *Env) DeleteVMI(ctx context.Context, name string) error {
	u := kubevirt.NewObject()
	u.SetNamespace(VMNamespace)
	u.SetName(name)
	return e.Client.Delete(ctx, u)
}

// StartController runs netbridge-controller in the host namespace.
func (e *Env) StartController() error {
	args := []string{"--kubeconfig", e.HostKubeconfig, "--namespace", SystemNamespace,
		"--leader-elect=false", "--metrics-bind-address=0", "--health-probe-bind-address=0"}
	if e.nadAttach {
		args = append(args, "--network-attachments")
	}
	return e.startHost("controller", e.Bin("netbridge-controller"), args...)
}

func (e *Env) startHost(name, bin string, args ...string) error {
	f, err := os.OpenFile(e.LogPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); f.Close() }()
	// labnet's StopAll ends every process with a pid file in StateDir.
	_ = os.WriteFile(filepath.Join(e.StateDir, fmt.Sprintf("proc-%d.pid", cmd.Process.Pid)), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	e.mu.Lock()
	e.procs[name] = cmd
	e.mu.Unlock()
	return nil
}

// AgentArgs are the flags of netbridge-gateway on a lab host.
func (e *Env) AgentArgs(host, role string) []string {
	args := []string{"--role=" + role, "--node-name=" + host, "--kubeconfig=" + e.LabKubeconfig, "--namespace=" + SystemNamespace,
		"--metrics-bind-address=", "--health-probe-bind-address=", "--reachability-interval=2s"}
	if role == "gateway" {
		args = append(args, "--lease-duration=1s", "--renew-deadline=500ms", "--retry-period=100ms",
			"--graceful-shutdown-wait="+drainWait.String(), "--duplicate-backoff-max=2s",
			"--peer-key-file="+e.PeerKeyFile(), "--peer-heartbeat="+PeerHeartbeat.String())
		if lvl := os.Getenv("NETBRIDGE_E2E_GATEWAY_LOG_LEVEL"); lvl != "" {
			args = append(args, "--log-level="+lvl)
		}
		args = append(args, e.gatewayFlags...)
	}
	return args
}

// PeerHeartbeat is the gateways' --peer-heartbeat (DeadAfter: 3 of them).
const PeerHeartbeat = 50 * time.Millisecond

// PeerKeyFile is the gateways' shared peer channel key, written at Up.
func (e *Env) PeerKeyFile() string { return filepath.Join(e.StateDir, "peer.key") }

func (e *Env) writePeerKey() error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return os.WriteFile(e.PeerKeyFile(), key, 0o600)
}

// StartAgent runs netbridge-gateway in a lab namespace (gw1, node1, ...).
func (e *Env) StartAgent(host, role string) error {
	cmd, err := e.Lab.Start(host, e.LogPath(host), e.Bin("netbridge-gateway"), e.AgentArgs(host, role)...)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.procs[host] = cmd
	e.mu.Unlock()
	return nil
}

// Signal sends sig to a harness process (the `ip netns exec` wrapper
// execs the binary, so the pid is the agent's own).
func (e *Env) Signal(name string, sig os.Signal) error {
	e.mu.Lock()
	cmd := e.procs[name]
	e.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("no process %s", name)
	}
	return cmd.Process.Signal(sig)
}

// WaitExit waits until a harness process has exited.
func (e *Env) WaitExit(name string, timeout time.Duration) error {
	e.mu.Lock()
	cmd := e.procs[name]
	e.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("no process %s", name)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return nil
		}
		// A zombie answers signal 0 until reaped by the Wait goroutine.
		if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)); err == nil && strings.Contains(string(raw), ") Z ") {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s still running after %s", name, timeout)
}

// WaitBGPEstablished waits until FRR has both gateways Established.
func (e *Env) WaitBGPEstablished(timeout time.Duration) error {
	var last string
	err := WaitFor(timeout, 100*time.Millisecond, func() bool {
		out, _ := e.Lab.Vtysh("show bgp summary json")
		last = string(out)
		for _, g := range labnet.Gateways {
			if !strings.Contains(last, fmt.Sprintf("%q", g.FabricIP)) {
				return false
			}
		}
		return strings.Count(last, `"state":"Established"`) >= len(labnet.Gateways)
	})
	if err != nil {
		return fmt.Errorf("BGP sessions not Established: %w; FRR says: %s", err, last)
	}
	return nil
}

// WaitBGPStable waits until FRR has had both gateways Established with
// BFD up, without a drop, for hold.
func (e *Env) WaitBGPStable(timeout, hold time.Duration) error {
	var since time.Time
	var last, prev string
	err := WaitFor(timeout, 50*time.Millisecond, func() bool {
		last = e.FRRSessionCounts()
		ok := strings.Count(last, "state=Established") == len(labnet.Gateways) && e.bfdUp()
		if !ok || last != prev {
			since, prev = time.Time{}, last
		}
		if !ok {
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= hold
	})
	if err != nil {
		return fmt.Errorf("BGP sessions with BFD not stable for %s: %w; FRR says: %s", hold, err, last)
	}
	return nil
}

// bfdUp: FRR's BFD sessions with both gateways are up.
func (e *Env) bfdUp() bool {
	out, err := e.Lab.Vtysh("show bfd peers json")
	if err != nil {
		return false
	}
	var ps []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if json.Unmarshal(out, &ps) != nil {
		return false
	}
	up := 0
	for _, p := range ps {
		for _, g := range labnet.Gateways {
			if p.Peer == g.FabricIP && p.Status == "up" {
				up++
			}
		}
	}
	return up == len(labnet.Gateways)
}

// FRRSessionCounts says, per gateway, how often FRR's session with it was
// established and dropped so far ("gw1 established=2 dropped=1 ..."): a
// drop while the lab comes up is FRR 8.4's first-Established BFD reset.
func (e *Env) FRRSessionCounts() string {
	out, err := e.Lab.Vtysh("show bgp neighbors json")
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	var nbrs map[string]struct {
		Established int    `json:"connectionsEstablished"`
		Dropped     int    `json:"connectionsDropped"`
		State       string `json:"bgpState"`
	}
	if err := json.Unmarshal(out, &nbrs); err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	var b strings.Builder
	for _, g := range labnet.Gateways {
		n := nbrs[g.FabricIP]
		fmt.Fprintf(&b, "%s established=%d dropped=%d state=%s ", g.Name, n.Established, n.Dropped, n.State)
	}
	return strings.TrimSpace(b.String())
}

// ActiveGateway is the holder of the segment's Lease ("" when none).
func (e *Env) ActiveGateway(ctx context.Context) (string, error) {
	var l coordinationv1.Lease
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: SystemNamespace, Name: nbv1.LeaseName(nbv1.SegmentKey{BridgeConfig: ConfigName, Segment: SegmentName})}, &l); err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// Ctl runs netbridgectl on the host with the host kubeconfig.
func (e *Env) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.Bin("netbridgectl"), append([]string{"--kubeconfig", e.HostKubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// WaitFor polls cond every step until it holds or timeout passes.
func WaitFor(timeout, step time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(step)
	}
	return nil
}

// dualStack adds the lab's IPv6 subnet to the segment and dc's IPv6
// address as a peer (a /128 needs an IPv6 session; no BFD on it).
func dualStack(bc *nbv1.BridgeConfig) {
	i32 := func(v int32) *int32 { return &v }
	bc.Spec.Segments[0].Subnets = append(bc.Spec.Segments[0].Subnets, labnet.Subnet6)
	bc.Spec.BGP.Peers = append(bc.Spec.BGP.Peers, nbv1.BGPPeer{Address: labnet.DCFabricIP6, ASN: labnet.DCASN,
		HoldTime: i32(3), Keepalive: i32(1), GracefulRestart: &nbv1.GracefulRestart{Enabled: true, RestartTime: 30}})
}
