// Package labnet builds the netbridge lab in network namespaces: a
// datacenter router (FRR) with a client subnet behind it, a legacy L2
// segment with a host and the legacy default router, two gateways with
// access uplinks into it, two VM nodes, all joined by an underlay fabric.
// The gateway tests, the e2e scenarios and `make lab` share it.
//
//	client ── dc (FRR, AS 65000) ──┬── fabric 172.30.0.0/24 ──┬── gw1 .11 ─┐
//	           │ 172.31.0.0/30      ├── gw2 .12                ├── node1 .21 ── vm1
//	       lrouter 10.20.100.1      └─ ...                     └── node2 .22 ── vm2
//	           │                                                     │
//	        legacy L2 (bridge) ── host1 10.20.100.11 ── gw1/gw2 uplink0 (access)
package labnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Fixed addressing of the lab.
const (
	DCASN      = 65000
	GatewayASN = 65010
	// BFD on the gateway sessions: 100 ms x 3 = 300 ms detection.
	BFDIntervalMs = 100
	BFDMultiplier = 3
	VLANID        = 100
	VNI           = 10100
	Subnet        = "10.20.100.0/24"
	// LegacyRouterIP is the legacy default gateway of the subnet.
	LegacyRouterIP = "10.20.100.1"
	LegacyHostIP   = "10.20.100.11"
	LegacyHostMAC  = "02:00:0a:14:64:0b"
	ClientIP       = "198.51.100.10"
	DCFabricIP     = "172.30.0.1"
	Uplink         = "uplink0"
	FabricMTU      = 1600
	// HostFabricIP is the host namespace's address on the fabric when
	// AddHostLink was called (e.g. to reach an API server on the host).
	HostFabricIP = "172.30.0.254"
)

// Gateways and Nodes are the lab's hosts running netbridge-gateway.
var (
	Gateways = []Host{{Name: "gw1", FabricIP: "172.30.0.11"}, {Name: "gw2", FabricIP: "172.30.0.12"}}
	Nodes    = []Host{{Name: "node1", FabricIP: "172.30.0.21"}, {Name: "node2", FabricIP: "172.30.0.22"}}
)

// Host is a gateway or node of the lab.
type Host struct {
	Name     string
	FabricIP string
}

// VM is a migrated VM's preserved identity.
type VM struct {
	Name string
	Node string
	IP   string
	MAC  string
}

// VMs of the lab.
var VMs = []VM{
	{Name: "vm1", Node: "node1", IP: "10.20.100.50", MAC: "52:54:00:00:01:50"},
	{Name: "vm2", Node: "node2", IP: "10.20.100.60", MAC: "52:54:00:00:01:60"},
}

// Lab is one instance, its namespaces named Prefix-<role>.
type Lab struct {
	Prefix string
	// StateDir holds FRR's config/run folders and process pid files.
	StateDir string
	FRRName  string
	// VMLinksByCNI leaves the VMs' links out of Up: the caller attaches
	// each VM as Multus would (CNI ADD), then calls ConfigureVM.
	VMLinksByCNI bool
}

// New names a lab; nothing is created yet.
func New(prefix, stateDir string) *Lab {
	return &Lab{Prefix: prefix, StateDir: stateDir, FRRName: prefix + "-dc"}
}

// NS is the namespace name of a lab role ("dc", "gw1", "vm1", ...).
func (l *Lab) NS(role string) string { return l.Prefix + "-" + role }

func (l *Lab) roles() []string {
	r := []string{"fabric", "legacy", "dc", "client", "host1", "lrouter"}
	for _, h := range append(append([]Host{}, Gateways...), Nodes...) {
		r = append(r, h.Name)
	}
	for _, v := range VMs {
		r = append(r, v.Name)
	}
	return r
}

// Up builds the namespaces, links and addresses, and starts FRR in dc.
// It does not start netbridge. On error, call Down.
func (l *Lab) Up() error {
	if err := os.MkdirAll(l.StateDir, 0o755); err != nil {
		return err
	}
	for _, r := range l.roles() {
		if err := ip("netns", "add", l.NS(r)); err != nil {
			return err
		}
		if err := l.exec(r, "ip", "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	// Underlay fabric: one bridge, every router and host on it.
	if err := l.bridge("fabric", "fab", 0); err != nil {
		return err
	}
	fabric := append([]Host{{Name: "dc", FabricIP: DCFabricIP}}, append(append([]Host{}, Gateways...), Nodes...)...)
	for _, h := range fabric {
		if err := l.veth(h.Name, "eth0", "fabric", "f-"+h.Name, FabricMTU); err != nil {
			return err
		}
		if err := l.exec("fabric", "ip", "link", "set", "f-"+h.Name, "master", "fab"); err != nil {
			return err
		}
		if err := l.addr(h.Name, "eth0", h.FabricIP+"/24"); err != nil {
			return err
		}
	}
	// Legacy L2: a switch with the legacy host, the legacy router and the
	// gateways' access uplinks.
	if err := l.bridge("legacy", "l2", 0); err != nil {
		return err
	}
	for _, p := range []struct{ role, dev string }{{"host1", "eth0"}, {"lrouter", "eth0"}, {"gw1", Uplink}, {"gw2", Uplink}} {
		if err := l.veth(p.role, p.dev, "legacy", "l-"+p.role, 1500); err != nil {
			return err
		}
		if err := l.exec("legacy", "ip", "link", "set", "l-"+p.role, "master", "l2"); err != nil {
			return err
		}
	}
	if err := l.exec("host1", "ip", "link", "set", "eth0", "address", LegacyHostMAC); err != nil {
		return err
	}
	if err := l.addr("host1", "eth0", LegacyHostIP+"/24"); err != nil {
		return err
	}
	if err := l.exec("host1", "ip", "route", "add", "default", "via", LegacyRouterIP); err != nil {
		return err
	}
	if err := l.addr("lrouter", "eth0", LegacyRouterIP+"/24"); err != nil {
		return err
	}
	// Legacy router ⇄ dc, and the client behind dc.
	if err := l.veth("lrouter", "eth1", "dc", "eth1", 1500); err != nil {
		return err
	}
	if err := l.addr("lrouter", "eth1", "172.31.0.2/30"); err != nil {
		return err
	}
	if err := l.addr("dc", "eth1", "172.31.0.1/30"); err != nil {
		return err
	}
	if err := l.exec("lrouter", "ip", "route", "add", "default", "via", "172.31.0.1"); err != nil {
		return err
	}
	if err := l.veth("client", "eth0", "dc", "eth2", 1500); err != nil {
		return err
	}
	if err := l.addr("client", "eth0", ClientIP+"/24"); err != nil {
		return err
	}
	if err := l.addr("dc", "eth2", "198.51.100.1/24"); err != nil {
		return err
	}
	if err := l.exec("client", "ip", "route", "add", "default", "via", "198.51.100.1"); err != nil {
		return err
	}
	for _, r := range []string{"dc", "lrouter", "gw1", "gw2"} {
		for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"} {
			if err := l.exec(r, "sysctl", "-qw", kv); err != nil {
				return err
			}
		}
	}
	// The old way in: dc reaches the subnet through the legacy router;
	// the gateways' /32s are more specific.
	if err := l.exec("dc", "ip", "route", "add", Subnet, "via", "172.31.0.2"); err != nil {
		return err
	}
	// VMs: a veth whose node side joins the node's segment bridge once the
	// node agent has created it (AttachVMs).
	for _, v := range VMs {
		if l.VMLinksByCNI {
			continue
		}
		if err := l.veth(v.Name, "eth0", v.Node, "vm-"+v.Name, 1450); err != nil {
			return err
		}
		if err := l.exec(v.Name, "ip", "link", "set", "eth0", "address", v.MAC); err != nil {
			return err
		}
		if err := l.addr(v.Name, "eth0", v.IP+"/24"); err != nil {
			return err
		}
		if err := l.exec(v.Name, "ip", "route", "add", "default", "via", LegacyRouterIP); err != nil {
			return err
		}
	}
	return l.startFRR()
}

// ConfigureVM gives a VM its static address and route on dev, as its guest
// keeps them from the legacy side (the CNI config has no IPAM).
func (l *Lab) ConfigureVM(v VM, dev string) error {
	if err := l.addr(v.Name, dev, v.IP+"/24"); err != nil {
		return err
	}
	return l.exec(v.Name, "ip", "route", "add", "default", "via", LegacyRouterIP)
}

// AttachVM enslaves one VM's node-side veth to its node's segment bridge,
// waiting up to timeout for the node agent to create the bridge.
func (l *Lab) AttachVM(v VM, bridge string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := l.exec(v.Node, "ip", "link", "set", "vm-"+v.Name, "master", bridge)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("attach %s to %s on %s: %w", v.Name, bridge, v.Node, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AttachVMs enslaves each VM's node-side veth to the node's segment
// bridge, waiting up to timeout for the node agent to create it.
func (l *Lab) AttachVMs(bridge string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, v := range VMs {
		for {
			err := l.exec(v.Node, "ip", "link", "set", "vm-"+v.Name, "master", bridge)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("attach %s to %s on %s: %w", v.Name, bridge, v.Node, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// HostLinkName is the host-namespace side of the link AddHostLink makes.
func (l *Lab) HostLinkName() string { return l.Prefix + "h" }

// AddHostLink joins the host (root) namespace to the fabric bridge, with
// HostFabricIP/24 on its side, so that processes in the lab reach
// services of the host (the API server through a proxy). Optional; at most
// one lab per host may use it (the fabric subnet is fixed). Down removes it.
func (l *Lab) AddHostLink() error {
	name := l.HostLinkName()
	if err := ip("link", "add", "name", name, "mtu", strconv.Itoa(FabricMTU), "type", "veth",
		"peer", "name", "nbtmpb", "mtu", strconv.Itoa(FabricMTU), "netns", l.NS("fabric")); err != nil {
		return err
	}
	if err := l.exec("fabric", "ip", "link", "set", "nbtmpb", "name", "f-host", "master", "fab", "up"); err != nil {
		return err
	}
	if err := ip("addr", "add", HostFabricIP+"/24", "dev", name); err != nil {
		return err
	}
	return ip("link", "set", name, "up")
}

// MoveVM moves a VM's link to another node (a live migration as the
// network sees it): the veth on the old node is deleted, a new one joins
// toNode's bridge with the same MAC and IP in the VM's namespace.
func (l *Lab) MoveVM(name, toNode, bridge string) error {
	var vm *VM
	for i := range VMs {
		if VMs[i].Name == name {
			vm = &VMs[i]
		}
	}
	if vm == nil {
		return fmt.Errorf("no VM %s in the lab", name)
	}
	// Deleting the VM side removes the node side too, wherever it is.
	if err := l.exec(name, "ip", "link", "del", "eth0"); err != nil {
		return err
	}
	if err := l.veth(name, "eth0", toNode, "vm-"+name, 1450); err != nil {
		return err
	}
	if err := l.exec(name, "ip", "link", "set", "eth0", "address", vm.MAC); err != nil {
		return err
	}
	if err := l.addr(name, "eth0", vm.IP+"/24"); err != nil {
		return err
	}
	if err := l.exec(name, "ip", "route", "add", "default", "via", LegacyRouterIP); err != nil {
		return err
	}
	return l.exec(toNode, "ip", "link", "set", "vm-"+name, "master", bridge)
}

// FRRConfig is the dc router's configuration: eBGP with both gateways,
// short timers so a dead gateway is noticed fast.
func (l *Lab) FRRConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname %s\nlog stdout informational\n!\n", l.FRRName)
	// BFD on every gateway session (bfdd), at the lab's timers: a dead
	// gateway leaves the FIB within BFDMultiplier x BFDIntervalMs. No
	// `exit` lines: every daemon reads the whole file (TESTBED.md).
	b.WriteString("bfd\n")
	for _, g := range Gateways {
		fmt.Fprintf(&b, " peer %s\n  receive-interval %d\n  transmit-interval %d\n  detect-multiplier %d\n !\n",
			g.FabricIP, BFDIntervalMs, BFDIntervalMs, BFDMultiplier)
	}
	b.WriteString("!\n")
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n timers bgp 1 3\n", DCASN, DCFabricIP)
	for _, g := range Gateways {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers connect 1\n neighbor %s bfd\n", g.FabricIP, GatewayASN, g.FabricIP, g.FabricIP)
	}
	b.WriteString(" address-family ipv4 unicast\n")
	for _, g := range Gateways {
		fmt.Fprintf(&b, "  neighbor %s activate\n", g.FabricIP)
	}
	b.WriteString(" exit-address-family\n!\n")
	return b.String()
}

func (l *Lab) frrDirs() (conf, run string) {
	return filepath.Join("/etc/frr", l.FRRName), filepath.Join("/var/run/frr", l.FRRName)
}

func (l *Lab) startFRR() error {
	conf, run := l.frrDirs()
	for _, d := range []string{conf, run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if out, err := exec.Command("chown", "frr:frr", d).CombinedOutput(); err != nil {
			return fmt.Errorf("chown %s (is frr installed?): %v: %s", d, err, out)
		}
	}
	_ = os.WriteFile(filepath.Join(conf, "vtysh.conf"), nil, 0o640)
	cfg := filepath.Join(conf, "frr.conf")
	if err := os.WriteFile(cfg, []byte(l.FRRConfig()), 0o640); err != nil {
		return err
	}
	_ = exec.Command("chown", "frr:frr", cfg).Run()
	// bfdd before bgpd, which registers its BFD sessions with it.
	for _, d := range []string{"zebra", "bfdd", "bgpd"} {
		args := []string{"netns", "exec", l.NS("dc"), "/usr/lib/frr/" + d, "-d", "-N", l.FRRName, "-f", cfg,
			"-i", filepath.Join(run, d+".pid"), "-P", "0", "--log", "file:" + filepath.Join(run, d+".log")}
		if d == "bfdd" {
			args = append(args, "--bfdctl", filepath.Join(run, "bfdd.sock"))
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("start %s: %v: %s", d, err, out)
		}
		if d == "zebra" {
			if err := waitFor(10*time.Second, func() bool { _, err := os.Stat(filepath.Join(run, "zserv.api")); return err == nil }); err != nil {
				return fmt.Errorf("zebra did not start: %w", err)
			}
		}
	}
	return waitFor(15*time.Second, func() bool {
		out, err := l.Vtysh("show bgp summary json")
		return err == nil && strings.HasPrefix(strings.TrimSpace(string(out)), "{")
	})
}

// Vtysh runs commands on the dc router.
func (l *Lab) Vtysh(cmds ...string) ([]byte, error) {
	args := []string{"-N", l.FRRName}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return exec.Command("vtysh", args...).CombinedOutput()
}

// Down stops everything the lab started and deletes its namespaces.
// Safe to call on a half-built or already removed lab.
func (l *Lab) Down() {
	_ = l.StopAll()
	_, run := l.frrDirs()
	for _, d := range []string{"bgpd", "bfdd", "zebra"} {
		killPidFile(filepath.Join(run, d+".pid"))
	}
	for _, r := range l.roles() {
		_ = ip("netns", "del", l.NS(r))
	}
	if _, err := net.InterfaceByName(l.HostLinkName()); err == nil {
		_ = ip("link", "del", l.HostLinkName())
	}
	conf, _ := l.frrDirs()
	_ = os.RemoveAll(conf)
	_ = os.RemoveAll(run)
}

// Exec runs a command in a lab namespace and returns its output.
func (l *Lab) Exec(role string, name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.NS(role), name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %s %v: %w: %s", name, role, name, args, err, out)
	}
	return string(out), nil
}

func (l *Lab) exec(role string, name string, args ...string) error {
	_, err := l.Exec(role, name, args...)
	return err
}

// Start runs a long-lived process in a namespace (stdout/stderr to
// logFile); its pid is recorded so StopAll / Down can end it.
func (l *Lab) Start(role, logFile string, name string, args ...string) (*exec.Cmd, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.NS(role), name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, role, err)
	}
	go func() { _ = cmd.Wait(); f.Close() }()
	pidFile := filepath.Join(l.StateDir, fmt.Sprintf("proc-%d.pid", cmd.Process.Pid))
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	return cmd, nil
}

// StopAll kills every process started with Start.
func (l *Lab) StopAll() error {
	matches, _ := filepath.Glob(filepath.Join(l.StateDir, "proc-*.pid"))
	for _, m := range matches {
		killPidFile(m)
		_ = os.Remove(m)
	}
	return nil
}

func killPidFile(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		return
	}
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}

func (l *Lab) bridge(role, name string, mtu int) error {
	if err := l.exec(role, "ip", "link", "add", name, "type", "bridge"); err != nil {
		return err
	}
	return l.exec(role, "ip", "link", "set", name, "up")
}

func (l *Lab) veth(roleA, devA, roleB, devB string, mtu int) error {
	if err := ip("link", "add", "name", "nbtmpa", "mtu", strconv.Itoa(mtu), "netns", l.NS(roleA), "type", "veth",
		"peer", "name", "nbtmpb", "mtu", strconv.Itoa(mtu), "netns", l.NS(roleB)); err != nil {
		return err
	}
	if err := l.exec(roleA, "ip", "link", "set", "nbtmpa", "name", devA, "up"); err != nil {
		return err
	}
	return l.exec(roleB, "ip", "link", "set", "nbtmpb", "name", devB, "up")
}

func (l *Lab) addr(role, dev, cidr string) error {
	return l.exec(role, "ip", "addr", "add", cidr, "dev", dev)
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// HasRoute reports whether the dc namespace's kernel table has a route
// to prefix and through which next hop.
func (l *Lab) HasRoute(prefix string) (bool, string) { return l.hasRoute("-4", prefix) }

// hasRoute is HasRoute for one address family ("-4" or "-6").
func (l *Lab) hasRoute(family, prefix string) (bool, string) {
	out, err := l.Exec("dc", "ip", family, "route", "show", prefix)
	if err != nil || strings.TrimSpace(out) == "" {
		return false, ""
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			return true, f[i+1]
		}
	}
	return true, ""
}

// ParseMAC is net.ParseMAC that panics on the lab's constants.
func ParseMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// Addr parses a lab constant.
func Addr(s string) netip.Addr { return netip.MustParseAddr(s) }
